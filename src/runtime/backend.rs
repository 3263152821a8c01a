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
/// Initialize llama.cpp's backend for a host process that already did (the
/// plugin's shared build, which runs inside the host's own llama.cpp): the
/// same as [`backend`], but the host keeps its log callback, where
/// [`backend`] would redirect llama.cpp's logs to `tracing`. Has no effect
/// once the backend is initialized.
#[cfg(feature = "shared-llama")]
pub(crate) fn adopt_host_backend() -> Result<&'static LlamaBackend, RuntimeError> {
    let backend = BACKEND.get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()));
    backend
        .as_ref()
        .map_err(|e| RuntimeError::Backend(e.clone()))
}

pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}

static SYSTEM_INFO: OnceLock<String> = OnceLock::new();

/// llama.cpp's system info line (`CPU : SSE3 = 1 | AVX2 = 1 | ... |`): the
/// CPU features and build options of the llama.cpp this binary links.
// The one `unsafe` in the runtime: llama-cpp-2 has no wrapper for
// `llama_print_system_info`, which llama-cpp-sys-2 exposes as a raw C call.
#[allow(unsafe_code)]
pub fn system_info() -> &'static str {
    SYSTEM_INFO.get_or_init(|| {
        let _ = backend();
        // SAFETY: llama_print_system_info takes no arguments and returns a
        // NUL-terminated string in a static buffer that stays valid until the
        // next call; it is called once (under the OnceLock) and copied at once.
        unsafe {
            let ptr = llama_cpp_sys_2::llama_print_system_info();
            if ptr.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
            }
        }
    })
}

/// Whether llama.cpp was built with its llamafile GEMM (`GGML_LLAMAFILE`
/// on), which makes a token's logits depend on the batch it is decoded in:
/// then speculative decoding is not exact, and scores depend on batching.
pub fn llamafile_gemm() -> bool {
    has_llamafile(system_info())
}

/// `LLAMAFILE = 1` in a system info line.
fn has_llamafile(info: &str) -> bool {
    info.split('|').any(|f| {
        f.split_once('=')
            .is_some_and(|(k, v)| k.trim().ends_with("LLAMAFILE") && v.trim() == "1")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn llamafile_in_the_system_info() {
        assert!(super::has_llamafile(
            "CPU : SSE3 = 1 | AVX2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | "
        ));
        assert!(!super::has_llamafile(
            "CPU : SSE3 = 1 | AVX2 = 1 | REPACK = 1 | "
        ));
        assert!(!super::has_llamafile("CPU : LLAMAFILE = 0 | "));
    }

    /// The build this crate's checkout makes (.cargo/config.toml) has the
    /// llamafile GEMM off, and the line lists the CPU backend.
    #[test]
    fn this_build_has_the_llamafile_gemm_off() {
        let info = super::system_info();
        assert!(info.contains("CPU"), "{info}");
        assert!(!super::llamafile_gemm(), "{info}");
    }
}
