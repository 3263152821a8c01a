//! The process-wide llama.cpp backend and its log routing.

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

use super::RuntimeError;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The llama.cpp backend, initialised once per process.
///
/// llama.cpp's own log is routed to `tracing` under the target `llama-cpp-2`
/// (the CLI shows its warnings and errors and hides the chatter), never to
/// stderr directly and never voided: its error messages explain failed loads.
pub fn backend() -> Result<&'static LlamaBackend, RuntimeError> {
    let backend = BACKEND.get_or_init(|| {
        send_logs_to_tracing(LogOptions::default());
        LlamaBackend::init().map_err(|e| e.to_string())
    });
    backend
        .as_ref()
        .map_err(|e| RuntimeError::Backend(e.clone()))
}

/// The number of threads to use by default: the machine's physical cores.
///
/// llama.cpp's own default (4) oversubscribes small machines and is ~3x
/// slower on two cores.
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}
