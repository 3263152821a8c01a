//! Errors of the GGUF reader, writer and LoRA helpers.

use std::fmt;
use std::path::{Path, PathBuf};

use super::ggml_type::GgmlType;
use super::validate::Problem;
use super::value::ValueType;

/// Where parsed bytes came from: a file path, or nothing for in-memory input.
///
/// Displays as `"path: "` (ready to prefix a message) or as the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin(pub Option<PathBuf>);

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "{}: ", p.display()),
            None => Ok(()),
        }
    }
}

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Opening, creating, renaming or reading a named file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A read from the underlying stream failed (not a clean end of file).
    #[error("{origin}read error at byte {offset}: {source}")]
    Read {
        origin: Origin,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    NotGguf { origin: Origin, found: Vec<u8> },
    #[error("{origin}unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion { origin: Origin, version: u32 },
    #[error(
        "{origin}file is truncated: {what} at byte {offset} needs {needed} bytes, {available} left"
    )]
    Truncated {
        origin: Origin,
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{origin}{what} at byte {offset} claims {count} entries, more than the {available} remaining bytes can hold")]
    TooLarge {
        origin: Origin,
        what: String,
        offset: u64,
        count: u64,
        available: u64,
    },
    #[error("{origin}{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        origin: Origin,
        what: String,
        offset: u64,
    },
    #[error("{origin}key `{key}` has unknown value type {found} at byte {offset}")]
    UnknownValueType {
        origin: Origin,
        key: String,
        found: u32,
        offset: u64,
    },
    #[error("{origin}key `{key}` nests arrays deeper than {max} levels")]
    NestedTooDeep {
        origin: Origin,
        key: String,
        max: usize,
    },
    #[error("{origin}duplicate metadata key `{key}`")]
    DuplicateKey { origin: Origin, key: String },
    #[error("{origin}duplicate tensor name `{name}`")]
    DuplicateTensor { origin: Origin, name: String },
    #[error("{origin}tensor `{name}` has {n_dims} dimensions (at most 4 are supported)")]
    TooManyDims {
        origin: Origin,
        name: String,
        n_dims: u64,
    },
    #[error("{origin}tensor `{name}` has unknown ggml type {found}")]
    UnknownGgmlType {
        origin: Origin,
        name: String,
        found: u32,
    },
    #[error("{origin}tensor `{name}` with dims {dims:?} and type {ggml_type}: {reason}")]
    TensorShape {
        origin: Origin,
        name: String,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        reason: String,
    },
    #[error("{origin}`general.alignment` is {value}; it must be a non-zero power of two")]
    BadAlignment { origin: Origin, value: String },
    #[error("{origin}tensor `{name}` has data offset {offset}, not a multiple of the alignment {alignment}")]
    TensorMisaligned {
        origin: Origin,
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("{origin}tensor `{name}` data (bytes {start}..{end}) lies outside the file ({file_len} bytes)")]
    TensorOutOfBounds {
        origin: Origin,
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("tensor `{name}` has type {ggml_type}; only F32 and F16 can be read as f32")]
    UnsupportedTensorType { name: String, ggml_type: GgmlType },
    #[error("tensor `{name}`: expected {expected} bytes of data for dims {dims:?} and type {ggml_type}, got {got}")]
    DataLength {
        name: String,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        expected: u64,
        got: u64,
    },
    #[error("metadata key `{key}`: array declared as {elem} holds an element of type {found}")]
    MixedArray {
        key: String,
        elem: ValueType,
        found: ValueType,
    },
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    WrongValueType {
        key: String,
        expected: &'static str,
        found: ValueType,
    },
    #[error("{}: not a usable LoRA adapter: {reason}", path.display())]
    NotLoraAdapter { path: PathBuf, reason: String },
    #[error("LoRA tensor for `{base}`: {reason}")]
    LoraShape { base: String, reason: String },
    #[error("LoRA target `{target}` matches no tensor `blk.N.{target}.weight`\nhint: available targets: {}", available.join(", "))]
    UnknownLoraTarget {
        target: String,
        available: Vec<String>,
    },
    /// A structurally sound file with a value llama.cpp would abort on
    /// (see [`super::validate`]): the first problem, and how many follow.
    #[error("{}", invalid_message(path, problem, *more))]
    Invalid {
        path: PathBuf,
        problem: Box<Problem>,
        more: usize,
    },
}

fn invalid_message(path: &Path, problem: &Problem, more: usize) -> String {
    let mut s = format!("{}: {}", path.display(), problem.summary());
    if more > 0 {
        let plural = if more == 1 { "" } else { "s" };
        s.push_str(&format!(
            " (and {more} more problem{plural}; `dlogp inspect {}` lists them)",
            path.display()
        ));
    }
    if let Some(h) = &problem.hint {
        s.push_str(&format!("\nhint: {h}"));
    }
    s
}

impl GgufError {
    /// Attach `path` to an error produced while parsing bytes of that file.
    #[must_use]
    pub fn with_path(mut self, path: &Path) -> Self {
        let o = Origin(Some(path.to_path_buf()));
        match &mut self {
            GgufError::Read { origin, .. }
            | GgufError::NotGguf { origin, .. }
            | GgufError::UnsupportedVersion { origin, .. }
            | GgufError::Truncated { origin, .. }
            | GgufError::TooLarge { origin, .. }
            | GgufError::InvalidUtf8 { origin, .. }
            | GgufError::UnknownValueType { origin, .. }
            | GgufError::NestedTooDeep { origin, .. }
            | GgufError::DuplicateKey { origin, .. }
            | GgufError::DuplicateTensor { origin, .. }
            | GgufError::TooManyDims { origin, .. }
            | GgufError::UnknownGgmlType { origin, .. }
            | GgufError::TensorShape { origin, .. }
            | GgufError::BadAlignment { origin, .. }
            | GgufError::TensorMisaligned { origin, .. }
            | GgufError::TensorOutOfBounds { origin, .. } => *origin = o,
            GgufError::Io { .. }
            | GgufError::UnsupportedTensorType { .. }
            | GgufError::DataLength { .. }
            | GgufError::MixedArray { .. }
            | GgufError::WrongValueType { .. }
            | GgufError::LoraShape { .. }
            | GgufError::NotLoraAdapter { .. }
            | GgufError::UnknownLoraTarget { .. }
            | GgufError::Invalid { .. } => {}
        }
        self
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
