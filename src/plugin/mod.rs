//! libdlogp: selective replace / extrapolation as a llama.cpp sampler, for C
//! and C++ programs that embed llama.cpp (header: `include/dlogp.h`).
//!
//! The host's own model is the RL model. [`dlogp_sampler_init`] loads the
//! base model and owns a context for it; the host feeds the prompt to the
//! plugin with [`dlogp_sampler_feed_prompt`] (besides decoding it itself),
//! then samples with `llama_sampler_sample` as usual. At every position the
//! sampler reads the host's raw logits (π_RL), its own base logits (π_base),
//! makes the decision of [`crate::decode::step`] with the same counter-based
//! random keys as `dlogp generate`, and, when the host accepts the token,
//! advances the base context with it. So a host generates exactly the tokens
//! `dlogp generate` does with the same settings and seed.
//!
//! Built against llama.cpp as vendored by `llama-cpp-sys-2 = 0.1.161` (its
//! `llama_sampler_i` has 12 fields); the host's layout of the structs they
//! share is checked at init ([`dlogp_abi`]). The standalone build carries its
//! own llama.cpp; the `shared-llama` build links llama.cpp's shared libraries,
//! so a host linked to the same `libllama` can hand it its own base model
//! ([`dlogp_sampler_init_shared`]: one weight copy for a base + LoRA pair).
//!
//! Every exported function checks its pointers and catches panics; errors are
//! reported through return values and [`dlogp_last_error`].

// The C ABI: `#[no_mangle]` exports and raw pointers from the host.
#![allow(unsafe_code)]

mod base;
mod ffi;

pub use ffi::*;
