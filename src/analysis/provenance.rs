//! What produced an output: the models and adapter (path, size, a content
//! hash prefix, architecture), the LoRA scale, the data, template, seed and
//! decoding settings, and the dlogp version and build features. Every JSON
//! output of `eval`, `intervene`, `analyze` and `score` carries one, and the
//! analyze report shows it in its footer.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decode::{DecodeConfig, Mode, Proposer};
use crate::gguf::GgufFile;
use crate::sampler::{Criterion, SamplingParams};

/// Hex digits of the SHA-256 kept: enough to tell files apart, short enough
/// to read (compare with `sha256sum FILE | cut -c1-16`).
pub const HASH_PREFIX: usize = 16;

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// As given (or `<stdin>`).
    pub path: String,
    /// Size in bytes (none for stdin).
    pub bytes: Option<u64>,
    /// The first [`HASH_PREFIX`] hex digits of the content's SHA-256 (none
    /// for stdin).
    pub sha256: Option<String>,
    /// `general.architecture` of a GGUF file (models and adapters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

impl FileInfo {
    /// Size and hash of the file at `path` (`-`: stdin, recorded by name).
    pub fn read(path: &Path) -> std::io::Result<FileInfo> {
        if crate::io::is_std_stream(path) {
            return Ok(FileInfo {
                path: "<stdin>".to_string(),
                bytes: None,
                sha256: None,
                architecture: None,
            });
        }
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            hasher.update(&buf[..n]);
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(FileInfo {
            path: path.display().to_string(),
            bytes: Some(bytes),
            sha256: Some(hex[..HASH_PREFIX].to_string()),
            architecture: None,
        })
    }

    /// [`FileInfo::read`] plus the GGUF's architecture.
    pub fn read_gguf(path: &Path) -> std::io::Result<FileInfo> {
        let mut info = FileInfo::read(path)?;
        info.architecture = GgufFile::open(path)
            .ok()
            .and_then(|f| f.architecture().map(str::to_string));
        Ok(info)
    }

    /// An input that is not a file (generated in memory), by its description.
    pub fn named(what: impl Into<String>) -> FileInfo {
        FileInfo {
            path: what.into(),
            bytes: None,
            sha256: None,
            architecture: None,
        }
    }

    /// `path (N bytes, sha256 PREFIX, ARCH)`.
    fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.bytes {
            parts.push(format!("{b} bytes"));
        }
        if let Some(h) = &self.sha256 {
            parts.push(format!("sha256 {h}…"));
        }
        if let Some(a) = &self.architecture {
            parts.push(a.clone());
        }
        if parts.is_empty() {
            self.path.clone()
        } else {
            format!("{} ({})", self.path, parts.join(", "))
        }
    }
}

/// The decoding and gate settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeSettings {
    /// None where each configuration has its own (eval, intervene).
    pub mode: Option<Mode>,
    pub criterion: Criterion,
    pub tau: f64,
    pub gamma: f64,
    pub proposer: Proposer,
    pub sampling: SamplingParams,
    pub seed: u64,
}

impl From<&DecodeConfig> for DecodeSettings {
    fn from(c: &DecodeConfig) -> Self {
        DecodeSettings {
            mode: Some(c.mode()),
            criterion: c.gate().criterion(),
            tau: c.gate().tau(),
            gamma: c.gamma(),
            proposer: c.proposer(),
            sampling: *c.sampling(),
            seed: c.seed(),
        }
    }
}

/// Everything that made an output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The dlogp version (`CARGO_PKG_VERSION`).
    pub dlogp_version: String,
    /// The Cargo features this binary was built with.
    pub features: Vec<String>,
    /// The command that produced the output (`eval`, `score`, ...).
    pub command: String,
    /// llama.cpp's system info line (CPU features, build options) where
    /// models were loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llama_cpp: Option<String>,
    /// Whether llama.cpp's batch-dependent llamafile GEMM was on (then
    /// speculative decoding is not exact and results depend on batching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llamafile_gemm: Option<bool>,
    pub base: Option<FileInfo>,
    /// The RL model, when it is a second GGUF.
    pub rl: Option<FileInfo>,
    /// The RL adapter, when the RL side is a LoRA on the base.
    pub adapter: Option<FileInfo>,
    pub lora_scale: Option<f32>,
    /// The dataset or input rows.
    pub data: Option<FileInfo>,
    pub template: Option<String>,
    pub seed: Option<u64>,
    /// The decoding defaults every configuration starts from (commands that
    /// decode).
    pub decode: Option<DecodeSettings>,
    /// Other settings of the command as given (max tokens, stop strings,
    /// samples per problem, ...).
    pub settings: serde_json::Value,
}

impl Provenance {
    /// A provenance for `command` with this build's version and features
    /// and nothing else recorded yet.
    pub fn new(command: &str) -> Provenance {
        Provenance {
            dlogp_version: env!("CARGO_PKG_VERSION").to_string(),
            features: build_features(),
            command: command.to_string(),
            llama_cpp: None,
            llamafile_gemm: None,
            base: None,
            rl: None,
            adapter: None,
            lora_scale: None,
            data: None,
            template: None,
            seed: None,
            decode: None,
            settings: serde_json::Value::Null,
        }
    }

    /// The models, adapter and data as `base NAME (sha 1a2b3c4d)`, file
    /// names only: the short form for figure captions.
    pub fn short_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, f) in [
            ("base", &self.base),
            ("RL", &self.rl),
            ("RL adapter", &self.adapter),
            ("data", &self.data),
        ] {
            if let Some(f) = f {
                let name = Path::new(&f.path)
                    .file_name()
                    .map_or(f.path.clone(), |n| n.to_string_lossy().into_owned());
                out.push(match &f.sha256 {
                    Some(h) => format!("{what} {name} (sha {})", &h[..h.len().min(8)]),
                    None => format!("{what} {name}"),
                });
            }
        }
        out
    }

    /// The lines of a report footer.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "dlogp {} {} (features: {})",
            self.dlogp_version,
            self.command,
            if self.features.is_empty() {
                "none".to_string()
            } else {
                self.features.join(", ")
            }
        )];
        if self.llamafile_gemm == Some(true) {
            out.push(
                "llama.cpp built with the llamafile GEMM: results depend on batching".to_string(),
            );
        }
        let mut file = |what: &str, f: &Option<FileInfo>| {
            if let Some(f) = f {
                out.push(format!("{what}: {}", f.line()));
            }
        };
        file("base", &self.base);
        file("RL model", &self.rl);
        file("RL adapter", &self.adapter);
        file("data", &self.data);
        if let Some(s) = self.lora_scale {
            out.push(format!("LoRA scale: {s}"));
        }
        if let Some(t) = &self.template {
            out.push(format!("template: {t:?}"));
        }
        if let Some(s) = self.seed {
            out.push(format!("seed: {s}"));
        }
        if let Some(d) = &self.decode {
            out.push(format!(
                "decoding: criterion {}, τ {}, γ {}, proposer {}, temperature {}, top-p {}, top-k {}",
                d.criterion,
                d.tau,
                d.gamma,
                d.proposer.name(),
                d.sampling.temperature,
                d.sampling.top_p,
                d.sampling.top_k
            ));
        }
        if !self.settings.is_null() {
            out.push(format!("settings: {}", self.settings));
        }
        out
    }
}

/// The optional features compiled into this binary.
pub fn build_features() -> Vec<String> {
    let mut v = Vec::new();
    for (on, name) in [
        (cfg!(feature = "train"), "train"),
        (cfg!(feature = "serve"), "serve"),
        (cfg!(feature = "plugin"), "plugin"),
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "metal"), "metal"),
        (cfg!(feature = "vulkan"), "vulkan"),
    ] {
        if on {
            v.push(name.to_string());
        }
    }
    v
}

/// Today's date in UTC, `YYYY-MM-DD` (figure captions).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date((secs / 86_400) as i64)
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_788), "2026-12-01");
        assert_eq!(utc_date().len(), 10);
    }

    #[test]
    fn file_info_hashes_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let info = FileInfo::read(&path).unwrap();
        assert_eq!(info.bytes, Some(3));
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223…
        assert_eq!(info.sha256.as_deref(), Some("ba7816bf8f01cfea"));
        let stdin = FileInfo::read(Path::new("-")).unwrap();
        assert_eq!(stdin.path, "<stdin>");
        assert_eq!(stdin.sha256, None);
    }

    #[test]
    fn lines_name_every_recorded_field() {
        let mut p = Provenance::new("eval");
        p.base = Some(FileInfo {
            path: "b.gguf".into(),
            bytes: Some(10),
            sha256: Some("0123456789abcdef".into()),
            architecture: Some("llama".into()),
        });
        p.lora_scale = Some(0.5);
        p.seed = Some(7);
        p.decode = Some(DecodeSettings::from(&DecodeConfig::default()));
        let text = p.lines().join("\n");
        for needle in [
            "dlogp 0.1.0 eval",
            "base: b.gguf (10 bytes, sha256 0123456789abcdef…, llama)",
            "LoRA scale: 0.5",
            "seed: 7",
            "criterion dlogp, τ -0.3",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }
}
