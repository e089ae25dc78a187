#!/usr/bin/env python3
"""scripts/dr/load.py — the steady load of a drill, through the public APIs only.

Scans: one loop alternates a "cold" tag (registered, not in the Redis cache: only PostgreSQL
can answer it) and a "hot" tag (cached: answered from Redis while Redis works). Uploads: a few
loops each register small CSV files of new tags with an Idempotency-Key and read the upload
until it is `completed`; only then are its tags acknowledged (appended to acked.txt). An upload
whose outcome is not known after a few seconds is set aside and read again at the end.

Every request is one line of OUT/events.jsonl; the drill's report is built from it. Runs until
the file named by --stop exists.
"""
import argparse
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

UA = "Mozilla/5.0 (X11; Linux x86_64) tagproof-dr-drill"


class Load:
    def __init__(self, a):
        self.a = a
        self.lock = threading.Lock()
        self.events = open(os.path.join(a.out, "events.jsonl"), "a", buffering=1)
        self.acked = open(os.path.join(a.out, "acked.txt"), "a", buffering=1)
        self.pending = []  # uploads whose outcome is unknown yet: (id, key, posted_at, tags)
        with open(a.key_file) as f:
            self.key = f.read().strip()
        with open(a.cold) as f:
            self.cold = [l.strip() for l in f if l.strip()]
        with open(a.hot) as f:
            self.hot = [l.strip() for l in f if l.strip()]

    def stopping(self):
        return os.path.exists(self.a.stop)

    def emit(self, **ev):
        ev.setdefault("t", time.time())
        with self.lock:
            self.events.write(json.dumps(ev) + "\n")

    def request(self, method, url, body=None, headers=None, timeout=3.0):
        """(status, parsed JSON or None); status 0 when no HTTP answer came."""
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        req.add_header("User-Agent", UA)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            data = e.read()
            status = e.code
        except Exception:  # refused, reset, timed out: the client saw an error
            return 0, None
        try:
            return status, json.loads(data)
        except ValueError:
            return status, None

    # --- scans ----------------------------------------------------------------------------
    def scans(self):
        ci = hi = 0
        while not self.stopping():
            for cls in ("cold", "hot"):
                if cls == "cold":
                    if ci >= len(self.cold):
                        continue  # the pool is used up: hot scans only
                    tag = self.cold[ci]
                    ci += 1
                else:
                    tag = self.hot[hi % len(self.hot)]
                    hi += 1
                t0 = time.time()
                status, body = self.request("GET", f"{self.a.scan_url}/v1/scan/{tag}",
                                            timeout=self.a.timeout)
                source = body.get("source") if isinstance(body, dict) else None
                self.emit(t=t0, kind="scan", cls=cls, tag=tag, status=status, source=source,
                          ms=round((time.time() - t0) * 1000, 1))
                if cls == "cold" and status != 200:
                    ci -= 1  # a cold tag stays cold until PostgreSQL answered it: try it again
            time.sleep(self.a.scan_pause)

    # --- uploads --------------------------------------------------------------------------
    def poll(self, upload_id, deadline):
        """The upload's final status, or None when still unknown at the deadline."""
        while time.time() < deadline:
            t0 = time.time()
            status, body = self.request("GET", f"{self.a.factory_url}/v1/uploads/{upload_id}",
                                        headers={"X-Api-Key": self.key}, timeout=self.a.timeout)
            st = body.get("status") if status == 200 and isinstance(body, dict) else None
            self.emit(t=t0, kind="upload_poll", id=upload_id, status=status, upload=st)
            if st in ("completed", "failed"):
                return st, body
            time.sleep(0.1)
        return None, None

    def finish(self, upload_id, key, posted_at, tags, st, body):
        now = time.time()
        if st == "completed":
            with self.lock:
                self.acked.write("".join(t + "\n" for t in tags))
        self.emit(t=now, kind="upload_done", id=upload_id, key=key, posted_at=posted_at,
                  upload=st, rows=len(tags),
                  errors=(body or {}).get("errors") if st == "failed" else None)

    def uploads(self, n):
        while not self.stopping():
            tags = [str(uuid.uuid4()) for _ in range(self.a.upload_tags)]
            body = ("tag_id\n" + "\n".join(tags) + "\n").encode()
            key = f"dr-{n}-{uuid.uuid4()}"
            # The same key and body again after an error: the retry of an upload whose answer
            # was lost either replays the earlier upload or starts it anew, never twice.
            while not self.stopping():
                t0 = time.time()
                status, res = self.request(
                    "POST", f"{self.a.factory_url}/v1/batches/{self.a.batch}/tags", body=body,
                    headers={"X-Api-Key": self.key, "Content-Type": "text/csv",
                             "Idempotency-Key": key}, timeout=self.a.timeout)
                self.emit(t=t0, kind="upload_post", key=key, status=status,
                          upload=res.get("status") if isinstance(res, dict) else None)
                if status == 202 and isinstance(res, dict) and "id" in res:
                    break
                time.sleep(0.2)
            else:
                return
            upload_id = res["id"]
            st, final = (res["status"], res) if res["status"] in ("completed", "failed") else \
                self.poll(upload_id, time.time() + self.a.poll_s)
            if st is None:
                with self.lock:
                    self.pending.append((upload_id, key, t0, tags))
            else:
                self.finish(upload_id, key, t0, tags, st, final)
            time.sleep(self.a.upload_pause)

    def settle(self):
        """The uploads set aside, read once more now that the drill is over."""
        for upload_id, key, posted_at, tags in self.pending:
            st, body = self.poll(upload_id, time.time() + self.a.settle_s)
            self.finish(upload_id, key, posted_at, tags, st or "unresolved", body)

    def run(self):
        threads = [threading.Thread(target=self.scans)]
        threads += [threading.Thread(target=self.uploads, args=(i,))
                    for i in range(self.a.uploaders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.settle()
        self.emit(kind="load_stopped")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scan-url", required=True)
    p.add_argument("--factory-url", required=True)
    p.add_argument("--key-file", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--cold", required=True)
    p.add_argument("--hot", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--uploaders", type=int, default=2)
    p.add_argument("--upload-tags", type=int, default=20)
    p.add_argument("--upload-pause", type=float, default=0.2)
    p.add_argument("--scan-pause", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--poll-s", type=float, default=4.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    Load(p.parse_args()).run()


if __name__ == "__main__":
    main()
