//! Semantic checks of models and adapters: the values llama.cpp would abort
//! on (a `GGML_ASSERT`, a division by zero, a crash) or llama-cpp-2 would
//! panic on, although the file is structurally sound.
//!
//! [`GgufFile`] checks the structure (counts, lengths, tensor data inside the
//! file); [`problems`] checks what the numbers mean: layer and head counts,
//! context length, epsilons, the vocabulary, the types of the metadata
//! llama.cpp reads and of every weight. Each [`Problem`] names the key or
//! tensor, the value and what is wrong. The rules follow the vendored
//! llama.cpp (`llama-model.cpp`'s `load_hparams`, `llama-vocab.cpp`'s
//! `load`, `llama-adapter.cpp`, ggml's CPU type traits); they apply to every
//! architecture unless marked as llama-only.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::reader::GgufFile;
use super::tensor::TensorInfo;
use super::value::{Value, ValueType};

/// llama.cpp's `LLAMA_MAX_LAYERS` (src/llama-hparams.h): more blocks abort.
pub const LLAMA_MAX_LAYERS: u64 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS` (src/llama-hparams.h).
pub const LLAMA_MAX_EXPERTS: u64 = 1024;
/// Largest context length (and other count) llama.cpp hands back as an
/// `int32_t` that llama-cpp-2 turns into a `u32` (panicking on a negative).
pub const I32_MAX: u64 = i32::MAX as u64;
/// `rope.scaling.type` values llama.cpp knows (any other aborts).
pub const ROPE_SCALING_TYPES: [&str; 4] = ["none", "linear", "yarn", "longrope"];
/// Mixture-of-experts architectures whose graph asserts `n_expert > 0`.
pub const MOE_ONLY_ARCHITECTURES: [&str; 5] = [
    "bailingmoe2",
    "glm4moe",
    "grovemoe",
    "llada-moe",
    "smallthinker",
];
/// Architectures that always use multi-section RoPE (M-RoPE), whose kernel
/// asserts that one of the first three `rope.dimension_sections` is set.
pub const MROPE_ARCHITECTURES: [&str; 9] = [
    "qwen2vl",
    "paddleocr",
    "qwen3vl",
    "qwen3vlmoe",
    "qwen35",
    "qwen35moe",
    "clef",
    "qwen4exp",
    "qwen3tts",
];

/// What a problem is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A metadata key.
    Key(String),
    /// A tensor.
    Tensor(String),
}

/// One thing in a file that llama.cpp would abort on (or dlogp cannot use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub subject: Subject,
    /// The offending value as shown to people: `0`, `missing`,
    /// `type I32`, `dims [0, 64]`, ...
    pub value: String,
    /// What is wrong.
    pub reason: String,
    /// How to fix it, where that is clear.
    pub hint: Option<String>,
}

impl Problem {
    fn key(key: &str, value: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            subject: Subject::Key(key.to_string()),
            value: value.into(),
            reason: reason.into(),
            hint: None,
        }
    }

    fn tensor(name: &str, value: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            subject: Subject::Tensor(name.to_string()),
            value: value.into(),
            reason: reason.into(),
            hint: None,
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }

    /// The key or tensor name.
    pub fn name(&self) -> &str {
        match &self.subject {
            Subject::Key(k) | Subject::Tensor(k) => k,
        }
    }

    /// The problem on one line, without the hint.
    pub fn summary(&self) -> String {
        match &self.subject {
            Subject::Key(k) => format!("metadata key `{k}` is {}: {}", self.value, self.reason),
            Subject::Tensor(t) => format!("tensor `{t}` has {}: {}", self.value, self.reason),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem of a file: adapter rules when `general.type` is
/// `"adapter"`, model rules otherwise (as `Model::load` treats it).
pub fn problems(file: &GgufFile) -> Vec<Problem> {
    if file.is_adapter() {
        adapter_problems(file)
    } else {
        model_problems(file)
    }
}

/// `Err` with the first problem (and the count of the others), naming `path`.
pub fn check(file: &GgufFile, path: &Path) -> Result<(), GgufError> {
    first_error(problems(file), path)
}

/// [`check`] with the adapter rules, whatever `general.type` says.
pub fn check_adapter_file(file: &GgufFile, path: &Path) -> Result<(), GgufError> {
    first_error(adapter_problems(file), path)
}

/// `Err` ([`GgufError::Invalid`]) with the first of `all`, naming `path`.
pub fn first_error(mut all: Vec<Problem>, path: &Path) -> Result<(), GgufError> {
    if all.is_empty() {
        return Ok(());
    }
    let more = all.len() - 1;
    Err(GgufError::Invalid {
        path: path.to_path_buf(),
        problem: Box::new(all.swap_remove(0)),
        more,
    })
}

/// A value with its type, for type problems: `2 (i32)`.
fn typed(v: &Value) -> String {
    format!("{v} ({})", v.value_type())
}

/// Read `key` as llama.cpp's `get_key<uint32_t>` does: exactly a u32.
fn u32_key(f: &GgufFile, key: &str, required: bool, out: &mut Vec<Problem>) -> Option<u64> {
    match f.get(key) {
        None => {
            if required {
                out.push(Problem::key(
                    key,
                    "missing",
                    "llama.cpp needs it to load the model",
                ));
            }
            None
        }
        Some(Value::U32(v)) => Some(u64::from(*v)),
        Some(v) => {
            out.push(Problem::key(key, typed(v), "llama.cpp reads it as a u32"));
            None
        }
    }
}

/// Read `key` as `get_key<float>`: exactly an f32.
fn f32_key(f: &GgufFile, key: &str, out: &mut Vec<Problem>) -> Option<f32> {
    match f.get(key)? {
        Value::F32(v) => Some(*v),
        v => {
            out.push(Problem::key(key, typed(v), "llama.cpp reads it as an f32"));
            None
        }
    }
}

/// Read `key` as `get_key_or_arr<uint32_t>`: a u32, or an array of
/// u32/i32/bool with one entry per block. Per-layer values, or `None`.
fn per_layer_key(
    f: &GgufFile,
    key: &str,
    n_layer: Option<u64>,
    out: &mut Vec<Problem>,
) -> Option<Vec<u64>> {
    per_item_key(f, key, n_layer, "block", out)
}

/// [`per_layer_key`] with one value per `unit` (block, section).
fn per_item_key(
    f: &GgufFile,
    key: &str,
    n_items: Option<u64>,
    unit: &str,
    out: &mut Vec<Problem>,
) -> Option<Vec<u64>> {
    let n_layer = n_items;
    match f.get(key)? {
        Value::U32(v) => Some(vec![u64::from(*v)]),
        Value::Array(a) => {
            if !matches!(a.elem, ValueType::U32 | ValueType::I32 | ValueType::Bool) {
                out.push(Problem::key(
                    key,
                    format!("an array of {}", a.elem),
                    format!("llama.cpp reads it as a u32 or an array of u32, one per {unit}"),
                ));
                return None;
            }
            if let Some(n) = n_layer {
                if a.items.len() as u64 != n {
                    out.push(Problem::key(
                        key,
                        format!("an array of {} values", a.items.len()),
                        format!("it needs one value per {unit} ({n})"),
                    ));
                    return None;
                }
            }
            let values = a
                .items
                .iter()
                .map(|v| match *v {
                    Value::Bool(b) => u64::from(b),
                    Value::I32(i) => u64::from(i as u32),
                    _ => v.as_u64().unwrap_or(0),
                })
                .collect();
            Some(values)
        }
        v => {
            out.push(Problem::key(
                key,
                typed(v),
                format!("llama.cpp reads it as a u32 or an array of u32, one per {unit}"),
            ));
            None
        }
    }
}

/// A string key llama.cpp reads with `gguf_get_val_str`, which aborts on
/// any other type.
fn str_key<'a>(
    f: &'a GgufFile,
    key: &str,
    required: bool,
    out: &mut Vec<Problem>,
) -> Option<&'a str> {
    match f.get(key) {
        None => {
            if required {
                out.push(Problem::key(key, "missing", "llama.cpp needs it"));
            }
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(v) => {
            out.push(Problem::key(
                key,
                typed(v),
                "llama.cpp reads it as a string",
            ));
            None
        }
    }
}

/// The problems of a model file (whatever its `general.type`).
pub fn model_problems(f: &GgufFile) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(arch) = str_key(f, "general.architecture", true, &mut out) {
        hyperparameter_problems(f, arch, &mut out);
    }
    vocabulary_problems(f, &mut out);
    alignment_problem(f, &mut out);
    for t in &f.tensors {
        tensor_dims_problem(t, &mut out);
        if t.name.ends_with(".weight") || t.name.ends_with(".bias") {
            weight_type_problem(t, &mut out);
        }
    }
    out
}

fn hyperparameter_problems(f: &GgufFile, arch: &str, out: &mut Vec<Problem>) {
    let k = |suffix: &str| format!("{arch}.{suffix}");
    let is_llama = arch == "llama";

    let n_layer = u32_key(f, &k("block_count"), true, out);
    if let Some(n) = n_layer {
        if n == 0 || n > LLAMA_MAX_LAYERS {
            out.push(
                Problem::key(
                    &k("block_count"),
                    n.to_string(),
                    format!(
                        "a model has 1 to {LLAMA_MAX_LAYERS} blocks (llama.cpp's LLAMA_MAX_LAYERS)"
                    ),
                )
                .with_hint("the file is corrupt or was written for a different llama.cpp"),
            );
        }
    }
    let n_layer = n_layer.filter(|&n| (1..=LLAMA_MAX_LAYERS).contains(&n));

    if let Some(n) = u32_key(f, &k("context_length"), true, out) {
        if n == 0 || n > I32_MAX {
            out.push(Problem::key(
                &k("context_length"),
                n.to_string(),
                format!("the trained context length must be between 1 and {I32_MAX}"),
            ));
        }
    }
    let n_embd = u32_key(f, &k("embedding_length"), true, out);
    if let Some(n) = n_embd {
        if n == 0 || n > I32_MAX {
            out.push(Problem::key(
                &k("embedding_length"),
                n.to_string(),
                format!("the embedding length must be between 1 and {I32_MAX}"),
            ));
        }
    }
    let n_embd = n_embd.filter(|&n| n > 0);

    head_problems(f, arch, n_layer, n_embd, out);

    for eps in [
        "attention.layer_norm_rms_epsilon",
        "attention.layer_norm_epsilon",
    ] {
        let key = k(eps);
        if let Some(v) = f32_key(f, &key, out) {
            if !v.is_finite() || v <= 0.0 {
                out.push(Problem::key(
                    &key,
                    v.to_string(),
                    "a normalization epsilon must be a finite number above 0 (usually 1e-5 or 1e-6)",
                ));
            }
        }
    }
    if let Some(v) = f32_key(f, &k("rope.freq_base"), out) {
        if !v.is_finite() || v <= 0.0 {
            out.push(Problem::key(
                &k("rope.freq_base"),
                v.to_string(),
                "the RoPE base frequency must be a finite number above 0 (usually 10000)",
            ));
        }
    }
    let scaling = k("rope.scaling.type");
    if let Some(s) = str_key(f, &scaling, false, out) {
        if !ROPE_SCALING_TYPES.contains(&s) {
            out.push(Problem::key(
                &scaling,
                format!("{s:?}"),
                format!(
                    "llama.cpp aborts on a RoPE scaling type other than {}",
                    ROPE_SCALING_TYPES.join(", ")
                ),
            ));
        }
    }
    if is_llama {
        // llama.cpp reads it with `required = true` for llama.
        if f.get(&k("attention.layer_norm_rms_epsilon")).is_none() {
            out.push(Problem::key(
                &k("attention.layer_norm_rms_epsilon"),
                "missing",
                "llama.cpp needs it for the llama architecture",
            ));
        }
    }
    expert_problems(f, arch, n_layer, out);
    rope_sections_problem(f, arch, out);
    if let Some(n) = u32_key(f, &k("nextn_predict_layers"), false, out) {
        if n_layer.is_some_and(|l| n > l) {
            out.push(Problem::key(
                &k("nextn_predict_layers"),
                n.to_string(),
                "it cannot exceed the block count",
            ));
        }
    }
}

fn head_problems(
    f: &GgufFile,
    arch: &str,
    n_layer: Option<u64>,
    n_embd: Option<u64>,
    out: &mut Vec<Problem>,
) {
    let is_llama = arch == "llama";
    let head_key = format!("{arch}.attention.head_count");
    let kv_key = format!("{arch}.attention.head_count_kv");
    let n_before = out.len();
    let heads = per_layer_key(f, &head_key, n_layer, out);
    if heads.is_none() && is_llama && out.len() == n_before {
        out.push(Problem::key(
            &head_key,
            "missing",
            "the llama architecture needs attention heads",
        ));
    }
    let kv = per_layer_key(f, &kv_key, n_layer, out);
    let Some(heads) = heads else { return };
    let layer = |v: &[u64], i: usize| v.get(i).or(v.first()).copied().unwrap_or(0);
    let n = heads.len().max(kv.as_ref().map_or(1, Vec::len));
    let has_key_length = f.get(&format!("{arch}.attention.key_length")).is_some();
    for i in 0..n {
        let h = layer(&heads, i);
        let at = |v: &[u64]| {
            if v.len() > 1 {
                format!("{} (block {i})", layer(v, i))
            } else {
                layer(v, i).to_string()
            }
        };
        if h > I32_MAX {
            out.push(Problem::key(
                &head_key,
                at(&heads),
                format!("a head count must be at most {I32_MAX}"),
            ));
            return;
        }
        if h == 0 && is_llama {
            out.push(Problem::key(
                &head_key,
                at(&heads),
                "the llama architecture needs at least one attention head per block",
            ));
            return;
        }
        if let (Some(e), false, true) = (n_embd, has_key_length, is_llama && h > 0) {
            if e % h != 0 {
                out.push(Problem::key(
                    &head_key,
                    at(&heads),
                    format!("the embedding length {e} is not divisible by the head count"),
                ));
                return;
            }
        }
        if let Some(kv) = &kv {
            let g = layer(kv, i);
            if g == 0 && h > 0 && is_llama {
                out.push(Problem::key(
                    &kv_key,
                    at(kv),
                    "every attention layer needs at least one key/value head",
                ));
                return;
            }
            if g > 0 && h > 0 && h % g != 0 {
                out.push(Problem::key(
                    &kv_key,
                    at(kv),
                    format!("the head count {h} is not a multiple of the key/value head count"),
                ));
                return;
            }
            if g > 0 && h == 0 {
                out.push(Problem::key(
                    &kv_key,
                    at(kv),
                    "a layer without attention heads cannot have key/value heads",
                ));
                return;
            }
        }
    }
    if heads.iter().any(|&h| h > 0) {
        for suffix in ["attention.key_length", "attention.value_length"] {
            let key = format!("{arch}.{suffix}");
            if u32_key(f, &key, false, out) == Some(0) {
                out.push(Problem::key(
                    &key,
                    "0",
                    "an attention head needs at least one dimension",
                ));
            }
        }
    }
}

/// `{arch}.rope.dimension_sections`: four section sizes; the M-RoPE kernel
/// asserts one of the first three is non-zero whenever it runs.
fn rope_sections_problem(f: &GgufFile, arch: &str, out: &mut Vec<Problem>) {
    let key = format!("{arch}.rope.dimension_sections");
    let sections = per_item_key(f, &key, Some(4), "section", out);
    let needs = MROPE_ARCHITECTURES.contains(&arch);
    let shown = |s: &[u64]| format!("{s:?}");
    match sections {
        None if needs && f.get(&key).is_none() => out.push(Problem::key(
            &key,
            "missing",
            format!("the `{arch}` architecture uses M-RoPE and needs its sections"),
        )),
        Some(s) if s.iter().take(3).all(|&x| x == 0) && (needs || s.iter().any(|&x| x > 0)) => out
            .push(Problem::key(
                &key,
                shown(&s),
                "one of the first three M-RoPE sections must be above 0 (llama.cpp asserts it)",
            )),
        _ => {}
    }
}

fn expert_problems(f: &GgufFile, arch: &str, n_layer: Option<u64>, out: &mut Vec<Problem>) {
    let k = |suffix: &str| format!("{arch}.{suffix}");
    let n_expert = u32_key(f, &k("expert_count"), false, out).unwrap_or(0);
    if n_expert == 0 && MOE_ONLY_ARCHITECTURES.contains(&arch) {
        out.push(Problem::key(
            &k("expert_count"),
            if f.get(&k("expert_count")).is_some() {
                "0"
            } else {
                "missing"
            },
            format!("the `{arch}` architecture is a mixture of experts and needs at least one"),
        ));
        return;
    }
    let used = per_layer_key(f, &k("expert_used_count"), n_layer, out)
        .map_or(0, |v| v.into_iter().max().unwrap_or(0));
    let groups = u32_key(f, &k("expert_group_count"), false, out).unwrap_or(0);
    let group_used = u32_key(f, &k("expert_group_used_count"), false, out).unwrap_or(0);
    let bad = |key: &str, v: u64, reason: String| Problem::key(&k(key), v.to_string(), reason);
    if n_expert > LLAMA_MAX_EXPERTS {
        out.push(bad(
            "expert_count",
            n_expert,
            format!("llama.cpp supports at most {LLAMA_MAX_EXPERTS} experts"),
        ));
        return;
    }
    if used > n_expert {
        out.push(bad(
            "expert_used_count",
            used,
            format!("it cannot exceed the expert count ({n_expert})"),
        ));
    } else if n_expert > 0 && used == 0 {
        out.push(bad(
            "expert_used_count",
            used,
            "a mixture of experts must use at least one expert per token".into(),
        ));
    }
    if n_expert == 0 {
        if groups != 0 {
            out.push(bad(
                "expert_group_count",
                groups,
                "a model without experts cannot have expert groups".into(),
            ));
        }
        return;
    }
    if groups >= n_expert {
        out.push(bad(
            "expert_group_count",
            groups,
            format!("it must be below the expert count ({n_expert})"),
        ));
    } else if groups > 1 {
        if n_expert % groups != 0 {
            out.push(bad(
                "expert_group_count",
                groups,
                format!("it must divide the expert count ({n_expert})"),
            ));
        }
        if group_used == 0 || group_used >= groups {
            out.push(bad(
                "expert_group_used_count",
                group_used,
                format!("it must be between 1 and the group count ({groups}) - 1"),
            ));
        }
    }
}

fn vocabulary_problems(f: &GgufFile, out: &mut Vec<Problem>) {
    const MODEL: &str = "tokenizer.ggml.model";
    let tokenizer = str_key(f, MODEL, true, out);
    if let Some(t @ ("none" | "no_vocab")) = tokenizer {
        out.push(Problem::key(
            MODEL,
            format!("{t:?}"),
            "the model has no tokenizer; llama.cpp aborts when asked to tokenize",
        ));
    }
    const TOKENS: &str = "tokenizer.ggml.tokens";
    let tokens = match f.get(TOKENS) {
        None => {
            out.push(Problem::key(
                TOKENS,
                "missing",
                "llama.cpp needs the vocabulary",
            ));
            None
        }
        Some(Value::Array(a)) if a.elem == ValueType::String => {
            if a.items.is_empty() {
                out.push(Problem::key(
                    TOKENS,
                    "empty",
                    "the vocabulary needs at least one token",
                ));
            }
            if a.items.len() > I32_MAX as usize {
                out.push(Problem::key(
                    TOKENS,
                    format!("{} tokens", a.items.len()),
                    "llama.cpp counts tokens in an i32",
                ));
            }
            Some(&a.items).filter(|items| !items.is_empty())
        }
        Some(v) => {
            out.push(Problem::key(
                TOKENS,
                typed(v),
                "the vocabulary must be an array of strings",
            ));
            None
        }
    };
    let n_tokens = tokens.map(Vec::len);
    let mut token_types = None;
    for (key, types) in [
        (
            "tokenizer.ggml.scores",
            &[ValueType::F32, ValueType::I32][..],
        ),
        ("tokenizer.ggml.token_type", &[ValueType::I32][..]),
    ] {
        let Some(v) = f.get(key) else { continue };
        let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
        match v {
            Value::Array(a) if types.contains(&a.elem) => match n_tokens {
                Some(n) if a.items.len() != n => out.push(Problem::key(
                    key,
                    format!("an array of {} values", a.items.len()),
                    format!("it needs one value per token ({n})"),
                )),
                Some(_) if key == "tokenizer.ggml.token_type" => token_types = Some(&a.items),
                _ => {}
            },
            Value::Array(a) => out.push(Problem::key(
                key,
                format!("an array of {}", a.elem),
                format!("llama.cpp reads it as an array of {}", names.join(" or ")),
            )),
            v => out.push(Problem::key(
                key,
                typed(v),
                format!("llama.cpp reads it as an array of {}", names.join(" or ")),
            )),
        }
    }
    if let Some(items) = tokens {
        let texts = token_texts(items);
        duplicate_token_problem(&texts, out);
        byte_token_problems(tokenizer.unwrap_or(""), &texts, token_types, out);
    }
}

/// Token texts as llama.cpp keys them (an empty text is `[EMPTY_<id>]`).
fn token_texts(items: &[Value]) -> Vec<std::borrow::Cow<'_, str>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.as_str() {
            Some("") | None => std::borrow::Cow::Owned(format!("[EMPTY_{i}]")),
            Some(s) => std::borrow::Cow::Borrowed(s),
        })
        .collect()
}

/// llama.cpp maps token texts to ids and asserts that no two are equal.
fn duplicate_token_problem(texts: &[std::borrow::Cow<'_, str>], out: &mut Vec<Problem>) {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        if let Some(first) = seen.insert(text.as_ref(), i) {
            out.push(
                Problem::key(
                    "tokenizer.ggml.tokens",
                    format!("{} at ids {first} and {i}", Value::string(text.as_ref())),
                    "token texts must be unique (llama.cpp aborts on a duplicate)",
                )
                .with_hint("the vocabulary is corrupt; re-convert the model"),
            );
            return;
        }
    }
}

/// llama.cpp's token type of byte tokens (`LLAMA_TOKEN_TYPE_BYTE`).
const TOKEN_TYPE_BYTE: i32 = 6;

/// Byte tokens as llama.cpp's tokenizers use them: SentencePiece (`llama`)
/// falls back to `<0xXX>` (or the byte itself) for any byte it cannot
/// tokenize otherwise and throws through the C API (an abort) when one is
/// missing; WordPiece (`bert`) aborts on any byte-typed token while loading.
/// (A malformed `<0xXX>` text elsewhere is a clean load error or a wrong
/// byte, not an abort.)
fn byte_token_problems(
    tokenizer: &str,
    texts: &[std::borrow::Cow<'_, str>],
    token_types: Option<&Vec<Value>>,
    out: &mut Vec<Problem>,
) {
    if tokenizer == "bert" {
        let byte = token_types
            .and_then(|types| types.iter().position(|t| *t == Value::I32(TOKEN_TYPE_BYTE)));
        if let Some(i) = byte {
            out.push(Problem::key(
                "tokenizer.ggml.token_type",
                format!("{TOKEN_TYPE_BYTE} (byte) at id {i}"),
                "llama.cpp's WordPiece tokenizer (bert) aborts on byte tokens",
            ));
        }
    }
    if tokenizer == "llama" {
        let known: std::collections::HashSet<&str> = texts.iter().map(|t| t.as_ref()).collect();
        for b in 0..=255u8 {
            let hex = format!("<0x{b:02X}>");
            let raw = (b as char).to_string();
            let present =
                known.contains(hex.as_str()) || (b.is_ascii() && known.contains(raw.as_str()));
            if !present {
                out.push(
                    Problem::key(
                        "tokenizer.ggml.tokens",
                        format!("a vocabulary without {hex}"),
                        "llama.cpp's SentencePiece tokenizer (llama) falls back to the byte tokens <0x00>..<0xFF> and aborts when one is missing",
                    )
                    .with_hint("the vocabulary is corrupt or incomplete; re-convert the model"),
                );
                return;
            }
        }
    }
}

/// Tensor data is mapped in place; ggml needs each tensor 32-byte aligned.
const TENSOR_ALIGNMENT: u64 = 32;

fn alignment_problem(f: &GgufFile, out: &mut Vec<Problem>) {
    let misaligned = f.tensors.iter().find(|t| {
        f.data_offset
            .checked_add(t.offset)
            .is_none_or(|start| start % TENSOR_ALIGNMENT != 0)
    });
    let Some(t) = misaligned else { return };
    let problem = match f.get("general.alignment") {
        Some(v) => Problem::key(
            "general.alignment",
            v.to_string(),
            format!("llama.cpp maps tensor data in place and needs it aligned to {TENSOR_ALIGNMENT} bytes (`{}` is not)", t.name),
        ),
        None => Problem::tensor(
            &t.name,
            format!("data at byte {}", f.data_offset.saturating_add(t.offset)),
            format!("llama.cpp maps tensor data in place and needs it aligned to {TENSOR_ALIGNMENT} bytes"),
        ),
    };
    out.push(problem.with_hint("rewrite the file with `general.alignment` 32 (the default)"));
}

/// Tensor types ggml can multiply by (and dequantize): floats and the
/// quantized types with a CPU dot product (Q8_1 and Q8_K are only
/// intermediate types of activations).
pub fn is_weight_type(t: GgmlType) -> bool {
    use GgmlType::*;
    !matches!(t, I8 | I16 | I32 | I64 | F64 | Q8_1 | Q8_K)
}

fn tensor_dims_problem(t: &TensorInfo, out: &mut Vec<Problem>) {
    if t.dims.contains(&0) {
        out.push(Problem::tensor(
            &t.name,
            format!("dims {:?}", t.dims),
            "a tensor dimension of 0 holds no data",
        ));
    }
}

fn weight_type_problem(t: &TensorInfo, out: &mut Vec<Problem>) {
    if !is_weight_type(t.ggml_type) {
        out.push(Problem::tensor(
            &t.name,
            format!("type {}", t.ggml_type),
            "a weight must be a float (F32, F16, BF16) or quantized type; llama.cpp cannot compute with it",
        ));
        return;
    }
    // Norms and biases are multiplied into / added to F32 activations,
    // which ggml's CPU backend does only with F32 operands.
    let is_vector = t.dims.iter().skip(1).all(|&d| d == 1);
    if is_vector && t.ggml_type != GgmlType::F32 {
        out.push(Problem::tensor(
            &t.name,
            format!("type {}", t.ggml_type),
            "a one-dimensional weight (a norm or bias) must be F32",
        ));
    }
}

/// The problems of a LoRA adapter file.
pub fn adapter_problems(f: &GgufFile) -> Vec<Problem> {
    let mut out = Vec::new();
    str_key(f, "general.type", true, &mut out);
    str_key(f, "general.architecture", true, &mut out);
    if let Some(t) = str_key(f, "adapter.type", true, &mut out) {
        if t != "lora" {
            out.push(Problem::key(
                "adapter.type",
                format!("{t:?}"),
                "only LoRA adapters (\"lora\") can be loaded",
            ));
        }
    }
    const ALPHA: &str = "adapter.lora.alpha";
    match f.get(ALPHA) {
        None => {}
        Some(Value::F32(a)) if a.is_finite() => {}
        Some(Value::F32(a)) => out.push(Problem::key(
            ALPHA,
            a.to_string(),
            "the LoRA alpha must be a finite number",
        )),
        Some(v) => out.push(
            Problem::key(ALPHA, typed(v), "llama.cpp reads the LoRA alpha as an f32")
                .with_hint("write alpha as a 32-bit float (e.g. 8.0, not 8)"),
        ),
    }
    const ALORA: &str = "adapter.alora.invocation_tokens";
    match f.get(ALORA) {
        None => {}
        Some(Value::Array(a)) if a.elem == ValueType::U32 => {}
        Some(v) => out.push(Problem::key(
            ALORA,
            typed(v),
            "llama.cpp reads it as an array of u32",
        )),
    }

    for t in &f.tensors {
        let base = t
            .name
            .strip_suffix(".lora_a")
            .map(|b| (b, true))
            .or_else(|| t.name.strip_suffix(".lora_b").map(|b| (b, false)));
        let Some((base, is_a)) = base else {
            if !t.name.ends_with("_norm.weight") {
                out.push(Problem::tensor(
                    &t.name,
                    "a name without .lora_a or .lora_b",
                    "an adapter holds only LoRA factors `<base>.lora_a` and `<base>.lora_b`",
                ));
            }
            continue;
        };
        tensor_dims_problem(t, &mut out);
        if !is_weight_type(t.ggml_type) {
            out.push(Problem::tensor(
                &t.name,
                format!("type {}", t.ggml_type),
                "a LoRA factor must be a float (F32, F16, BF16) or quantized type",
            ));
        }
        if t.dims.len() != 2 {
            out.push(Problem::tensor(
                &t.name,
                format!("dims {:?}", t.dims),
                "a LoRA factor is a matrix (2 dimensions)",
            ));
            continue;
        }
        let other = format!("{base}.{}", if is_a { "lora_b" } else { "lora_a" });
        match f.tensor(&other) {
            None => out.push(Problem::tensor(
                &t.name,
                "no partner",
                format!("`{other}` is missing"),
            )),
            Some(o) if is_a && o.dims.len() == 2 && o.dims[0] != t.dims[1] => {
                out.push(Problem::tensor(
                    &t.name,
                    format!("dims {:?}", t.dims),
                    format!(
                        "its rank {} differs from the rank {} of `{other}` (dims {:?})",
                        t.dims[1], o.dims[0], o.dims
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fixture_bytes, tiny_llama, TinyLlamaConfig, FIXTURE_FILES};
    use super::super::lora::{lora_adapter_writer, lora_for_model, LoraInit};
    use super::super::writer::GgufWriter;
    use super::*;

    fn tiny() -> GgufWriter {
        tiny_llama(&TinyLlamaConfig::default(), 1).unwrap()
    }

    fn parse(w: &GgufWriter) -> GgufFile {
        GgufFile::from_bytes(&w.to_bytes().unwrap()).unwrap()
    }

    /// The problems of the tiny model with `key` set to `value`.
    fn with_key(key: &str, value: Value) -> Vec<Problem> {
        let mut w = tiny();
        w.set(key, value);
        problems(&parse(&w))
    }

    /// Exactly one problem, about `name`; returns it.
    fn one_about(all: Vec<Problem>, name: &str) -> Problem {
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(all[0].name(), name, "{all:#?}");
        all.into_iter().next().unwrap()
    }

    fn adapter(alpha: Value, retype: Option<(&str, GgmlType)>) -> GgufFile {
        let model = parse(&tiny());
        let ts = lora_for_model(&model, &["attn_q"], 4, LoraInit::Zero, 1).unwrap();
        let mut w = lora_adapter_writer("llama", 4.0, &ts, &[]).unwrap();
        w.set("adapter.lora.alpha", alpha);
        let mut bytes = w.to_bytes().unwrap();
        if let Some((name, ty)) = retype {
            relabel(&mut bytes, name, ty);
        }
        GgufFile::from_bytes(&bytes).unwrap()
    }

    /// Rewrite the type id of tensor `name` in place (same size types only
    /// keep the file readable).
    fn relabel(bytes: &mut [u8], name: &str, ty: GgmlType) {
        let f = GgufFile::from_bytes(bytes).unwrap();
        let t = f.tensor(name).unwrap();
        let mut needle = (name.len() as u64).to_le_bytes().to_vec();
        needle.extend_from_slice(name.as_bytes());
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap();
        let type_at = at + needle.len() + 4 + 8 * t.dims.len();
        bytes[type_at..type_at + 4].copy_from_slice(&ty.id().to_le_bytes());
    }

    #[test]
    #[allow(clippy::print_stderr)] // the note on a skipped file
    fn valid_fixtures_have_no_problems() {
        for (name, bytes) in FIXTURE_FILES.iter().zip(fixture_bytes().unwrap()) {
            let f = GgufFile::from_bytes(&bytes).unwrap();
            assert_eq!(problems(&f), vec![], "{name}");
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("gguf");
        for name in FIXTURE_FILES.iter().chain(&[
            "SmolLM2-135M-Instruct.arith-lowprob.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ]) {
            let path = root.join(name);
            if !path.exists() {
                assert!(name.contains("Q4_1"), "{} is committed", path.display());
                eprintln!("note: {} absent; skipped", path.display());
                continue;
            }
            let f = GgufFile::open(&path).unwrap();
            assert_eq!(problems(&f), vec![], "{name}");
            assert!(check(&f, &path).is_ok());
        }
    }

    #[test]
    fn block_count_zero_and_above_the_layer_limit() {
        for n in [0, 513, u32::MAX] {
            let p = one_about(
                with_key("llama.block_count", Value::U32(n)),
                "llama.block_count",
            );
            assert_eq!(p.value, n.to_string());
            assert!(p.reason.contains("512"), "{p}");
        }
        assert!(with_key("llama.block_count", Value::U32(512)).is_empty());
        let p = one_about(
            with_key("llama.block_count", Value::I32(2)),
            "llama.block_count",
        );
        assert!(p.value.contains("i32") && p.reason.contains("u32"), "{p}");
    }

    #[test]
    fn context_length_zero_or_beyond_i32() {
        for n in [0, 1 << 31, u32::MAX] {
            let p = one_about(
                with_key("llama.context_length", Value::U32(n)),
                "llama.context_length",
            );
            assert_eq!(p.value, n.to_string());
        }
        assert!(with_key("llama.context_length", Value::U32((1 << 31) - 1)).is_empty());
        assert!(with_key("llama.context_length", Value::U32(1)).is_empty());
    }

    #[test]
    fn embedding_length_zero() {
        let p = one_about(
            with_key("llama.embedding_length", Value::U32(0)),
            "llama.embedding_length",
        );
        assert_eq!(p.value, "0");
    }

    #[test]
    fn head_counts() {
        let p = one_about(
            with_key("llama.attention.head_count", Value::U32(0)),
            "llama.attention.head_count",
        );
        assert_eq!(p.value, "0");
        // 64 is not divisible by 3 (and 3 is not a multiple of 2 KV heads)
        let all = with_key("llama.attention.head_count", Value::U32(3));
        assert_eq!(all[0].name(), "llama.attention.head_count", "{all:#?}");
        assert!(all[0].reason.contains("not divisible"), "{}", all[0]);
        let p = one_about(
            with_key("llama.attention.head_count_kv", Value::U32(0)),
            "llama.attention.head_count_kv",
        );
        assert_eq!(p.value, "0");
        let p = one_about(
            with_key("llama.attention.head_count_kv", Value::U32(3)),
            "llama.attention.head_count_kv",
        );
        assert!(p.reason.contains("not a multiple"), "{p}");
        // per-layer arrays: the right length, and each layer checked
        let arr =
            |v: &[u32]| Value::array(ValueType::U32, v.iter().map(|&x| Value::U32(x)).collect());
        assert!(with_key("llama.attention.head_count_kv", arr(&[2, 4])).is_empty());
        let p = one_about(
            with_key("llama.attention.head_count_kv", arr(&[2, 3])),
            "llama.attention.head_count_kv",
        );
        assert!(p.value.contains("block 1"), "{p}");
        let p = one_about(
            with_key("llama.attention.head_count", arr(&[4])),
            "llama.attention.head_count",
        );
        assert!(p.reason.contains("one value per block"), "{p}");
        // an explicit key length lifts the divisibility rule; 0 is wrong
        let mut w = tiny();
        w.set("llama.attention.head_count", Value::U32(3))
            .set("llama.attention.head_count_kv", Value::U32(3))
            .set("llama.attention.key_length", Value::U32(0));
        let p = one_about(problems(&parse(&w)), "llama.attention.key_length");
        assert_eq!(p.value, "0");
    }

    #[test]
    fn other_architectures_get_only_generic_head_rules() {
        let mut w = tiny();
        w.set("general.architecture", Value::string("qwen2"));
        for (k, v) in [
            ("context_length", 256),
            ("embedding_length", 64),
            ("block_count", 2),
            ("attention.head_count", 3),
            ("attention.head_count_kv", 0),
        ] {
            w.set(format!("qwen2.{k}"), Value::U32(v));
        }
        assert_eq!(problems(&parse(&w)), vec![]);
        w.set("qwen2.attention.head_count_kv", Value::U32(2));
        one_about(problems(&parse(&w)), "qwen2.attention.head_count_kv");
    }

    #[test]
    fn epsilons_must_be_finite_and_positive() {
        for key in [
            "llama.attention.layer_norm_rms_epsilon",
            "llama.attention.layer_norm_epsilon",
        ] {
            for bad in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
                let p = one_about(with_key(key, Value::F32(bad)), key);
                assert_eq!(p.value, bad.to_string());
            }
            let p = one_about(with_key(key, Value::F64(1e-5)), key);
            assert!(p.reason.contains("f32"), "{p}");
            assert!(with_key(key, Value::F32(1e-6)).is_empty());
        }
    }

    #[test]
    fn rope_settings() {
        let p = one_about(
            with_key("llama.rope.freq_base", Value::F32(f32::NAN)),
            "llama.rope.freq_base",
        );
        assert_eq!(p.value, "NaN");
        let p = one_about(
            with_key("llama.rope.scaling.type", Value::string("cubic")),
            "llama.rope.scaling.type",
        );
        assert!(p.reason.contains("yarn"), "{p}");
        assert!(with_key("llama.rope.scaling.type", Value::string("yarn")).is_empty());
    }

    #[test]
    fn expert_counts() {
        one_about(
            with_key("llama.expert_count", Value::U32(2000)),
            "llama.expert_count",
        );
        one_about(
            with_key("llama.expert_used_count", Value::U32(2)),
            "llama.expert_used_count",
        );
        let mut w = tiny();
        w.set("llama.expert_count", Value::U32(8));
        one_about(problems(&parse(&w)), "llama.expert_used_count");
        w.set("llama.expert_used_count", Value::U32(2))
            .set("llama.expert_group_count", Value::U32(3));
        let all = problems(&parse(&w));
        assert!(
            all.iter()
                .all(|p| p.name().starts_with("llama.expert_group")),
            "{all:#?}"
        );
        assert_eq!(all.len(), 2, "{all:#?}");
        w.set("llama.expert_group_count", Value::U32(4))
            .set("llama.expert_group_used_count", Value::U32(2));
        assert_eq!(problems(&parse(&w)), vec![]);
        one_about(
            with_key("llama.nextn_predict_layers", Value::U32(3)),
            "llama.nextn_predict_layers",
        );
    }

    /// The tiny model relabelled as `arch`, its `llama.*` keys renamed.
    fn as_architecture(arch: &str) -> GgufWriter {
        let llama = tiny();
        let mut w = GgufWriter::new();
        let f = parse(&llama);
        for (k, v) in &f.metadata {
            match k.strip_prefix("llama.") {
                Some(rest) => w.set(format!("{arch}.{rest}"), v.clone()),
                None => w.set(k.clone(), v.clone()),
            };
        }
        w.set("general.architecture", Value::string(arch));
        w
    }

    #[test]
    fn moe_only_architectures_need_experts() {
        let mut w = as_architecture("smallthinker");
        let p = one_about(problems(&parse(&w)), "smallthinker.expert_count");
        assert_eq!(p.value, "missing");
        w.set("smallthinker.expert_count", Value::U32(4))
            .set("smallthinker.expert_used_count", Value::U32(2));
        assert_eq!(problems(&parse(&w)), vec![]);
        assert_eq!(problems(&parse(&as_architecture("qwen2"))), vec![]);
    }

    #[test]
    fn mrope_sections() {
        let arr = |v: &[u32]| {
            Value::array(
                ValueType::I32,
                v.iter().map(|&x| Value::I32(x as i32)).collect(),
            )
        };
        let mut w = as_architecture("paddleocr");
        let p = one_about(problems(&parse(&w)), "paddleocr.rope.dimension_sections");
        assert_eq!(p.value, "missing");
        w.set("paddleocr.rope.dimension_sections", arr(&[0, 0, 0, 8]));
        let p = one_about(problems(&parse(&w)), "paddleocr.rope.dimension_sections");
        assert_eq!(p.value, "[0, 0, 0, 8]");
        w.set("paddleocr.rope.dimension_sections", arr(&[8, 4, 4, 0]));
        assert_eq!(problems(&parse(&w)), vec![]);
        w.set("paddleocr.rope.dimension_sections", arr(&[8, 4, 4]));
        one_about(problems(&parse(&w)), "paddleocr.rope.dimension_sections");
        // optional elsewhere, but never only the fourth
        let mut w = as_architecture("glm4");
        assert_eq!(problems(&parse(&w)), vec![]);
        w.set("glm4.rope.dimension_sections", arr(&[0, 0, 0, 2]));
        one_about(problems(&parse(&w)), "glm4.rope.dimension_sections");
    }

    #[test]
    fn duplicate_token_texts() {
        let mut w = tiny();
        let Some(Value::Array(tokens)) = w.get("tokenizer.ggml.tokens").cloned() else {
            panic!()
        };
        let mut items = tokens.items.clone();
        items[300] = items[262].clone();
        w.set(
            "tokenizer.ggml.tokens",
            Value::array(ValueType::String, items.clone()),
        );
        let p = one_about(problems(&parse(&w)), "tokenizer.ggml.tokens");
        assert!(p.value.contains("262 and 300"), "{p}");
        assert!(p.reason.contains("unique"), "{p}");
        // an empty text stands for `[EMPTY_<id>]`
        items[300] = Value::string("");
        items[301] = Value::string("[EMPTY_300]");
        w.set(
            "tokenizer.ggml.tokens",
            Value::array(ValueType::String, items.clone()),
        );
        let p = one_about(problems(&parse(&w)), "tokenizer.ggml.tokens");
        assert!(p.value.contains("300 and 301"), "{p}");
        items[301] = Value::string("");
        w.set(
            "tokenizer.ggml.tokens",
            Value::array(ValueType::String, items),
        );
        assert_eq!(problems(&parse(&w)), vec![]);
    }

    #[test]
    fn vocabulary_arrays() {
        let p = one_about(
            with_key(
                "tokenizer.ggml.tokens",
                Value::array(ValueType::String, vec![]),
            ),
            "tokenizer.ggml.tokens",
        );
        assert_eq!(p.value, "empty");
        let p = one_about(
            with_key("tokenizer.ggml.tokens", Value::U32(3)),
            "tokenizer.ggml.tokens",
        );
        assert!(p.value.contains("u32"), "{p}");
        let short = Value::array(ValueType::F32, vec![Value::F32(0.0); 10]);
        let p = one_about(
            with_key("tokenizer.ggml.scores", short),
            "tokenizer.ggml.scores",
        );
        assert!(p.reason.contains("320"), "{p}");
        let ints = Value::array(ValueType::I32, vec![Value::I32(0); 320]);
        assert!(with_key("tokenizer.ggml.scores", ints).is_empty());
        let wrong = Value::array(ValueType::U8, vec![Value::U8(1); 320]);
        let p = one_about(
            with_key("tokenizer.ggml.token_type", wrong),
            "tokenizer.ggml.token_type",
        );
        assert!(p.value.contains("u8"), "{p}");
        let long = Value::array(ValueType::I32, vec![Value::I32(1); 321]);
        one_about(
            with_key("tokenizer.ggml.token_type", long),
            "tokenizer.ggml.token_type",
        );
        let p = one_about(
            with_key("tokenizer.ggml.model", Value::U8(1)),
            "tokenizer.ggml.model",
        );
        assert!(p.reason.contains("string"), "{p}");
    }

    #[test]
    fn required_keys_and_their_types() {
        let mut w = tiny();
        w.set("general.architecture", Value::U32(1));
        let p = one_about(problems(&parse(&w)), "general.architecture");
        assert!(p.value.contains("u32"), "{p}");
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::string("llama"));
        let all = problems(&parse(&w));
        let names: Vec<&str> = all.iter().map(Problem::name).collect();
        for k in [
            "llama.block_count",
            "llama.context_length",
            "llama.embedding_length",
            "llama.attention.head_count",
            "llama.attention.layer_norm_rms_epsilon",
            "tokenizer.ggml.model",
            "tokenizer.ggml.tokens",
        ] {
            assert!(names.contains(&k), "{k} in {names:?}");
        }
        assert!(all.iter().all(|p| p.value == "missing"), "{all:#?}");
    }

    #[test]
    fn weights_must_be_float_or_quantized() {
        let bytes = tiny().to_bytes().unwrap();
        for ty in [
            GgmlType::I32,
            GgmlType::I16,
            GgmlType::I8,
            GgmlType::F64,
            GgmlType::I64,
            GgmlType::Q8_K,
        ] {
            let mut b = bytes.clone();
            relabel(&mut b, "blk.0.attn_q.weight", ty);
            // the reader accepts any size that fits; only the type is wrong
            let Ok(f) = GgufFile::from_bytes(&b) else {
                continue;
            };
            let p = one_about(problems(&f), "blk.0.attn_q.weight");
            assert_eq!(p.value, format!("type {ty}"));
            assert!(
                p.to_string()
                    .starts_with("tensor `blk.0.attn_q.weight` has type"),
                "{p}"
            );
        }
        for ty in [
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
        ] {
            assert!(is_weight_type(ty));
        }
        let mut b = bytes.clone();
        relabel(&mut b, "output_norm.weight", GgmlType::F16);
        let p = one_about(
            problems(&GgufFile::from_bytes(&b).unwrap()),
            "output_norm.weight",
        );
        assert!(p.reason.contains("F32"), "{p}");
        let mut b = bytes;
        relabel(&mut b, "output_norm.weight", GgmlType::I32);
        one_about(
            problems(&GgufFile::from_bytes(&b).unwrap()),
            "output_norm.weight",
        );
    }

    #[test]
    fn zero_dimension_tensor() {
        let mut w = tiny();
        w.add_tensor_raw("extra.weight", &[0, 4], GgmlType::F32, vec![])
            .unwrap();
        let p = one_about(problems(&parse(&w)), "extra.weight");
        assert_eq!(p.value, "dims [0, 4]");
    }

    #[test]
    fn adapter_alpha_must_be_a_finite_f32() {
        assert_eq!(adapter_problems(&adapter(Value::F32(4.0), None)), vec![]);
        for bad in [
            Value::U32(4),
            Value::I32(4),
            Value::F64(4.0),
            Value::string("4"),
        ] {
            let f = adapter(bad.clone(), None);
            let p = one_about(problems(&f), "adapter.lora.alpha");
            assert!(p.value.contains(bad.value_type().name()), "{p}");
            assert!(p.to_string().contains("hint:"), "{p}");
        }
        let p = one_about(
            problems(&adapter(Value::F32(f32::NAN), None)),
            "adapter.lora.alpha",
        );
        assert_eq!(p.value, "NaN");
    }

    #[test]
    fn adapter_factors_must_be_float_or_quantized() {
        for name in ["blk.0.attn_q.weight.lora_a", "blk.1.attn_q.weight.lora_b"] {
            let f = adapter(Value::F32(4.0), Some((name, GgmlType::I32)));
            let p = one_about(problems(&f), name);
            assert_eq!(p.value, "type I32");
        }
    }

    #[test]
    fn adapter_metadata_types_and_tensor_names() {
        let base = adapter(Value::F32(4.0), None);
        let with = |key: &str, v: Value| {
            let mut f = base.clone();
            match f.metadata.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = v,
                None => f.metadata.push((key.to_string(), v)),
            }
            adapter_problems(&f)
        };
        one_about(with("adapter.type", Value::U32(1)), "adapter.type");
        one_about(with("adapter.type", Value::string("ia3")), "adapter.type");
        one_about(
            with("general.architecture", Value::Bool(true)),
            "general.architecture",
        );
        one_about(
            with(
                "adapter.alora.invocation_tokens",
                Value::array(ValueType::I32, vec![]),
            ),
            "adapter.alora.invocation_tokens",
        );
        assert!(with(
            "adapter.alora.invocation_tokens",
            Value::array(ValueType::U32, vec![Value::U32(1)])
        )
        .is_empty());
        let mut f = base.clone();
        f.tensors[0].name = "blk.0.attn_q.weight".into();
        let all = adapter_problems(&f);
        assert!(
            all.iter().any(|p| p.name() == "blk.0.attn_q.weight"),
            "{all:#?}"
        );
        assert!(
            all.iter().any(|p| p.name() == "blk.0.attn_q.weight.lora_b"
                && p.reason.contains("lora_a` is missing")),
            "{all:#?}"
        );
        let mut f = base.clone();
        f.tensors[0].dims = vec![64, 3];
        let p = one_about(adapter_problems(&f), "blk.0.attn_q.weight.lora_a");
        assert!(p.reason.contains("rank 3"), "{p}");
        let mut f = base;
        f.tensors[1].dims = vec![4, 64, 1];
        let p = one_about(adapter_problems(&f), "blk.0.attn_q.weight.lora_b");
        assert!(p.reason.contains("2 dimensions"), "{p}");
    }

    #[test]
    fn models_without_a_tokenizer() {
        for t in ["none", "no_vocab"] {
            let p = one_about(
                with_key("tokenizer.ggml.model", Value::string(t)),
                "tokenizer.ggml.model",
            );
            assert!(p.reason.contains("no tokenizer"), "{p}");
        }
    }

    /// The tiny model's token texts, with `edit` applied.
    fn with_tokens(edit: impl FnOnce(&mut Vec<Value>)) -> GgufWriter {
        let mut w = tiny();
        let Some(Value::Array(tokens)) = w.get("tokenizer.ggml.tokens").cloned() else {
            panic!("the tiny model has tokens")
        };
        let mut items = tokens.items;
        edit(&mut items);
        w.set(
            "tokenizer.ggml.tokens",
            Value::array(ValueType::String, items),
        );
        w
    }

    #[test]
    fn sentencepiece_needs_every_byte_token() {
        // token 15 is <0x0A>, the newline every chat template has
        let w = with_tokens(|t| t[15] = Value::string("<0xKA>"));
        let p = one_about(problems(&parse(&w)), "tokenizer.ggml.tokens");
        assert_eq!(p.value, "a vocabulary without <0x0A>");
        assert!(p.reason.contains("aborts"), "{p}");
        // a raw single-character token stands in for its byte
        let w = with_tokens(|t| t[15] = Value::string("\n"));
        assert_eq!(problems(&parse(&w)), vec![]);
        // other tokenizers need no byte tokens
        let mut w = with_tokens(|t| t[15] = Value::string("newline"));
        w.set("tokenizer.ggml.model", Value::string("rwkv"));
        assert_eq!(problems(&parse(&w)), vec![]);
    }

    #[test]
    fn wordpiece_has_no_byte_tokens() {
        let p = one_about(
            with_key("tokenizer.ggml.model", Value::string("bert")),
            "tokenizer.ggml.token_type",
        );
        assert_eq!(p.value, "6 (byte) at id 5");
    }

    #[test]
    fn tensor_data_must_be_32_byte_aligned() {
        let mut w = tiny();
        w.set("general.alignment", Value::U32(1));
        let p = one_about(problems(&parse(&w)), "general.alignment");
        assert_eq!(p.value, "1");
        let mut w = tiny();
        w.set("general.alignment", Value::U32(64));
        assert_eq!(problems(&parse(&w)), vec![]);
    }

    #[test]
    fn the_error_names_file_subject_value_and_count() {
        let mut w = tiny();
        w.set("llama.block_count", Value::U32(0))
            .set("llama.context_length", Value::U32(0));
        let f = parse(&w);
        let err = check(&f, Path::new("dir/m.gguf")).unwrap_err().to_string();
        assert!(
            err.starts_with("dir/m.gguf: metadata key `llama.block_count` is 0: "),
            "{err}"
        );
        assert!(err.contains("and 1 more problem"), "{err}");
        assert!(err.contains("\nhint: "), "{err}");
        let a = adapter(Value::U32(4), None);
        let err = check_adapter_file(&a, Path::new("a.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("a.gguf: metadata key `adapter.lora.alpha` is 4 (u32)"),
            "{err}"
        );
    }
}
