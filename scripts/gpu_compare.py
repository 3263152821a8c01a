#!/usr/bin/env python3
"""Comparisons for scripts/gpu-checks.sh (standard library only: the GPU
machine has Python but nothing installable).

  gpu_compare.py scores CPU.jsonl DEV.jsonl MAX [MEAN]
                                                  tokens equal, |Δ| of logp_base,
                                                  logp_rl and dlogp ≤ MAX nats (mean ≤ MEAN)
  gpu_compare.py zero DEV.jsonl                   every dlogp, kl is exactly 0
  gpu_compare.py moved DEV.jsonl                  most dlogp are not 0
  gpu_compare.py same A.jsonl B.jsonl             identical generate rows
  gpu_compare.py stats A.jsonl B.jsonl            replacement ratios of two runs
  gpu_compare.py policy TRACE_A TRACE_B           same gate rate and Δlog p distribution
  gpu_compare.py near_greedy SCORED.jsonl         greedy tokens are the CPU's argmax (or a near-tie's top 3)
  gpu_compare.py probe PROBE.json                 "invariant max_abs_diff devices"
Prints one line; exit 1 on a failed check.
"""
import json
import math
import sys


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def scores(cpu, dev, tol, mean_tol=None):
    a, b = rows(cpu), rows(dev)
    if len(a) != len(b) or not a:
        print(f"FAIL {len(a)} CPU records vs {len(b)} device records")
        return 1
    worst, total, n = 0.0, 0.0, 0
    for x, y in zip(a, b):
        if (x.get("id"), x["token"]) != (y.get("id"), y["token"]):
            print(f"FAIL token differs: {x.get('id')} {x['token']} vs {y['token']}")
            return 1
        for key in ("logp_base", "logp_rl", "dlogp"):
            d = abs(x[key] - y[key])
            if d != d:
                print(f"FAIL NaN in {key}")
                return 1
            worst = max(worst, d)
            total += d
            n += 1
    mean = total / n
    ok = worst <= tol and (mean_tol is None or mean <= mean_tol)
    bound = f"max {tol:g}" + ("" if mean_tol is None else f", mean {mean_tol:g}")
    print(f"{'ok' if ok else 'FAIL'} {len(a)} tokens: max |Δ| {worst:.3e} nats, mean |Δ| {mean:.3e} (tolerance {bound})")
    return 0 if ok else 1


def zero(dev):
    r = rows(dev)
    bad = [x for x in r if x["dlogp"] != 0.0 or x["kl"] != 0.0]
    if not r or bad:
        print(f"FAIL {len(bad)} of {len(r)} tokens have dlogp or kl ≠ 0 (first: {bad[:1]})")
        return 1
    print(f"ok {len(r)} tokens: dlogp = kl = 0 exactly")
    return 0


def moved(dev):
    r = rows(dev)
    m = sum(1 for x in r if abs(x["dlogp"]) > 1e-4)
    ok = r and 2 * m > len(r)
    print(f"{'ok' if ok else 'FAIL'} {m} of {len(r)} tokens have |dlogp| > 1e-4")
    return 0 if ok else 1


def same(a, b):
    x, y = rows(a), rows(b)
    if x == y and x:
        print(f"ok {len(x)} rows identical ({sum(r['n_tokens'] for r in x)} tokens)")
        return 0
    diff = sum(1 for p, q in zip(x, y) if p != q) + abs(len(x) - len(y))
    print(f"FAIL {diff} of {max(len(x), len(y))} rows differ")
    return 1


def near_greedy(scored):
    """A device's greedy tokens, teacher-forced through the CPU build: each
    must be among the CPU's top three (an argmax flip among near-ties, the
    backends' roundings differing by tenths of a nat), and at least 90 %
    the CPU's own argmax. Garbage from a broken offload ranks far lower."""
    r = rows(scored)
    if not r:
        print("FAIL no tokens scored")
        return 1
    ranks = [x["rank"] if "rank" in x else x["rank_base"] for x in r]
    top1 = sum(1 for k in ranks if k == 0)
    worst = max(ranks)
    ok = worst <= 2 and top1 >= 0.9 * len(ranks)
    print(f"{'ok' if ok else 'FAIL'} {len(ranks)} tokens: {top1} the CPU's argmax, worst rank {worst + 1}")
    return 0 if ok else 1


def stats(a, b):
    def ratio(path):
        r = rows(path)
        tokens = sum(x["n_tokens"] for x in r)
        fired = sum(x["replacement_ratio"] * x["n_tokens"] for x in r)
        return fired / max(tokens, 1), tokens
    (ra, ta), (rb, tb) = ratio(a), ratio(b)
    print(f"replacement ratio {ra:.3f} over {ta} tokens vs {rb:.3f} over {tb} tokens")
    return 0


def policy(trace_a, trace_b):
    """Lockstep (A) and speculative (B) traces on a batch-dependent backend:
    the same gate rate (two-proportion z-test, |z| <= 3) and the same Δlog p
    distribution of the proposals (two-sample Kolmogorov-Smirnov statistic
    below its alpha = 0.001 critical value, 1.95 * sqrt((n + m) / (n m)))."""
    def load(path):
        r = rows(path)
        return [x["gate"] for x in r], [x["dlogp"] for x in r if x.get("dlogp") is not None]
    (ga, da), (gb, db) = load(trace_a), load(trace_b)
    na, nb = len(ga), len(gb)
    if min(na, nb, len(da), len(db)) == 0:
        print("empty trace")
        return 1
    pa, pb = sum(ga) / na, sum(gb) / nb
    pool = (sum(ga) + sum(gb)) / (na + nb)
    se = math.sqrt(max(pool * (1 - pool) * (1 / na + 1 / nb), 1e-300))
    z = (pa - pb) / se if pool not in (0, 1) else 0.0
    da.sort()
    db.sort()
    i = j = 0
    ks = 0.0
    while i < len(da) and j < len(db):
        x = min(da[i], db[j])
        while i < len(da) and da[i] <= x:
            i += 1
        while j < len(db) and db[j] <= x:
            j += 1
        ks = max(ks, abs(i / len(da) - j / len(db)))
    n, m = len(da), len(db)
    crit = 1.95 * math.sqrt((n + m) / (n * m))
    print(f"gate rate {pa:.3f} (n {na}) vs {pb:.3f} (n {nb}), z {z:+.2f}; "
          f"Δlog p KS {ks:.3f} (critical {crit:.3f})")
    return 0 if abs(z) <= 3 and ks <= crit else 1


def probe(path):
    with open(path, encoding="utf-8") as f:
        p = json.load(f)
    bi = p["batch_invariance"]
    offload = [d for d in p["devices"] if d["kind"] not in ("cpu", "accel")]
    names = "; ".join(f"{d['name']}: {d['description']} ({d['memory_total'] >> 20} MiB)" for d in offload)
    print(f"{str(bi['invariant']).lower()} {bi['max_abs_diff']:.3e} {len(offload)} {names or '-'}")
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "scores":
        return scores(args[0], args[1], float(args[2]), float(args[3]) if len(args) > 3 else None)
    return {"zero": zero, "moved": moved, "same": same, "stats": stats, "policy": policy, "near_greedy": near_greedy, "probe": probe}[cmd](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
