#!/usr/bin/env python3
"""Changes one byte of a valid proof bundle at a time and checks that both verifiers refuse
every changed bundle: the independent one (verify_bundle.py, in-process) at every position
with several replacement bytes, and `tagproof verify` (a process each) at every Nth position.

    tamper.py BUNDLE.json --key VKEY --cli PATH/tagproof [--ledger-url URL] [--cli-every N]

Prints a summary; exit 0 when every change was refused and the unchanged bundle was accepted
by both, 1 otherwise.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verify_bundle  # noqa: E402


def plausible(c: int) -> int:
    """A byte of the same kind: a digit for a digit, a letter for a letter."""
    ch = chr(c)
    if ch.isdigit():
        return ord(str((int(ch) + 1) % 10))
    if "a" <= ch <= "f":
        return ord("abcdef"[("abcdef".index(ch) + 1) % 6])
    if "a" <= ch <= "z":
        return ord("a") + (c - ord("a") + 1) % 26
    if "A" <= ch <= "Z":
        return ord("A") + (c - ord("A") + 1) % 26
    return ord("x")


def replacements(c: int):
    return {plausible(c), c ^ 0x01, c ^ 0x20, ord(" "), ord("0")} - {c}


def main(argv):
    args = dict(zip(argv[2::2], argv[3::2]))
    path, key, cli = argv[1], args["--key"], args["--cli"]
    url, every = args.get("--ledger-url"), int(args.get("--cli-every", "7"))
    raw = open(path, "rb").read()
    extra = ["--ledger-url", url] if url else []

    def cli_accepts(data: bytes) -> bool:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            f.write(data)
            f.flush()
            r = subprocess.run([cli, "verify", f.name, "--key", key] + extra,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode not in (0, 1, 2):
                raise SystemExit(f"tagproof verify exited {r.returncode} (a crash?)")
            return r.returncode == 0

    if not verify_bundle.verify_bytes(raw, key, url) or not cli_accepts(raw):
        print("the unchanged bundle is not accepted by both verifiers")
        return 1
    tried = cli_tried = 0
    accepted = []
    for pos in range(len(raw)):
        for b in sorted(replacements(raw[pos])):
            mutated = raw[:pos] + bytes([b]) + raw[pos + 1:]
            tried += 1
            if verify_bundle.verify_bytes(mutated, key, url):
                accepted.append(f"python: byte {pos} {raw[pos]:#04x} -> {b:#04x}")
        if pos % every == 0:
            b = plausible(raw[pos]) if plausible(raw[pos]) != raw[pos] else raw[pos] ^ 0x01
            mutated = raw[:pos] + bytes([b]) + raw[pos + 1:]
            cli_tried += 1
            if cli_accepts(mutated):
                accepted.append(f"tagproof verify: byte {pos} {raw[pos]:#04x} -> {b:#04x}")
    print(f"{len(raw)} bytes: {tried} changed bundles for the Python verifier, "
          f"{cli_tried} for tagproof verify; {len(accepted)} accepted")
    for a in accepted[:20]:
        print("  accepted:", a)
    return 1 if accepted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
