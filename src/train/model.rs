//! The policy: an f32 llama forward over a GGUF's dequantized weights, with
//! trainable LoRA matrices on the configured projections and layers.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, Var, D};

use super::config::{LoraConfig, LoraTarget};
use super::frozen::FrozenLinear;
use super::fused::{CausalSoftmax, FrozenRmsNorm, LogSoftmaxGather, RopeHeads};
use super::ops::{causal_mask, log_softmax, rms_norm, rope_adjacent, rope_tables};
use super::TrainError;
use crate::gguf::lora::split_block_name;
use crate::gguf::{lora_for_model, GgufFile, LoraInit, LoraTensor, Value};

/// Hyper-parameters of a llama model, read from its GGUF metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyShape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f64,
    pub rope_base: f64,
    /// No `output.weight`: the head is the token embedding.
    pub tied_embeddings: bool,
}

impl PolicyShape {
    /// Read and check the hyper-parameters; errors name what is missing.
    pub fn from_header(header: &GgufFile, path: &Path) -> Result<PolicyShape, TrainError> {
        let arch = header.architecture().unwrap_or("<none>");
        if arch != "llama" {
            return Err(TrainError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: arch.to_string(),
            });
        }
        let missing = |what: &str| TrainError::Missing {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        let unsupported = |what: String| TrainError::Unsupported {
            path: path.to_path_buf(),
            what,
        };
        let key = |suffix: &str| -> Result<usize, TrainError> {
            header
                .arch_key(suffix)
                .and_then(Value::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| missing(&format!("metadata key `llama.{suffix}`")))
        };
        let n_layer = key("block_count")?;
        let n_embd = key("embedding_length")?;
        let n_ff = key("feed_forward_length")?;
        let n_head = key("attention.head_count")?;
        let n_head_kv = key("attention.head_count_kv").unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 || n_embd % n_head != 0 {
            return Err(unsupported(format!(
                "{n_head} attention heads over {n_head_kv} KV heads and width {n_embd}"
            )));
        }
        let head_dim = key("attention.key_length").unwrap_or(n_embd / n_head);
        if head_dim * n_head != n_embd || head_dim % 2 != 0 {
            return Err(unsupported(format!(
                "head size {head_dim} with {n_head} heads and width {n_embd}"
            )));
        }
        if let Ok(rope_dims) = key("rope.dimension_count") {
            if rope_dims != head_dim {
                return Err(unsupported(format!(
                    "partial rotary embedding ({rope_dims} of {head_dim} dimensions)"
                )));
            }
        }
        if let Some(kind) = header.arch_key("rope.scaling.type").and_then(Value::as_str) {
            if kind != "none" {
                return Err(unsupported(format!("rope scaling `{kind}`")));
            }
        }
        if key("expert_count").unwrap_or(0) > 0 {
            return Err(unsupported("mixture-of-experts layers".to_string()));
        }
        let rms_eps = header
            .arch_key("attention.layer_norm_rms_epsilon")
            .and_then(Value::as_f64)
            .ok_or_else(|| missing("metadata key `llama.attention.layer_norm_rms_epsilon`"))?;
        let rope_base = header
            .arch_key("rope.freq_base")
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let embd = header
            .tensor("token_embd.weight")
            .ok_or_else(|| missing("tensor `token_embd.weight`"))?;
        let n_vocab = match embd.dims.as_slice() {
            &[e, v] if e as usize == n_embd => v as usize,
            dims => {
                return Err(unsupported(format!(
                    "token_embd.weight with dims {dims:?} (expected [{n_embd}, n_vocab])"
                )))
            }
        };
        let n_ctx_train = key("context_length").unwrap_or(2048);
        let tied_embeddings = header.tensor("output.weight").is_none();
        Ok(PolicyShape {
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope_base,
            tied_embeddings,
        })
    }
}

/// A frozen RMSNorm weight, as a tensor and as values for the fused kernel.
struct Norm {
    w: Tensor,
    values: Vec<f32>,
}

impl Norm {
    fn new(w: Tensor) -> Result<Norm, TrainError> {
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        Ok(Norm { w, values })
    }

    /// The fused kernel on the CPU, the composition elsewhere.
    fn forward(&self, x: &Tensor, eps: f64) -> Result<Tensor, TrainError> {
        if x.device().is_cpu() {
            Ok(x.apply_op1(FrozenRmsNorm {
                weight: self.values.clone(),
                eps: eps as f32,
            })?)
        } else {
            Ok(rms_norm(x, &self.w, eps)?)
        }
    }
}

struct Layer {
    attn_norm: Norm,
    ffn_norm: Norm,
    /// Indexed like [`LoraTarget::ALL`].
    proj: Vec<FrozenLinear>,
    /// Index into `Policy::adapters` per target, like `proj`.
    lora: [Option<usize>; 7],
}

/// One trainable adapter `ΔW = scale · B·A` on `base_name`.
#[derive(Debug)]
pub struct Adapter {
    pub base_name: String,
    pub layer: usize,
    pub target: LoraTarget,
    /// `(rank, n_in)`.
    pub a: Var,
    /// `(n_out, rank)`.
    pub b: Var,
}

/// The trainable policy: frozen base weights plus LoRA adapters.
pub struct Policy {
    path: PathBuf,
    arch: String,
    shape: PolicyShape,
    lora: LoraConfig,
    device: Device,
    tok_embd: Tensor,
    output: FrozenLinear,
    output_norm: Norm,
    layers: Vec<Layer>,
    adapters: Vec<Adapter>,
    cos: Tensor,
    sin: Tensor,
    /// The same tables as values, for the fused CPU kernel.
    cos_values: std::sync::Arc<Vec<f32>>,
    sin_values: std::sync::Arc<Vec<f32>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("path", &self.path)
            .field("shape", &self.shape)
            .field("lora", &self.lora)
            .finish()
    }
}

/// The device training runs on: CUDA or Metal when built with that feature
/// and available, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}

fn index_of(target: LoraTarget) -> usize {
    LoraTarget::ALL
        .iter()
        .position(|&t| t == target)
        .unwrap_or(0)
}

impl Policy {
    /// Load the base weights of a llama GGUF (any type candle dequantizes:
    /// F32, F16, Q4_*, Q5_*, Q8_0, K-quants) as f32 and create adapters with
    /// A ~ N(0, 1/n_in), B = 0 (an exact no-op), seeded per tensor name.
    pub fn load(
        path: &Path,
        lora: LoraConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Policy, TrainError> {
        let header = GgufFile::open(path)?;
        let shape = PolicyShape::from_header(&header, path)?;
        if let Some(layers) = &lora.layers {
            if let Some(&bad) = layers.iter().find(|&&l| l >= shape.n_layer) {
                return Err(TrainError::Invalid {
                    name: "layers",
                    reason: format!(
                        "layer {bad} does not exist (the model has {})",
                        shape.n_layer
                    ),
                });
            }
        }
        let mut file = File::open(path).map_err(|e| crate::gguf::GgufError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file)?;
        let mut load = |name: &str| -> Result<Tensor, TrainError> {
            if !content.tensor_infos.contains_key(name) {
                return Err(TrainError::Missing {
                    path: path.to_path_buf(),
                    what: format!("tensor `{name}`"),
                });
            }
            let t = content
                .tensor(&mut file, name, device)?
                .dequantize(device)?;
            Ok(t.to_dtype(DType::F32)?)
        };
        let tok_embd = load("token_embd.weight")?;
        let output = if shape.tied_embeddings {
            FrozenLinear::new(tok_embd.clone())?
        } else {
            FrozenLinear::new(load("output.weight")?)?
        };
        let output_norm = Norm::new(load("output_norm.weight")?)?;
        let mut layers = Vec::with_capacity(shape.n_layer);
        for i in 0..shape.n_layer {
            let mut proj = Vec::with_capacity(7);
            for t in LoraTarget::ALL {
                proj.push(FrozenLinear::new(load(&format!(
                    "blk.{i}.{}.weight",
                    t.gguf_suffix()
                ))?)?);
            }
            layers.push(Layer {
                attn_norm: Norm::new(load(&format!("blk.{i}.attn_norm.weight"))?)?,
                ffn_norm: Norm::new(load(&format!("blk.{i}.ffn_norm.weight"))?)?,
                proj,
                lora: [None; 7],
            });
        }
        let suffixes: Vec<&str> = lora.targets.iter().map(|t| t.gguf_suffix()).collect();
        let init = lora_for_model(&header, &suffixes, lora.rank, LoraInit::Zero, seed)?;
        let (cos, sin) = rope_tables(shape.n_ctx_train, shape.head_dim, shape.rope_base, device)?;
        let mut policy = Policy {
            path: path.to_path_buf(),
            arch: header.architecture().unwrap_or("llama").to_string(),
            shape,
            lora,
            device: device.clone(),
            tok_embd,
            output,
            output_norm,
            layers,
            adapters: Vec::new(),
            cos_values: std::sync::Arc::new(cos.flatten_all()?.to_vec1::<f32>()?),
            sin_values: std::sync::Arc::new(sin.flatten_all()?.to_vec1::<f32>()?),
            cos,
            sin,
        };
        for t in init {
            let Some((layer, suffix)) = split_block_name(&t.base_name) else {
                continue;
            };
            let layer = layer as usize;
            let Some(target) = LoraTarget::from_gguf_suffix(suffix) else {
                continue;
            };
            if !policy.lora.adapts_layer(layer) || layer >= policy.layers.len() {
                continue;
            }
            let a = Var::from_tensor(&Tensor::from_vec(t.a, (t.rank, t.n_in), device)?)?;
            let b = Var::from_tensor(&Tensor::from_vec(t.b, (t.n_out, t.rank), device)?)?;
            policy.layers[layer].lora[index_of(target)] = Some(policy.adapters.len());
            policy.adapters.push(Adapter {
                base_name: t.base_name,
                layer,
                target,
                a,
                b,
            });
        }
        Ok(policy)
    }

    pub fn shape(&self) -> &PolicyShape {
        &self.shape
    }

    pub fn lora_config(&self) -> &LoraConfig {
        &self.lora
    }

    pub fn architecture(&self) -> &str {
        &self.arch
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable adapters, in the base file's tensor order.
    pub fn adapters(&self) -> &[Adapter] {
        &self.adapters
    }

    /// Every trainable tensor, A then B for each adapter.
    pub fn vars(&self) -> Vec<&Var> {
        self.adapters.iter().flat_map(|a| [&a.a, &a.b]).collect()
    }

    /// Trainable parameter count.
    pub fn n_params(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    fn proj(&self, layer: usize, target: LoraTarget, x: &Tensor) -> Result<Tensor, TrainError> {
        let l = &self.layers[layer];
        let i = index_of(target);
        let y = l.proj[i].forward(x)?;
        match l.lora[i] {
            None => Ok(y),
            Some(k) => {
                let ad = &self.adapters[k];
                let low = x.matmul(&ad.a.as_tensor().t()?)?;
                let delta = low.matmul(&ad.b.as_tensor().t()?)?;
                Ok((y + delta.affine(f64::from(self.lora.scale()), 0.0)?)?)
            }
        }
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<(), TrainError> {
        if tokens.is_empty() {
            return Err(TrainError::Invalid {
                name: "tokens",
                reason: "empty sequence".into(),
            });
        }
        if tokens.len() > self.shape.n_ctx_train {
            return Err(TrainError::Invalid {
                name: "tokens",
                reason: format!(
                    "{} tokens exceed the trained context of {}",
                    tokens.len(),
                    self.shape.n_ctx_train
                ),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.shape.n_vocab) {
            return Err(TrainError::TokenOutOfRange {
                token: bad,
                n_vocab: self.shape.n_vocab,
            });
        }
        Ok(())
    }

    /// Hidden states after the last block, `(seq, n_embd)`, before the final norm.
    fn hidden(&self, tokens: &[u32]) -> Result<Tensor, TrainError> {
        self.check_tokens(tokens)?;
        let s = &self.shape;
        let t = tokens.len();
        let ids = Tensor::from_slice(tokens, t, &self.device)?;
        let mut x = self.tok_embd.index_select(&ids, 0)?;
        let cpu = self.device.is_cpu();
        let mask = if cpu {
            None
        } else {
            Some(causal_mask(t, &self.device)?)
        };
        let group = s.n_head / s.n_head_kv;
        let att_scale = 1.0 / (s.head_dim as f64).sqrt();
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x, s.rms_eps)?;
            let heads = |y: Tensor, n: usize| -> Result<Tensor, TrainError> {
                Ok(y.reshape((t, n, s.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()?)
            };
            let rope = |y: Tensor, n: usize| -> Result<Tensor, TrainError> {
                if cpu {
                    return Ok(y.apply_op1(RopeHeads {
                        heads: n,
                        head_dim: s.head_dim,
                        cos: self.cos_values.clone(),
                        sin: self.sin_values.clone(),
                    })?);
                }
                Ok(rope_adjacent(&heads(y, n)?, &self.cos, &self.sin)?)
            };
            let q = rope(self.proj(i, LoraTarget::Q, &h)?, s.n_head)?;
            let k = rope(self.proj(i, LoraTarget::K, &h)?, s.n_head_kv)?;
            let v = heads(self.proj(i, LoraTarget::V, &h)?, s.n_head_kv)?;
            // GQA: query head h reads KV head h / group.
            let o = if cpu {
                // The `group` query heads of a KV head are adjacent: attend
                // with them stacked as rows, without copying K and V.
                let q = q.reshape((s.n_head_kv, group * t, s.head_dim))?;
                let att = q.matmul(&k.t()?)?.apply_op1(CausalSoftmax {
                    scale: att_scale as f32,
                })?;
                att.matmul(&v)?.reshape((s.n_head, t, s.head_dim))?
            } else {
                let repeat = |y: Tensor| -> Result<Tensor, TrainError> {
                    if group == 1 {
                        return Ok(y);
                    }
                    Ok(y.unsqueeze(1)?
                        .broadcast_as((s.n_head_kv, group, t, s.head_dim))?
                        .reshape((s.n_head, t, s.head_dim))?)
                };
                let (k, v) = (repeat(k)?, repeat(v)?);
                let scores = q.matmul(&k.t()?)?.affine(att_scale, 0.0)?;
                let mask = mask
                    .as_ref()
                    .ok_or_else(|| TrainError::Numerics("no mask".into()))?;
                super::ops::softmax(&scores.broadcast_add(mask)?)?.matmul(&v)?
            };
            let o = o.transpose(0, 1)?.reshape((t, s.n_head * s.head_dim))?;
            x = (x + self.proj(i, LoraTarget::O, &o)?)?;
            let h = layer.ffn_norm.forward(&x, s.rms_eps)?;
            let g = self.proj(i, LoraTarget::Gate, &h)?.silu()?;
            let u = self.proj(i, LoraTarget::Up, &h)?;
            x = (x + self.proj(i, LoraTarget::Down, &(g * u)?)?)?;
        }
        Ok(x)
    }

    fn head(&self, hidden: &Tensor) -> Result<Tensor, TrainError> {
        let h = self.output_norm.forward(hidden, self.shape.rms_eps)?;
        Ok(self.output.forward(&h)?)
    }

    /// Raw logits `(seq, n_vocab)` at every position (row `i` predicts token `i + 1`).
    pub fn logits(&self, tokens: &[u32]) -> Result<Tensor, TrainError> {
        let h = self.hidden(tokens)?;
        self.head(&h)
    }

    /// Logits at positions `start − 1 .. seq − 1`, `(seq − start, n_vocab)`:
    /// the rows that predict `tokens[start..]`.
    fn response_logits(&self, tokens: &[u32], start: usize) -> Result<Tensor, TrainError> {
        if start == 0 || start >= tokens.len() {
            return Err(TrainError::Invalid {
                name: "response start",
                reason: format!(
                    "must lie in 1..{} (the prompt needs a token, the response too), got {start}",
                    tokens.len()
                ),
            });
        }
        let h = self.hidden(tokens)?;
        let n = tokens.len() - start;
        self.head(&h.narrow(0, start - 1, n)?)
    }

    /// log π(tokens[t] | tokens[..t]) for `t` in `start..`, differentiable
    /// (shape `(seq − start)`), and the entropy (nats, detached) of each
    /// predicting distribution, from one forward pass.
    pub fn token_logprobs_and_entropy(
        &self,
        tokens: &[u32],
        start: usize,
    ) -> Result<(Tensor, Vec<f32>), TrainError> {
        let logits = self.response_logits(tokens, start)?;
        let targets = &tokens[start..];
        if self.device.is_cpu() {
            let both = logits.apply_op1(LogSoftmaxGather {
                targets: targets.to_vec(),
            })?;
            let entropy = both.narrow(1, 1, 1)?.squeeze(1)?.to_vec1::<f32>()?;
            return Ok((both.narrow(1, 0, 1)?.squeeze(1)?, entropy));
        }
        let lp = log_softmax(&logits)?;
        let idx = Tensor::from_slice(targets, (targets.len(), 1), &self.device)?;
        let chosen = lp.gather(&idx, 1)?.squeeze(1)?;
        let d = lp.detach();
        let entropy = (d.exp()? * &d)?.sum(D::Minus1)?.neg()?.to_vec1::<f32>()?;
        Ok((chosen, entropy))
    }

    /// log π(tokens[t] | tokens[..t]) for `t` in `start..`, differentiable,
    /// shape `(seq − start)`.
    pub fn token_logprobs(&self, tokens: &[u32], start: usize) -> Result<Tensor, TrainError> {
        Ok(self.token_logprobs_and_entropy(tokens, start)?.0)
    }

    /// Token log-probs and entropies (nats) of the response, detached.
    pub fn token_stats(
        &self,
        tokens: &[u32],
        start: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
        let (lp, entropy) = self.token_logprobs_and_entropy(tokens, start)?;
        Ok((lp.detach().to_vec1::<f32>()?, entropy))
    }

    /// The adapters as plain matrices (for export and checkpoints).
    pub fn lora_tensors(&self) -> Result<Vec<LoraTensor>, TrainError> {
        self.adapters
            .iter()
            .map(|ad| {
                let (rank, n_in) = ad.a.dims2()?;
                let (n_out, _) = ad.b.dims2()?;
                Ok(LoraTensor {
                    base_name: ad.base_name.clone(),
                    n_in,
                    n_out,
                    rank,
                    a: ad.a.flatten_all()?.to_vec1::<f32>()?,
                    b: ad.b.flatten_all()?.to_vec1::<f32>()?,
                })
            })
            .collect()
    }

    /// Replace the adapters' values (same names and shapes as [`Self::lora_tensors`]).
    pub fn set_lora(&self, tensors: &[LoraTensor]) -> Result<(), TrainError> {
        let by_name: HashMap<&str, &LoraTensor> =
            tensors.iter().map(|t| (t.base_name.as_str(), t)).collect();
        for ad in &self.adapters {
            let t = by_name
                .get(ad.base_name.as_str())
                .ok_or_else(|| TrainError::Invalid {
                    name: "adapter",
                    reason: format!("no values for `{}`", ad.base_name),
                })?;
            let a_shape = ad.a.shape().clone();
            let b_shape = ad.b.shape().clone();
            if a_shape.elem_count() != t.a.len() || b_shape.elem_count() != t.b.len() {
                return Err(TrainError::Invalid {
                    name: "adapter",
                    reason: format!("`{}` has the wrong shape", ad.base_name),
                });
            }
            ad.a.set(&Tensor::from_slice(&t.a, a_shape, &self.device)?)?;
            ad.b.set(&Tensor::from_slice(&t.b, b_shape, &self.device)?)?;
        }
        Ok(())
    }

    /// Write the adapters as a GGUF LoRA llama.cpp loads (atomic), with
    /// `extra_metadata` (training config, seed, metrics) added.
    pub fn write_adapter(
        &self,
        path: &Path,
        extra_metadata: &[(String, Value)],
    ) -> Result<(), TrainError> {
        let tensors = self.lora_tensors()?;
        crate::gguf::write_lora_adapter(
            path,
            &self.arch,
            self.lora.alpha,
            &tensors,
            extra_metadata,
        )?;
        Ok(())
    }
}
