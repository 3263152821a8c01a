"""llama-cpp-python as a libdlogp host: its generations must equal
`dlogp generate`'s, token for token, on the SmolLM2 pair (base + the
committed RL adapter), for several seeds; and the composable mode at top-k 1
(the dlogp sampler first in llama-cpp-python's own chain, its `dist` drawing)
must equal `dlogp generate --top-k 1`. Run by scripts/test-python-host.sh.
usage: host_equals_generate.py DLOGP_BINARY BASE.gguf ADAPTER.gguf WORKDIR
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python"))
from dlogp_llama_cpp import DlogpSampler  # noqa: E402
from llama_cpp import Llama  # noqa: E402

dlogp, base, adapter, work = sys.argv[1:5]
PROMPT = "<|im_start|>user\nWhat is 17 + 25? Answer with just the number.<|im_end|>\n<|im_start|>assistant\n"
N = 40
TAU = "-0.1"  # fires now and then on the committed adapter


def reference(seed: int, extra: list) -> list:
    trace = os.path.join(work, f"trace-{seed}-{len(extra)}.jsonl")
    subprocess.run(
        [dlogp, "generate", "--base", base, "--rl-lora", adapter, "--raw", "--seed", str(seed),
         "--tau", TAU, "--max-tokens", str(N), "--ctx-size", "256", "--threads", "2",
         "--quiet", "-o", os.path.join(work, "rows.jsonl"), "--trace", trace, *extra, PROMPT],
        check=True)
    rows = [json.loads(line) for line in open(trace)]
    return rows


llm = Llama(model_path=base, lora_path=adapter, n_ctx=256, n_batch=512, n_threads=2,
            flash_attn=False, verbose=False)
tokens = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
fired_total = 0
failures = []
for seed in (1, 2, 3):
    rows = reference(seed, [])
    want = [r["chosen"] for r in rows]
    fired = sum(1 for r in rows if r["gate"])
    with DlogpSampler(base, seed=seed, tau=float(TAU), n_ctx=256, n_threads=1) as s:
        s.attach(llm)
        got = list(s.generate(llm, tokens, max_tokens=N))
        stats = s.stats()
    ok = got == want
    print(f"seed {seed}: {len(got)} tokens, gate fired {fired} (plugin {stats.n_fired}): "
          f"{'equal' if ok else 'DIFFERENT'}")
    if not ok:
        failures.append(f"seed {seed}: host {got} vs generate {want}")
    fired_total += fired

# composable: llama-cpp-python's own chain (top-k 1 there too) after dlogp
rows = reference(7, ["--top-k", "1"])
want = [r["chosen"] for r in rows]
fired_k1 = sum(1 for r in rows if r["gate"])
with DlogpSampler(base, seed=7, tau=float(TAU), top_k=1, compose=True, n_ctx=256,
                  n_threads=1) as s:
    s.attach(llm)
    got = list(s.generate(llm, tokens, max_tokens=N, top_k=1, top_p=1.0, min_p=0.0, temp=1.0))
ok = got == want
print(f"compose, top-k 1: {len(got)} tokens, gate fired {fired_k1}: {'equal' if ok else 'DIFFERENT'}")
if not ok:
    failures.append(f"compose: host {got} vs generate {want}")

if fired_total == 0:
    failures.append("the gate never fired: the check would not see a wrong re-sample")
if failures:
    print("FAILED\n" + "\n".join(failures))
    sys.exit(1)
print("ok")
