//! `dlogp lora-meta`: record (or change) the task contract of an adapter
//! (`dlogp.task.*`, see [`crate::eval::contract`]) without retraining it: the
//! file's metadata is rewritten, its tensors are copied byte for byte.

use std::path::PathBuf;

use clap::Args;

use crate::eval::contract::{TaskContract, KEY_PREFIX};
use crate::eval::verify::{check_template, Extraction};
use crate::gguf::{rewrite_metadata, GgufFile};

#[derive(Debug, Args)]
pub struct LoraMetaArgs {
    /// The adapter (GGUF); rewritten in place unless --out is given.
    #[arg(long, visible_alias = "lora", value_name = "GGUF")]
    pub file: PathBuf,
    /// Write the result here instead of over --file.
    #[arg(long, short = 'o', value_name = "GGUF")]
    pub out: Option<PathBuf>,
    /// The prompt template the adapter was trained with (`{question}` is the
    /// problem), as `dlogp train --template` had it.
    #[arg(long)]
    pub template: Option<String>,
    /// The training prompts were used as written (`dlogp train --raw`), not
    /// wrapped in the chat template.
    #[arg(long, conflicts_with = "chat")]
    pub raw: bool,
    /// The training prompts were wrapped in the model's chat template (the
    /// default for an adapter without a contract).
    #[arg(long)]
    pub chat: bool,
    /// How answers were graded in training, tried in order (`dlogp train --extract`).
    #[arg(long, value_delimiter = ',')]
    pub extract: Option<Vec<Extraction>>,
    /// The response limit in training (`dlogp train --max-tokens`; recorded
    /// for reference only).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Only show the contract the file has; change nothing.
    #[arg(long, conflicts_with_all = ["out", "template", "raw", "chat", "extract", "max_tokens"])]
    pub show: bool,
}

pub fn run(args: LoraMetaArgs) -> anyhow::Result<()> {
    if crate::io::is_std_stream(&args.file) {
        anyhow::bail!("--file needs a file (the metadata is rewritten in place)");
    }
    let file = GgufFile::open(&args.file)?;
    let origin = format!("{}: ", args.file.display());
    let old = TaskContract::from_metadata(&file.metadata, &origin);
    if args.show {
        match old? {
            Some(c) => eprintln!("{}: task contract: {c}", args.file.display()),
            None => eprintln!("{}: no task contract (dlogp.task.*)", args.file.display()),
        }
        return Ok(());
    }
    // a broken contract is replaced as a whole, so every part must be given
    let old = match old {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{e}; replacing it");
            None
        }
    };
    let template = match (&args.template, &old) {
        (Some(t), _) => t.clone(),
        (None, Some(c)) => c.template.clone(),
        (None, None) => anyhow::bail!(
            "{}: has no task contract yet, so --template is needed\nhint: dlogp lora-meta --file {} --template '{{question}} Answer with just the number.' --extract boxed,last-number",
            args.file.display(),
            args.file.display()
        ),
    };
    check_template(&template)?;
    let extraction = match (&args.extract, &old) {
        (Some(e), _) => e.clone(),
        (None, Some(c)) => c.extraction.clone(),
        (None, None) => anyhow::bail!(
            "{}: has no task contract yet, so --extract is needed (e.g. --extract boxed,last-number)",
            args.file.display()
        ),
    };
    if extraction.is_empty() {
        anyhow::bail!("invalid --extract: give at least one method (boxed, gsm8k, last-number)");
    }
    let chat_template = if args.raw {
        false
    } else if args.chat {
        true
    } else {
        old.as_ref().is_none_or(|c| c.chat_template)
    };
    let contract = TaskContract {
        template,
        chat_template,
        extraction,
        max_tokens: args.max_tokens.or(old.and_then(|c| c.max_tokens)),
    };
    let mut metadata: Vec<_> = file
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(KEY_PREFIX))
        .cloned()
        .collect();
    metadata.extend(contract.to_metadata());
    let out = args.out.as_ref().unwrap_or(&args.file);
    rewrite_metadata(&args.file, out, &metadata)?;
    // read it back: what was written is what the commands will see
    let back = TaskContract::read(out)?;
    if back.as_ref() != Some(&contract) {
        anyhow::bail!(
            "{}: the contract read back differs from the one written",
            out.display()
        );
    }
    eprintln!("{}: task contract: {contract}", out.display());
    Ok(())
}
