#!/usr/bin/env bash
# lm-evaluation-harness for the serve tests (tests/it/clients.rs), in a venv
# under the cache dir, made once: ${XDG_CACHE_HOME:-~/.cache}/dlogp/lm-eval-venv.
# Only its API-model path is installed (scripts/lm-eval-requirements.txt,
# pinned, --no-deps): lm_eval's full dependencies pull in torch, which the
# local-completions model never imports. A machine without Python or PyPI
# access leaves it absent; the lm-eval test then prints why and skips.
# Prints the venv's python on success.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/dlogp/lm-eval-venv"
check='import lm_eval.models.openai_completions, lm_eval.tasks, datasets, pytablewriter'
if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "installing lm-evaluation-harness (API models only) from PyPI into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --no-deps -r "$root/scripts/lm-eval-requirements.txt"
  "$venv/bin/python" -c "$check"
fi
echo "$venv/bin/python"
