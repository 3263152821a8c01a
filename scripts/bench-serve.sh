#!/usr/bin/env bash
# Throughput of `dlogp serve` under concurrent clients, in one run: the same
# CLIENTS streaming chat requests (GSM8K questions, fixed seeds) against a
# server with --parallel 1 (one sequence at a time: the others queue) and
# with --parallel N. SmolLM2 + a seeded random LoRA as the RL side, default
# decoding (selective extrapolation). Prints aggregate generated tokens/s,
# latency p50/p95 and time to first token of each run, checks that both
# runs gave the same answers, and ends with `parallel/sequential = R`.
# Usage: scripts/bench-serve.sh [CLIENTS] [MAX_TOKENS] [PARALLEL]
# Defaults: 8 clients, 128 tokens, --parallel 4 (with the server's default
# draft length, 1; DRAFT=K sets it for the parallel run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
clients="${1:-8}"
max_tokens="${2:-128}"
parallel="${3:-4}"
# shellcheck source=scripts/bench-common.sh
source "$root/scripts/bench-common.sh"
make_lora 8

run() { # parallel [serve flags...] -> writes $work/answers-N.json
  local n="$1" port log pid
  shift
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log="$work/serve-$n.log"
  "$dlogp" serve --base "$base" --rl-lora "$work/lora.gguf" --port "$port" --parallel "$n" \
    --ctx-size 1024 --queue 64 "$@" >"$log" 2>&1 &
  pid=$!
  python3 - "$port" "$clients" "$max_tokens" "$data" "$work/answers-$n.json" <<'PY'
import json, sys, threading, time, urllib.request
port, clients, max_tokens, data, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
url = f"http://127.0.0.1:{port}"
for _ in range(600):
    try:
        if urllib.request.urlopen(url + "/health", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("the server did not start")
with open(data) as f:
    questions = [json.loads(l)["question"] for _, l in zip(range(clients), f)]
def ask(i, q, results):
    body = {"messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
            "seed": i, "stream": True, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.time(); first = None; text = []; usage = None
    with urllib.request.urlopen(req, timeout=3600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk["choices"]:
                piece = c["delta"].get("content") or ""
                if piece and first is None:
                    first = time.time() - t0
                text.append(piece)
    results[i] = {"latency": time.time() - t0, "ttft": first or 0.0,
                  "tokens": usage["completion_tokens"], "text": "".join(text)}
# warm-up (not timed)
ask(0, "Hi", {})
results = [None] * len(questions)
threads = [threading.Thread(target=ask, args=(i, q, results)) for i, q in enumerate(questions)]
t0 = time.time()
for t in threads: t.start()
for t in threads: t.join()
wall = time.time() - t0
assert all(r is not None for r in results), "a request failed"
json.dump({"wall": wall, "results": results}, open(out, "w"))
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run 1
run "$parallel" ${DRAFT:+--draft "$DRAFT"}
python3 - "$work/answers-1.json" "$work/answers-$parallel.json" "$parallel" "$clients" "$max_tokens" <<'PY'
import json, sys
seq, par = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
n, clients, max_tokens = sys.argv[3], sys.argv[4], sys.argv[5]
def q(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
def line(name, run):
    r = run["results"]; toks = sum(x["tokens"] for x in r)
    lat = [x["latency"] for x in r]; ttft = [x["ttft"] for x in r]
    print(f"{name:14s} {toks:5d} tokens {run['wall']:7.2f} s {toks / run['wall']:7.1f} tokens/s  "
          f"latency p50 {q(lat, .5):6.2f} s p95 {q(lat, .95):6.2f} s  first token p50 {q(ttft, .5):5.2f} s p95 {q(ttft, .95):5.2f} s")
    return toks / run["wall"]
print(f"{clients} concurrent streaming clients, up to {max_tokens} tokens each, SmolLM2-135M + LoRA, selective extrapolation")
a = line("--parallel 1", seq)
b = line(f"--parallel {n}", par)
same = all(x["text"] == y["text"] for x, y in zip(seq["results"], par["results"]))
print("answers identical across both runs:", "yes" if same else "NO")
if not same:
    sys.exit("error: --parallel changed an answer")
print(f"parallel/sequential = {b / a:.3f}")
PY
