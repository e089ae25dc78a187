#!/usr/bin/env bash
# The Redis master killed under load in sync mode (scripts/dr/drill, shortened): the Sentinels
# promote the replica, the services find it without a restart within 10 s, no acknowledged tag
# lost; then scripts/dr/failback --switch brings the old master back as a replica and gives
# every role back (a PostgreSQL switchover and a Sentinel failover).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/dr_lib.sh"
dr_test redis-master --switch
e2e_done
