//! LoRA adapter files in the layout llama.cpp loads, and initial adapters
//! shaped after a base model.

use std::collections::BTreeSet;
use std::path::Path;

use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::reader::GgufFile;
use super::rng::Rng;
use super::value::Value;
use super::writer::GgufWriter;

/// One adapted weight `W' = W + scale · B·A`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTensor {
    /// The base tensor, e.g. `blk.0.attn_q.weight`.
    pub base_name: String,
    pub n_in: usize,
    pub n_out: usize,
    pub rank: usize,
    /// Row-major `(rank, n_in)`; ggml dims `[n_in, rank]`.
    pub a: Vec<f32>,
    /// Row-major `(n_out, rank)`; ggml dims `[rank, n_out]`.
    pub b: Vec<f32>,
}

impl LoraTensor {
    pub fn a_name(&self) -> String {
        format!("{}.lora_a", self.base_name)
    }

    pub fn b_name(&self) -> String {
        format!("{}.lora_b", self.base_name)
    }

    fn check(&self) -> Result<(), GgufError> {
        let err = |reason: String| GgufError::LoraShape {
            base: self.base_name.clone(),
            reason,
        };
        if self.rank == 0 || self.n_in == 0 || self.n_out == 0 {
            return Err(err(format!(
                "rank, n_in and n_out must be positive (got {}, {}, {})",
                self.rank, self.n_in, self.n_out
            )));
        }
        let a_len = self.rank.checked_mul(self.n_in);
        if a_len != Some(self.a.len()) {
            return Err(err(format!(
                "A has {} values, expected rank {} × n_in {}",
                self.a.len(),
                self.rank,
                self.n_in
            )));
        }
        let b_len = self.rank.checked_mul(self.n_out);
        if b_len != Some(self.b.len()) {
            return Err(err(format!(
                "B has {} values, expected n_out {} × rank {}",
                self.b.len(),
                self.n_out,
                self.rank
            )));
        }
        Ok(())
    }
}

/// How to initialise a new adapter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoraInit {
    /// A ~ N(0, 1/n_in), B = 0 (as PEFT): the adapter is an exact no-op.
    Zero,
    /// A ~ N(0, std_a²), B ~ N(0, std_b²).
    Random { std_a: f32, std_b: f32 },
}

/// Build the GGUF writer for an adapter (see [`write_lora_adapter`]).
pub fn lora_adapter_writer(
    architecture: &str,
    alpha: f32,
    tensors: &[LoraTensor],
    extra_metadata: &[(String, Value)],
) -> Result<GgufWriter, GgufError> {
    lora_adapter_writer_as(architecture, alpha, tensors, extra_metadata, GgmlType::F32)
}

/// [`lora_adapter_writer`] with the tensors stored as `storage` (F32 or F16).
pub fn lora_adapter_writer_as(
    architecture: &str,
    alpha: f32,
    tensors: &[LoraTensor],
    extra_metadata: &[(String, Value)],
    storage: GgmlType,
) -> Result<GgufWriter, GgufError> {
    if !matches!(storage, GgmlType::F32 | GgmlType::F16) {
        return Err(GgufError::LoraShape {
            base: "(all tensors)".to_string(),
            reason: format!("cannot store an adapter as {storage}; use F32 or F16"),
        });
    }
    let layout = [
        ("general.type", Value::string("adapter")),
        ("general.architecture", Value::string(architecture)),
        ("adapter.type", Value::string("lora")),
        ("adapter.lora.alpha", Value::F32(alpha)),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in &layout {
        w.set(*k, v.clone());
    }
    // Extra metadata never overrides the layout keys above.
    for (k, v) in extra_metadata {
        if !layout.iter().any(|(l, _)| l == k) {
            w.set(k.clone(), v.clone());
        }
    }
    for t in tensors {
        t.check()?;
        let a_dims = [t.n_in as u64, t.rank as u64];
        let b_dims = [t.rank as u64, t.n_out as u64];
        if storage == GgmlType::F16 {
            w.add_tensor_f16(t.a_name(), &a_dims, &t.a)?;
            w.add_tensor_f16(t.b_name(), &b_dims, &t.b)?;
        } else {
            w.add_tensor_f32(t.a_name(), &a_dims, &t.a)?;
            w.add_tensor_f32(t.b_name(), &b_dims, &t.b)?;
        }
    }
    Ok(w)
}

/// A LoRA adapter read back from a GGUF file (F32 or F16 tensors).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub architecture: String,
    /// `adapter.lora.alpha`; llama.cpp applies `alpha / rank`, or 1 when it
    /// is absent or zero.
    pub alpha: Option<f32>,
    /// One entry per `<base>.lora_a` / `<base>.lora_b` pair, in file order.
    pub tensors: Vec<LoraTensor>,
    /// Every metadata pair of the file, in file order.
    pub metadata: Vec<(String, Value)>,
}

impl LoraAdapter {
    /// Read the adapter at `path`: `general.type = "adapter"`,
    /// `adapter.type = "lora"`, and matching A/B pairs.
    pub fn read(path: &Path) -> Result<LoraAdapter, GgufError> {
        let file = GgufFile::open(path)?;
        let not_lora = |reason: String| GgufError::NotLoraAdapter {
            path: path.to_path_buf(),
            reason,
        };
        if !file.is_lora_adapter() {
            return Err(not_lora(format!(
                "general.type is {:?} and adapter.type is {:?} (a LoRA adapter has \"adapter\" and \"lora\")",
                file.get_str("general.type").unwrap_or("missing"),
                file.get_str("adapter.type").unwrap_or("missing"),
            )));
        }
        let architecture = file
            .architecture()
            .ok_or_else(|| not_lora("metadata key `general.architecture` is missing".into()))?
            .to_string();
        let alpha = file
            .get_f64("adapter.lora.alpha")
            .map(|a| a as f32)
            .filter(|&a| a != 0.0);
        let mut tensors = Vec::new();
        for ta in &file.tensors {
            let Some(base_name) = ta.name.strip_suffix(".lora_a") else {
                if !ta.name.ends_with(".lora_b") {
                    return Err(not_lora(format!(
                        "tensor `{}` is not a LoRA factor",
                        ta.name
                    )));
                }
                continue;
            };
            let b_name = format!("{base_name}.lora_b");
            let tb = file
                .tensor(&b_name)
                .ok_or_else(|| not_lora(format!("`{}` has no `{b_name}`", ta.name)))?;
            let (&[n_in, rank_a], &[rank_b, n_out]) = (ta.dims.as_slice(), tb.dims.as_slice())
            else {
                return Err(not_lora(format!(
                    "`{base_name}`: A has dims {:?} and B {:?}; both must be 2-D",
                    ta.dims, tb.dims
                )));
            };
            if rank_a != rank_b {
                return Err(not_lora(format!(
                    "`{base_name}`: A has rank {rank_a} but B has rank {rank_b}"
                )));
            }
            let dim = |d: u64| {
                usize::try_from(d)
                    .map_err(|_| not_lora(format!("`{base_name}`: dimension {d} is too large")))
            };
            let t = LoraTensor {
                base_name: base_name.to_string(),
                n_in: dim(n_in)?,
                n_out: dim(n_out)?,
                rank: dim(rank_a)?,
                a: file.read_tensor_f32(path, ta)?,
                b: file.read_tensor_f32(path, tb)?,
            };
            t.check()?;
            tensors.push(t);
        }
        if tensors.is_empty() {
            return Err(not_lora("it has no `.lora_a` tensors".into()));
        }
        Ok(LoraAdapter {
            architecture,
            alpha,
            tensors,
            metadata: file.metadata,
        })
    }

    /// The scale llama.cpp applies to `t` (at adapter scale 1).
    pub fn scale(&self, t: &LoraTensor) -> f32 {
        match self.alpha {
            Some(alpha) => alpha / t.rank as f32,
            None => 1.0,
        }
    }
}

/// Write a LoRA adapter llama.cpp can load: `general.type = "adapter"`,
/// `adapter.type = "lora"`, `adapter.lora.alpha` (f32) and F32 tensors
/// `<base>.lora_a` `[n_in, rank]`, `<base>.lora_b` `[rank, n_out]`. Atomic.
pub fn write_lora_adapter(
    path: &Path,
    architecture: &str,
    alpha: f32,
    tensors: &[LoraTensor],
    extra_metadata: &[(String, Value)],
) -> Result<(), GgufError> {
    lora_adapter_writer(architecture, alpha, tensors, extra_metadata)?.write(path)
}

/// `Some((block, suffix))` for a name `blk.<block>.<suffix>.weight`.
pub(crate) fn split_block_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (block, rest) = rest.split_once('.')?;
    if block.is_empty() || !block.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let suffix = rest.strip_suffix(".weight")?;
    Some((block.parse().ok()?, suffix))
}

/// Initial adapters for every `blk.N.<target>.weight` 2-D tensor of `base`
/// (ggml dims `[n_in, n_out]`), in the base file's tensor order.
pub fn lora_for_model(
    base: &GgufFile,
    targets: &[&str],
    rank: usize,
    init: LoraInit,
    seed: u64,
) -> Result<Vec<LoraTensor>, GgufError> {
    if rank == 0 {
        return Err(GgufError::LoraShape {
            base: targets.join(", "),
            reason: "rank must be positive".to_string(),
        });
    }
    let candidates: Vec<(&str, &str, u64, u64)> = base
        .tensors
        .iter()
        .filter_map(|t| {
            let (_, suffix) = split_block_name(&t.name)?;
            match t.dims.as_slice() {
                &[n_in, n_out] => Some((t.name.as_str(), suffix, n_in, n_out)),
                _ => None,
            }
        })
        .collect();
    for target in targets {
        if !candidates.iter().any(|c| c.1 == *target) {
            let available: BTreeSet<&str> = candidates.iter().map(|c| c.1).collect();
            return Err(GgufError::UnknownLoraTarget {
                target: (*target).to_string(),
                available: available.into_iter().map(str::to_string).collect(),
            });
        }
    }
    let mut out = Vec::new();
    for &(name, suffix, n_in, n_out) in &candidates {
        if !targets.contains(&suffix) {
            continue;
        }
        let shape_err = || GgufError::LoraShape {
            base: name.to_string(),
            reason: format!("base dims [{n_in}, {n_out}] are too large"),
        };
        let n_in = usize::try_from(n_in).map_err(|_| shape_err())?;
        let n_out = usize::try_from(n_out).map_err(|_| shape_err())?;
        let a_len = rank.checked_mul(n_in).ok_or_else(shape_err)?;
        let b_len = rank.checked_mul(n_out).ok_or_else(shape_err)?;
        let mut rng = Rng::for_label(seed, name);
        let (a, b) = match init {
            LoraInit::Zero => {
                let std_a = 1.0 / (n_in.max(1) as f32).sqrt();
                (rng.normals_f32(a_len, std_a), vec![0.0; b_len])
            }
            LoraInit::Random { std_a, std_b } => {
                let a = rng.normals_f32(a_len, std_a);
                (a, rng.normals_f32(b_len, std_b))
            }
        };
        out.push(LoraTensor {
            base_name: name.to_string(),
            n_in,
            n_out,
            rank,
            a,
            b,
        });
    }
    Ok(out)
}
