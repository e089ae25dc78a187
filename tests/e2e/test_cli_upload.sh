#!/usr/bin/env bash
# `tagproof upload` against the real tagproof-factory: a few thousand tags land in the batch
# and the same file again is the same upload; a failing file exits 1 with its line-numbered
# errors and imports nothing; skip-invalid imports the rest; a refused key, a missing batch
# and an oversized body exit 1 with the problem's detail on one line; usage errors exit 2; the
# progress bar is drawn on a terminal only.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"

e2e_env
# Many uploads and polls from one key in a few seconds: the default limit (60 a minute) would
# only make this test wait (the CLI waits out a 429 answer).
export TAGPROOF_RATE_LIMIT_PER_MIN=6000 TAGPROOF_RATE_LIMIT_BURST=1000
factory_up
cli=$bin/tagproof
owner=$TAGPROOF_TEST_PG_OWNER_URL
unset TAGPROOF_API_KEY TAGPROOF_FACTORY_URL
export TAGPROOF_FACTORY_URL=$FACTORY_URL

tags_in() {
  psql "$owner" -qAtc "SELECT count(*) FROM tags WHERE batch_id = '$1'"
}

# upload NAME ARGS... — runs the CLI; exit code in $rc, output in $work/NAME.out and .err.
upload() {
  local name=$1
  shift
  rc=0
  "$cli" upload "$@" >"$work/$name.out" 2>"$work/$name.err" </dev/null || rc=$?
}

# A factory, its factory_user key, a product and two batches, through the API.
json_post /v1/factories "$admin_key" "{\"name\":\"CLI upload e2e $$-$RANDOM\"}"
factory=$(jq_body .id)
json_post /v1/api-keys "$admin_key" \
  "{\"factory_id\":\"$factory\",\"role\":\"factory_user\",\"name\":\"cli e2e\"}"
key=$(jq_body .key)
json_post /v1/products "$key" '{"sku":"CLI-1","name":"Upload test shoe"}'
check "a product is created (got $status)" test "$status" = 201
product=$(jq_body .id)
json_post /v1/batches "$key" "{\"product_id\":\"$product\",\"code\":\"CLI-B1\"}"
check "a batch is created (got $status)" test "$status" = 201
batch=$(jq_body .id)
json_post /v1/batches "$key" "{\"product_id\":\"$product\",\"code\":\"CLI-B2\"}"
batch2=$(jq_body .id)

# --- a real upload -----------------------------------------------------------------------------
{
  echo tag_id,serial
  stack_uuids 3000 | awk '{ print $0 ",S" NR }'
} >"$work/good.csv"
export TAGPROOF_API_KEY=$key
upload good --batch "$batch" "$work/good.csv"
check "3,000 tags upload (exit $rc)" test "$rc" = 0
[ "$rc" = 0 ] || cat "$work/good.out" "$work/good.err"
check "…the result says completed, 3000 accepted, 0 rejected" \
  grep -Eq '^upload [0-9a-f-]{36} completed: 3000 rows, 3000 accepted, 0 rejected$' "$work/good.out"
check "…and the batch holds 3,000 tags" test "$(tags_in "$batch")" = 3000
first_id=$(sed -n 's/^upload \([0-9a-f-]*\) .*/\1/p' "$work/good.out")
check "without a terminal there is no bar, only plain lines" \
  bash -c "! grep -q \$'\\r' '$work/good.err' && grep -q '^upload: .* in ' '$work/good.err'"

upload again --json --batch "$batch" "$work/good.csv"
check "the same file again exits 0 (exit $rc)" test "$rc" = 0
check "…and is the same upload (the default Idempotency-Key)" \
  test "$(jq -r .id "$work/again.out" 2>/dev/null)" = "${first_id:-none}"
check "…which changed nothing" test "$(tags_in "$batch")" = 3000

# On a terminal: a bar redrawn in place. The key comes from --api-key this time.
{
  echo tag_id
  stack_uuids 2000
} >"$work/tty.csv"
rc=0
TAGPROOF_API_KEY='' script -qec "'$cli' upload --api-key '$key' --batch '$batch2' '$work/tty.csv'" \
  /dev/null >"$work/tty.out" 2>&1 || rc=$?
check "an upload on a terminal exits 0 (exit $rc)" test "$rc" = 0
check "…drawing a progress bar in place" bash -c "grep -q \$'\\r' '$work/tty.out' && grep -q '100%' '$work/tty.out'"
check "…for the rows as well" grep -q 'rows \[' "$work/tty.out"
check "…and the batch holds them" test "$(tags_in "$batch2")" = 2000

# --- a failing file: nothing imported, every error with its line ----------------------------
registered=$(sed -n 2p "$work/good.csv" | cut -d, -f1)
fresh=$(stack_uuids 3)
{
  echo tag_id
  echo "$fresh" | sed -n 1p     # line 2
  echo "not-a-uuid"             # line 3
  echo "$fresh" | sed -n 2p     # line 4
  echo "$fresh" | sed -n 1p     # line 5: a duplicate of line 2
  echo "$registered"            # line 6: registered by the first upload
  echo "$fresh" | sed -n 3p     # line 7
} >"$work/bad.csv"
upload bad --batch "$batch2" "$work/bad.csv"
check "a file with bad rows exits 1 (exit $rc)" test "$rc" = 1
check "…saying it failed" grep -Eq '^upload [0-9a-f-]{36} failed: ' "$work/bad.out"
for line in 3 5; do
  check "…with the error of line $line (line, code, message)" grep -Eq "^line $line: [a-z_]+: .+" "$work/bad.out"
done
check "…and no error for a good line" bash -c "! grep -Eq '^line (2|4|7):' '$work/bad.out'"
check "…and nothing imported" test "$(tags_in "$batch2")" = 2000
[ "$rc" = 1 ] || cat "$work/bad.out" "$work/bad.err"

# A well-formed file with one tag registered already: that line is named, nothing imported.
{
  echo tag_id
  echo "$fresh" | sed -n 1p # line 2
  echo "$registered"        # line 3
} >"$work/taken.csv"
upload taken --batch "$batch2" "$work/taken.csv"
check "a file with a registered tag exits 1 (exit $rc)" test "$rc" = 1
check "…naming its line" grep -Eq '^line 3: [a-z_]+: .+' "$work/taken.out"
check "…and nothing imported" test "$(tags_in "$batch2")" = 2000

upload skip --mode skip-invalid --batch "$batch2" "$work/bad.csv"
check "--mode skip-invalid imports the good rows and exits 0 (exit $rc)" test "$rc" = 0
check "…reporting 3 accepted and 3 rejected" grep -Eq 'completed: 6 rows, 3 accepted, 3 rejected$' "$work/skip.out"
check "…listing the rejected lines" test "$(grep -Ec '^line (3|5|6): ' "$work/skip.out")" = 3
check "…and the batch holds 3 more tags" test "$(tags_in "$batch2")" = 2003
[ "$rc" = 0 ] || cat "$work/skip.out" "$work/skip.err"

# --- refusals: exit 1 and one line with the problem's detail --------------------------------
TAGPROOF_API_KEY="tp_live_0000000000000000_$(printf '0%.0s' $(seq 1 64))" \
  upload wrongkey --batch "$batch" "$work/good.csv"
check "a wrong API key exits 1 (exit $rc)" test "$rc" = 1
check "…with one line naming 401 and the problem's detail" \
  bash -c "[ \$(wc -l <'$work/wrongkey.err') = 1 ] && grep -q '401 .*: the API key is not valid' '$work/wrongkey.err'"
check "…and no result on standard output" test ! -s "$work/wrongkey.out"

upload nobatch --batch "$(stack_uuids 1)" "$work/bad.csv"
check "a batch that does not exist exits 1 (exit $rc)" test "$rc" = 1
check "…with one line naming 404" bash -c "[ \$(wc -l <'$work/nobatch.err') = 1 ] && grep -q 'HTTP 404' '$work/nobatch.err'"

# A second tagproof-factory with a 1 MiB body limit: a 2 MiB file is refused with 413.
small_listen=127.0.0.1:$(stack_free_port)
TAGPROOF_FACTORY_LISTEN=$small_listen TAGPROOF_UPLOAD_MAX_MB=1 \
  "$bin/tagproof-factory" 2>"$work/tagproof-factory-small.log" &
small_pid=$!
pids+=("$small_pid")
for _ in $(seq 1 100); do curl -fs "http://$small_listen/v1/ready" >/dev/null 2>&1 && break; sleep 0.1; done
{
  echo tag_id
  stack_uuids 60000
} >"$work/big.csv"
upload big --url "http://$small_listen" --batch "$batch" "$work/big.csv"
check "a body over the size limit exits 1 (exit $rc)" test "$rc" = 1
check "…with one line naming 413" bash -c "[ \$(wc -l <'$work/big.err') = 1 ] && grep -q 'HTTP 413' '$work/big.err'"
[ "$rc" = 1 ] || cat "$work/big.err"
kill -TERM "$small_pid" 2>/dev/null || true

rc=0
"$cli" upload --url "http://127.0.0.1:$(stack_free_port)" --batch "$batch" "$work/bad.csv" \
  >/dev/null 2>"$work/down.err" || rc=$?
check "an API that does not answer exits 1 (exit $rc)" test "$rc" = 1
check "…saying so in one line" test "$(wc -l <"$work/down.err")" = 1

# --- usage errors: exit 2 -------------------------------------------------------------------
usage_case() {
  local what=$1
  shift
  rc=0
  "$cli" upload "$@" >/dev/null 2>"$work/usage.err" </dev/null || rc=$?
  check "$what exits 2 (exit $rc)" test "$rc" = 2
}
usage_case "a missing file" --batch "$batch" "$work/missing.csv"
usage_case "a directory for the file" --batch "$batch" "$work"
usage_case "no --batch" "$work/good.csv"
usage_case "a batch that is not a UUID" --batch nope "$work/good.csv"
usage_case "no file" --batch "$batch"
usage_case "two files" --batch "$batch" "$work/good.csv" "$work/bad.csv"
usage_case "an unknown option" --batch "$batch" --fast "$work/good.csv"
usage_case "an unknown mode" --batch "$batch" --mode sometimes "$work/good.csv"
TAGPROOF_API_KEY='' usage_case "no API key" --batch "$batch" "$work/good.csv"
rc=0
"$cli" upload --help >"$work/help.out" || rc=$?
check "--help exits 0 and shows the usage" bash -c "[ $rc = 0 ] && grep -q '^usage: tagproof upload' '$work/help.out'"

e2e_stop tagproof-factory "$factory_pid"
e2e_done
