//! The corruption suite: damaged copies of the tiny model and adapter, each
//! handed to the release binary in a subprocess, so that a llama.cpp abort
//! (`GGML_ASSERT`, a segfault) or a Rust panic shows up as a failed case
//! instead of killing the test. Every case must end with exit 0 or 1: no
//! signal, no panic, no file left beside the output.
//!
//! The cases, all generated from `gguf/tiny-llama.gguf` and
//! `gguf/tiny-lora-random.gguf` with fixed seeds: every truncation offset
//! of the header, metadata and tensor-info regions; random byte and bit
//! flips there (one byte or bit, or several bytes at once); boundary values (and other types, and removal) for every
//! metadata key, plus keys llama.cpp reads that the fixtures lack; every
//! value-type tag, array type and length; every tensor-info field (dims,
//! dimension count, type, offset, name length); every tensor relabelled to
//! every ggml type; the header's version and counts.
//!
//! `dlogp inspect` runs on every case; `score` and `generate` (which make
//! llama.cpp load the file) on every case inspect accepts and on a fixed
//! sample of the rejected ones, where they must fail too.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dlogp::gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType, ALL_GGML_TYPES};

use crate::common::*;

/// Seed of the random flips.
const SEED: u64 = 0x00c0_ffee_d10c_0001;
/// Random byte replacements and bit flips per base file.
const MODEL_FLIPS: usize = 1000;
const ADAPTER_FLIPS: usize = 300;
/// One rejected case in this many also runs the loading commands.
const REJECTED_SAMPLE: usize = 40;
/// Concurrent subprocesses (each llama.cpp runs with one thread).
const WORKERS: usize = 2;
/// No single command may take longer.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Failing cases listed in the assertion message.
const SHOWN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Adapter,
}

/// Where one metadata pair sits in the file.
struct KvAt {
    key: String,
    /// The value-type tag.
    type_at: usize,
    /// For arrays: the element type and the length.
    array: Option<(usize, usize, u64)>,
}

/// Where one tensor info sits in the file.
struct InfoAt {
    name: String,
    name_len_at: usize,
    n_dims_at: usize,
    dims: Vec<u64>,
    type_at: usize,
    offset_at: usize,
    offset: u64,
}

/// A fixture and the positions of its structure.
struct Base {
    kind: Kind,
    bytes: Vec<u8>,
    file: GgufFile,
    kvs: Vec<KvAt>,
    infos: Vec<InfoAt>,
    /// Start of the data section: the regions before it are fuzzed.
    data_offset: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> u32 {
        let v = u32::from_le_bytes(self.b[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_le_bytes(self.b[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        v
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        let s = String::from_utf8(self.b[self.pos..self.pos + n].to_vec()).unwrap();
        self.pos += n;
        s
    }
    fn skip_value(&mut self, ty: u32) {
        match ty {
            0 | 1 | 7 => self.pos += 1,
            2 | 3 => self.pos += 2,
            4..=6 => self.pos += 4,
            10..=12 => self.pos += 8,
            8 => {
                self.string();
            }
            9 => {
                let elem = self.u32();
                for _ in 0..self.u64() {
                    self.skip_value(elem);
                }
            }
            other => panic!("fixture has value type {other}"),
        }
    }
}

impl Base {
    fn load(name: &str, kind: Kind) -> Base {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let file = GgufFile::from_bytes(&bytes).unwrap();
        let mut c = Cursor { b: &bytes, pos: 8 };
        let n_tensors = c.u64();
        let n_kv = c.u64();
        let mut kvs = Vec::new();
        for _ in 0..n_kv {
            let key = c.string();
            let type_at = c.pos;
            let ty = c.u32();
            let array = (ty == 9).then(|| {
                let (elem_at, len_at) = (c.pos, c.pos + 4);
                let len = u64::from_le_bytes(bytes[len_at..len_at + 8].try_into().unwrap());
                (elem_at, len_at, len)
            });
            c.skip_value(ty);
            kvs.push(KvAt {
                key,
                type_at,
                array,
            });
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name_len_at = c.pos;
            let name = c.string();
            let n_dims_at = c.pos;
            let n_dims = c.u32();
            let dims = (0..n_dims).map(|_| c.u64()).collect();
            let type_at = c.pos;
            c.u32();
            let offset_at = c.pos;
            let offset = c.u64();
            infos.push(InfoAt {
                name,
                name_len_at,
                n_dims_at,
                dims,
                type_at,
                offset_at,
                offset,
            });
        }
        let data_offset = file.data_offset as usize;
        Base {
            kind,
            bytes,
            file,
            kvs,
            infos,
            data_offset,
        }
    }

    fn label(&self) -> &'static str {
        match self.kind {
            Kind::Model => "model",
            Kind::Adapter => "adapter",
        }
    }

    /// The file rebuilt with `key` set to `value` (or removed).
    fn with_key(&self, key: &str, value: Option<&Value>) -> Vec<u8> {
        self.with_keys(&[(key.to_string(), value.cloned())])
    }

    /// The file rebuilt with each key set (added when missing) or removed.
    fn with_keys(&self, changes: &[(String, Option<Value>)]) -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.file.metadata {
            match changes.iter().find(|(c, _)| c == k) {
                Some((_, Some(value))) => w.set(k.clone(), value.clone()),
                Some((_, None)) => &mut w,
                None => w.set(k.clone(), v.clone()),
            };
        }
        for (k, v) in changes {
            if let (None, Some(v)) = (self.file.get(k), v) {
                w.set(k.clone(), v.clone());
            }
        }
        for t in &self.file.tensors {
            let start = self.data_offset + t.offset as usize;
            let n = t.n_bytes().unwrap() as usize;
            w.add_tensor_raw(
                &t.name,
                &t.dims,
                t.ggml_type,
                self.bytes[start..start + n].to_vec(),
            )
            .unwrap();
        }
        w.to_bytes().unwrap()
    }
}

/// Metadata keys set (added when missing) or removed (`None`).
type Changes = Vec<(String, Option<Value>)>;

/// How one case damages its base file.
enum Mutation {
    Truncate(usize),
    Byte {
        at: usize,
        value: u8,
    },
    Bit {
        at: usize,
        bit: u8,
    },
    /// Overwrite fixed-width bytes (a structure field).
    Patch {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Rebuild with a metadata key set (added when missing) or removed.
    Key {
        key: String,
        value: Option<Value>,
    },
    /// The same for several keys at once.
    Keys(Changes),
    /// Replace everything before the data section.
    Prefix(Vec<u8>),
}

struct Case {
    base: usize,
    desc: String,
    mutation: Mutation,
}

fn materialize(base: &Base, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Truncate(n) => base.bytes[..*n].to_vec(),
        Mutation::Byte { at, value } => {
            let mut b = base.bytes.clone();
            b[*at] = *value;
            b
        }
        Mutation::Bit { at, bit } => {
            let mut b = base.bytes.clone();
            b[*at] ^= 1 << bit;
            b
        }
        Mutation::Patch { at, bytes } => {
            let mut b = base.bytes.clone();
            b[*at..*at + bytes.len()].copy_from_slice(bytes);
            b
        }
        Mutation::Key { key, value } => base.with_key(key, value.as_ref()),
        Mutation::Keys(changes) => base.with_keys(changes),
        Mutation::Prefix(prefix) => {
            let mut b = base.bytes.clone();
            b[..prefix.len()].copy_from_slice(prefix);
            b
        }
    }
}

/// SplitMix64: the random flips' source.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Boundary values of a number (or bool), in its own type.
fn number_values(v: &Value) -> Vec<Value> {
    use Value::*;
    let floats32 = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e30,
    ];
    match *v {
        U8(_) => vec![U8(0), U8(1), U8(u8::MAX)],
        I8(_) => vec![I8(0), I8(1), I8(-1), I8(i8::MIN), I8(i8::MAX)],
        U16(_) => vec![U16(0), U16(1), U16(u16::MAX)],
        I16(_) => vec![I16(0), I16(-1), I16(i16::MIN), I16(i16::MAX)],
        U32(_) => vec![
            U32(0),
            U32(1),
            U32(2),
            U32(3),
            U32(513),
            U32(1 << 31),
            U32(u32::MAX),
        ],
        I32(_) => vec![I32(0), I32(1), I32(-1), I32(i32::MIN), I32(i32::MAX)],
        U64(_) => vec![U64(0), U64(1), U64(1 << 32), U64(u64::MAX)],
        I64(_) => vec![I64(0), I64(-1), I64(i64::MIN), I64(i64::MAX)],
        F32(_) => floats32.iter().map(|&x| F32(x)).collect(),
        F64(_) => floats32.iter().map(|&x| F64(f64::from(x))).collect(),
        Bool(b) => vec![Bool(!b)],
        _ => Vec::new(),
    }
}

/// Boundary values for one metadata key: by its own type, other types,
/// and values llama.cpp gives meaning to.
fn key_values(key: &str, v: &Value) -> Vec<Value> {
    let huge = || Value::string("x".repeat(100_000));
    let mut out = number_values(v);
    match v {
        Value::String(s) => {
            out.extend([
                Value::string(""),
                huge(),
                Value::string("\0"),
                Value::string("é🦀▁"),
                Value::U32(0),
                Value::array(ValueType::String, vec![Value::string(s.clone())]),
            ]);
            let extra: &[&str] = match key {
                "general.architecture" => &["gemma3", "qwen2", "bert", "clip", "rwkv6", "nonsense"],
                "general.type" => &["adapter", "model", "vocab"],
                "adapter.type" => &["ia3", "lora\0"],
                "tokenizer.ggml.model" => &[
                    "none",
                    "no_vocab",
                    "gpt2",
                    "bert",
                    "t5",
                    "rwkv",
                    "plamo2",
                    "gemma4",
                    "hybriddna",
                    "whitespace",
                    "test",
                    "nonsense",
                ],
                "tokenizer.chat_template" => &[
                    "{{",
                    "{% for m in messages %}",
                    "{{ raise_exception('no') }}",
                    "{{ messages[99]['content'] }}",
                    "",
                ],
                _ => &[],
            };
            out.extend(extra.iter().map(|s| Value::string(*s)));
        }
        Value::Array(a) => {
            let items = &a.items;
            let n = items.len();
            let arr = |elem, items: Vec<Value>| Value::array(elem, items);
            out.push(arr(a.elem, Vec::new()));
            out.push(arr(a.elem, items[..n / 2].to_vec()));
            out.push(arr(a.elem, items.iter().chain(items).cloned().collect()));
            out.push(arr(a.elem, items[..n.saturating_sub(1)].to_vec()));
            out.push(arr(ValueType::U32, vec![Value::U32(1); n]));
            out.push(arr(ValueType::F64, vec![Value::F64(0.5); n]));
            out.push(arr(ValueType::String, vec![Value::string("a"); n]));
            out.push(arr(
                ValueType::Array,
                vec![arr(a.elem, items[..1.min(n)].to_vec())],
            ));
            out.push(Value::U32(n as u32));
            let mut one = |i: usize, v: Value| {
                if i < n {
                    let mut items = items.clone();
                    items[i] = v;
                    out.push(arr(a.elem, items));
                }
            };
            match a.elem {
                ValueType::String => {
                    if n > 300 {
                        one(300, items[262].clone());
                        one(300, Value::string(""));
                    }
                    one(0, huge());
                    one(n - 1, Value::string("\u{fffd}"));
                }
                ValueType::F32 => {
                    one(0, Value::F32(f32::NAN));
                    one(n - 1, Value::F32(f32::INFINITY));
                }
                ValueType::I32 => {
                    for t in [0, -1, 3, 6, i32::MAX] {
                        out.push(arr(ValueType::I32, vec![Value::I32(t); n]));
                    }
                }
                _ => {}
            }
        }
        _ => {
            let x = v.as_f64().unwrap_or(1.0);
            out.extend([
                Value::I32(x as i32),
                Value::U64(x as u64),
                Value::F32(x as f32),
                Value::F64(x),
                Value::string(format!("{x}")),
                Value::Bool(true),
                Value::array(ValueType::U32, vec![Value::U32(x as u32); 2]),
            ]);
        }
    }
    out.retain(|x| x != v);
    out
}

/// Keys llama.cpp reads that the fixtures lack, with values to try.
fn extra_keys(kind: Kind) -> Vec<(&'static str, Vec<Value>)> {
    use Value::*;
    let u32s = |v: &[u32]| Value::array(ValueType::U32, v.iter().map(|&x| U32(x)).collect());
    match kind {
        Kind::Model => vec![
            (
                "llama.expert_count",
                vec![U32(1), U32(8), U32(1025), U32(u32::MAX)],
            ),
            (
                "llama.expert_used_count",
                vec![U32(1), U32(9), u32s(&[1, 2])],
            ),
            ("llama.expert_group_count", vec![U32(2)]),
            ("llama.nextn_predict_layers", vec![U32(1), U32(3)]),
            (
                "llama.rope.scaling.type",
                vec![
                    Value::string("cubic"),
                    Value::string("yarn"),
                    Value::string(""),
                ],
            ),
            (
                "llama.rope.scaling.factor",
                vec![F32(0.0), F32(-1.0), F32(f32::NAN)],
            ),
            (
                "llama.attention.key_length",
                vec![U32(0), U32(16), U32(17), U32(u32::MAX)],
            ),
            ("llama.attention.value_length", vec![U32(0), U32(32)]),
            (
                "llama.attention.layer_norm_epsilon",
                vec![F32(-1.0), F32(f32::NAN)],
            ),
            (
                "llama.feed_forward_length",
                vec![u32s(&[128, 128]), u32s(&[128]), u32s(&[0, 0])],
            ),
            (
                "general.alignment",
                vec![U32(1), U32(64), U64(32), U32(1 << 20)],
            ),
            (
                "tokenizer.ggml.pre",
                vec![Value::string("default"), Value::string("nonsense")],
            ),
            (
                "tokenizer.ggml.merges",
                vec![Value::array(ValueType::String, vec![Value::string("a b")])],
            ),
            (
                "tokenizer.ggml.padding_token_id",
                vec![U32(u32::MAX), U32(5)],
            ),
            ("tokenizer.ggml.eot_token_id", vec![U32(100_000)]),
        ],
        Kind::Adapter => vec![
            (
                "adapter.alora.invocation_tokens",
                vec![
                    u32s(&[1, 2]),
                    u32s(&[]),
                    u32s(&[u32::MAX]),
                    Value::array(ValueType::I32, vec![I32(1)]),
                    Value::string("1"),
                ],
            ),
            ("general.alignment", vec![U32(64), U32(1)]),
        ],
    }
}

/// Every architecture llama.cpp knows (src/llama-arch.cpp).
const ARCHITECTURES: &str = "clip llama llama4 deci falcon grok gpt2 gptj gptneox mpt baichuan \
    starcoder refact bert modern-bert nomic-bert nomic-bert-moe neo-bert jina-bert-v2 jina-bert-v3 \
    eurobert bloom stablelm qwen qwen2 qwen2moe qwen2vl qwen3 qwen3moe qwen3next qwen3vl qwen3vlmoe \
    qwen35 qwen35moe clef qwen4exp phi2 phi3 phimoe plamo plamo2 plamo3 codeshell orion internlm2 \
    minicpm minicpm3 gemma gemma2 gemma3 gemma3n gemma4 gemma4-assistant gemma-embedding starcoder2 \
    mamba mamba2 maple jamba falcon-h1 xverse command-r cohere2 cohere2moe dbrx olmo olmo2 olmoe \
    muse-glimmer openelm arctic deepseek deepseek2 deepseek2-ocr deepseek32 deepseek4 chatglm glm4 \
    glm4moe glm-dsa bitnet t5 t5encoder jais jais2 nemotron nemotron_h nemotron_h_moe exaone exaone4 \
    exaone-moe rwkv6 rwkv6qwen2 rwkv7 arwkv7 granite granitemoe granitehybrid graniteswitch \
    granite_swa chameleon wavtokenizer-dec plm bailingmoe bailingmoe2 bailingmoe3 dots1 dots3note \
    arcee afmoe laguna ernie4_5 ernie4_5-moe hunyuan-moe hunyuan-dense hunyuan_vl hy_v3 hy_v4 \
    smollm3 gpt-oss lfm2 lfm2moe dream smallthinker llada llada-moe seed_oss grovemoe apertus \
    minimax-01 hrm_text minimax-m2 minimax-m3 cogvlm rnd1 pangu-embedded mistral3 eagle3 dflash \
    mistral4 paddleocr mimo2 step35 spark2_5 llama-embed maincoder kimi-linear kimi-k3 glm5-next \
    talkie mellum nanbeige qwen3tts pockettts";

/// Several keys changed together: the model under every other architecture
/// (its `llama.*` keys renamed), every tokenizer with the keys it needs.
fn combinations(base: &Base) -> Vec<(String, Changes)> {
    let mut out = Vec::new();
    if base.kind == Kind::Adapter {
        return out;
    }
    let set = |k: &str, v: Value| (k.to_string(), Some(v));
    for arch in ARCHITECTURES.split_whitespace().filter(|a| *a != "llama") {
        let mut changes = vec![set("general.architecture", Value::string(arch))];
        for (k, v) in &base.file.metadata {
            if let Some(rest) = k.strip_prefix("llama.") {
                changes.push((k.clone(), None));
                changes.push(set(&format!("{arch}.{rest}"), v.clone()));
            }
        }
        out.push((
            format!("architecture `{arch}` with the llama keys"),
            changes,
        ));
    }
    let tokens = base.file.get("tokenizer.ggml.tokens").cloned();
    let n = tokens
        .as_ref()
        .and_then(Value::as_array)
        .map_or(0, |a| a.items.len());
    let merges = |m: &[&str]| {
        Value::array(
            ValueType::String,
            m.iter().map(|s| Value::string(*s)).collect(),
        )
    };
    let normal = Value::array(ValueType::I32, vec![Value::I32(1); n]);
    for model in [
        "gpt2",
        "gemma4",
        "hybriddna",
        "whitespace",
        "bert",
        "t5",
        "rwkv",
        "plamo2",
        "test",
    ] {
        for (what, m) in [
            ("no merges", merges(&[])),
            (
                "merges",
                merges(&["▁ t", "▁t h", "a n", "▁ a", "1 +", "\u{0120} a"]),
            ),
        ] {
            for pre in [
                "default",
                "llama3",
                "qwen2",
                "gpt-4o",
                "kimi-k2",
                "gemma4",
                "deepseek-llm",
            ] {
                let mut changes = vec![
                    set("tokenizer.ggml.model", Value::string(model)),
                    set("tokenizer.ggml.merges", m.clone()),
                    set("tokenizer.ggml.pre", Value::string(pre)),
                ];
                if model == "bert" {
                    // byte tokens abort WordPiece (a rule of its own)
                    changes.push(set("tokenizer.ggml.token_type", normal.clone()));
                }
                out.push((format!("tokenizer `{model}`, pre `{pre}`, {what}"), changes));
            }
        }
    }
    out
}

fn patch(at: usize, bytes: impl Into<Vec<u8>>) -> Mutation {
    Mutation::Patch {
        at,
        bytes: bytes.into(),
    }
}

/// Every case of one base file, in a fixed order.
fn cases(bi: usize, base: &Base, flips: usize) -> Vec<Case> {
    let l = base.label();
    let mut out = Vec::new();
    let mut add = |desc: String, mutation: Mutation| {
        out.push(Case {
            base: bi,
            desc: format!("{l}: {desc}"),
            mutation,
        })
    };
    for n in 0..base.data_offset {
        add(format!("truncated to {n} bytes"), Mutation::Truncate(n));
    }
    let mut rng = Rng(SEED ^ bi as u64);
    for _ in 0..flips {
        let at = rng.below(base.data_offset);
        let value = rng.next() as u8;
        if value != base.bytes[at] {
            add(
                format!("byte {at} set to {value:#04x}"),
                Mutation::Byte { at, value },
            );
        }
        let (at, bit) = (rng.below(base.data_offset), rng.below(8) as u8);
        add(
            format!("bit {bit} of byte {at} flipped"),
            Mutation::Bit { at, bit },
        );
    }
    // several random bytes at once
    for _ in 0..flips / 2 {
        let n = 2 + rng.below(7);
        let mut at = Vec::with_capacity(n);
        let mut b = base.bytes[..base.data_offset].to_vec();
        for _ in 0..n {
            let i = rng.below(base.data_offset);
            b[i] = rng.next() as u8;
            at.push(i);
        }
        add(format!("{n} random bytes at {at:?}"), Mutation::Prefix(b));
    }
    // the header
    for v in [0u32, 1, 2, 4, u32::MAX] {
        add(format!("version {v}"), patch(4, v.to_le_bytes()));
    }
    let (nt, nkv) = (base.infos.len() as u64, base.kvs.len() as u64);
    for (what, at, n) in [("tensor count", 8, nt), ("metadata count", 16, nkv)] {
        for v in [0, 1, n - 1, n + 1, 1 << 32, u64::MAX] {
            add(format!("{what} {v}"), patch(at, v.to_le_bytes()));
        }
    }
    // metadata: values, removal, type tags, array types and lengths
    for (key, value) in &base.file.metadata {
        for v in key_values(key, value) {
            let shown = format!("{v}");
            let shown: String = shown.chars().take(60).collect();
            add(
                format!("key `{key}` = {shown} ({})", v.value_type()),
                Mutation::Key {
                    key: key.clone(),
                    value: Some(v),
                },
            );
        }
        add(
            format!("key `{key}` removed"),
            Mutation::Key {
                key: key.clone(),
                value: None,
            },
        );
    }
    for (key, values) in extra_keys(base.kind) {
        for v in values {
            add(
                format!("key `{key}` added as {v} ({})", v.value_type()),
                Mutation::Key {
                    key: key.to_string(),
                    value: Some(v),
                },
            );
        }
    }
    for (desc, changes) in combinations(base) {
        add(desc, Mutation::Keys(changes));
    }
    for kv in &base.kvs {
        for tag in (0..=13u32).chain([u32::MAX]) {
            add(
                format!("key `{}` value type tag {tag}", kv.key),
                patch(kv.type_at, tag.to_le_bytes()),
            );
        }
        if let Some((elem_at, len_at, len)) = kv.array {
            for tag in (0..=13u32).chain([u32::MAX]) {
                add(
                    format!("key `{}` array element type {tag}", kv.key),
                    patch(elem_at, tag.to_le_bytes()),
                );
            }
            for n in [0, 1, len - 1, len + 1, u64::MAX] {
                add(
                    format!("key `{}` array length {n}", kv.key),
                    patch(len_at, n.to_le_bytes()),
                );
            }
        }
    }
    // tensor infos: every field, every type
    let unknown_types = [4u32, 5, 31, 33, 36, 40, 41, 42, 43, 1000, u32::MAX];
    let types = ALL_GGML_TYPES
        .iter()
        .map(|t| (t.id(), t.name().to_string()))
        .chain(
            unknown_types
                .iter()
                .map(|&id| (id, format!("unknown id {id}"))),
        );
    let types: Vec<(u32, String)> = types.collect();
    for t in &base.infos {
        let name = &t.name;
        for (id, ty) in &types {
            add(
                format!("tensor `{name}` relabelled {ty}"),
                patch(t.type_at, id.to_le_bytes()),
            );
        }
        for (d, &dim) in t.dims.iter().enumerate() {
            for v in [
                0,
                1,
                dim - 1,
                dim + 1,
                dim / 2,
                dim * 2,
                1 << 32,
                1 << 63,
                u64::MAX,
            ] {
                if v != dim {
                    add(
                        format!("tensor `{name}` dim {d} = {v}"),
                        patch(t.n_dims_at + 4 + 8 * d, v.to_le_bytes()),
                    );
                }
            }
        }
        for v in [0u32, 1, 2, 3, 4, 5, u32::MAX] {
            if v as usize != t.dims.len() {
                add(
                    format!("tensor `{name}` dimension count {v}"),
                    patch(t.n_dims_at, v.to_le_bytes()),
                );
            }
        }
        let align = base.file.alignment;
        let file_len = base.bytes.len() as u64;
        for v in [
            0,
            t.offset + 1,
            t.offset + align,
            t.offset.saturating_sub(align),
            file_len,
            u64::MAX - align + 1,
        ] {
            if v != t.offset {
                add(
                    format!("tensor `{name}` offset {v}"),
                    patch(t.offset_at, v.to_le_bytes()),
                );
            }
        }
        let len = name.len() as u64;
        for v in [0, len - 1, len + 1, u64::MAX] {
            add(
                format!("tensor `{name}` name length {v}"),
                patch(t.name_len_at, v.to_le_bytes()),
            );
        }
    }
    out
}

/// One subprocess's end.
struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
}

impl Ran {
    fn summary(&self) -> String {
        let tail: String = {
            let lines: Vec<&str> = self.stderr.lines().rev().take(3).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        let tail: String = tail.chars().take(300).collect();
        match (self.code, self.signal) {
            (_, Some(s)) => format!("killed by signal {s}: {tail}"),
            (Some(c), _) => format!("exit {c}: {tail}"),
            _ => format!("no exit status: {tail}"),
        }
    }
}

/// Run the binary with `args` in `dir`, stdout and stderr to files there.
fn run(dir: &Path, args: &[OsString]) -> Result<Ran, String> {
    let stdout = std::fs::File::create(dir.join("stdout")).unwrap();
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlogp"))
        .args(args)
        .env("DLOGP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run dlogp: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break s,
            None if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {TIMEOUT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let stderr =
        String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap_or_default()).into_owned();
    Ok(Ran {
        code: status.code(),
        signal: status.signal(),
        stderr,
    })
}

/// A clean end: exit 0 or 1, no panic, `error:` on failure.
fn clean(what: &str, r: &Ran) -> Result<i32, String> {
    let bad = r.signal.is_some()
        || !matches!(r.code, Some(0 | 1))
        || r.stderr.contains("panicked")
        || (r.code == Some(1) && !r.stderr.contains("error:"));
    if bad {
        return Err(format!("{what}: {}", r.summary()));
    }
    Ok(r.code.unwrap_or(1))
}

/// The output directory holds `expected` (removed here) and nothing else.
fn check_output(what: &str, out_dir: &Path, expected: Option<&str>) -> Result<(), String> {
    let mut names: Vec<String> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    for n in &names {
        let _ = std::fs::remove_file(out_dir.join(n));
    }
    if names != want {
        return Err(format!(
            "{what}: left {names:?} in the output directory (expected {want:?})"
        ));
    }
    Ok(())
}

/// One worker's scratch directory.
struct Scratch {
    dir: PathBuf,
    case: PathBuf,
    rows: PathBuf,
    out: PathBuf,
}

impl Scratch {
    fn new(root: &Path, i: usize) -> Scratch {
        let dir = root.join(format!("w{i}"));
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let rows = write_rows(&dir, "rows.jsonl", &tiny_rows());
        Scratch {
            case: dir.join("case.gguf"),
            dir,
            rows,
            out,
        }
    }
}

#[derive(Default)]
struct Tally {
    counts: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

/// The loading commands for a case file: `score`, then a 2-token `generate`.
fn loading_commands(
    kind: Kind,
    s: &Scratch,
    base_model: &Path,
) -> Vec<(&'static str, Vec<OsString>, &'static str)> {
    let case = s.case.as_os_str().to_owned();
    let pair: Vec<OsString> = match kind {
        Kind::Model => vec!["--base".into(), case],
        Kind::Adapter => vec![
            "--base".into(),
            base_model.as_os_str().to_owned(),
            "--rl-lora".into(),
            case,
        ],
    };
    let common: Vec<OsString> = vec!["--quiet".into(), "--threads".into(), "1".into()];
    let mut score: Vec<OsString> = vec!["score".into()];
    score.extend(common.iter().cloned());
    score.extend(pair.iter().cloned());
    score.extend([
        "--input".into(),
        s.rows.as_os_str().to_owned(),
        "--output".into(),
        s.out.join("tokens.jsonl").into_os_string(),
    ]);
    let mut generate: Vec<OsString> = vec!["generate".into()];
    generate.extend(common);
    generate.extend(pair);
    generate.extend([
        "--max-tokens".into(),
        "2".into(),
        "--seed".into(),
        "1".into(),
        "--output".into(),
        s.out.join("gen.jsonl").into_os_string(),
        "what is 2 + 2".into(),
    ]);
    vec![
        ("score", score, "tokens.jsonl"),
        ("generate", generate, "gen.jsonl"),
    ]
}

/// Run one case; returns the outcome label, or every failure.
fn run_case(
    index: usize,
    case: &Case,
    base: &Base,
    s: &Scratch,
    base_model: &Path,
    rejected_seen: &AtomicUsize,
) -> Result<&'static str, String> {
    std::fs::write(&s.case, materialize(base, &case.mutation)).unwrap();
    let mut inspect: Vec<OsString> = vec!["inspect".into()];
    if index % 2 == 1 {
        inspect.push("--json".into());
    }
    inspect.push(s.case.as_os_str().to_owned());
    let r = run(&s.dir, &inspect)?;
    let accepted = clean("inspect", &r)? == 0;
    if !accepted {
        // a fixed sample of the rejected cases confirms the loading error path
        if rejected_seen.fetch_add(1, Ordering::Relaxed) % REJECTED_SAMPLE != 0 {
            return Ok("rejected by inspect");
        }
    }
    let mut outcome = if accepted {
        "loaded"
    } else {
        "rejected by inspect, loading fails too"
    };
    for (what, args, output) in loading_commands(base.kind, s, base_model) {
        let r = run(&s.dir, &args)?;
        let code = clean(what, &r)?;
        check_output(what, &s.out, (code == 0).then_some(output))?;
        if !accepted && code != 1 {
            return Err(format!(
                "{what} accepted a file inspect rejects: {}",
                r.summary()
            ));
        }
        if accepted && code == 1 {
            outcome = "accepted by inspect, loading fails cleanly";
        }
    }
    Ok(outcome)
}

#[test]
fn corrupted_models_and_adapters_never_crash() {
    let start = Instant::now();
    let bases = [
        Base::load("tiny-llama.gguf", Kind::Model),
        Base::load("tiny-lora-random.gguf", Kind::Adapter),
    ];
    let mut all = cases(0, &bases[0], MODEL_FLIPS);
    all.extend(cases(1, &bases[1], ADAPTER_FLIPS));
    let base_model = fixture("tiny-llama.gguf");
    let root = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let rejected_seen = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for w in 0..WORKERS {
            let (all, bases, next, tally, base_model, rejected_seen) =
                (&all, &bases, &next, &tally, &base_model, &rejected_seen);
            let root = root.path();
            scope.spawn(move || {
                let s = Scratch::new(root, w);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = all.get(i) else { break };
                    let base = &bases[case.base];
                    let result = run_case(i, case, base, &s, base_model, rejected_seen);
                    let mut t = tally.lock().unwrap();
                    match result {
                        Ok(outcome) => *t.counts.entry(outcome).or_default() += 1,
                        Err(e) => {
                            *t.counts.entry("failed").or_default() += 1;
                            t.failures.push(format!("#{i} {}: {e}", case.desc));
                        }
                    }
                }
            });
        }
    });
    let t = tally.into_inner().unwrap();
    eprintln!(
        "corruption suite: {} files in {:.1} s: {:?}",
        all.len(),
        start.elapsed().as_secs_f64(),
        t.counts
    );
    let mut failures = t.failures;
    failures.sort_by_key(|f| {
        f[1..]
            .split(' ')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    });
    assert!(
        failures.is_empty(),
        "{} of {} corrupted files crashed or misbehaved; the first {}:\n{}",
        failures.len(),
        all.len(),
        SHOWN.min(failures.len()),
        failures[..SHOWN.min(failures.len())].join("\n")
    );
}

// ---------------------------------------------------------------------------
// Regression tests: the minimal files llama.cpp aborts on (checked against
// the vendored llama.cpp without dlogp's checks), each an exit 1 naming the
// key or tensor from `inspect`, `score` and `generate`.

/// Write `bytes` as `name` in `dir`; run inspect, score and generate on it
/// (as the model, or as the adapter of the tiny model) and check each fails
/// with exit 1 naming `needle` and the file, leaving no output behind.
fn rejected_everywhere(dir: &Path, name: &str, bytes: &[u8], kind: Kind, needle: &str) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let s = Scratch::new(dir, 0);
    std::fs::copy(&path, &s.case).unwrap();
    let base_model = fixture("tiny-llama.gguf");
    let mut commands = vec![(
        "inspect",
        vec![OsString::from("inspect"), path.clone().into_os_string()],
        "",
    )];
    for (what, mut args, output) in loading_commands(kind, &s, &base_model) {
        for a in &mut args {
            if *a == s.case.as_os_str() {
                *a = path.clone().into_os_string();
            }
        }
        commands.push((what, args, output));
    }
    for (what, args, _) in commands {
        let r = run(&s.dir, &args).unwrap();
        assert_eq!(r.code, Some(1), "{name}: {what}: {}", r.summary());
        assert!(
            !r.stderr.contains("panicked"),
            "{name}: {what}: {}",
            r.stderr
        );
        let err = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("");
        assert!(
            err.contains(needle) && err.contains(name),
            "{name}: {what}: names `{needle}` and the file: {}",
            r.stderr
        );
        check_output(what, &s.out, None).unwrap();
    }
}

fn tiny_model_with(key: &str, value: Value) -> Vec<u8> {
    Base::load("tiny-llama.gguf", Kind::Model).with_key(key, Some(&value))
}

fn relabelled(base: &Base, tensor: &str, ty: GgmlType) -> Vec<u8> {
    let t = base.infos.iter().find(|t| t.name == tensor).unwrap();
    materialize(base, &patch(t.type_at, ty.id().to_le_bytes()))
}

#[test]
fn block_count_zero_and_513_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for n in [0, 513] {
        let bytes = tiny_model_with("llama.block_count", Value::U32(n));
        rejected_everywhere(
            dir.path(),
            &format!("blocks-{n}.gguf"),
            &bytes,
            Kind::Model,
            "llama.block_count",
        );
    }
}

#[test]
fn context_length_2_pow_31_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_model_with("llama.context_length", Value::U32(1 << 31));
    rejected_everywhere(
        dir.path(),
        "ctx.gguf",
        &bytes,
        Kind::Model,
        "llama.context_length",
    );
}

#[test]
fn duplicate_token_text_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = Base::load("tiny-llama.gguf", Kind::Model);
    let Some(Value::Array(tokens)) = base.file.get("tokenizer.ggml.tokens").cloned() else {
        panic!("the tiny model has tokens")
    };
    let mut items = tokens.items;
    items[300] = items[262].clone();
    let bytes = base.with_key(
        "tokenizer.ggml.tokens",
        Some(&Value::array(ValueType::String, items)),
    );
    rejected_everywhere(
        dir.path(),
        "dup.gguf",
        &bytes,
        Kind::Model,
        "tokenizer.ggml.tokens",
    );
}

#[test]
fn negative_and_nan_epsilon_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (tag, eps) in [("neg", -1e-5f32), ("nan", f32::NAN)] {
        let bytes = tiny_model_with("llama.attention.layer_norm_rms_epsilon", Value::F32(eps));
        rejected_everywhere(
            dir.path(),
            &format!("eps-{tag}.gguf"),
            &bytes,
            Kind::Model,
            "llama.attention.layer_norm_rms_epsilon",
        );
    }
}

#[test]
fn weight_relabelled_i32_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = Base::load("tiny-llama.gguf", Kind::Model);
    for tensor in [
        "blk.0.attn_q.weight",
        "token_embd.weight",
        "output_norm.weight",
    ] {
        let bytes = relabelled(&base, tensor, GgmlType::I32);
        rejected_everywhere(
            dir.path(),
            &format!("{tensor}.gguf"),
            &bytes,
            Kind::Model,
            tensor,
        );
    }
}

#[test]
fn adapter_tensor_relabelled_i32_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = Base::load("tiny-lora-random.gguf", Kind::Adapter);
    for tensor in ["blk.0.attn_q.weight.lora_a", "blk.1.ffn_up.weight.lora_b"] {
        let bytes = relabelled(&base, tensor, GgmlType::I32);
        rejected_everywhere(
            dir.path(),
            &format!("{tensor}.gguf"),
            &bytes,
            Kind::Adapter,
            tensor,
        );
    }
}

#[test]
fn adapter_alpha_stored_as_an_integer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = Base::load("tiny-lora-random.gguf", Kind::Adapter);
    for (tag, alpha) in [("u32", Value::U32(4)), ("i32", Value::I32(4))] {
        let bytes = base.with_key("adapter.lora.alpha", Some(&alpha));
        rejected_everywhere(
            dir.path(),
            &format!("alpha-{tag}.gguf"),
            &bytes,
            Kind::Adapter,
            "adapter.lora.alpha",
        );
    }
}

#[test]
fn missing_byte_token_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = Base::load("tiny-llama.gguf", Kind::Model);
    let Some(Value::Array(tokens)) = base.file.get("tokenizer.ggml.tokens").cloned() else {
        panic!("the tiny model has tokens")
    };
    let mut items = tokens.items;
    items[15] = Value::string("<0xKA>");
    let bytes = base.with_key(
        "tokenizer.ggml.tokens",
        Some(&Value::array(ValueType::String, items)),
    );
    rejected_everywhere(
        dir.path(),
        "bytes.gguf",
        &bytes,
        Kind::Model,
        "tokenizer.ggml.tokens",
    );
}
