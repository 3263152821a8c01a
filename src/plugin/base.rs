//! The plugin's base model context: the prompt and every accepted token fed
//! in order, and the base model's log-probs for the next position.

use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::Arc;

use crate::runtime::{ContextOptions, LoadOptions, Model, Session, Token};
use crate::sampler::log_softmax;

/// The base model: loaded by the plugin (standalone build), or the host's
/// own `llama_model` (shared build), which the plugin must never free.
pub(crate) struct BaseModel {
    model: ManuallyDrop<Model>,
    owned: bool,
}

impl std::ops::Deref for BaseModel {
    type Target = Model;
    fn deref(&self) -> &Model {
        &self.model
    }
}

impl Drop for BaseModel {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: dropped exactly once, here; the plugin loaded it.
            unsafe { ManuallyDrop::drop(&mut self.model) }
        }
        // else the host's model: its ManuallyDrop is left alone, and the
        // header and path it holds leak (a few kilobytes per sampler).
    }
}

/// A base model context that owns (a share of) its model.
pub(crate) struct BaseContext {
    /// Borrows `model`; dropped first (see `Drop`).
    session: ManuallyDrop<Session<'static>>,
    model: Arc<BaseModel>,
    options: ContextOptions,
    /// Everything fed so far.
    history: Vec<Token>,
    /// Log-probs of the next token, once something was fed.
    next: Option<Vec<f64>>,
}

impl BaseContext {
    pub(crate) fn load(
        path: &Path,
        options: ContextOptions,
        load: &LoadOptions,
    ) -> Result<BaseContext, String> {
        let model = Model::load(path, load).map_err(|e| e.to_string())?;
        let model = BaseModel {
            model: ManuallyDrop::new(model),
            owned: true,
        };
        Self::with_model(Arc::new(model), options)
    }

    /// A context on the host's own model (the shared build: the host and the
    /// plugin run the same llama.cpp), loaded from `path`.
    ///
    /// # Safety
    /// `host_model` must be a live `llama_model` of this process's llama.cpp
    /// that outlives the sampler (and every clone of it).
    #[cfg(feature = "shared-llama")]
    pub(crate) unsafe fn on_host_model(
        host_model: std::ptr::NonNull<llama_cpp_sys_2::llama_model>,
        path: &Path,
        options: ContextOptions,
    ) -> Result<BaseContext, String> {
        use llama_cpp_2::model::LlamaModel;
        // llama-cpp-2's `LlamaModel` is its model pointer and nothing else
        // (`struct LlamaModel { model: Ptr<llama_model> }`, `Ptr` a
        // `#[repr(transparent)]` `NonNull`); the size check below fails the
        // build if that ever changes.
        const _: () = assert!(
            std::mem::size_of::<LlamaModel>()
                == std::mem::size_of::<std::ptr::NonNull<llama_cpp_sys_2::llama_model>>()
        );
        let header = Model::check_file(path).map_err(|e| e.to_string())?;
        crate::runtime::adopt_host_backend().map_err(|e| e.to_string())?;
        // SAFETY: same size and, as above, the same single pointer field;
        // the caller promises a live model. The result is never dropped
        // (`owned: false`), so the plugin never frees the host's model.
        let inner: LlamaModel = unsafe { std::mem::transmute(host_model) };
        let model = BaseModel {
            model: ManuallyDrop::new(Model::from_loaded(inner, path, header)),
            owned: false,
        };
        let header_vocab = match model.header().get("tokenizer.ggml.tokens") {
            Some(crate::gguf::Value::Array(a)) => Some(a.items.len()),
            _ => None,
        };
        if header_vocab.is_some_and(|n| n != model.n_vocab()) {
            return Err(format!(
                "the host's model has {} tokens but {} has {}: pass the file the host \
                 loaded the model from",
                model.n_vocab(),
                path.display(),
                header_vocab.unwrap_or(0)
            ));
        }
        Self::with_model(Arc::new(model), options)
    }

    fn with_model(model: Arc<BaseModel>, options: ContextOptions) -> Result<BaseContext, String> {
        // SAFETY: the model lives on the heap behind `Arc`, which this struct
        // keeps until after the session is dropped (`Drop` below drops the
        // session first), and the model is never mutated; so the reference
        // outlives every use the session makes of it.
        let model_ref: &'static Model = unsafe { &*Arc::as_ptr(&model) };
        let ctx = model_ref.new_context(&options).map_err(|e| e.to_string())?;
        Ok(BaseContext {
            session: ManuallyDrop::new(Session::new(ctx, 1, "base")),
            model,
            options,
            history: Vec::new(),
            next: None,
        })
    }

    /// A fresh context on the same model with the same tokens fed.
    pub(crate) fn duplicate(&self) -> Result<BaseContext, String> {
        let mut copy = Self::with_model(Arc::clone(&self.model), self.options)?;
        if !self.history.is_empty() {
            copy.feed(&self.history)?;
        }
        Ok(copy)
    }

    pub(crate) fn model(&self) -> &Model {
        &self.model
    }

    /// Forget everything fed.
    pub(crate) fn clear(&mut self) {
        self.session.clear();
        self.history.clear();
        self.next = None;
    }

    /// Tokens fed so far.
    pub(crate) fn len(&self) -> usize {
        self.history.len()
    }

    /// The base model's log-probs of the next token.
    pub(crate) fn next_logprobs(&self) -> Option<&[f64]> {
        self.next.as_deref()
    }

    /// Feed tokens after those already fed; keep the next-token log-probs.
    pub(crate) fn feed(&mut self, tokens: &[Token]) -> Result<(), String> {
        if tokens.is_empty() {
            return Ok(());
        }
        let n_vocab = self.model.n_vocab();
        if let Some(bad) = tokens.iter().find(|t| t.index() >= n_vocab) {
            return Err(format!(
                "token {} is outside the base model's vocabulary of {n_vocab}",
                bad.0
            ));
        }
        let n_ctx = self.options.n_ctx as usize;
        if self.history.len() + tokens.len() > n_ctx {
            return Err(format!(
                "{} tokens do not fit the base context of {n_ctx} (raise n_ctx)",
                self.history.len() + tokens.len()
            ));
        }
        let start = self.history.len() as u32;
        let last = self
            .session
            .feed(0, start, tokens)
            .map_err(|e| e.to_string())?;
        let logits = self.session.logits(last);
        let mut lp = vec![0.0; logits.len()];
        log_softmax(logits, &mut lp).map_err(|e| format!("base model: {e}"))?;
        self.next = Some(lp);
        self.history.extend_from_slice(tokens);
        Ok(())
    }
}

impl Drop for BaseContext {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here, before `model` (a field dropped
        // after this body runs).
        unsafe { ManuallyDrop::drop(&mut self.session) }
    }
}
