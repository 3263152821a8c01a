//! The exported C functions and the `llama_sampler_i` callbacks. Each goes
//! through [`boundary`], which catches panics, and checks its pointers.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use llama_cpp_sys_2 as sys;

use super::base::BaseContext;
use crate::decode::{defaults, step, ConfigPatch, DecodeConfig, Mode, Proposer};
use crate::runtime::{default_threads, ContextOptions, LoadOptions, Token};
use crate::sampler::{log_softmax, Criterion, Pair};

/// `dlogp_params.mode`: the base model alone.
pub const DLOGP_MODE_BASE: i32 = 0;
/// `dlogp_params.mode`: the RL (host) model alone.
pub const DLOGP_MODE_RL: i32 = 1;
/// `dlogp_params.mode`: the proposer samples; where the gate fires, re-sample from π_RL.
pub const DLOGP_MODE_REPLACE: i32 = 2;
/// `dlogp_params.mode`: where the gate fires, re-sample from π_X ∝ π_RL · exp(γ Δlog p).
pub const DLOGP_MODE_EXTRAPOLATE: i32 = 3;
/// `dlogp_params.mode`: π_X at every token.
pub const DLOGP_MODE_GLOBAL: i32 = 4;

/// `dlogp_params.criterion`: fires when Δlog p of the proposal ≤ τ.
pub const DLOGP_CRITERION_DLOGP: i32 = 0;
/// `dlogp_params.criterion`: base entropy ≥ τ.
pub const DLOGP_CRITERION_ENTROPY: i32 = 1;
/// `dlogp_params.criterion`: RL entropy ≥ τ.
pub const DLOGP_CRITERION_ENTROPY_RL: i32 = 2;
/// `dlogp_params.criterion`: KL(π_RL ‖ π_base) ≥ τ.
pub const DLOGP_CRITERION_KL: i32 = 3;
/// `dlogp_params.criterion`: KL(π_base ‖ π_RL) ≥ τ.
pub const DLOGP_CRITERION_KL_R: i32 = 4;
/// `dlogp_params.criterion`: Jensen–Shannon ≥ τ.
pub const DLOGP_CRITERION_JS: i32 = 5;
/// `dlogp_params.criterion`: fires with probability τ.
pub const DLOGP_CRITERION_RANDOM: i32 = 6;
/// `dlogp_params.criterion`: never fires.
pub const DLOGP_CRITERION_NEVER: i32 = 7;
/// `dlogp_params.criterion`: always fires.
pub const DLOGP_CRITERION_ALWAYS: i32 = 8;

/// `dlogp_params.proposer`: the base model proposes (the paper's setting).
pub const DLOGP_PROPOSER_BASE: i32 = 0;
/// `dlogp_params.proposer`: the RL model proposes.
pub const DLOGP_PROPOSER_RL: i32 = 1;

/// The version of the plugin's C interface (`dlogp_abi.version`). It
/// changes whenever `dlogp_params`, `dlogp_stats`, `dlogp_abi` or a
/// function's meaning changes.
pub const DLOGP_ABI_VERSION: u32 = 3;

/// The layout of the llama.cpp structs the plugin shares with its host, as
/// the host's compiler sees them. Fill it with `DLOGP_HOST_ABI` (defined
/// below for hosts that include `llama.h` first); the plugin compares it
/// with its own and refuses to start on any difference.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct dlogp_abi {
    /// `DLOGP_ABI_VERSION` of the header the host was compiled with.
    pub version: u32,
    /// `sizeof(struct llama_sampler_i)`.
    pub size_sampler_i: u32,
    /// `sizeof(struct llama_sampler)`.
    pub size_sampler: u32,
    /// `sizeof(llama_token_data)`.
    pub size_token_data: u32,
    /// `sizeof(llama_token_data_array)`.
    pub size_token_data_array: u32,
    /// `offsetof(llama_token_data_array, selected)`.
    pub offset_selected: u32,
    /// `offsetof(llama_token_data_array, sorted)`.
    pub offset_sorted: u32,
    /// `sizeof(llama_token)`.
    pub size_token: u32,
    /// `sizeof(struct llama_model_params)` (checked by
    /// `dlogp_sampler_init_shared` only, which runs in the host's llama.cpp).
    pub size_model_params: u32,
    /// `sizeof(struct llama_context_params)` (`dlogp_sampler_init_shared`).
    pub size_context_params: u32,
    /// `sizeof(struct llama_batch)` (`dlogp_sampler_init_shared`).
    pub size_batch: u32,
}

/// Settings of a dlogp sampler; start from [`dlogp_params_default`].
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dlogp_params {
    /// One of `DLOGP_MODE_*`.
    pub mode: i32,
    /// One of `DLOGP_CRITERION_*`.
    pub criterion: i32,
    /// One of `DLOGP_PROPOSER_*`.
    pub proposer: i32,
    /// Gate threshold τ.
    pub tau: f64,
    /// Extrapolation strength γ ≥ 0.
    pub gamma: f64,
    /// > 0.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 is off.
    pub top_p: f64,
    /// Keep the k most likely tokens; 0 is off.
    pub top_k: u32,
    /// Seed of the random draws.
    pub seed: u64,
    /// Sequence key of the random draws (`dlogp generate` uses
    /// `prompt_index * samples + sample`; 0 for a single prompt).
    pub key: u64,
    /// Context size of the base model's context (prompt + generation).
    pub n_ctx: u32,
    /// CPU threads of the base model's context (≥ 1; the default is the
    /// machine's physical cores, like the CLI).
    pub n_threads: i32,
    /// Layers of the base model to offload in GPU builds (the default, 999,
    /// offloads all, like the CLI; 0 is CPU only).
    pub n_gpu_layers: u32,
    /// 0: the sampler selects the token itself (keyed draws: the same tokens
    /// as `dlogp generate`). 1: composable: it writes the log-probabilities
    /// of the exact distribution its two-step procedure samples from
    /// (propose, gate, re-sample) into the candidates' logits and selects
    /// nothing, so later samplers of the chain (grammar, `dist` …) make the
    /// draw; `seed` and `key` are then unused and `n_fired` stays 0.
    pub compose: u32,
    /// The host's llama.cpp layout: set it to `DLOGP_HOST_ABI`.
    pub abi: dlogp_abi,
}

/// Counters of a dlogp sampler since the last prompt.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct dlogp_stats {
    /// Positions decided.
    pub n_decided: u64,
    /// Positions where the gate fired.
    pub n_fired: u64,
    /// Δlog p of the last proposal (NaN before the first).
    pub last_dlogp: f64,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Run `f`, turning an error or a panic into `fallback` and the thread's
/// last error.
fn boundary<T>(fallback: T, f: impl FnOnce() -> Result<T, String>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(message)) => {
            set_error(&message);
            fallback
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_error(&format!("internal error (panic): {what}"));
            fallback
        }
    }
}

/// The sampler's state, boxed behind `llama_sampler.ctx`.
struct State {
    cfg: DecodeConfig,
    key: u64,
    /// Write the mixture's log-probs instead of selecting (`params.compose`).
    compose: bool,
    base: BaseContext,
    /// Tokens fed as the prompt (positions count from here).
    n_prompt: usize,
    /// Whether a prompt was fed since the last reset.
    ready: bool,
    stats: dlogp_stats,
    /// The token chosen by the last `apply` and whether the gate fired.
    pending: Option<(u32, bool)>,
    /// The first error of a callback (callbacks return nothing).
    error: Option<String>,
}

static NAME: &CStr = c"dlogp";

static IFACE: sys::llama_sampler_i = sys::llama_sampler_i {
    name: Some(cb_name),
    accept: Some(cb_accept),
    apply: Some(cb_apply),
    reset: Some(cb_reset),
    clone: Some(cb_clone),
    free: Some(cb_free),
    backend_init: None,
    backend_accept: None,
    backend_apply: None,
    backend_set_input: None,
    backend_reset: None,
    copy_state: None,
};

/// The plugin's own view of [`dlogp_abi`].
fn plugin_abi() -> dlogp_abi {
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    dlogp_abi {
        version: DLOGP_ABI_VERSION,
        size_sampler_i: size(std::mem::size_of::<sys::llama_sampler_i>()),
        size_sampler: size(std::mem::size_of::<sys::llama_sampler>()),
        size_token_data: size(std::mem::size_of::<sys::llama_token_data>()),
        size_token_data_array: size(std::mem::size_of::<sys::llama_token_data_array>()),
        offset_selected: size(std::mem::offset_of!(sys::llama_token_data_array, selected)),
        offset_sorted: size(std::mem::offset_of!(sys::llama_token_data_array, sorted)),
        size_token: size(std::mem::size_of::<sys::llama_token>()),
        size_model_params: size(std::mem::size_of::<sys::llama_model_params>()),
        size_context_params: size(std::mem::size_of::<sys::llama_context_params>()),
        size_batch: size(std::mem::size_of::<sys::llama_batch>()),
    }
}

/// Every difference between the host's layout and the plugin's, or `Ok`.
/// `shared`: the plugin runs inside the host's llama.cpp (the shared build),
/// so the structs it passes to llama.cpp by value are checked too.
fn check_abi(host: &dlogp_abi, shared: bool) -> Result<(), String> {
    let own = plugin_abi();
    if host.version == 0 {
        return Err(
            "params.abi is not filled: set it to DLOGP_HOST_ABI (include llama.h \
                    before dlogp.h), so the plugin can check the host's llama.cpp"
                .to_string(),
        );
    }
    let fields = [
        ("version", host.version, own.version),
        (
            "sizeof(struct llama_sampler_i)",
            host.size_sampler_i,
            own.size_sampler_i,
        ),
        (
            "sizeof(struct llama_sampler)",
            host.size_sampler,
            own.size_sampler,
        ),
        (
            "sizeof(llama_token_data)",
            host.size_token_data,
            own.size_token_data,
        ),
        (
            "sizeof(llama_token_data_array)",
            host.size_token_data_array,
            own.size_token_data_array,
        ),
        (
            "offsetof(llama_token_data_array, selected)",
            host.offset_selected,
            own.offset_selected,
        ),
        (
            "offsetof(llama_token_data_array, sorted)",
            host.offset_sorted,
            own.offset_sorted,
        ),
        ("sizeof(llama_token)", host.size_token, own.size_token),
    ];
    let by_value = [
        (
            "sizeof(struct llama_model_params)",
            host.size_model_params,
            own.size_model_params,
        ),
        (
            "sizeof(struct llama_context_params)",
            host.size_context_params,
            own.size_context_params,
        ),
        (
            "sizeof(struct llama_batch)",
            host.size_batch,
            own.size_batch,
        ),
    ];
    let checked = if shared { &by_value[..] } else { &[] };
    let diffs: Vec<String> = fields
        .iter()
        .chain(checked)
        .filter(|(_, h, o)| h != o)
        .map(|(name, h, o)| format!("{name}: host {h}, plugin {o}"))
        .collect();
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the host's llama.cpp is not compatible with this libdlogp ({})\nhint: build the \
             host against a llama.cpp whose llama_sampler_i has 12 fields (llama-cpp-sys-2 \
             0.1.161's), or rebuild libdlogp against the host's",
            diffs.join("; ")
        ))
    }
}

/// The version of the plugin's C interface: compare it with the header's
/// `DLOGP_ABI_VERSION` when loading the library at run time (dlopen, ctypes).
#[no_mangle]
pub extern "C" fn dlogp_abi_version() -> u32 {
    DLOGP_ABI_VERSION
}

/// Check a host's layout (`DLOGP_HOST_ABI`) against the plugin's without
/// making a sampler. Returns 0, or -1 with the differences in
/// `dlogp_last_error`.
///
/// # Safety
/// `host` must be NULL or a valid `dlogp_abi`.
#[no_mangle]
pub unsafe extern "C" fn dlogp_abi_check(host: *const dlogp_abi) -> i32 {
    boundary(-1, || {
        if host.is_null() {
            return Err("host is NULL".to_string());
        }
        // SAFETY: checked non-NULL; the caller promises a valid struct.
        check_abi(unsafe { &*host }, false).map(|()| 0)
    })
}

/// The defaults of `dlogp generate`: extrapolate, criterion dlogp, τ = −0.3,
/// γ = 0.1, temperature 1, top-p 0.7, seed 0, key 0, a 4096-token context,
/// the machine's physical cores, every layer offloaded in GPU builds, the
/// sampler selecting the token itself. `abi` is left empty: set it to
/// `DLOGP_HOST_ABI`.
#[no_mangle]
pub extern "C" fn dlogp_params_default() -> dlogp_params {
    dlogp_params {
        mode: DLOGP_MODE_EXTRAPOLATE,
        criterion: DLOGP_CRITERION_DLOGP,
        proposer: DLOGP_PROPOSER_BASE,
        tau: defaults::TAU,
        gamma: defaults::GAMMA,
        temperature: defaults::TEMPERATURE,
        top_p: defaults::TOP_P,
        top_k: defaults::TOP_K as u32,
        seed: defaults::SEED,
        key: 0,
        n_ctx: 4096,
        n_threads: i32::try_from(default_threads()).unwrap_or(1),
        n_gpu_layers: LoadOptions::default().n_gpu_layers,
        compose: 0,
        abi: dlogp_abi::default(),
    }
}

fn config(p: &dlogp_params) -> Result<DecodeConfig, String> {
    let mode = match p.mode {
        DLOGP_MODE_BASE => Mode::Base,
        DLOGP_MODE_RL => Mode::Rl,
        DLOGP_MODE_REPLACE => Mode::Replace,
        DLOGP_MODE_EXTRAPOLATE => Mode::Extrapolate,
        DLOGP_MODE_GLOBAL => Mode::Global,
        m => {
            return Err(format!(
                "invalid params.mode: {m} (use a DLOGP_MODE_* constant)"
            ))
        }
    };
    let criterion = match p.criterion {
        DLOGP_CRITERION_DLOGP => Criterion::Dlogp,
        DLOGP_CRITERION_ENTROPY => Criterion::Entropy,
        DLOGP_CRITERION_ENTROPY_RL => Criterion::EntropyRl,
        DLOGP_CRITERION_KL => Criterion::Kl,
        DLOGP_CRITERION_KL_R => Criterion::KlR,
        DLOGP_CRITERION_JS => Criterion::Js,
        DLOGP_CRITERION_RANDOM => Criterion::Random,
        DLOGP_CRITERION_NEVER => Criterion::Never,
        DLOGP_CRITERION_ALWAYS => Criterion::Always,
        c => {
            return Err(format!(
                "invalid params.criterion: {c} (use a DLOGP_CRITERION_* constant)"
            ))
        }
    };
    let proposer = match p.proposer {
        DLOGP_PROPOSER_BASE => Proposer::Base,
        DLOGP_PROPOSER_RL => Proposer::Rl,
        x => {
            return Err(format!(
                "invalid params.proposer: {x} (use a DLOGP_PROPOSER_* constant)"
            ))
        }
    };
    let patch = ConfigPatch {
        mode: Some(mode),
        proposer: Some(proposer),
        criterion: Some(criterion),
        tau: Some(p.tau),
        gamma: Some(p.gamma),
        temperature: Some(p.temperature),
        top_p: Some(p.top_p),
        top_k: Some(p.top_k as usize),
        seed: Some(p.seed),
    };
    patch
        .apply(&DecodeConfig::default())
        .map_err(|e| e.render(&format!("params.{}", e.field.key())))
}

/// A sampler that performs selective replace / extrapolation for a host
/// whose model is the RL model. `base_model_path` is the base model (GGUF,
/// same vocabulary); `params` holds the settings and the host's layout
/// (`params.abi = DLOGP_HOST_ABI`), checked first. Returns NULL on error (see
/// `dlogp_last_error`). Free it with `llama_sampler_free` (or let a chain
/// that owns it do so). It reads the host model's raw logits, so it comes
/// first in a chain; with `compose = 0` it selects the token itself (use it
/// alone), with `compose = 1` it rewrites the logits and a later sampler
/// (`dist`) draws.
///
/// # Safety
/// `base_model_path` must be NULL or a NUL-terminated string; `params` NULL
/// or a valid `dlogp_params`.
#[no_mangle]
pub unsafe extern "C" fn dlogp_sampler_init(
    base_model_path: *const c_char,
    params: *const dlogp_params,
) -> *mut sys::llama_sampler {
    boundary(std::ptr::null_mut(), || {
        // SAFETY: the caller's promises, forwarded.
        let path = unsafe { c_path(base_model_path, "base_model_path") }?;
        // SAFETY: as above.
        let p = unsafe { settings(params, false) }?;
        let load = LoadOptions {
            n_gpu_layers: p.params.n_gpu_layers,
        };
        let base = BaseContext::load(&path, p.options, &load)?;
        Ok(new_sampler(p.state(base)))
    })
}

/// Like [`dlogp_sampler_init`], but the base model is the host's own
/// `base_model`, loaded from `base_model_path` (whose header is read and
/// checked; its weights are not loaded again): one copy of the weights for
/// a base + LoRA pair, where the host applies the RL adapter to its own
/// context (`llama_set_adapters_lora`) and the plugin's base context runs
/// on the same model without it. Only the shared build of libdlogp (cargo
/// feature `shared-llama`, linked to llama.cpp's shared libraries) can do
/// this, and only in a host linked to that same `libllama`: the standalone
/// build carries its own llama.cpp and returns NULL with an error saying
/// so. `params.n_gpu_layers` is unused (the host placed the model);
/// `params.abi` is also checked for `llama_model_params`,
/// `llama_context_params` and `llama_batch`. The model must outlive the
/// sampler and its clones.
///
/// # Safety
/// `base_model` must be NULL or a live `llama_model` of the host's llama.cpp;
/// `base_model_path` NULL or a NUL-terminated string; `params` NULL or a
/// valid `dlogp_params`.
#[no_mangle]
pub unsafe extern "C" fn dlogp_sampler_init_shared(
    base_model: *const sys::llama_model,
    base_model_path: *const c_char,
    params: *const dlogp_params,
) -> *mut sys::llama_sampler {
    boundary(std::ptr::null_mut(), || {
        let Some(model) = std::ptr::NonNull::new(base_model.cast_mut()) else {
            return Err("base_model is NULL".to_string());
        };
        // SAFETY: the caller's promises, forwarded.
        let path = unsafe { c_path(base_model_path, "base_model_path") }?;
        // SAFETY: as above.
        let p = unsafe { settings(params, true) }?;
        // SAFETY: the caller promises a live model of this llama.cpp that
        // outlives the sampler.
        let base = unsafe { shared_base(model, &path, p.options) }?;
        Ok(new_sampler(p.state(base)))
    })
}

#[cfg(feature = "shared-llama")]
unsafe fn shared_base(
    model: std::ptr::NonNull<sys::llama_model>,
    path: &std::path::Path,
    options: ContextOptions,
) -> Result<BaseContext, String> {
    // SAFETY: forwarded from dlogp_sampler_init_shared's caller.
    unsafe { BaseContext::on_host_model(model, path, options) }
}

#[cfg(not(feature = "shared-llama"))]
unsafe fn shared_base(
    _model: std::ptr::NonNull<sys::llama_model>,
    _path: &std::path::Path,
    _options: ContextOptions,
) -> Result<BaseContext, String> {
    Err(
        "this libdlogp carries its own llama.cpp, so it cannot use the host's \
         llama_model\nhint: build the shared libdlogp (cargo build --release --lib \
         --no-default-features --features shared-llama) and link the host to its libllama, \
         or load the base from its file with dlogp_sampler_init"
            .to_string(),
    )
}

/// A path argument: checked non-NULL and UTF-8.
///
/// # Safety
/// `ptr` must be NULL or a NUL-terminated string.
unsafe fn c_path(ptr: *const c_char, name: &str) -> Result<PathBuf, String> {
    if ptr.is_null() {
        return Err(format!("{name} is NULL"));
    }
    // SAFETY: checked non-NULL; the caller promises a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| format!("{name} is not UTF-8"))?;
    Ok(PathBuf::from(text))
}

/// `dlogp_params`, checked.
struct Settings {
    params: dlogp_params,
    cfg: DecodeConfig,
    compose: bool,
    options: ContextOptions,
}

impl Settings {
    fn state(self, base: BaseContext) -> State {
        State {
            cfg: self.cfg,
            key: self.params.key,
            compose: self.compose,
            base,
            n_prompt: 0,
            ready: false,
            stats: fresh_stats(),
            pending: None,
            error: None,
        }
    }
}

/// Read and check the host's settings (`shared`: for
/// `dlogp_sampler_init_shared`).
///
/// # Safety
/// `params` must be NULL or a valid `dlogp_params`.
unsafe fn settings(params: *const dlogp_params, shared: bool) -> Result<Settings, String> {
    if params.is_null() {
        return Err("params is NULL (start from dlogp_params_default() and set \
                    params.abi = DLOGP_HOST_ABI)"
            .to_string());
    }
    // SAFETY: checked non-NULL; the caller promises a valid struct.
    let p = unsafe { *params };
    check_abi(&p.abi, shared)?;
    let cfg = config(&p)?;
    let compose = match p.compose {
        0 => false,
        1 => true,
        c => return Err(format!("invalid params.compose: {c} (use 0 or 1)")),
    };
    if p.n_threads < 1 {
        return Err(format!("n_threads must be at least 1, got {}", p.n_threads));
    }
    if p.n_ctx < 2 {
        return Err(format!("n_ctx must be at least 2, got {}", p.n_ctx));
    }
    let options = ContextOptions {
        n_ctx: p.n_ctx,
        n_batch: 512,
        n_seq: 1,
        threads: p.n_threads as usize,
        flash_attention: false,
    };
    Ok(Settings {
        params: p,
        cfg,
        compose,
        options,
    })
}

fn fresh_stats() -> dlogp_stats {
    dlogp_stats {
        n_decided: 0,
        n_fired: 0,
        last_dlogp: f64::NAN,
    }
}

fn new_sampler(state: State) -> *mut sys::llama_sampler {
    let ctx = Box::into_raw(Box::new(state)).cast::<c_void>();
    // SAFETY: IFACE is a static that lives for the program and is never
    // written (llama.cpp only reads through the pointer); ctx is a valid
    // boxed State, released by cb_free.
    unsafe { sys::llama_sampler_init(std::ptr::addr_of!(IFACE).cast_mut(), ctx) }
}

/// The state of a sampler made by this library, or an error for NULL or a
/// foreign sampler.
///
/// # Safety
/// `smpl` must be NULL or a live `llama_sampler`.
unsafe fn state_ptr(smpl: *const sys::llama_sampler) -> Result<*mut State, String> {
    if smpl.is_null() {
        return Err("sampler is NULL".to_string());
    }
    // SAFETY: non-NULL and live by the caller's promise.
    let s = unsafe { &*smpl };
    if !std::ptr::eq(s.iface.cast_const(), std::ptr::addr_of!(IFACE)) || s.ctx.is_null() {
        return Err(
            "not a dlogp sampler (use the pointer dlogp_sampler_init returned)".to_string(),
        );
    }
    Ok(s.ctx.cast::<State>())
}

/// The sampler's state, shared: for callbacks and functions that take a
/// `const llama_sampler *` and only read.
///
/// # Safety
/// `smpl` must be NULL or a live `llama_sampler`.
unsafe fn state<'a>(smpl: *const sys::llama_sampler) -> Result<&'a State, String> {
    // SAFETY: state_ptr checked that ctx is the Box<State> new_sampler made.
    unsafe { state_ptr(smpl) }.map(|p| unsafe { &*p })
}

/// The sampler's state, exclusive: only from a `llama_sampler *` the host
/// handed over mutably.
///
/// # Safety
/// `smpl` must be NULL or a live `llama_sampler`; llama.cpp calls a sampler
/// from one thread at a time, so no other reference to the state is live.
unsafe fn state_mut<'a>(smpl: *mut sys::llama_sampler) -> Result<&'a mut State, String> {
    // SAFETY: as in `state`, and the caller holds the only pointer in use.
    unsafe { state_ptr(smpl) }.map(|p| unsafe { &mut *p })
}

/// Feed the prompt (the same tokens the host decodes) to the base model,
/// replacing any earlier one. Call it before sampling the first token.
/// Returns 0, or -1 on error (see `dlogp_last_error`).
///
/// # Safety
/// `smpl` must be NULL or a live sampler; `tokens` must point to `n_tokens`
/// tokens (or be NULL when `n_tokens` is 0).
#[no_mangle]
pub unsafe extern "C" fn dlogp_sampler_feed_prompt(
    smpl: *mut sys::llama_sampler,
    tokens: *const i32,
    n_tokens: usize,
) -> i32 {
    boundary(-1, || {
        // SAFETY: forwarded promise.
        let st = unsafe { state_mut(smpl) }?;
        if n_tokens == 0 {
            return Err("the prompt is empty".to_string());
        }
        if tokens.is_null() {
            return Err("tokens is NULL".to_string());
        }
        // SAFETY: non-NULL, and the caller promises n_tokens readable tokens.
        let slice = unsafe { std::slice::from_raw_parts(tokens, n_tokens) };
        let prompt = slice
            .iter()
            .map(|&t| host_token(t))
            .collect::<Result<Vec<_>, _>>()?;
        st.base.clear();
        st.ready = false;
        st.stats = fresh_stats();
        st.pending = None;
        st.error = None;
        st.base.feed(&prompt)?;
        st.n_prompt = prompt.len();
        st.ready = true;
        Ok(0)
    })
}

/// Counters since the last prompt. Returns 0, or -1 on error.
///
/// # Safety
/// `smpl` must be NULL or a live sampler; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dlogp_sampler_stats(
    smpl: *const sys::llama_sampler,
    out: *mut dlogp_stats,
) -> i32 {
    boundary(-1, || {
        // SAFETY: forwarded promise.
        let st = unsafe { state(smpl) }?;
        if out.is_null() {
            return Err("out is NULL".to_string());
        }
        // SAFETY: non-NULL and writable by the caller's promise.
        unsafe { out.write(st.stats) };
        Ok(0)
    })
}

/// The first error a sampling callback met since the last prompt (callbacks
/// cannot return one; the sampler then falls back to the host model's most
/// likely token), or NULL. Valid until the sampler changes.
///
/// # Safety
/// `smpl` must be NULL or a live sampler.
#[no_mangle]
pub unsafe extern "C" fn dlogp_sampler_error(smpl: *const sys::llama_sampler) -> *const c_char {
    boundary(std::ptr::null(), || {
        // SAFETY: forwarded promise.
        let st = unsafe { state(smpl) }?;
        Ok(match &st.error {
            Some(_) => LAST_ERROR.with(|e| {
                *e.borrow_mut() =
                    CString::new(st.error.clone().unwrap_or_default().replace('\0', " "))
                        .unwrap_or_default();
                e.borrow().as_ptr()
            }),
            None => std::ptr::null(),
        })
    })
}

/// The last error of a dlogp function on this thread ("" if none). Valid
/// until the next dlogp call on this thread.
#[no_mangle]
pub extern "C" fn dlogp_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

unsafe extern "C" fn cb_name(_smpl: *const sys::llama_sampler) -> *const c_char {
    NAME.as_ptr()
}

unsafe extern "C" fn cb_apply(
    smpl: *mut sys::llama_sampler,
    cur_p: *mut sys::llama_token_data_array,
) {
    boundary((), || {
        if cur_p.is_null() {
            return Err("cur_p is NULL".to_string());
        }
        // SAFETY: llama.cpp passes a live array of `size` entries.
        let cur = unsafe { &mut *cur_p };
        if cur.data.is_null() || cur.size == 0 {
            return Err("empty candidate array".to_string());
        }
        // SAFETY: as above.
        let data = unsafe { std::slice::from_raw_parts_mut(cur.data, cur.size) };
        // SAFETY: called by llama.cpp with the sampler it was registered on.
        let st = match unsafe { state_mut(smpl) } {
            Ok(st) => st,
            Err(e) => {
                select_argmax(cur, data);
                return Err(e);
            }
        };
        if st.compose {
            return match compose(st, data) {
                Ok(()) => {
                    cur.selected = -1;
                    cur.sorted = false;
                    Ok(())
                }
                Err(e) => {
                    // the host's own logits stay: it samples the RL model
                    st.error.get_or_insert(e.clone());
                    Err(e)
                }
            };
        }
        match decide(st, data) {
            Ok((index, token, fired)) => {
                cur.selected = index as i64;
                st.pending = Some((token, fired));
            }
            Err(e) => {
                st.error.get_or_insert(e.clone());
                st.pending = None;
                select_argmax(cur, data);
                return Err(e);
            }
        }
        Ok(())
    })
}

/// A host's `llama_token` as dlogp's token id; negative ids are errors.
fn host_token(t: sys::llama_token) -> Result<Token, String> {
    u32::try_from(t)
        .map(Token)
        .map_err(|_| format!("token {t} is outside the vocabulary (a negative id)"))
}

/// The host model's most likely candidate: the fallback on errors, so a
/// host never sees an invalid selection.
fn select_argmax(cur: &mut sys::llama_token_data_array, data: &[sys::llama_token_data]) {
    let best = data
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.logit.total_cmp(&b.1.logit))
        .map_or(0, |(i, _)| i);
    cur.selected = best as i64;
}

/// The decision at the next position: (index in `data`, token, gate fired).
fn decide(st: &mut State, data: &[sys::llama_token_data]) -> Result<(usize, u32, bool), String> {
    let (lp_base, lp_rl) = pair_logprobs(st, data)?;
    let pos = (st.base.len() - st.n_prompt) as u64;
    let lp = Pair::new(Some(lp_base), Some(&lp_rl[..]));
    let d = step::step(&st.cfg, lp, st.key, pos)
        .map_err(|e| e.to_string())?
        .decision;
    st.stats.last_dlogp = d.dlogp.unwrap_or(f64::NAN);
    let index = data
        .iter()
        .position(|c| c.id as u32 == d.chosen)
        .ok_or_else(|| "the chosen token is not a candidate".to_string())?;
    Ok((index, d.chosen, d.fired))
}

/// Composable mode: every candidate's logit becomes the log-probability of
/// the distribution [`step::mixture`] (the law of propose, gate,
/// re-sample), its `p` that probability; impossible tokens get `-inf`.
fn compose(st: &mut State, data: &mut [sys::llama_token_data]) -> Result<(), String> {
    let (lp_base, lp_rl) = pair_logprobs(st, data)?;
    let q = step::mixture(&st.cfg, Pair::new(Some(lp_base), Some(&lp_rl[..])))
        .map_err(|e| e.to_string())?;
    for d in data.iter_mut() {
        // ids were checked by pair_logprobs
        let p = q[d.id as usize];
        d.logit = if p > 0.0 {
            p.ln() as f32
        } else {
            f32::NEG_INFINITY
        };
        d.p = p as f32;
    }
    Ok(())
}

/// The host (RL) model's full-vocabulary log-probs from its raw logits, after
/// checking that a prompt was fed and every token is a candidate.
/// The base context's next-token log-probs and the host's (π_RL, from the
/// candidates' raw logits).
fn pair_logprobs<'a>(
    st: &'a State,
    data: &[sys::llama_token_data],
) -> Result<(&'a [f64], Vec<f64>), String> {
    if !st.ready {
        return Err("no prompt was fed: call dlogp_sampler_feed_prompt first".to_string());
    }
    let n_vocab = st.base.model().n_vocab();
    if data.len() != n_vocab {
        return Err(format!(
            "the sampler needs all {n_vocab} candidates with raw logits, got {} \
             (put it first / alone in the chain)",
            data.len()
        ));
    }
    let mut logits = vec![f32::NAN; n_vocab];
    for d in data {
        let id = usize::try_from(d.id)
            .ok()
            .filter(|&i| i < n_vocab)
            .ok_or_else(|| format!("candidate id {} outside the vocabulary", d.id))?;
        logits[id] = d.logit;
    }
    let mut lp_rl = vec![0.0; n_vocab];
    log_softmax(&logits, &mut lp_rl).map_err(|e| format!("host (RL) model: {e}"))?;
    let lp_base = st
        .base
        .next_logprobs()
        .ok_or_else(|| "the base model has no log-probs".to_string())?;
    Ok((lp_base, lp_rl))
}

unsafe extern "C" fn cb_accept(smpl: *mut sys::llama_sampler, token: sys::llama_token) {
    boundary((), || {
        // SAFETY: called by llama.cpp with the sampler it was registered on.
        let st = unsafe { state_mut(smpl) }?;
        if !st.ready {
            return Ok(());
        }
        if let Some((chosen, fired)) = st.pending.take() {
            if chosen == token as u32 {
                st.stats.n_decided += 1;
                st.stats.n_fired += u64::from(fired);
            }
        } else if st.compose {
            st.stats.n_decided += 1;
        }
        if let Err(e) = host_token(token).and_then(|t| st.base.feed(&[t])) {
            st.error.get_or_insert(e.clone());
            st.ready = false;
            return Err(e);
        }
        Ok(())
    })
}

unsafe extern "C" fn cb_reset(smpl: *mut sys::llama_sampler) {
    boundary((), || {
        // SAFETY: called by llama.cpp with the sampler it was registered on.
        let st = unsafe { state_mut(smpl) }?;
        st.base.clear();
        st.ready = false;
        st.n_prompt = 0;
        st.stats = fresh_stats();
        st.pending = None;
        st.error = None;
        Ok(())
    })
}

unsafe extern "C" fn cb_clone(smpl: *const sys::llama_sampler) -> *mut sys::llama_sampler {
    boundary(std::ptr::null_mut(), || {
        // SAFETY: called by llama.cpp with the sampler it was registered on.
        let st = unsafe { state(smpl) }?;
        let copy = State {
            cfg: st.cfg.clone(),
            key: st.key,
            compose: st.compose,
            base: st.base.duplicate()?,
            n_prompt: st.n_prompt,
            ready: st.ready,
            stats: st.stats,
            pending: st.pending,
            error: st.error.clone(),
        };
        Ok(new_sampler(copy))
    })
}

unsafe extern "C" fn cb_free(smpl: *mut sys::llama_sampler) {
    boundary((), || {
        // SAFETY: checked like every callback; after this llama.cpp deletes
        // the llama_sampler itself, so ctx is released exactly once.
        unsafe { state_mut(smpl) }?;
        // SAFETY: smpl is ours (checked above), ctx is the Box made by
        // new_sampler and nothing uses it after free.
        let boxed = unsafe { Box::from_raw((*smpl).ctx.cast::<State>()) };
        // SAFETY: as above; clear the pointer so a double free is caught.
        unsafe { (*smpl).ctx = std::ptr::null_mut() };
        drop(boxed);
        Ok(())
    })
}
