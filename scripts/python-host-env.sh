# Sourced by scripts/test-python-host.sh and scripts/bench-peer.sh: a venv
# under the cache dir with llama-cpp-python (built from source, with the same
# llama.cpp settings as dlogp's build: no llamafile GEMM, no AMX; the wheel is
# cached beside the venv) and numpy. Sets $py, the venv's python.
llama_cpp_python_version="0.3.36"  # its llama.h has llama-cpp-sys-2 0.1.161's llama_sampler_i
cache="${DLOGP_CACHE:-$HOME/.cache/dlogp}"
venv="$cache/python-host-venv"
wheels="$cache/wheels"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import llama_cpp, numpy; assert llama_cpp.__version__ == '$llama_cpp_python_version'" 2>/dev/null; then
  mkdir -p "$wheels"
  if ! ls "$wheels"/llama_cpp_python-"$llama_cpp_python_version"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $llama_cpp_python_version (llama.cpp from source; minutes)..." >&2
    CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    CXXFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    CMAKE_ARGS="-DGGML_LLAMAFILE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
    "$py" -m pip wheel --quiet --no-deps -w "$wheels" "llama-cpp-python==$llama_cpp_python_version"
  fi
  "$py" -m pip install --quiet "$wheels"/llama_cpp_python-"$llama_cpp_python_version"-*.whl
fi
