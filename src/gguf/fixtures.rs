//! Deterministic tiny GGUF files for tests: a llama model llama.cpp loads,
//! twins of it, and LoRA adapters for it.

use std::path::{Path, PathBuf};

use super::error::GgufError;
use super::lora::{lora_adapter_writer, lora_for_model, LoraInit};
use super::reader::GgufFile;
use super::rng::Rng;
use super::value::{Value, ValueType};
use super::writer::GgufWriter;

/// ChatML, the template the tiny model carries.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// llama.cpp token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_BYTE: i32 = 6;

/// Pieces after the control and byte tokens, best (highest score) first.
const NORMAL_PIECES: [&str; 59] = [
    "▁",
    "▁the",
    "▁a",
    "▁answer",
    "▁is",
    "▁of",
    "▁and",
    "▁to",
    "▁in",
    "▁what",
    "▁question",
    "▁you",
    "▁user",
    "▁assistant",
    "▁yes",
    "▁no",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "+",
    "=",
    "-",
    "*",
    ".",
    ",",
    "?",
    "!",
    ":",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "j",
    "k",
    "l",
    "m",
    "n",
    "o",
    "p",
    "q",
    "r",
    "s",
    "t",
    "u",
    "v",
    "w",
    "x",
];

/// Shape and vocabulary of a tiny llama model.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyLlamaConfig {
    pub name: String,
    pub n_ctx: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_ff: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Give token `id` a different text (an incompatible-vocabulary twin).
    pub rename_token: Option<(usize, String)>,
    /// Append this many extra normal tokens (a different-size vocabulary).
    pub extra_tokens: usize,
    /// Standard deviation of the logits for a unit-RMS hidden state.
    pub logit_std: f32,
}

impl Default for TinyLlamaConfig {
    fn default() -> Self {
        TinyLlamaConfig {
            name: "tiny-llama".to_string(),
            n_ctx: 256,
            n_embd: 64,
            n_layer: 2,
            n_ff: 128,
            n_head: 4,
            n_head_kv: 2,
            rename_token: None,
            extra_tokens: 0,
            logit_std: 3.0,
        }
    }
}

/// The vocabulary: (text, score, type).
pub fn tiny_vocab(config: &TinyLlamaConfig) -> Vec<(String, f32, i32)> {
    let mut v: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, TOKEN_UNKNOWN),
        ("<s>".into(), 0.0, TOKEN_CONTROL),
        ("</s>".into(), 0.0, TOKEN_CONTROL),
        ("<|im_start|>".into(), 0.0, TOKEN_CONTROL),
        ("<|im_end|>".into(), 0.0, TOKEN_CONTROL),
    ];
    v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, TOKEN_BYTE)));
    let normal = NORMAL_PIECES
        .iter()
        .map(|p| (*p).to_string())
        .chain((0..config.extra_tokens).map(|i| format!("▁extra{i}")));
    for (i, text) in normal.enumerate() {
        v.push((text, -1.0 - i as f32, TOKEN_NORMAL));
    }
    if let Some((id, text)) = &config.rename_token {
        if let Some(slot) = v.get_mut(*id) {
            slot.0.clone_from(text);
        }
    }
    v
}

/// A llama-architecture F32 model with random weights and a SentencePiece
/// vocabulary of ~320 tokens (under 1 MB with the default config).
pub fn tiny_llama(config: &TinyLlamaConfig, seed: u64) -> Result<GgufWriter, GgufError> {
    let c = config;
    let vocab = tiny_vocab(c);
    let n_vocab = vocab.len() as u64;
    let head_dim = c.n_embd / c.n_head.max(1);
    let n_kv = u64::from(head_dim) * u64::from(c.n_head_kv);
    let (e, ff) = (u64::from(c.n_embd), u64::from(c.n_ff));

    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::string("llama"))
        .set("general.name", Value::string(c.name.clone()))
        .set("general.file_type", Value::U32(0))
        .set("llama.context_length", Value::U32(c.n_ctx))
        .set("llama.embedding_length", Value::U32(c.n_embd))
        .set("llama.block_count", Value::U32(c.n_layer))
        .set("llama.feed_forward_length", Value::U32(c.n_ff))
        .set("llama.attention.head_count", Value::U32(c.n_head))
        .set("llama.attention.head_count_kv", Value::U32(c.n_head_kv))
        .set("llama.rope.dimension_count", Value::U32(head_dim))
        .set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .set("llama.rope.freq_base", Value::F32(10000.0))
        .set("llama.vocab_size", Value::U32(vocab.len() as u32))
        .set("tokenizer.ggml.model", Value::string("llama"))
        .set(
            "tokenizer.ggml.tokens",
            Value::array(
                ValueType::String,
                vocab.iter().map(|t| Value::string(t.0.clone())).collect(),
            ),
        )
        .set(
            "tokenizer.ggml.scores",
            Value::array(
                ValueType::F32,
                vocab.iter().map(|t| Value::F32(t.1)).collect(),
            ),
        )
        .set(
            "tokenizer.ggml.token_type",
            Value::array(
                ValueType::I32,
                vocab.iter().map(|t| Value::I32(t.2)).collect(),
            ),
        )
        .set("tokenizer.ggml.bos_token_id", Value::U32(1))
        .set("tokenizer.ggml.eos_token_id", Value::U32(2))
        .set("tokenizer.ggml.unknown_token_id", Value::U32(0))
        .set("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .set("tokenizer.ggml.add_eos_token", Value::Bool(false))
        .set("tokenizer.chat_template", Value::string(CHATML_TEMPLATE));

    let normal = |w: &mut GgufWriter, name: &str, dims: &[u64], std: f32| {
        let n = dims.iter().product::<u64>() as usize;
        let values = Rng::for_label(seed, name).normals_f32(n, std);
        w.add_tensor_f32(name, dims, &values).map(|_| ())
    };
    let ones = |w: &mut GgufWriter, name: &str, n: u64| {
        w.add_tensor_f32(name, &[n], &vec![1.0; n as usize])
            .map(|_| ())
    };
    let proj_std = |n_in: u64| 1.0 / (n_in as f32).sqrt();

    normal(&mut w, "token_embd.weight", &[e, n_vocab], 1.0)?;
    ones(&mut w, "output_norm.weight", e)?;
    normal(
        &mut w,
        "output.weight",
        &[e, n_vocab],
        c.logit_std * proj_std(e),
    )?;
    for i in 0..c.n_layer {
        let name = |s: &str| format!("blk.{i}.{s}.weight");
        ones(&mut w, &name("attn_norm"), e)?;
        normal(&mut w, &name("attn_q"), &[e, e], proj_std(e))?;
        normal(&mut w, &name("attn_k"), &[e, n_kv], proj_std(e))?;
        normal(&mut w, &name("attn_v"), &[e, n_kv], proj_std(e))?;
        normal(&mut w, &name("attn_output"), &[e, e], proj_std(e))?;
        ones(&mut w, &name("ffn_norm"), e)?;
        normal(&mut w, &name("ffn_gate"), &[e, ff], proj_std(e))?;
        normal(&mut w, &name("ffn_up"), &[e, ff], proj_std(e))?;
        normal(&mut w, &name("ffn_down"), &[ff, e], proj_std(ff))?;
    }
    Ok(w)
}

/// LoRA targets of the fixture adapters.
pub const FIXTURE_LORA_TARGETS: [&str; 3] = ["attn_q", "attn_v", "ffn_up"];
/// Rank of the fixture adapters (alpha equals it, so the scale is 1).
pub const FIXTURE_LORA_RANK: usize = 4;
/// Init of the random fixture adapters: ΔW entries ≈ 2·0.25·0.15 ≈ 0.075 vs
/// base entries ≈ 0.125, enough to move log-probs by tenths of a nat.
pub const FIXTURE_LORA_RANDOM: LoraInit = LoraInit::Random {
    std_a: 0.25,
    std_b: 0.15,
};

/// File names written by [`write_fixtures`], in order.
pub const FIXTURE_FILES: [&str; 6] = [
    "tiny-llama.gguf",
    "tiny-llama-b.gguf",
    "tiny-llama-othervocab.gguf",
    "tiny-lora-zero.gguf",
    "tiny-lora-random.gguf",
    "tiny-lora-otherarch.gguf",
];

/// The bytes of every fixture, in [`FIXTURE_FILES`] order.
pub fn fixture_bytes() -> Result<Vec<Vec<u8>>, GgufError> {
    let config = TinyLlamaConfig::default();
    let base = tiny_llama(&config, 1)?.to_bytes()?;
    let twin = tiny_llama(
        &TinyLlamaConfig {
            name: "tiny-llama-b".into(),
            ..config.clone()
        },
        2,
    )?
    .to_bytes()?;
    let other_vocab = tiny_llama(
        &TinyLlamaConfig {
            name: "tiny-llama-othervocab".into(),
            rename_token: Some((300, "▁zebra".into())),
            ..config.clone()
        },
        1,
    )?
    .to_bytes()?;
    let model = GgufFile::from_bytes(&base)?;
    let alpha = FIXTURE_LORA_RANK as f32;
    let adapter = |init: LoraInit, seed: u64, arch: &str, name: &str| {
        let tensors = lora_for_model(&model, &FIXTURE_LORA_TARGETS, FIXTURE_LORA_RANK, init, seed)?;
        let extra = [("general.name".to_string(), Value::string(name))];
        lora_adapter_writer(arch, alpha, &tensors, &extra)?.to_bytes()
    };
    Ok(vec![
        base,
        twin,
        other_vocab,
        adapter(LoraInit::Zero, 10, "llama", "tiny-lora-zero")?,
        adapter(FIXTURE_LORA_RANDOM, 11, "llama", "tiny-lora-random")?,
        adapter(FIXTURE_LORA_RANDOM, 12, "gemma3", "tiny-lora-otherarch")?,
    ])
}

/// Write all fixtures into `dir` (created if missing); returns their paths.
pub fn write_fixtures(dir: &Path) -> Result<Vec<PathBuf>, GgufError> {
    std::fs::create_dir_all(dir).map_err(|e| GgufError::io(dir, e))?;
    let mut paths = Vec::new();
    for (name, bytes) in FIXTURE_FILES.iter().zip(fixture_bytes()?) {
        let path = dir.join(name);
        super::writer::write_atomic(&path, &bytes)?;
        paths.push(path);
    }
    Ok(paths)
}
