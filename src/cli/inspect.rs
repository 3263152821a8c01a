//! `dlogp inspect`: metadata, hyper-parameters and tensors of a GGUF file.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use crate::gguf::{
    block_ranges, value_json, value_summary, FileKind, GgufFile, Inspection, Problem, Subject,
};
use crate::io::Output;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A GGUF model or LoRA adapter (`-`: read from stdin).
    pub file: PathBuf,
    /// Print JSON instead of text: every metadata value complete.
    #[arg(long)]
    pub json: bool,
    /// List every tensor (name, type, shape) instead of a summary, and an
    /// adapter's targets one per line instead of by projection.
    #[arg(long)]
    pub tensors: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    if crate::io::is_std_stream(&args.file) {
        let tmp = super::stdio::spool_stdin()?;
        let file = GgufFile::open(&tmp).map_err(|e| super::stdio::as_stdin(e, &tmp))?;
        return show(&args, &file, std::path::Path::new("<stdin>"));
    }
    if !args.file.exists() {
        anyhow::bail!("{}: no such file", args.file.display());
    }
    let file = GgufFile::open(&args.file)?;
    show(&args, &file, &args.file)
}

/// Print `file` (read from `name`) and fail if llama.cpp would abort on it.
fn show(args: &InspectArgs, file: &GgufFile, name: &std::path::Path) -> anyhow::Result<()> {
    let info = Inspection::from_file(file);
    let found = crate::gguf::problems(file);
    let text = if args.json {
        let mut v = to_json(name, &info);
        v["metadata"] = Value::Object(
            info.metadata
                .iter()
                .map(|(k, val)| (k.clone(), value_json(val)))
                .collect(),
        );
        if args.tensors {
            v["tensors"] = Value::Array(
                file.tensors
                    .iter()
                    .map(|t| json!({"name": t.name, "type": t.ggml_type.name(), "dims": t.dims}))
                    .collect(),
            );
        }
        v["problems"] = problems_json(&found);
        let mut s = serde_json::to_string_pretty(&v)?;
        s.push('\n');
        s
    } else {
        let mut s = to_text(name, &info, args.tensors);
        if args.tensors {
            s.push_str(&format!("tensors ({}):\n", file.tensors.len()));
            for t in &file.tensors {
                s.push_str(&format!(
                    "  {:<40} {:<6} {:?}\n",
                    t.name,
                    t.ggml_type.name(),
                    t.dims
                ));
            }
        }
        s.push_str(&problems_text(&found));
        s
    };
    let mut out = Output::create(std::path::Path::new("-"))?;
    std::io::Write::write_all(&mut out, text.as_bytes())?;
    out.commit()?;
    // A file llama.cpp would abort on is reported, then fails the command.
    crate::gguf::validate::first_error(found, name)?;
    Ok(())
}

/// `problems` of `--json`: one object per problem (an empty list when none).
fn problems_json(found: &[Problem]) -> Value {
    Value::Array(
        found
            .iter()
            .map(|p| {
                let (subject, name) = match &p.subject {
                    Subject::Key(k) => ("key", k),
                    Subject::Tensor(t) => ("tensor", t),
                };
                json!({
                    "subject": subject,
                    "name": name,
                    "value": p.value,
                    "reason": p.reason,
                    "hint": p.hint,
                    "message": p.summary(),
                })
            })
            .collect(),
    )
}

/// The `problems:` section of the text output (nothing when there are none).
fn problems_text(found: &[Problem]) -> String {
    let mut s = String::new();
    if !found.is_empty() {
        s.push_str(&format!("problems ({}):\n", found.len()));
    }
    for p in found {
        s.push_str(&format!("  - {}\n", p.summary()));
        if let Some(h) = &p.hint {
            s.push_str(&format!("    hint: {h}\n"));
        }
    }
    s
}

fn kind_name(kind: &FileKind) -> String {
    match kind {
        FileKind::Model => "model".to_string(),
        FileKind::LoraAdapter => "lora-adapter".to_string(),
        FileKind::Other(other) => other.clone(),
    }
}

fn to_json(path: &std::path::Path, info: &Inspection) -> Value {
    let pairs = |v: &[(String, String)]| -> Value {
        Value::Object(
            v.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect(),
        )
    };
    let counts = |v: &[(String, usize)]| -> Value {
        Value::Object(
            v.iter()
                .map(|(k, n)| (k.clone(), Value::from(*n)))
                .collect(),
        )
    };
    let mut out = json!({
        "path": path.display().to_string(),
        "kind": kind_name(&info.kind),
        "gguf_version": info.version,
        "architecture": info.architecture,
        "name": info.name,
        "file_type": info.file_type,
        "hyperparameters": pairs(&info.hyperparameters),
        "vocab_size": info.vocab_size,
        "tokenizer_model": info.tokenizer_model,
        "has_chat_template": info.has_chat_template,
        "n_tensors": info.n_tensors,
        "tensor_types": counts(&info.tensor_types),
        "n_parameters": info.n_parameters,
    });
    if info.kind == FileKind::LoraAdapter {
        out["lora"] = json!({
            "rank": info.lora_rank,
            "alpha": info.lora_alpha,
            "targets": info.lora_targets,
        });
    }
    out
}

fn to_text(path: &std::path::Path, info: &Inspection, every_target: bool) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<34} {v}\n"));
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    line("file", path.display().to_string());
    line("kind", kind_name(&info.kind));
    line("gguf version", info.version.to_string());
    line("architecture", opt(&info.architecture));
    line("name", opt(&info.name));
    line("file type", opt(&info.file_type));
    for (k, v) in &info.hyperparameters {
        line(k, v.clone());
    }
    if let Some(n) = info.vocab_size {
        line(
            "vocabulary",
            format!(
                "{n} tokens ({})",
                info.tokenizer_model
                    .as_deref()
                    .unwrap_or("unknown tokenizer")
            ),
        );
    }
    line(
        "chat template",
        if info.has_chat_template { "yes" } else { "no" }.to_string(),
    );
    let types: Vec<String> = info
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect();
    line(
        "tensors",
        format!("{} ({})", info.n_tensors, types.join(", ")),
    );
    line("parameters", info.n_parameters.to_string());
    if info.kind == FileKind::LoraAdapter {
        line(
            "lora rank",
            info.lora_rank.map_or("-".to_string(), |r| r.to_string()),
        );
        line(
            "lora alpha",
            info.lora_alpha.map_or("-".to_string(), |a| a.to_string()),
        );
        line(
            "lora targets",
            format!(
                "{} tensors, {} projections",
                info.lora_targets.len(),
                info.lora_by_projection.len()
            ),
        );
        if every_target {
            for t in &info.lora_targets {
                s.push_str(&format!("  {t}\n"));
            }
        } else {
            for (projection, blocks) in &info.lora_by_projection {
                let layers = if blocks.is_empty() {
                    "(not in a block)".to_string()
                } else {
                    format!("{} layers: {}", blocks.len(), block_ranges(blocks))
                };
                s.push_str(&format!("  {projection:<32} {layers}\n"));
            }
        }
    }
    s.push_str(&format!("metadata ({} keys):\n", info.metadata.len()));
    for (k, v) in &info.metadata {
        s.push_str(&format!("  {k:<40} {}\n", value_summary(v)));
    }
    s
}
