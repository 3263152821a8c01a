#!/usr/bin/env bash
# The GPU test set: a GPU build of dlogp (DEV) against the CPU build (CPU) on
# the committed fixtures (and SmolLM2 with its committed adapter when the
# model is here). Run by scripts/test-gpu.sh (lavapipe, this machine) and
# scripts/device-check.sh (a lent GPU machine); runnable alone:
#
#   scripts/gpu-checks.sh CPU_BIN DEV_BIN [TOLERANCE_NATS]
#
# From the dlogp checkout (or a bundle with its gguf/, tests/data/, scripts/).
# Prints one line per check and a summary; exits 1 if any check failed, 0
# with SKIPPED printed when the GPU build sees no GPU device (set
# DLOGP_GPU_REQUIRED=1 to make that a failure).
set -uo pipefail
cpu="${1:?usage: gpu-checks.sh CPU_BIN DEV_BIN [TOLERANCE_NATS]}"
dev="${2:?usage: gpu-checks.sh CPU_BIN DEV_BIN [TOLERANCE_NATS]}"
# About 5x the largest |Δ| measured on lavapipe (0.0103 nats on the tiny
# fixtures; README, "GPU builds"); tokens must be identical.
tol="${3:-${DLOGP_GPU_TOLERANCE:-0.05}}"
# SmolLM2 Q4_1: the CPU's quantized dot products round the activations to
# 8 bits (q4_1 x q8_1), the Vulkan kernels do not, so single tokens move by
# tenths of a nat: a bound on the mean |Δ| as well (max, mean; measured:
# README, "GPU builds").
qtol="${DLOGP_GPU_TOLERANCE_Q4:-1.5 0.15}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmp=(python3 "$here/gpu_compare.py")
threads="${DLOGP_THREADS:-$(nproc)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pass=0 fail=0 skip=0
failed=()
check() { # NAME, then a command printing one line; its status is the verdict
  local name="$1" line rc
  shift
  line="$("$@" 2>"$work/err")"
  rc=$?
  if [ $rc -eq 0 ]; then
    pass=$((pass + 1))
    printf 'PASS  %-34s %s\n' "$name" "$line"
  else
    fail=$((fail + 1))
    failed+=("$name")
    printf 'FAIL  %-34s %s\n' "$name" "$line"
    tail -5 "$work/err" | sed 's/^/        /'
  fi
}
note() { printf 'NOTE  %-34s %s\n' "$1" "$2"; }
skipped() { skip=$((skip + 1)); printf 'SKIP  %-34s %s\n' "$1" "$2"; }

for b in "$cpu" "$dev"; do
  [ -x "$b" ] || { echo "error: $b is not an executable dlogp binary" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "error: python3 is needed for the comparisons" >&2; exit 2; }

tiny=gguf/tiny-llama.gguf tiny_b=gguf/tiny-llama-b.gguf
zero=gguf/tiny-lora-zero.gguf random=gguf/tiny-lora-random.gguf
smol=gguf/SmolLM2-135M-Instruct.Q4_1.gguf smol_lora=gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf
if [ "${DLOGP_GPU_SMOLLM2:-1}" = 0 ]; then
  skipped "SmolLM2 checks" "DLOGP_GPU_SMOLLM2=0 (tiny fixtures only)"
  smol=/nonexistent/SmolLM2.gguf
fi
cat > "$work/tiny.jsonl" <<'ROWS'
{"id": "a", "prompt": "the answer is", "response": " 1 + 2 = 3 and the answer is 3"}
{"id": "b", "prompt": "e t e", "response": "a tea at the eat"}
{"id": "c", "prompt": "what is 2 + 2", "response": "the answer is 4, and 4 + 4 = 8"}
ROWS
# the tiny fixtures have 2 layers, SmolLM2 30: "partial" offloads about half
run_dev() { local c="$1"; shift; "$dev" "$c" -t "$threads" "$@"; }
run_cpu() { local c="$1"; shift; "$cpu" "$c" -t "$threads" "$@"; }

# 1. The device, and what the probe says about batching.
if ! run_dev probe --base "$tiny" --rl "$tiny_b" >"$work/probe.json" 2>"$work/probe.err"; then
  echo "FAIL  probe: the GPU build could not start:"; tail -5 "$work/probe.err"
  exit 1
fi
read -r inv diff n_dev names < <("${cmp[@]}" probe "$work/probe.json")
if [ "$n_dev" = 0 ]; then
  echo "SKIPPED: the GPU build sees no GPU device (llama.cpp lists only the CPU); nothing was checked"
  echo "hint: lavapipe (a CPU Vulkan driver) is used only with GGML_VK_VISIBLE_DEVICES=0; scripts/test-gpu.sh sets it"
  [ "${DLOGP_GPU_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
fi
note "device" "$names"
cpu_invariant() {
  if [ -f "$smol" ]; then
    run_cpu probe --base "$smol" --rl-lora "$smol_lora" >"$work/cpu-probe.json" || return 1
  else
    run_cpu probe --base "$tiny" --rl "$tiny_b" >"$work/cpu-probe.json" || return 1
  fi
  local i d
  read -r i d _ < <("${cmp[@]}" probe "$work/cpu-probe.json")
  echo "invariant $i, max |Δ| $d"
  [ "$i" = true ]
}
check "CPU build is batch-invariant" cpu_invariant

pairs=("tiny two-file|--base $tiny --rl $tiny_b|2|$tol"
  "tiny LoRA|--base $tiny --rl-lora $random|2|$tol")
if [ -f "$smol" ]; then
  pairs+=("SmolLM2 + LoRA|--base $smol --rl-lora $smol_lora|30|$qtol")
elif [ "${DLOGP_GPU_SMOLLM2:-1}" != 0 ]; then
  skipped "SmolLM2 checks" "$smol is not here (scripts/fetch-model.sh fetches it)"
fi
data_for() { case "$1" in SmolLM2*) echo tests/data/score-rows.jsonl ;; *) echo "$work/tiny.jsonl" ;; esac; }

dev_score() { # PAIR_ARGS NGL DATA "MAX [MEAN]": the device's scores against $work/cpu.jsonl
  # shellcheck disable=SC2086
  run_dev score $1 --gpu-layers "$2" --input "$3" -o "$work/dev.jsonl" -q &&
    "${cmp[@]}" scores "$work/cpu.jsonl" "$work/dev.jsonl" $4
}
# 2. Scores: each pair at -ngl 0, about half the layers and all of them,
#    against the CPU build (same tokens; log-probs within the tolerance).
for p in "${pairs[@]}"; do
  IFS='|' read -r label args layers bound <<<"$p"
  data="$(data_for "$label")"
  # shellcheck disable=SC2086
  run_cpu score $args --input "$data" -o "$work/cpu.jsonl" -q 2>"$work/err" || { check "score $label (CPU)" false; continue; }
  for ngl in 0 $((layers / 2)) 999; do
    check "score $label -ngl $ngl" dev_score "$args" "$ngl" "$data" "$bound"
  done
done

# 3. A zero adapter on the device changes nothing, bit for bit; a random one
#    moves most tokens (so the adapter is applied there at all).
lora_on_device() { # ADAPTER VERDICT
  run_dev score --base "$tiny" --rl-lora "$1" --gpu-layers 999 --input "$work/tiny.jsonl" -o "$work/l.jsonl" -q &&
    "${cmp[@]}" "$2" "$work/l.jsonl"
}
check "zero LoRA on device: Δlog p = 0" lora_on_device "$zero" zero
check "random LoRA on device moves Δlog p" lora_on_device "$random" moved

# 4. Memory of the pair on the device (llama.cpp's own buffer report).
gen_pair="--base $tiny --rl-lora $random" gen_data="$work/tiny.jsonl"
if [ -f "$smol" ]; then
  gen_pair="--base $smol --rl-lora $smol_lora" gen_data=tests/data/score-rows.jsonl
fi
# shellcheck disable=SC2086
run_dev score -vv $gen_pair --gpu-layers 999 --input "$gen_data" -o /dev/null -q 2>"$work/vv.log" || true
mem="$(grep -oE '(Vulkan|CUDA|Metal)[0-9]* (model|KV|compute) buffer size = +[0-9.]+ MiB' "$work/vv.log" |
  awk '{k=$2; v=$(NF-1); s[k]+=v} END {for (k in s) printf "%s %.1f MiB; ", k, s[k]}')"
note "device memory (pair, -ngl 999)" "${mem:-not reported in the llama.cpp log}"

# 5. Generation: greedy base-model tokens at each offload equal the CPU
#    build's; then the speculative-decoding policy.
g_args="--mode base --top-k 1 --max-tokens 32 --seed 1"
[ -f "$smol" ] && g_base="$smol" || g_base="$tiny"
# shellcheck disable=SC2086
run_cpu generate --base "$g_base" $g_args -o "$work/g-cpu.jsonl" -q "What is 17 + 25?" 2>"$work/err"
g_layers=2; [ -f "$smol" ] && g_layers=30
dev_greedy() {
  # shellcheck disable=SC2086
  run_dev generate --base "$g_base" $g_args --gpu-layers "$1" -o "$work/g.jsonl" -q "What is 17 + 25?" || return 1
  if [ "$g_base" = "$tiny" ] || "${cmp[@]}" same "$work/g-cpu.jsonl" "$work/g.jsonl" >/dev/null; then
    "${cmp[@]}" same "$work/g-cpu.jsonl" "$work/g.jsonl"
    return
  fi
  # SmolLM2 Q4_1: the backends round differently (tenths of a nat), so an
  # argmax may flip where the top candidates are that close; teacher-force
  # the device's tokens through the CPU build instead (gpu_compare.py
  # near_greedy: each among the CPU's top three, 90 % its argmax)
  python3 -c 'import json, sys; r = json.loads(open(sys.argv[1]).readline()); print(json.dumps({"id": "greedy", "prompt": sys.argv[2], "response": r["text"]}))' \
    "$work/g.jsonl" "What is 17 + 25?" >"$work/g-rows.jsonl" &&
    run_cpu score --base "$g_base" --input "$work/g-rows.jsonl" -o "$work/g-score.jsonl" -q &&
    "${cmp[@]}" near_greedy "$work/g-score.jsonl"
}
for ngl in 0 $((g_layers / 2)) 999; do
  check "generate greedy -ngl $ngl = CPU" dev_greedy "$ngl"
done

# Speculative (--draft 4) against lockstep (--draft 1) on the device: equal
# where the probe found the backend batch-invariant; otherwise the promise is
# the same distribution, and the two runs' replacement ratios are printed.
read -r inv diff _ < <(run_dev probe $gen_pair --gpu-layers 999 2>/dev/null | tee "$work/probe-pair.json" | "${cmp[@]}" probe /dev/stdin)
note "batch-invariance probe (device)" "invariant $inv, max |Δ| $diff in the logits (one token alone vs batches of 5, 9, all)"
s_args="--max-tokens 32 --seed 3 --samples 4 --tau -0.1"
# shellcheck disable=SC2086
run_dev generate $gen_pair $s_args --draft 1 --gpu-layers 999 --trace "$work/lock-trace.jsonl" -o "$work/lock.jsonl" -q "What is 7 + 5?" 2>"$work/err" &&
  run_dev generate $gen_pair $s_args --draft 4 --gpu-layers 999 --trace "$work/spec-trace.jsonl" -o "$work/spec.jsonl" -q "What is 7 + 5?" 2>"$work/spec.err"
if [ "$inv" = true ]; then
  check "speculative = lockstep (exact)" "${cmp[@]}" same "$work/lock.jsonl" "$work/spec.jsonl"
else
  # not token for token: the backend's logits depend on the batch, so the
  # promise is the same distribution (gate rate, Δlog p of the proposals)
  note "speculative vs lockstep" "not token for token (max |Δ| $diff in the logits); $("${cmp[@]}" stats "$work/lock.jsonl" "$work/spec.jsonl")"
  check "speculative ~ lockstep (distribution)" "${cmp[@]}" policy "$work/lock-trace.jsonl" "$work/spec-trace.jsonl"
  check "generate warns of the policy" grep -m1 -o 'depend on the batch[^:]*' "$work/spec.err"
fi

policy=same-distribution
[ "$inv" = true ] && policy=exact
echo "summary: $pass passed, $fail failed, $skip skipped (tolerance $tol nats, SmolLM2 Q4_1: max/mean $qtol; device: $names; speculative decoding: $policy)"
[ $fail -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
