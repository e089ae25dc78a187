#!/usr/bin/env python3
"""An independent verifier of Tagproof proof bundles, written for the tests from the specs
alone (RFC 9162 §2.1.3.2 and §2.1.4.2, C2SP signed-note and tlog-checkpoint, SPEC §7), sharing
no code with the C implementation: Python's hashlib, and Ed25519 from `cryptography`.

    verify_bundle.py BUNDLE.json --key VKEY [--ledger-url URL]
        checks the bundle; exit 0 valid, 1 invalid, 2 unreadable input or usage
    verify_bundle.py consistency --size1 M --size2 N --root1 HEX --root2 HEX < PROOF.json
        checks a consistency proof ({"from", "to", "proof": [hex]} of GET /v1/log/consistency)

The ledger check knows the http ledger of SPEC §7 (GET {url}/v1/anchors/{id}) and Ethereum
JSON-RPC (the transaction, its receipt, its block, the chain id).
"""
import base64
import hashlib
import json
import re
import sys
import urllib.error
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HEX64 = re.compile(r"[0-9a-f]{64}\Z")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
EM_DASH = "\u2014 "


class Malformed(Exception):
    """The input is not a bundle at all (exit 2)."""


# --- RFC 9162 ---------------------------------------------------------------------------------

def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, leaf, proof, root) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof) -> bool:
    """RFC 9162 §2.1.4.2, step by step."""
    if size1 == 0 or size1 > size2 or any(len(p) != 32 for p in proof):
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if not proof:
        return False
    if size1 & (size1 - 1) == 0:  # a power of two: the old root starts the path
        proof = [root1] + list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


# --- signed notes -----------------------------------------------------------------------------

def parse_vkey(vkey: str):
    """<name>+<hex key id>+<base64(0x01 || public key)> -> (name, key id, public key)."""
    parts = vkey.split("+", 2)  # the name has no '+'; base64 may
    if len(parts) != 3 or not parts[0] or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise Malformed("the key is not <name>+<hex key id>+<base64 key>")
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except ValueError:
        raise Malformed("the key's base64 part is not base64")
    if len(blob) != 33 or blob[0] != 1:
        raise Malformed("the key is not an Ed25519 key")
    key_id = bytes.fromhex(parts[1])
    want = hashlib.sha256(parts[0].encode() + b"\n" + blob).digest()[:4]
    if key_id != want:
        raise Malformed("the key id does not match the name and key")
    return parts[0], key_id, blob[1:]


def verify_note(vkey: str, note: str):
    """The note's text if it carries a valid signature by vkey, else None."""
    name, key_id, pub = parse_vkey(vkey)
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        return None
    text, sigs = note[: split + 1], note[split + 2:]
    if "\n\n" in text or text.startswith("\n"):
        return None
    pk = Ed25519PublicKey.from_public_bytes(pub)
    found = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith(EM_DASH):
            return None
        who, _, sig64 = line[len(EM_DASH):].partition(" ")
        try:
            sig = base64.b64decode(sig64, validate=True)
        except ValueError:
            return None
        if base64.b64encode(sig).decode() != sig64:
            return None
        if who != name or len(sig) != 68 or sig[:4] != key_id:
            continue
        try:
            pk.verify(sig[4:], text.encode())
            found = True
        except InvalidSignature:
            pass
    return text if found else None


# --- the bundle -------------------------------------------------------------------------------

def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Malformed("a duplicate key")
    return dict(pairs)


def refuse_constant(name):
    raise Malformed("not JSON: " + name)


def is_int(v, minimum=0):
    return type(v) is int and v >= minimum


def exact(obj, required, optional=(), what="the bundle"):
    if type(obj) is not dict:
        raise Malformed(what + " must be an object")
    missing = set(required) - obj.keys()
    extra = obj.keys() - set(required) - set(optional)
    if missing or extra:
        raise Malformed(f"{what}: missing {sorted(missing)}, unknown {sorted(extra)}")


def hash32(v, what):
    if type(v) is not str or not HEX64.match(v):
        raise Malformed(what + " must be 64 lower-case hex digits")
    return bytes.fromhex(v)


def parse(raw: bytes):
    try:
        text = raw.decode("utf-8")
        b = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise Malformed(f"not JSON: {e}")
    exact(b, ["version", "tag_id", "leaf", "checkpoint", "inclusion", "anchor", "log_key"])
    if not is_int(b["version"]) or b["version"] != 1:
        raise Malformed("version must be 1")
    if type(b["tag_id"]) is not str or not UUID.match(b["tag_id"]):
        raise Malformed("tag_id must be a lower-case UUID")
    leaf, cp = b["leaf"], b["checkpoint"]
    exact(leaf, ["index", "record", "hash"], what="leaf")
    exact(cp, ["origin", "size", "root", "note"], what="checkpoint")
    if not is_int(leaf["index"]) or type(leaf["record"]) is not str:
        raise Malformed("leaf.index must be an integer, leaf.record a string")
    hash32(leaf["hash"], "leaf.hash")
    if type(cp["origin"]) is not str or not cp["origin"] or "\n" in cp["origin"]:
        raise Malformed("checkpoint.origin must be one line")
    if not is_int(cp["size"], 1) or type(cp["note"]) is not str:
        raise Malformed("checkpoint.size must be an integer >= 1, checkpoint.note a string")
    hash32(cp["root"], "checkpoint.root")
    if type(b["inclusion"]) is not list or len(b["inclusion"]) > 64:
        raise Malformed("inclusion must be a list of at most 64 hashes")
    for i, h in enumerate(b["inclusion"]):
        hash32(h, f"inclusion[{i}]")
    a = b["anchor"]
    if a is not None:
        if type(a) is not dict or a.get("ledger") not in ("http", "ethereum"):
            raise Malformed("anchor.ledger must be http or ethereum")
        eth = a["ledger"] == "ethereum"
        exact(a, ["ledger", "status"], ["tx", "block", "chain_id"] if eth else ["id"], "anchor")
        if a["status"] not in ("pending", "submitted", "confirmed", "failed"):
            raise Malformed("anchor.status is not an anchor state")
        if eth:
            if "tx" in a and (type(a["tx"]) is not str or not re.fullmatch(r"0x[0-9a-f]{64}", a["tx"])):
                raise Malformed("anchor.tx must be a transaction hash")
            for k, least in (("block", 0), ("chain_id", 1)):
                if k in a and not is_int(a[k], least):
                    raise Malformed(f"anchor.{k} must be an integer")
        elif "id" in a and (type(a["id"]) is not str or not re.fullmatch(r"[0-9A-Za-z._-]{1,128}", a["id"])):
            raise Malformed("anchor.id must be an id")
    if type(b["log_key"]) is not str or not b["log_key"]:
        raise Malformed("log_key must be a string")
    return b


def check(b, vkey: str, ledger_url=None):
    """[(name, ok, detail)] for a parsed bundle, trusting only vkey."""
    out = []
    leaf, cp = b["leaf"], b["checkpoint"]
    record = leaf["record"].encode()
    lines = leaf["record"].split("\n")
    out.append(("record", len(lines) == 7 and lines[6] == "" and lines[0] == "tagproof/tag/v1"
                and lines[1] == b["tag_id"], "a tag registration naming tag_id"))
    lh = leaf_hash(record)
    out.append(("leaf_hash", lh.hex() == leaf["hash"], "SHA-256(0x00 || record) == leaf.hash"))
    proof = [bytes.fromhex(h) for h in b["inclusion"]]
    out.append(("inclusion", verify_inclusion(leaf["index"], cp["size"], lh, proof,
                                              bytes.fromhex(cp["root"])), "RFC 9162 §2.1.3.2"))
    text = verify_note(vkey, cp["note"])
    out.append(("checkpoint_signature", text is not None, "Ed25519 signed note by the given key"))
    want = "%s\n%d\n%s\n" % (cp["origin"], cp["size"],
                             base64.b64encode(bytes.fromhex(cp["root"])).decode())
    out.append(("checkpoint_body", text == want, "the note states origin, size and root"))
    out.append(("log_key", b["log_key"] == vkey, "the bundle names the given key"))
    if ledger_url is not None:
        out.append(("ledger",) + ledger_check(b, ledger_url))
    return out


def rpc(url, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = json.loads(r.read())
    if "error" in doc:
        raise ValueError(f"{method}: {doc['error']}")
    return doc.get("result")


def ethereum_check(b, url):
    """The transaction's data is root || size (8 bytes, big-endian), its receipt's status is 1,
    in the block and on the chain the bundle names, and that block is still the chain's."""
    a, cp = b["anchor"], b["checkpoint"]
    if "tx" not in a:
        return False, "no transaction in the bundle's anchor"
    try:
        tx = rpc(url, "eth_getTransactionByHash", [a["tx"]])
        rc = rpc(url, "eth_getTransactionReceipt", [a["tx"]])
        if not tx or not rc:
            return False, "the chain has no mined transaction " + a["tx"]
        if tx.get("input", "").lower() != "0x" + cp["root"] + "%016x" % cp["size"]:
            return False, "the transaction does not carry this root and size"
        if int(rc["status"], 16) != 1:
            return False, "the transaction failed"
        bn = int(rc["blockNumber"], 16)
        if "block" in a and bn != a["block"]:
            return False, f"the transaction is in block {bn}, not {a['block']}"
        if "chain_id" in a and int(rpc(url, "eth_chainId", []), 16) != a["chain_id"]:
            return False, "the node is on another chain"
        blk = rpc(url, "eth_getBlockByNumber", [hex(bn), False])
        if not blk or blk["hash"] != rc["blockHash"]:
            return False, f"block {bn} is no longer the one that held it"
    except (urllib.error.URLError, ValueError, KeyError, TypeError, OSError) as err:
        return False, f"the chain: {err}"
    return True, f"the transaction in block {bn} carries this root and size"


def ledger_check(b, url):
    a = b["anchor"]
    if a is not None and a["ledger"] == "ethereum":
        return ethereum_check(b, url)
    if a is None or "id" not in a:
        return False, "no anchor with an id in the bundle"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v1/anchors/{a['id']}", timeout=10) as r:
            e = json.loads(r.read())
    except (urllib.error.URLError, ValueError, OSError) as err:
        return False, f"the ledger: {err}"
    cp = b["checkpoint"]
    ok = (type(e) is dict and e.get("id") == a["id"] and e.get("size") == cp["size"]
          and e.get("root") == cp["root"] and e.get("origin") == cp["origin"]
          and e.get("checkpoint") == cp["note"])
    return ok, "the ledger's entry holds this checkpoint"


def verify_bytes(raw: bytes, vkey: str, ledger_url=None) -> bool:
    """True when raw is a bundle that passes every check; False for anything else."""
    try:
        parse_vkey(vkey)
        b = parse(raw)
        # The ledger is asked only about a bundle that holds up on its own.
        return all(ok for _, ok, _ in check(b, vkey)) and (
            ledger_url is None or ledger_check(b, ledger_url)[0])
    except Malformed:
        return False


def main(argv):
    if len(argv) >= 2 and argv[1] == "consistency":
        args = dict(zip(argv[2::2], argv[3::2]))
        try:
            m, n = int(args["--size1"]), int(args["--size2"])
            r1, r2 = bytes.fromhex(args["--root1"]), bytes.fromhex(args["--root2"])
            doc = json.load(sys.stdin)
            proof = [bytes.fromhex(h) for h in doc["proof"]]
            if doc.get("from") != m or doc.get("to") != n:
                print("the proof is for other sizes")
                return 1
        except (KeyError, ValueError, TypeError) as e:
            print(f"usage or input error: {e}", file=sys.stderr)
            return 2
        ok = verify_consistency(m, n, r1, r2, proof)
        print("consistent" if ok else "NOT consistent")
        return 0 if ok else 1
    args = argv[1:]
    path, key, url = None, None, None
    while args:
        a = args.pop(0)
        if a == "--key" and args:
            key = args.pop(0)
        elif a == "--ledger-url" and args:
            url = args.pop(0)
        elif path is None:
            path = a
        else:
            path = None
            break
    if path is None or key is None:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with (sys.stdin.buffer if path == "-" else open(path, "rb")) as f:
            raw = f.read()
        parse_vkey(key)
        results = check(parse(raw), key, url)
    except (OSError, Malformed) as e:
        print(f"malformed: {e}", file=sys.stderr)
        return 2
    for name, ok, detail in results:
        print(f"{'ok' if ok else 'FAIL':5} {name:21} {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
