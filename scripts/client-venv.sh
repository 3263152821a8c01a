#!/usr/bin/env bash
# The real HTTP clients the serve tests drive (the `openai` Python SDK), in a
# venv under the cache dir, made once: ${XDG_CACHE_HOME:-~/.cache}/dlogp/serve-clients-venv.
# A machine without Python or PyPI access leaves it absent; the client tests
# then print why and skip. Prints the venv's python on success.
set -euo pipefail
venv="${XDG_CACHE_HOME:-$HOME/.cache}/dlogp/serve-clients-venv"
if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  echo "installing the openai SDK from PyPI into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'openai>=1.40,<4'
fi
echo "$venv/bin/python"
