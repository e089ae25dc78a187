#!/usr/bin/env python3
"""scripts/dr/report.py — the drill's arithmetic: what the load saw (events.jsonl), merged with
what the drill did (timeline.jsonl) and found (meta.json), into dr-report.json and
dr-report.md. `report.py firsts` tells the drill whether service is back yet.

A good write is an upload sent after the fault and read `completed`. A good scan is one that
needed the store that failed: after a PostgreSQL fault, a 200 for a tag not in the cache (only
PostgreSQL can answer it); after a Redis fault, a 200 answered from the cache ("source":
"cache", only the Redis master can answer it).
"""
import argparse
import datetime
import json
import sys


def utc(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_utc(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def load_events(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by the writer's end
    except FileNotFoundError:
        pass
    return out


def good_scan(e, fault):
    if e.get("kind") != "scan" or e.get("status") != 200:
        return False
    if fault == "pg-primary":
        return e.get("cls") == "cold" and e.get("source") == "database"
    return e.get("cls") == "hot" and e.get("source") == "cache"


def firsts(events, since, fault):
    """(first good write, first good scan) at or after since, as epoch seconds or None."""
    w = s = None
    for e in events:
        if e.get("kind") == "upload_done" and e.get("upload") == "completed" and \
                e.get("posted_at", 0) >= since:
            w = e["t"] if w is None else min(w, e["t"])
        if good_scan(e, fault) and e["t"] >= since:
            done = e["t"] + e.get("ms", 0) / 1000.0
            s = done if s is None else min(s, done)
    return w, s


def failed(e):
    st = e.get("status")
    return st == 0 or (isinstance(st, int) and st >= 400)


def build(a):
    meta = json.load(open(a.meta))
    events = load_events(a.events)
    timeline = [json.loads(l) for l in open(a.timeline) if l.strip()]
    t_of = {}
    for ev in timeline:
        # Events are "name" or "name: details".
        t_of.setdefault(ev["event"].split(":")[0], parse_utc(ev["at"]))
    inject = t_of.get("fault injected")
    fault = meta["fault"]
    deviations = list(meta.get("deviations", []))

    w, s = firsts(events, inject, fault) if inject else (None, None)
    if w is not None:
        timeline.append({"at": utc(w), "event": "first good write"})
    if s is not None:
        timeline.append({"at": utc(s), "event": "first good scan"})
    timeline.sort(key=lambda ev: ev["at"])
    back = max(w, s) if w is not None and s is not None else None
    rto = round(back - inject, 3) if back is not None else None
    if rto is None:
        deviations.append("service did not come back within the drill's wait: no RTO")

    scans = [e for e in events if e.get("kind") == "scan"]
    posts = [e for e in events if e.get("kind") == "upload_post"]
    polls = [e for e in events if e.get("kind") == "upload_poll"]
    done = [e for e in events if e.get("kind") == "upload_done"]
    by_outcome = {}
    for e in done:
        by_outcome[e["upload"]] = by_outcome.get(e["upload"], 0) + 1
    errs = [e for e in scans + posts + polls if failed(e)]
    after = [e for e in errs if inject is not None and e["t"] >= inject]
    acked_total = meta["acknowledged_total"]
    lost = meta["acknowledged_lost"]

    def span(k1, k2):
        if k1 in t_of and k2 in t_of:
            return round(t_of[k2] - t_of[k1], 3)
        return None

    def since_issue(t):
        if t is None or "promotion issued" not in t_of:
            return None
        return round(t - t_of["promotion issued"], 3)

    rep = {
        "mode": meta["mode"],
        "fault": fault,
        "started_at": meta.get("started_at"),
        "rto_seconds": rto,
        "rto_breakdown_seconds": {
            "detection": span("fault injected", "detected"),
            "decision": span("detected", "promotion issued"),
            "execution": since_issue(back),
            "promotion": span("promotion issued", "promotion done"),
            "reconnection": round(back - t_of["promotion done"], 3)
            if back is not None and "promotion done" in t_of else None,
        },
        "acknowledged_total": acked_total,
        "acknowledged_lost": lost,
        "lost_tags": meta.get("lost_tags", [])[:100],
        "client_errors": len(errs),
        "client_errors_after_fault": len(after),
        "errors_window": {"first": utc(min(e["t"] for e in after)),
                          "last": utc(max(e["t"] for e in after))} if after else None,
        "requests": {
            "scans": len(scans),
            "scans_failed": sum(1 for e in scans if failed(e)),
            "scans_degraded": sum(1 for e in scans if e.get("status") == 200 and
                                  e.get("cls") == "hot" and e.get("source") != "cache"),
            "upload_posts": len(posts),
            "upload_posts_failed": sum(1 for e in posts if failed(e)),
            "upload_polls_failed": sum(1 for e in polls if failed(e)),
        },
        "uploads": {"completed": by_outcome.get("completed", 0),
                    "failed": by_outcome.get("failed", 0),
                    "unresolved": by_outcome.get("unresolved", 0)},
        "replication_at_kill": meta.get("replication_at_kill"),
        "standby_behind_seconds": meta.get("standby_behind_seconds", 0),
        "preconditions": meta.get("preconditions"),
        "services_restarted": meta.get("services_restarted"),
        "anchor_leader_after": meta.get("anchor_leader_after"),
        "timeline": timeline,
        "deviations": deviations,
        "targets": {"rto_seconds_max": 10,
                    "acknowledged_lost_max": 0 if meta["mode"] == "sync" else None},
    }
    rep["targets_met"] = rto is not None and rto <= 10 and \
        (meta["mode"] != "sync" or lost == 0)
    with open(a.out + "/dr-report.json", "w") as f:
        json.dump(rep, f, indent=2)
        f.write("\n")
    with open(a.out + "/dr-report.md", "w") as f:
        f.write(markdown(rep))


def fmt(x, unit=" s"):
    return "—" if x is None else f"{x:.2f}{unit}"


def markdown(r):
    b = r["rto_breakdown_seconds"]
    what = {"pg-primary": "the PostgreSQL primary (pg_ctl stop -m immediate)",
            "redis-master": "the Redis master (SIGKILL)"}[r["fault"]]
    who = {"pg-primary": "the drill's failover manager (probe, fence, pg_promote())",
           "redis-master": "the three Sentinels (quorum 2)"}[r["fault"]]
    L = []
    L.append(f"# DR drill: {r['fault']}, {r['mode']} mode\n")
    L.append(f"Started {r['started_at']}. The drill killed {what} under steady load of scans "
             f"and CSV uploads through the public APIs; {who} handled the failover, and no "
             f"service was restarted.\n")
    L.append("## Result\n")
    ok = "met" if r["targets_met"] else "NOT met"
    L.append(f"- **RTO: {fmt(r['rto_seconds'])}** (target ≤ 10 s) — from the kill to the first "
             f"upload and the first scan that succeeded again")
    L.append(f"- **Acknowledged tags lost: {r['acknowledged_lost']} of "
             f"{r['acknowledged_total']}** (target in sync mode: 0) — every tag of every "
             f"upload read `completed` was looked up, tag by tag, on the new primary")
    L.append(f"- Targets {ok}.")
    L.append(f"- Client errors: {r['client_errors']} ({r['client_errors_after_fault']} after the "
             f"fault" + (f", between {r['errors_window']['first']} and "
                         f"{r['errors_window']['last']}" if r['errors_window'] else "") + ")")
    u = r["uploads"]
    L.append(f"- Uploads: {u['completed']} completed, {u['failed']} failed visibly, "
             f"{u['unresolved']} with an unknown outcome at the end (still `processing`: their "
             f"transaction died with the old primary; they read `failed`/`interrupted` "
             f"seconds after their last heartbeat and can be sent again with the same "
             f"Idempotency-Key)")
    q = r["requests"]
    L.append(f"- Scans: {q['scans']} ({q['scans_failed']} failed; {q['scans_degraded']} cached "
             f"tags answered from PostgreSQL while Redis was away)")
    rep = r.get("replication_at_kill")
    if rep:
        L.append(f"- Replication at the kill: {rep.get('lag_bytes')} bytes not yet flushed by "
                 f"the standby, replay lag {rep.get('replay_lag_s')} s "
                 f"(sync_state {rep.get('sync_state')})")
    if r.get("standby_behind_seconds"):
        L.append(f"- Injected before the kill: the standby was paused for "
                 f"{r['standby_behind_seconds']} s under load (`--standby-behind`), so it was "
                 f"behind at the kill")
    if r.get("anchor_leader_after") is not None:
        L.append(f"- Anchor leader after the failover: "
                 f"{'yes' if r['anchor_leader_after'] else 'NO'}")
    L.append("")
    L.append("## RTO, step by step\n")
    L.append("| step | from → to | seconds |")
    L.append("|---|---|---|")
    L.append(f"| detection | fault injected → detected | {fmt(b['detection'], '')} |")
    L.append(f"| decision | detected → promotion issued | {fmt(b['decision'], '')} |")
    L.append(f"| execution | promotion issued → service back | {fmt(b['execution'], '')} |")
    L.append(f"| (of which promotion) | promotion issued → promotion done | "
             f"{fmt(b['promotion'], '')} |")
    L.append(f"| (of which reconnection) | promotion done → service back | "
             f"{fmt(b['reconnection'], '')} |")
    L.append("")
    L.append("## Timeline (UTC)\n")
    L.append("| at | event |")
    L.append("|---|---|")
    for ev in r["timeline"]:
        L.append(f"| {ev['at']} | {ev['event']} |")
    L.append("")
    L.append("## Deviations from the runbook\n")
    if r["deviations"]:
        for d in r["deviations"]:
            L.append(f"- {d}")
    else:
        L.append("None.")
    if r["lost_tags"]:
        L.append("\n## Lost tags (first 100)\n")
        for t in r["lost_tags"]:
            L.append(f"- `{t}`")
    L.append("")
    return "\n".join(L)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("firsts")
    f.add_argument("--events", required=True)
    f.add_argument("--since", required=True, type=float)
    f.add_argument("--fault", required=True)
    b = sub.add_parser("build")
    for k in ("events", "timeline", "meta", "out"):
        b.add_argument("--" + k, required=True)
    a = p.parse_args()
    if a.cmd == "firsts":
        w, s = firsts(load_events(a.events), a.since, a.fault)
        print(utc(w) if w else "-", utc(s) if s else "-")
        sys.exit(0 if w and s else 1)
    build(a)


if __name__ == "__main__":
    main()
