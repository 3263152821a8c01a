"""The peer of scripts/bench-peer.sh: what a user would write with
llama-cpp-python instead of dlogp. Two `Llama` objects (the base, and the base
with the adapter as `lora_path`), stepped concurrently on one thread each
(ctypes releases the GIL inside llama_decode), numpy log-softmax in float64
and nucleus sampling, and selective extrapolation exactly as METHOD.md §3:
the base proposes (T, top-p); where Δlog p ≤ τ the token is drawn again from
π_X ∝ π_RL · exp(γ Δlog p) (T, top-p).

  bench_peer.py generate BASE ADAPTER PROMPTS.jsonl MAX_TOKENS  -> "seconds tokens fired"
  bench_peer.py score BASE ADAPTER ROWS.jsonl                    -> "seconds tokens"

`score` is teacher-forced pair scoring: every response token's Δlog p,
both entropies and KL(RL‖base) over the full vocabulary, with numpy.
Times exclude model loading (as the dlogp side's include it, the ratio
favours the peer).
"""
import json
import sys
import threading
import time

import numpy as np
from llama_cpp import Llama

TEMP, TOP_P, TAU, GAMMA = 1.0, 0.7, -0.3, 0.1


def log_softmax(z):
    z = z.astype(np.float64)
    m = z.max()
    return z - m - np.log(np.exp(z - m).sum())


def sample(lp, rng):
    lp = lp / TEMP
    p = np.exp(lp - lp.max())
    p /= p.sum()
    order = np.argsort(-p)
    cum = np.cumsum(p[order])
    keep = order[: int(np.searchsorted(cum, TOP_P)) + 1]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])


def load(path, lora, logits_all=False):
    return Llama(model_path=path, lora_path=lora, n_ctx=1024, n_batch=512, n_threads=1,
                 flash_attn=False, logits_all=logits_all, verbose=False)


def both(f, a, b):
    """f(a) and f(b) at once, on two threads."""
    out = [None, None]
    t = threading.Thread(target=lambda: out.__setitem__(1, f(b)))
    t.start()
    out[0] = f(a)
    t.join()
    return out


def generate(base_path, lora, prompts_path, max_tokens):
    base, rl = load(base_path, None), load(base_path, lora)
    eos = base.token_eos()
    prompts = [json.loads(line)["prompt"] for line in open(prompts_path)]
    rng = np.random.default_rng(0)
    n_tokens = fired = 0
    t0 = time.perf_counter()
    for text in prompts:
        msgs = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        toks = base.tokenize(msgs.encode(), add_bos=True, special=True)
        for m in (base, rl):
            m.reset()
        step = toks
        for _ in range(max_tokens):
            both(lambda m: m.eval(step), base, rl)
            lb = log_softmax(np.ctypeslib.as_array(base._ctx.get_logits(), (base.n_vocab(),)))
            lr = log_softmax(np.ctypeslib.as_array(rl._ctx.get_logits(), (rl.n_vocab(),)))
            y = sample(lb, rng)
            if lr[y] - lb[y] <= TAU:
                fired += 1
                lx = lr + GAMMA * (lr - lb)
                lx = np.where(np.isfinite(lb), lx, -np.inf)
                y = sample(lx - np.log(np.exp(lx - lx.max()).sum()) - lx.max(), rng)
            if y == eos:
                break
            n_tokens += 1
            step = [y]
    print(time.perf_counter() - t0, n_tokens, fired)


def score(base_path, lora, rows_path):
    base, rl = load(base_path, None, True), load(base_path, lora, True)
    rows = [json.loads(line) for line in open(rows_path)]
    n = 0
    t0 = time.perf_counter()
    for row in rows:
        p = base.tokenize(row["prompt"].encode(), add_bos=True, special=False)
        r = base.tokenize(row["response"].encode(), add_bos=False, special=False)
        toks = p + r
        for m in (base, rl):
            m.reset()
        both(lambda m: m.eval(toks), base, rl)
        zb = np.array(base.scores[len(p) - 1: len(toks) - 1], dtype=np.float64)
        zr = np.array(rl.scores[len(p) - 1: len(toks) - 1], dtype=np.float64)
        lb = zb - zb.max(1, keepdims=True)
        lb -= np.log(np.exp(lb).sum(1, keepdims=True))
        lr = zr - zr.max(1, keepdims=True)
        lr -= np.log(np.exp(lr).sum(1, keepdims=True))
        idx = np.arange(len(r))
        dlogp = lr[idx, r] - lb[idx, r]
        pb, pr = np.exp(lb), np.exp(lr)
        h_b, h_r = -(pb * lb).sum(1), -(pr * lr).sum(1)
        kl = (pr * (lr - lb)).sum(1)
        assert np.isfinite(dlogp).all() and np.isfinite(h_b + h_r + kl).all()
        n += len(r)
    print(time.perf_counter() - t0, n)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "generate":
        generate(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        score(sys.argv[2], sys.argv[3], sys.argv[4])
