//! One GGUF model loaded in llama.cpp, with the checks that keep llama.cpp
//! from ever seeing a file it would choke on.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use super::token::Token;

use super::{backend, RuntimeError};
use crate::gguf::GgufFile;

/// How to load a model: where its layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Layers to offload to the GPU (ignored by CPU-only builds).
    pub n_gpu_layers: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { n_gpu_layers: 999 }
    }
}

/// How to size one llama.cpp context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextOptions {
    /// Context length in tokens of each sequence (the KV cache holds
    /// `n_ctx * n_seq` cells, split evenly between sequences).
    pub n_ctx: u32,
    /// Largest number of tokens per `llama_decode` call.
    pub n_batch: u32,
    /// Number of parallel sequences.
    pub n_seq: u32,
    /// CPU threads for this context.
    pub threads: usize,
    /// Use flash attention. Off by default: on CPU, llama.cpp's flash
    /// attention switches kernels with the batch size (at 64 tokens here), so
    /// the same token got log-probs up to 0.5 nats apart depending on how it
    /// was batched; without it, logits are bit-identical for any batching.
    pub flash_attention: bool,
}

/// A loaded model plus its parsed GGUF header.
pub struct Model {
    inner: LlamaModel,
    path: PathBuf,
    header: GgufFile,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).finish()
    }
}

/// Parse a GGUF header, turning "no such file" into its own error.
pub(crate) fn read_header(path: &Path) -> Result<GgufFile, RuntimeError> {
    if !path.exists() {
        return Err(RuntimeError::NotFound {
            path: path.to_path_buf(),
        });
    }
    Ok(GgufFile::open(path)?)
}

impl Model {
    /// Load a GGUF model. The file is validated by dlogp's own GGUF reader
    /// first, so a corrupt or truncated file is a clear error, not an abort.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Model, RuntimeError> {
        let header = Self::check_file(path)?;
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(options.n_gpu_layers);
        let inner =
            LlamaModel::load_from_file(backend, path, &params).map_err(|e| RuntimeError::Load {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        tracing::debug!(path = %path.display(), "loaded model");
        Ok(Model {
            inner,
            path: path.to_path_buf(),
            header,
        })
    }

    /// A model some other code loaded into this process's llama.cpp (the
    /// plugin's shared build: the host's `llama_model`), with the header of
    /// the file it came from, checked by [`Model::check_file`]. Dropping it
    /// frees `inner`: a caller that does not own the model must never drop
    /// the result (the plugin keeps it in a `ManuallyDrop`).
    #[cfg(feature = "shared-llama")]
    pub(crate) fn from_loaded(inner: LlamaModel, path: &Path, header: GgufFile) -> Model {
        Model {
            inner,
            path: path.to_path_buf(),
            header,
        }
    }

    /// Read a model file's header and check everything llama.cpp would
    /// choke on, without loading the weights.
    pub(crate) fn check_file(path: &Path) -> Result<GgufFile, RuntimeError> {
        let header = read_header(path)?;
        if header.is_adapter() {
            return Err(RuntimeError::AdapterGivenAsModel {
                path: path.to_path_buf(),
            });
        }
        if header.architecture().is_none() {
            return Err(RuntimeError::MissingKey {
                path: path.to_path_buf(),
                key: "general.architecture",
            });
        }
        match header.get_str("tokenizer.ggml.model") {
            None => {
                return Err(RuntimeError::MissingKey {
                    path: path.to_path_buf(),
                    key: "tokenizer.ggml.model",
                })
            }
            Some("none") => {
                return Err(RuntimeError::Load {
                    path: path.to_path_buf(),
                    reason: "the model has no tokenizer (tokenizer.ggml.model = \"none\")"
                        .to_string(),
                })
            }
            Some(_) => {}
        }
        // Values llama.cpp would abort on (block count, heads, vocabulary,
        // weight types, ...) are an error naming the key or tensor.
        crate::gguf::validate::check(&header, path)?;
        Ok(header)
    }

    /// Load a LoRA adapter for this model, after checking that it is an
    /// adapter, for this architecture, that every tensor it patches exists in
    /// the model with matching shapes, and that its metadata and tensor types
    /// are what llama.cpp reads ([`crate::gguf::validate`]).
    pub fn load_adapter(&mut self, path: &Path) -> Result<LlamaLoraAdapter, RuntimeError> {
        let adapter = read_header(path)?;
        check_adapter(&self.header, &self.path, &adapter, path)?;
        crate::gguf::validate::check_adapter_file(&adapter, path)?;
        self.inner
            .lora_adapter_init(path)
            .map_err(|e| RuntimeError::Load {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// A new llama.cpp context over this model.
    pub fn new_context(&self, options: &ContextOptions) -> Result<LlamaContext<'_>, RuntimeError> {
        let threads = i32::try_from(options.threads.max(1)).unwrap_or(i32::MAX);
        let n_seq = options.n_seq.max(1);
        let total = options
            .n_ctx
            .checked_mul(n_seq)
            .ok_or_else(|| RuntimeError::Context {
                path: self.path.clone(),
                reason: format!(
                    "{} sequences of {} tokens is too large",
                    n_seq, options.n_ctx
                ),
            })?;
        // A KV cache split per sequence: with a unified cache, sequences decoded
        // in the same batch were seen to change each other's logits (by up to
        // 0.1 nats on SmolLM2), while split caches reproduce single-sequence
        // results bit for bit.
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(total))
            .with_n_batch(options.n_batch)
            .with_n_ubatch(options.n_batch)
            .with_n_seq_max(n_seq)
            .with_kv_unified(false)
            .with_flash_attention_policy(if options.flash_attention {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
            } else {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
            })
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        self.inner
            .new_context(backend()?, params)
            .map_err(|e| RuntimeError::Context {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// The file this model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed GGUF header (metadata and tensor infos).
    pub fn header(&self) -> &GgufFile {
        &self.header
    }

    /// The underlying llama.cpp model (for the rest of `src/runtime`).
    pub(crate) fn llama(&self) -> &LlamaModel {
        &self.inner
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        usize::try_from(self.inner.vocab().n_tokens()).unwrap_or(0)
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.inner.n_ctx_train()
    }

    /// Tokenize text. `add_bos` adds the beginning-of-sequence token when the
    /// model asks for one; special tokens written in the text are parsed.
    pub fn tokenize(&self, text: &str, add_bos: bool) -> Vec<Token> {
        self.inner
            .vocab()
            .tokenize(text.as_bytes(), add_bos, true)
            .into_iter()
            .map(Token::from_llama)
            .collect()
    }

    /// The text of one token (lossy for partial UTF-8 byte tokens).
    pub fn piece(&self, token: Token) -> String {
        let bytes = self.inner.vocab().token_to_piece(token.llama(), true, None);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes of one token (a UTF-8 character may span tokens).
    pub fn piece_bytes(&self, token: Token) -> Vec<u8> {
        self.inner.vocab().token_to_piece(token.llama(), true, None)
    }

    /// Whether the model keeps recurrent state (Mamba-like layers), whose
    /// cache cannot drop a suffix of a sequence.
    pub fn is_recurrent(&self) -> bool {
        self.inner.is_recurrent() || self.inner.is_hybrid()
    }

    /// The attention window of a sliding-window model
    /// (`{arch}.attention.sliding_window` > 0), whose cache drops positions
    /// that fall out of the window as a sequence grows.
    pub fn sliding_window(&self) -> Option<u64> {
        let arch = self.header.get_str("general.architecture")?;
        self.header
            .get_u64(&format!("{arch}.attention.sliding_window"))
            .filter(|&w| w > 0)
    }

    /// Whether the token ends generation.
    pub fn is_eog(&self, token: Token) -> bool {
        self.inner.vocab().is_eog(token.llama())
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos(&self) -> Option<Token> {
        let bos = self.inner.vocab().bos();
        u32::try_from(bos.0).ok().map(Token)
    }

    /// The beginning-of-sequence token text, if the model adds one.
    pub fn bos_text(&self) -> Option<String> {
        let vocab = self.inner.vocab();
        if !vocab.should_add_bos() {
            return None;
        }
        vocab
            .text(vocab.bos())
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// The texts of the vocabulary's beginning- and end-of-sequence tokens
    /// (`None` where it has none), whether or not the model adds them.
    pub fn bos_eos_texts(&self) -> (Option<String>, Option<String>) {
        let vocab = self.inner.vocab();
        let text = |t: LlamaToken| Some(self.special_text(t)).filter(|s| !s.is_empty());
        (text(vocab.bos()), text(vocab.eos()))
    }

    /// The token text of a special token id, or "" when the model has none.
    pub(crate) fn special_text(&self, token: LlamaToken) -> String {
        if token.0 < 0 {
            return String::new();
        }
        self.inner
            .vocab()
            .text(token)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The GGUF's Jinja chat template, if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.header.get_str("tokenizer.chat_template")
    }
}

/// Check an adapter header against the model it is meant for.
fn check_adapter(
    model: &GgufFile,
    model_path: &Path,
    adapter: &GgufFile,
    adapter_path: &Path,
) -> Result<(), RuntimeError> {
    let not_adapter = || RuntimeError::NotAnAdapter {
        path: adapter_path.to_path_buf(),
    };
    if !adapter.is_lora_adapter() {
        return Err(not_adapter());
    }
    let model_arch = model.architecture().unwrap_or("?");
    let adapter_arch = adapter.architecture().unwrap_or("?");
    if model_arch != adapter_arch {
        return Err(RuntimeError::AdapterArchitecture {
            adapter: adapter_path.to_path_buf(),
            adapter_arch: adapter_arch.to_string(),
            model: model_path.to_path_buf(),
            model_arch: model_arch.to_string(),
        });
    }
    for tensor in &adapter.tensors {
        let (base_name, is_a) = if let Some(base) = tensor.name.strip_suffix(".lora_a") {
            (base, true)
        } else if let Some(base) = tensor.name.strip_suffix(".lora_b") {
            (base, false)
        } else {
            continue;
        };
        let Some(base) = model.tensor(base_name) else {
            return Err(RuntimeError::AdapterTensor {
                adapter: adapter_path.to_path_buf(),
                model: model_path.to_path_buf(),
                detail: format!("it patches `{base_name}`, which the model does not have"),
            });
        };
        // ggml shapes: base [n_in, n_out], A [n_in, r], B [r, n_out].
        let fits = match (base.dims.as_slice(), tensor.dims.as_slice()) {
            ([n_in, _], [a_in, _]) if is_a => a_in == n_in,
            ([_, n_out], [_, b_out]) if !is_a => b_out == n_out,
            _ => false,
        };
        if !fits {
            return Err(RuntimeError::AdapterTensor {
                adapter: adapter_path.to_path_buf(),
                model: model_path.to_path_buf(),
                detail: format!(
                    "`{}` has shape {:?}, which does not fit `{base_name}` of shape {:?}",
                    tensor.name, tensor.dims, base.dims
                ),
            });
        }
    }
    Ok(())
}
