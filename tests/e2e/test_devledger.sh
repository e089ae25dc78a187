#!/usr/bin/env bash
# tagproof-devledger (SPEC §7): anchors recorded, read back by id or sequence, hash-chained,
# durable across a restart, a repeated anchor answered with the entry already recorded, a torn
# last line dropped, a broken chain refused at start, bad bodies refused.
. "$(dirname "$0")/lib.sh"
e2e_env
url="http://$TAGPROOF_DEVLEDGER_LISTEN"
file=$TAGPROOF_DATA_DIR/devledger.jsonl
root_a=$(printf 'a%.0s' $(seq 64))
root_b=$(printf 'b%.0s' $(seq 64))

start() {
  e2e_start tagproof-devledger
  ledger_pid=$last_pid
  for _ in $(seq 50); do curl -fs "$url/v1/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
}
post() { curl -s -o "$work/out" -w '%{http_code}' -XPOST "$url/v1/anchors" -d "$1"; }
anchor() { printf '{"origin":"tagproof.local/log","size":%s,"root":"%s","checkpoint":"tagproof.local/log\\n%s\\nx\\n\\n— sig\\n"}' "$1" "$2" "$1"; }

start
check "POST /v1/anchors answers 201" test "$(post "$(anchor 3 "$root_a")")" = 201
id1=$(jq -r .id "$work/out")
check "…with id, sequence 1 and recorded_at" test "$(jq -r '[.sequence, (.recorded_at | test("^[0-9-]+T[0-9:]+Z$"))] | @tsv' "$work/out")" = "$(printf '1\ttrue')"
check "the same anchor again answers 200 with the same entry" test "$(post "$(anchor 3 "$root_a")")" = 200
check "…id unchanged" test "$(jq -r .id "$work/out")" = "$id1"
check "a newer checkpoint is sequence 2" bash -c "[ \"\$(curl -s -XPOST '$url/v1/anchors' -d '$(anchor 7 "$root_b")' | jq -r .sequence)\" = 2 ]"
check "GET /v1/anchors/{id} returns the entry" bash -c "curl -fs '$url/v1/anchors/$id1' | jq -e '.size == 3 and .root == \"$root_a\" and (.checkpoint | startswith(\"tagproof.local/log\"))'"
check "GET by sequence works too" bash -c "curl -fs '$url/v1/anchors/2' | jq -e '.size == 7 and .prev == \"$id1\"'"
check "an unknown id is 404 problem+json" bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code} %{content_type}' '$url/v1/anchors/nope')\" = '404 application/problem+json' ]"
check "a root that is not 64 hex digits is 422" test "$(post '{"origin":"o","size":1,"root":"ABC","checkpoint":"c"}')" = 422
check "size 0 is 422" test "$(post "{\"origin\":\"o\",\"size\":0,\"root\":\"$root_a\",\"checkpoint\":\"c\"}")" = 422
check "a body that is not JSON is 400" test "$(post 'not json')" = 400
# Ten clients at once: ten entries, sequences 3..12 without gaps.
clients=()
for i in $(seq 10); do
  curl -s -XPOST "$url/v1/anchors" -d "$(anchor $((100 + i)) "$root_a")" >/dev/null &
  clients+=($!)
done
wait "${clients[@]}"
check "concurrent anchors get consecutive sequences" test "$(wc -l <"$file")" = 12
e2e_stop tagproof-devledger "$ledger_pid"

start
check "after a restart the entries are all there" bash -c "curl -fs '$url/v1/anchors/12' | jq -e '.sequence == 12'"
check "…and the first by its id" bash -c "curl -fs '$url/v1/anchors/$id1' | jq -e '.sequence == 1'"
e2e_stop tagproof-devledger "$ledger_pid"

# A torn last line (a crash between write and fsync: never acknowledged) is dropped.
printf '{"sequence":13,"tor' >>"$file"
start
check "a torn last line is dropped at start" test "$(wc -l <"$file")" = 12
check "…and the next anchor is sequence 13" bash -c "[ \"\$(curl -s -XPOST '$url/v1/anchors' -d '$(anchor 999 "$root_b")' | jq -r .sequence)\" = 13 ]"
e2e_stop tagproof-devledger "$ledger_pid"

# Any edit of a recorded entry breaks the chain: the ledger refuses to start.
sed -i '2s/"size":7/"size":8/' "$file"
rc=0
"$bin/tagproof-devledger" 2>"$work/broken.log" || rc=$?
check "an edited entry stops the ledger at start (exit $rc)" test "$rc" != 0
check "…saying the chain is broken" grep -q 'hash chain is broken' "$work/broken.log"
e2e_done
