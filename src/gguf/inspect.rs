//! A summary of a GGUF file for people (`dlogp inspect`).

use std::collections::BTreeMap;

use super::lora::split_block_name;
use super::reader::GgufFile;
use super::value::Value;

/// What a GGUF file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Model,
    LoraAdapter,
    /// Another `general.type` (or adapter type), as written in the file.
    Other(String),
}

/// The facts `inspect` reports about one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub kind: FileKind,
    pub version: u32,
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.file_type` as a llama_ftype name, e.g. `MOSTLY_Q4_1`.
    pub file_type: Option<String>,
    /// `{arch}.*` hyperparameters present in the file, in a fixed order.
    pub hyperparameters: Vec<(String, String)>,
    pub vocab_size: Option<u64>,
    /// `tokenizer.ggml.model`.
    pub tokenizer_model: Option<String>,
    pub has_chat_template: bool,
    pub n_tensors: usize,
    /// Tensor count per ggml type, most frequent first.
    pub tensor_types: Vec<(String, usize)>,
    pub n_parameters: u64,
    /// Adapters only: rank from the `lora_a` tensors.
    pub lora_rank: Option<u64>,
    pub lora_alpha: Option<f64>,
    /// Adapters only: adapted base tensor names, by block number.
    pub lora_targets: Vec<String>,
    /// Adapters only: the targets grouped by projection (`attn_q.weight`)
    /// with the blocks each is adapted in, ascending; a target outside the
    /// blocks (`output.weight`) is its own group with no blocks.
    pub lora_by_projection: Vec<(String, Vec<u64>)>,
    /// Every metadata pair, in file order.
    pub metadata: Vec<(String, Value)>,
}

/// Items an array's summary shows before `…`.
const SHOWN_ITEMS: usize = 4;

/// A metadata value in one line: numbers and short strings as they are,
/// long strings cut (with their length), arrays as their type, length and
/// first few items.
pub fn value_summary(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let n = s.chars().count();
            let shown = v.to_string();
            if n > 60 {
                format!("{shown} ({n} chars)")
            } else {
                shown
            }
        }
        Value::Array(a) => {
            let items: Vec<String> = a
                .items
                .iter()
                .take(SHOWN_ITEMS)
                .map(Value::to_string)
                .collect();
            let more = if a.items.len() > SHOWN_ITEMS {
                ", …"
            } else {
                ""
            };
            format!("[{}; {}] {}{more}", a.elem, a.items.len(), items.join(", "))
        }
        other => other.to_string(),
    }
}

/// A metadata value as JSON, complete (arrays item by item, strings whole).
pub fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::U8(x) => J::from(*x),
        Value::I8(x) => J::from(*x),
        Value::U16(x) => J::from(*x),
        Value::I16(x) => J::from(*x),
        Value::U32(x) => J::from(*x),
        Value::I32(x) => J::from(*x),
        Value::U64(x) => J::from(*x),
        Value::I64(x) => J::from(*x),
        // non-finite floats have no JSON number: their text
        Value::F32(x) => serde_json::Number::from_f64(f64::from(*x))
            .map_or_else(|| J::from(x.to_string()), J::Number),
        Value::F64(x) => {
            serde_json::Number::from_f64(*x).map_or_else(|| J::from(x.to_string()), J::Number)
        }
        Value::Bool(b) => J::from(*b),
        Value::String(s) => J::from(s.as_str()),
        Value::Array(a) => J::Array(a.items.iter().map(value_json).collect()),
    }
}

/// `blocks` as ranges: `0-29`, `0-3, 8, 10-11`.
pub fn block_ranges(blocks: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i;
        while j + 1 < blocks.len() && blocks[j + 1] == blocks[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            blocks[i].to_string()
        } else {
            format!("{}-{}", blocks[i], blocks[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// The `{arch}.` keys shown as hyperparameters.
const HYPERPARAMETER_KEYS: [&str; 10] = [
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "rope.dimension_count",
    "rope.freq_base",
    "attention.layer_norm_rms_epsilon",
    "vocab_size",
];

/// llama.cpp's `llama_ftype` names (without the `LLAMA_FTYPE_` prefix).
pub fn file_type_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        19 => "MOSTLY_IQ2_XXS",
        20 => "MOSTLY_IQ2_XS",
        21 => "MOSTLY_Q2_K_S",
        22 => "MOSTLY_IQ3_XS",
        23 => "MOSTLY_IQ3_XXS",
        24 => "MOSTLY_IQ1_S",
        25 => "MOSTLY_IQ4_NL",
        26 => "MOSTLY_IQ3_S",
        27 => "MOSTLY_IQ3_M",
        28 => "MOSTLY_IQ2_S",
        29 => "MOSTLY_IQ2_M",
        30 => "MOSTLY_IQ4_XS",
        31 => "MOSTLY_IQ1_M",
        32 => "MOSTLY_BF16",
        36 => "MOSTLY_TQ1_0",
        37 => "MOSTLY_TQ2_0",
        38 => "MOSTLY_MXFP4_MOE",
        _ => return None,
    })
}

impl Inspection {
    pub fn from_file(f: &GgufFile) -> Inspection {
        let architecture = f.architecture().map(str::to_string);
        let kind = match f.get_str("general.type") {
            None | Some("model") => FileKind::Model,
            Some("adapter") => match f.get_str("adapter.type") {
                Some("lora") => FileKind::LoraAdapter,
                other => FileKind::Other(format!("adapter/{}", other.unwrap_or("unknown"))),
            },
            Some(other) => FileKind::Other(other.to_string()),
        };
        let hyperparameters = HYPERPARAMETER_KEYS
            .iter()
            .filter_map(|k| f.arch_key(k).map(|v| ((*k).to_string(), v.to_string())))
            .collect();
        let vocab_size = f
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(|a| a.items.len() as u64)
            .or_else(|| f.arch_key("vocab_size").and_then(|v| v.as_u64()));
        let file_type = f
            .get_u64("general.file_type")
            .map(|n| file_type_name(n).map_or_else(|| format!("unknown ({n})"), str::to_string));

        let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
        let mut n_parameters = 0u64;
        for t in &f.tensors {
            *by_type.entry(t.ggml_type.name()).or_default() += 1;
            n_parameters = n_parameters.saturating_add(t.n_elements().unwrap_or(0));
        }
        let mut tensor_types: Vec<(String, usize)> = by_type
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        tensor_types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

        let is_lora = kind == FileKind::LoraAdapter;
        let mut lora_targets: Vec<String> = if is_lora {
            f.tensors
                .iter()
                .filter_map(|t| t.name.strip_suffix(".lora_a").map(str::to_string))
                .collect()
        } else {
            Vec::new()
        };
        lora_targets.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        let lora_rank = if is_lora {
            f.tensors
                .iter()
                .find(|t| t.name.ends_with(".lora_a"))
                .and_then(|t| t.dims.get(1).copied())
        } else {
            None
        };

        let mut groups: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for t in &lora_targets {
            match split_block_name(t) {
                Some((block, projection)) => groups
                    .entry(projection.to_string())
                    .or_default()
                    .push(block),
                None => {
                    groups.entry(t.clone()).or_default();
                }
            }
        }
        let lora_by_projection = groups
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_unstable();
                v.dedup();
                (k, v)
            })
            .collect();

        Inspection {
            kind,
            version: f.version,
            architecture,
            name: f.get_str("general.name").map(str::to_string),
            file_type,
            hyperparameters,
            vocab_size,
            tokenizer_model: f.get_str("tokenizer.ggml.model").map(str::to_string),
            has_chat_template: f.get_str("tokenizer.chat_template").is_some(),
            n_tensors: f.tensors.len(),
            tensor_types,
            n_parameters,
            lora_rank,
            lora_alpha: if is_lora {
                f.get_f64("adapter.lora.alpha")
            } else {
                None
            },
            lora_targets,
            lora_by_projection,
            metadata: f.metadata.clone(),
        }
    }
}

/// Sort key putting `blk.2.x` before `blk.10.x`; non-block names first.
fn natural_key(name: &str) -> (u64, &str) {
    match split_block_name(name) {
        Some((block, suffix)) => (block.saturating_add(1), suffix),
        None => (0, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::ValueType;

    #[test]
    fn ranges_and_summaries() {
        assert_eq!(block_ranges(&[0, 1, 2, 3, 8, 10, 11]), "0-3, 8, 10-11");
        assert_eq!(block_ranges(&[]), "");
        let a = Value::array(ValueType::U32, (0..10).map(Value::U32).collect());
        assert_eq!(value_summary(&a), "[u32; 10] 0, 1, 2, 3, …");
        let long = Value::string("x".repeat(500));
        let s = value_summary(&long);
        assert!(s.ends_with("(500 chars)") && s.len() < 200, "{s}");
        assert_eq!(value_json(&a).as_array().unwrap().len(), 10);
        assert_eq!(value_json(&Value::F32(f32::NAN)), "NaN");
    }
}
