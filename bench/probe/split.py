#!/usr/bin/env python3
"""Where one create's time goes, step by step, from client to provider (bench/README.md 6p).

A measuring aid, not part of the build: submit_path.patch (beside this file) adds steady_clock
stamps per task to a few places on the submit path and writes them at exit to $SEGUE_PROBE_FILE;
it also makes bench/submit_overhead.sh write the fake provider's receive time per request to
$PROBE_DIR/fake.txt. Apply it to a scratch checkout, never commit it:

    git apply bench/probe/submit_path.patch && scripts/build.sh segue && cp build/segue /tmp/segue-probe
    git checkout -- . && git clean -f gateway/util/probe.hpp
    PROBE_DIR=/tmp/p SEGUE_PROBE_FILE=/tmp/p/segue.txt SEGUE_BIN=/tmp/segue-probe \
        bench/submit_overhead.sh 15 200 8
    bench/probe/split.py /tmp/p/segue.txt /tmp/p/fake.txt

Every stamp is CLOCK_MONOTONIC (steady_clock on Linux), as are wrk's send time (written into
each prompt) and the fake's receive time, so the steps join across the three processes.
"""
import collections
import statistics
import sys

STEPS = [
    # (stamp, what happens between it and the next one)
    ("client_send", "loopback, read, route, authenticate"),
    ("flow", "read the JSON, validate, plan the admission"),
    ("write", "queue to the store writer (thread wake-up)"),
    ("unit0", "the create unit's statements"),
    ("unit1", "RELEASE"),
    ("commit0", "COMMIT (WAL frames written)"),
    ("commit1", "queue to the syncer"),
    ("sync0", "fdatasync of the WAL"),
    ("sync1", "publish durable, commit listener"),
    ("done", "completion to the IO thread (wake-up)"),
    ("resumed", "grant, upload, refusal checks"),
    ("handoff", "hand-off, metrics, log line"),
    ("flow_end", "to the engine's context, spawn"),
    ("run_claimed", "run_job: breaker, task view"),
    ("call_provider", "build the provider's request"),
    ("http_send", "HTTP client, loopback, the fake reads"),
    ("recv", ""),
]


def pct(xs, p):
    xs = sorted(xs)
    i = max(0, min(len(xs) - 1, -(-len(xs) * p // 100) - 1))
    return xs[i]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    stamps = collections.defaultdict(dict)
    for line in open(sys.argv[1]):
        what, key, ns = line.split()
        stamps[key][what] = int(ns)
    received = {}
    for line in open(sys.argv[2]):
        tag, us = line.split()
        received[int(tag)] = int(us) * 1000
    rows = []
    for v in stamps.values():
        sent = v.get("client_send")
        if sent is not None and sent // 1000 in received:
            v["recv"] = received[sent // 1000]
            rows.append(v)
    print(f"tasks joined: {len(rows)} of {len(stamps)} (the rest: warm-up and probes)")
    print(f"{'step (to the next stamp)':58s} {'p50 us':>8s} {'mean us':>8s} {'p90 us':>8s}")
    names = [s for s, _ in STEPS]
    for (a, what), b in zip(STEPS, names[1:]):
        xs = [(r[b] - r[a]) / 1000 for r in rows if a in r and b in r]
        if xs:
            print(f"{a + ' -> ' + b + ': ' + what:58.58s} {pct(xs, 50):8.1f} "
                  f"{statistics.mean(xs):8.1f} {pct(xs, 90):8.1f}")
    for a, b in [("client_send", "recv"), ("done", "recv"), ("client_send", "sync0"),
                 ("sync0", "sync1")]:
        xs = [(r[b] - r[a]) / 1000 for r in rows if a in r and b in r]
        if not xs:
            continue
        print(f"{'total ' + a + ' -> ' + b:58s} {pct(xs, 50):8.1f} {statistics.mean(xs):8.1f} "
              f"{pct(xs, 90):8.1f}")


if __name__ == "__main__":
    main()
