#!/usr/bin/env bash
# `tagproof merkle`, as other tools script it (SPEC §7): standard input and output, exit codes,
# the transparency-dev/merkle 8-leaf vectors, and strict verification.
. "$(dirname "$0")/lib.sh"
t="$bin/tagproof"
leaves=$work/leaves
printf '\n00\n10\n2021\n3031\n40414243\n5051525354555657\n606162636465666768696a6b6c6d6e6f\n' >"$leaves"
root8=5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328
root6=76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef
leaf5=4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658

check "root of the 8 vector leaves" test "$("$t" merkle root <"$leaves")" = "$root8"
check "root of the empty input is SHA-256 of nothing" \
  test "$("$t" merkle root </dev/null)" = e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
check "root of the first 3 leaves" \
  test "$(head -3 "$leaves" | "$t" merkle root)" = aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77
"$t" merkle inclusion 5 <"$leaves" >"$work/incl"
check "inclusion proof of leaf 5 in 8 is the published one" diff "$work/incl" - <<'P'
bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b
ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0
d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7
P
"$t" merkle consistency 6 <"$leaves" >"$work/cons"
check "consistency proof 6 -> 8 is the published one" diff "$work/cons" - <<'P'
0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a
ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0
d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7
P

vi() { "$t" merkle verify-inclusion "$@"; }
vc() { "$t" merkle verify-consistency "$@"; }
rc() { "$@" && echo 0 || echo $?; }
check "verify-inclusion: the proof holds (exit 0)" \
  test "$(rc vi --index 5 --size 8 --leaf-hash $leaf5 --root $root8 <"$work/incl")" = 0
check "verify-inclusion: another index fails (exit 1)" \
  test "$(rc vi --index 4 --size 8 --leaf-hash $leaf5 --root $root8 <"$work/incl")" = 1
check "verify-inclusion: an index outside the tree fails" \
  test "$(rc vi --index 8 --size 8 --leaf-hash $leaf5 --root $root8 <"$work/incl")" = 1
check "verify-inclusion: a proof one hash short fails" \
  test "$(head -2 "$work/incl" | rc vi --index 5 --size 8 --leaf-hash $leaf5 --root $root8)" = 1
check "verify-inclusion: a proof one hash long fails" \
  test "$( (cat "$work/incl"; head -1 "$work/incl") | rc vi --index 5 --size 8 --leaf-hash $leaf5 --root $root8)" = 1
check "verify-inclusion: a 31-byte hash in the proof fails" \
  test "$( (head -2 "$work/incl"; sed -n 3p "$work/incl" | cut -c3-) | rc vi --index 5 --size 8 --leaf-hash $leaf5 --root $root8)" = 1
check "verify-inclusion: a 33-byte leaf hash fails" \
  test "$(rc vi --index 5 --size 8 --leaf-hash ${leaf5}00 --root $root8 <"$work/incl")" = 1
check "verify-inclusion: a missing option is a usage error (exit 2)" \
  test "$(rc vi --index 5 --size 8 --root $root8 <"$work/incl" 2>/dev/null)" = 2
check "verify-inclusion: a non-hex proof line is an input error (exit 2)" \
  test "$(echo zz | rc vi --index 0 --size 2 --leaf-hash $leaf5 --root $root8 2>/dev/null)" = 2
check "verify-consistency: the proof holds" \
  test "$(rc vc --size1 6 --size2 8 --root1 $root6 --root2 $root8 <"$work/cons")" = 0
check "verify-consistency: swapped roots fail" \
  test "$(rc vc --size1 6 --size2 8 --root1 $root8 --root2 $root6 <"$work/cons")" = 1
check "verify-consistency: an old size of 0 fails" \
  test "$(rc vc --size1 0 --size2 8 --root1 $root6 --root2 $root8 </dev/null)" = 1
check "verify-consistency: an old size above the new one fails" \
  test "$(rc vc --size1 9 --size2 8 --root1 $root6 --root2 $root8 <"$work/cons")" = 1
check "verify-consistency: a truncated proof fails" \
  test "$(head -2 "$work/cons" | rc vc --size1 6 --size2 8 --root1 $root6 --root2 $root8)" = 1
check "inclusion INDEX outside the input is an error (exit 2)" \
  test "$(rc "$t" merkle inclusion 8 <"$leaves" 2>/dev/null)" = 2
check "a non-hex leaf line is an input error (exit 2)" \
  test "$(echo 0g | rc "$t" merkle root 2>/dev/null)" = 2
e2e_done
