//! Integration tests: real llama.cpp on committed fixtures (gguf/tiny-*.gguf)
//! and on the real SmolLM2-135M-Instruct (fetched by scripts/fetch-model.sh).

// Tests print skip reasons and measurements.
#![allow(clippy::print_stdout, clippy::print_stderr, unsafe_code)]

mod cli;
#[cfg(feature = "serve")]
mod clients;
mod common;
mod compact;
mod contract;
mod corrupt;
mod decode;
mod errors;
mod eval;
#[cfg(feature = "serve")]
mod http;
mod jobs;
#[cfg(feature = "plugin")]
mod plugin;
mod probe;
mod reliability;
mod score;
#[cfg(feature = "serve")]
mod serve;
mod setup;
mod smollm2;
mod stdio;
#[cfg(feature = "train")]
mod train;
