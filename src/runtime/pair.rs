//! A base/RL model pair: two GGUF files, or one GGUF plus a LoRA adapter that
//! shares the base's weights across two contexts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaLoraAdapter;
use llama_cpp_2::token::LlamaToken;

use super::model::{ContextOptions, LoadOptions, Model};
use super::RuntimeError;

/// Where the RL side of a pair comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum RlSource {
    /// A second GGUF model with the same vocabulary.
    Model(PathBuf),
    /// A LoRA adapter applied to the base model at `scale`.
    Lora { path: PathBuf, scale: f32 },
}

/// What to load: the base model and the RL side.
#[derive(Debug, Clone, PartialEq)]
pub struct PairSpec {
    pub base: PathBuf,
    pub rl: RlSource,
}

/// Two loaded models with the same vocabulary.
pub struct ModelPair {
    base: Model,
    rl: Option<Model>,
    adapter: Option<(Mutex<LlamaLoraAdapter>, f32, PathBuf)>,
}

impl ModelPair {
    /// Load both sides and check that their vocabularies agree.
    pub fn load(spec: &PairSpec, options: &LoadOptions) -> Result<ModelPair, RuntimeError> {
        let mut base = Model::load(&spec.base, options)?;
        match &spec.rl {
            RlSource::Model(path) => {
                let rl = Model::load(path, options)?;
                check_vocab(&base, &rl)?;
                Ok(ModelPair {
                    base,
                    rl: Some(rl),
                    adapter: None,
                })
            }
            RlSource::Lora { path, scale } => {
                if !scale.is_finite() {
                    return Err(RuntimeError::InvalidOption {
                        name: "lora_scale",
                        reason: format!("must be a finite number, got {scale}"),
                    });
                }
                let adapter = base.load_adapter(path)?;
                Ok(ModelPair {
                    base,
                    rl: None,
                    adapter: Some((Mutex::new(adapter), *scale, path.clone())),
                })
            }
        }
    }

    /// The base model (its tokenizer is the pair's tokenizer).
    pub fn base(&self) -> &Model {
        &self.base
    }

    /// The model the RL context runs on: the second file, or the base itself
    /// when the RL side is an adapter.
    pub fn rl_model(&self) -> &Model {
        self.rl.as_ref().unwrap_or(&self.base)
    }

    /// A short description of the RL side for logs and reports.
    pub fn rl_label(&self) -> String {
        match (&self.rl, &self.adapter) {
            (Some(rl), _) => rl.path().display().to_string(),
            (None, Some((_, scale, path))) => {
                format!(
                    "{} + LoRA {} (scale {scale})",
                    self.base.path().display(),
                    path.display()
                )
            }
            (None, None) => self.base.path().display().to_string(),
        }
    }

    /// A fresh context for the base model.
    pub fn base_context(&self, options: &ContextOptions) -> Result<LlamaContext<'_>, RuntimeError> {
        self.base.new_context(options)
    }

    /// A fresh context for the RL model, with the adapter applied if any.
    pub fn rl_context(&self, options: &ContextOptions) -> Result<LlamaContext<'_>, RuntimeError> {
        let mut ctx = self.rl_model().new_context(options)?;
        if let Some((adapter, scale, path)) = &self.adapter {
            let mut adapter = adapter.lock().unwrap_or_else(|e| e.into_inner());
            ctx.lora_adapter_set(&mut adapter, *scale)
                .map_err(|e| RuntimeError::Load {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(ctx)
    }
}

/// Fail unless the two models tokenize identically: the same size, the same
/// text for every token, and the same special and end-of-generation tokens.
pub fn check_vocab(base: &Model, rl: &Model) -> Result<(), RuntimeError> {
    let mismatch = |detail: String| RuntimeError::VocabMismatch {
        base: base.path().to_path_buf(),
        rl: rl.path().to_path_buf(),
        detail,
    };
    let (bv, rv) = (base.llama().vocab(), rl.llama().vocab());
    if bv.n_tokens() != rv.n_tokens() {
        return Err(mismatch(format!(
            "{} vs {} tokens",
            bv.n_tokens(),
            rv.n_tokens()
        )));
    }
    for id in 0..bv.n_tokens() {
        let token = LlamaToken(id);
        let (bt, rt) = (bv.text(token), rv.text(token));
        if bt != rt {
            let show = |t: Option<&std::ffi::CStr>| {
                t.map_or("<none>".to_string(), |t| {
                    format!("{:?}", t.to_string_lossy())
                })
            };
            return Err(mismatch(format!(
                "token {id} is {} in {} but {} in {}",
                show(bt),
                name(base.path()),
                show(rt),
                name(rl.path())
            )));
        }
        if bv.is_eog(token) != rv.is_eog(token) {
            return Err(mismatch(format!(
                "token {id} ends generation in only one of them"
            )));
        }
    }
    let specials = [
        ("BOS", bv.bos(), rv.bos()),
        ("EOS", bv.eos(), rv.eos()),
        ("EOT", bv.eot(), rv.eot()),
    ];
    for (what, b, r) in specials {
        if b != r {
            return Err(mismatch(format!("{what} token is {} vs {}", b.0, r.0)));
        }
    }
    if bv.should_add_bos() != rv.should_add_bos() {
        return Err(mismatch("only one of them adds a BOS token".to_string()));
    }
    Ok(())
}

fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
