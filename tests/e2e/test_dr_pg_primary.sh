#!/usr/bin/env bash
# The PostgreSQL primary killed under load in sync mode (scripts/dr/drill, shortened): the
# standby promoted, the services on it without a restart within 10 s, no acknowledged tag
# lost; then the old primary rejoins as a standby through pg_rewind (scripts/dr/failback).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/dr_lib.sh"
dr_test pg-primary
e2e_done
