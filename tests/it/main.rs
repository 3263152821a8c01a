//! Integration tests: real llama.cpp on committed fixtures (gguf/tiny-*.gguf)
//! and on the real SmolLM2-135M-Instruct (fetched by scripts/fetch-model.sh).

mod common;
mod compact;
mod decode;
mod errors;
mod eval;
mod http;
mod jobs;
mod plugin;
mod reliability;
mod score;
mod serve;
mod setup;
mod smollm2;
mod train;
