//! `-` as stdin or stdout: the checks every command shares.

use std::io::Read;
use std::path::Path;

use crate::io::is_std_stream;

/// Check that at most one output is stdout (`-`), naming the flags when more
/// are; returns whether one is (then tables and notes go to stderr instead).
pub fn one_stdout(outputs: &[(&str, Option<&Path>)]) -> anyhow::Result<bool> {
    let to_stdout: Vec<&str> = outputs
        .iter()
        .filter(|(_, p)| p.is_some_and(is_std_stream))
        .map(|(flag, _)| *flag)
        .collect();
    if to_stdout.len() > 1 {
        anyhow::bail!(
            "{} all write to stdout (`-`)\nhint: give all but one of them a file",
            to_stdout.join(", ")
        );
    }
    Ok(!to_stdout.is_empty())
}

/// Check that at most one input is stdin (`-`): it can be read only once.
pub fn one_stdin(inputs: &[(&str, Option<&Path>)]) -> anyhow::Result<()> {
    let from_stdin: Vec<&str> = inputs
        .iter()
        .filter(|(_, p)| p.is_some_and(is_std_stream))
        .map(|(flag, _)| *flag)
        .collect();
    if from_stdin.len() > 1 {
        anyhow::bail!(
            "{} all read stdin (`-`), which can be read only once\nhint: give all but one of them a file",
            from_stdin.join(", ")
        );
    }
    Ok(())
}

/// A model is a file llama.cpp opens itself: `-` is refused, naming the flag.
pub fn model_file(flag: &str, path: Option<&Path>) -> anyhow::Result<()> {
    if path.is_some_and(is_std_stream) {
        anyhow::bail!(
            "{flag} -: a model or adapter must be a file (llama.cpp opens and maps it itself)\nhint: save it first and pass its path"
        );
    }
    Ok(())
}

/// Stdin copied into a temporary file (for GGUF readers that seek); the
/// file is removed when the returned path is dropped.
pub fn spool_stdin() -> anyhow::Result<tempfile::TempPath> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("<stdin>: could not read: {e}"))?;
    if bytes.is_empty() {
        anyhow::bail!("<stdin>: empty (expected a GGUF file)\nhint: dlogp inspect - < model.gguf");
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".dlogp-stdin-")
        .suffix(".gguf")
        .tempfile()?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    Ok(tmp.into_temp_path())
}

/// An error about the spooled file `tmp`, as one about `<stdin>`.
pub fn as_stdin(err: impl std::fmt::Display, tmp: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        err.to_string()
            .replace(&tmp.display().to_string(), "<stdin>")
    )
}
