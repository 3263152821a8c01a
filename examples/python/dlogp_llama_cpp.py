"""libdlogp inside llama-cpp-python: selective extrapolation for a `Llama`.

The host's model (the `Llama`, typically the base GGUF with the RL adapter
as `lora_path`) is the RL model; libdlogp loads the base model and decides
every token exactly as `dlogp generate` does (same decision code, same keyed
random draws). Pure ctypes: no compiled extension.

    from llama_cpp import Llama
    from dlogp_llama_cpp import DlogpSampler

    llm = Llama("base.gguf", lora_path="rl-adapter.gguf", flash_attn=False)
    with DlogpSampler("base.gguf", seed=42) as dlogp:   # extrapolate, tau -0.3, gamma 0.1
        dlogp.attach(llm)
        tokens = llm.tokenize(b"What is 7 + 5?", add_bos=True, special=True)
        out = list(dlogp.generate(llm, tokens, max_tokens=64))

`attach` makes `llm`'s sampler chain the dlogp sampler alone (or, with
`compose=True`, the dlogp sampler followed by llama-cpp-python's usual
samplers and its `dist`); `generate` feeds the prompt to the base model
before the first token; the sampler is taken out of every chain before
llama-cpp-python frees it, and `detach` / `close` (or leaving the `with`)
give `llm` its own samplers back. Keyword settings are the fields of
`struct dlogp_params` (include/dlogp.h): mode, criterion, proposer, tau,
gamma, temperature, top_p, top_k, seed, key, n_ctx, n_threads, n_gpu_layers,
compose. Mode, criterion and proposer take names ("extrapolate", "dlogp",
"base") or the header's numbers.

The plugin checks that llama-cpp-python's llama.cpp lays out the structs it
shares (llama_sampler_i, llama_sampler, llama_token_data_array) like its
own, from llama-cpp-python's own ctypes definitions, and refuses to start
otherwise.
"""

import ctypes
import os
from typing import Iterator, List, Optional, Sequence

import llama_cpp
from llama_cpp import _internals

ABI_VERSION = 3
MODES = {"base": 0, "rl": 1, "replace": 2, "extrapolate": 3, "global": 4}
CRITERIA = {"dlogp": 0, "entropy": 1, "entropy_rl": 2, "kl": 3, "kl_r": 4,
            "js": 5, "random": 6, "never": 7, "always": 8}
PROPOSERS = {"base": 0, "rl": 1}


class _Abi(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "version", "size_sampler_i", "size_sampler", "size_token_data",
        "size_token_data_array", "offset_selected", "offset_sorted", "size_token",
        "size_model_params", "size_context_params", "size_batch")]


class _Params(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_int32), ("criterion", ctypes.c_int32), ("proposer", ctypes.c_int32),
        ("tau", ctypes.c_double), ("gamma", ctypes.c_double), ("temperature", ctypes.c_double),
        ("top_p", ctypes.c_double), ("top_k", ctypes.c_uint32), ("seed", ctypes.c_uint64),
        ("key", ctypes.c_uint64), ("n_ctx", ctypes.c_uint32), ("n_threads", ctypes.c_int32),
        ("n_gpu_layers", ctypes.c_uint32), ("compose", ctypes.c_uint32), ("abi", _Abi),
    ]


class Stats(ctypes.Structure):
    _fields_ = [("n_decided", ctypes.c_uint64), ("n_fired", ctypes.c_uint64),
                ("last_dlogp", ctypes.c_double)]


def host_abi() -> _Abi:
    """llama-cpp-python's layout of the shared structs, from its ctypes."""
    arr = llama_cpp.llama_token_data_array
    return _Abi(ABI_VERSION, ctypes.sizeof(llama_cpp.llama_sampler_i),
                ctypes.sizeof(llama_cpp.llama_sampler), ctypes.sizeof(llama_cpp.llama_token_data),
                ctypes.sizeof(arr), arr.selected.offset, arr.sorted.offset,
                ctypes.sizeof(llama_cpp.llama_token),
                ctypes.sizeof(llama_cpp.llama_model_params),
                ctypes.sizeof(llama_cpp.llama_context_params),
                ctypes.sizeof(llama_cpp.llama_batch))


def _find_library() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    names = ("libdlogp.so", "libdlogp.dylib")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "..", "target"))
    for d in (os.environ.get("DLOGP_LIB_DIR"), os.path.join(target, "release")):
        for n in names:
            if d and os.path.exists(os.path.join(d, n)):
                return os.path.join(d, n)
    raise FileNotFoundError(
        "libdlogp not found: build it with `cargo build --release` or set DLOGP_LIB_DIR")


class DlogpError(RuntimeError):
    pass


class DlogpSampler:
    """One libdlogp sampler; owns it (and the base model) until `close`."""

    def __init__(self, base_model_path: str, library: Optional[str] = None, **settings):
        lib = ctypes.CDLL(library or _find_library())
        lib.dlogp_abi_version.restype = ctypes.c_uint32
        if lib.dlogp_abi_version() != ABI_VERSION:
            raise DlogpError(f"libdlogp has ABI {lib.dlogp_abi_version()}, "
                             f"this module speaks {ABI_VERSION}")
        lib.dlogp_params_default.restype = _Params
        lib.dlogp_last_error.restype = ctypes.c_char_p
        lib.dlogp_sampler_init.restype = ctypes.c_void_p
        lib.dlogp_sampler_init.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Params)]
        lib.dlogp_sampler_feed_prompt.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t]
        lib.dlogp_sampler_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(Stats)]
        lib.dlogp_sampler_error.restype = ctypes.c_char_p
        lib.dlogp_sampler_error.argtypes = [ctypes.c_void_p]
        self._lib = lib
        p = lib.dlogp_params_default()
        p.abi = host_abi()
        for name, value in settings.items():
            table = {"mode": MODES, "criterion": CRITERIA, "proposer": PROPOSERS}.get(name)
            if table is not None and isinstance(value, str):
                if value not in table:
                    raise DlogpError(f"invalid {name} {value!r} (one of {', '.join(table)})")
                value = table[value]
            if name == "compose":
                value = int(bool(value))
            if name not in dict(_Params._fields_) or name == "abi":
                raise DlogpError(f"unknown setting {name!r}")
            setattr(p, name, value)
        self.compose = bool(p.compose)
        self._ptr = lib.dlogp_sampler_init(base_model_path.encode(), ctypes.byref(p))
        if not self._ptr:
            raise DlogpError(lib.dlogp_last_error().decode())

    # -- the sampler ----------------------------------------------------
    def feed_prompt(self, tokens: Sequence[int]) -> None:
        """The base model sees the prompt (call before the first token)."""
        arr = (ctypes.c_int32 * len(tokens))(*tokens)
        if self._lib.dlogp_sampler_feed_prompt(self._ptr, arr, len(tokens)) != 0:
            raise DlogpError(self._lib.dlogp_last_error().decode())

    def stats(self) -> Stats:
        out = Stats()
        self._lib.dlogp_sampler_stats(self._ptr, ctypes.byref(out))
        return out

    def error(self) -> Optional[str]:
        e = self._lib.dlogp_sampler_error(self._ptr)
        return e.decode() if e else None

    # -- llama-cpp-python -------------------------------------------------
    def attach(self, llm: "llama_cpp.Llama") -> None:
        """Make `llm`'s sampler chains use this sampler (see the module doc)."""
        sampler_self = self
        if getattr(llm, "_dlogp_sampler", None) is not None:
            llm._dlogp_sampler.detach(llm)
        original = llm._init_sampler

        def init_sampler(*args, **kwargs) -> _internals.LlamaSampler:
            if sampler_self.compose:
                chain = original(*args, **kwargs)
                # first: dlogp reads the RL model's raw logits
                _insert_first(chain, sampler_self._ptr)
            else:
                chain = _internals.LlamaSampler()
                llama_cpp.llama_sampler_chain_add(chain.sampler, _sampler_p(sampler_self._ptr))
                chain.custom_samplers.append((0, None))  # removed before the chain is freed
            return chain

        llm._dlogp_original_init_sampler = original
        llm._dlogp_sampler = self
        llm._init_sampler = init_sampler
        self._llm = llm

    def detach(self, llm: "llama_cpp.Llama") -> None:
        """Give `llm` its own samplers back; the chain it still holds (which
        contains this sampler) is closed, taking this sampler out first."""
        if getattr(llm, "_dlogp_sampler", None) is not self:
            return
        llm._init_sampler = llm._dlogp_original_init_sampler
        del llm._dlogp_original_init_sampler
        llm._dlogp_sampler = None
        if llm._sampler is not None:
            llm._sampler.close()
            llm._sampler = None
        self._llm = None

    def generate(self, llm: "llama_cpp.Llama", tokens: Sequence[int],
                 max_tokens: int, **kwargs) -> Iterator[int]:
        """`llm.generate` with the prompt fed to the base model first; stops
        after an end-of-generation token (yielded, like `dlogp generate
        --trace` records it) or after `max_tokens` tokens."""
        self.feed_prompt(list(tokens))
        eog = llama_cpp.llama_vocab_is_eog
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        for i, t in enumerate(llm.generate(list(tokens), reset=True, **kwargs)):
            if self.error():
                raise DlogpError(self.error())
            yield t
            if eog(vocab, t) or i + 1 >= max_tokens:
                return

    def close(self) -> None:
        if getattr(self, "_llm", None) is not None:
            self.detach(self._llm)
        if getattr(self, "_ptr", None):
            llama_cpp.llama_sampler_free(_sampler_p(self._ptr))
            self._ptr = None

    def __enter__(self) -> "DlogpSampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _insert_first(chain: _internals.LlamaSampler, ptr: int) -> None:
    """Put `ptr` first in `chain` (llama.cpp chains only append): take the
    existing members out, add ours, put them back, and record ours so the
    chain does not free it."""
    c = chain.sampler
    members: List[int] = []
    while llama_cpp.llama_sampler_chain_n(c) > 0:
        members.append(llama_cpp.llama_sampler_chain_remove(c, 0))
    llama_cpp.llama_sampler_chain_add(c, _sampler_p(ptr))
    for m in members:
        llama_cpp.llama_sampler_chain_add(c, m)
    # removed in reverse order before the chain is freed: ours (index 0) last
    chain.custom_samplers = [(0, None)] + [(i + 1, s) for i, s in chain.custom_samplers]


def _sampler_p(ptr: int):
    return ctypes.cast(ctypes.c_void_p(ptr), llama_cpp.llama_sampler_p_ctypes)
