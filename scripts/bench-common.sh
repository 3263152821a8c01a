# Sourced by the bench scripts: fetch the model, build, and set
#   $dlogp  the release binary      $base  the default model
#   $work   a temp dir (removed on exit)   $data  GSM8K train.jsonl from ../shared
# and `make_lora RANK`, which writes $work/lora.gguf (seeded random adapter).
"$root/scripts/fetch-model.sh"
cargo build --release --quiet
dlogp="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/dlogp"
base="gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data="$root/../shared/data/gsm8k/train.jsonl"
[ -f "$data" ] || { echo "error: $data not found (the benches read ../shared/data)" >&2; exit 1; }
make_lora() {
  "$dlogp" lora-init --base "$base" --out "$work/lora.gguf" --rank "$1" --init random --std 0.02 --seed 0 2>/dev/null
}
