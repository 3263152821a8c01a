//! The progress journal that lets an interrupted evaluation resume.
//!
//! While `dlogp eval` runs, every finished sample is appended (one JSON line,
//! flushed) to `<output>.partial`, after a first line with the settings that
//! decide the samples. A later run with the same settings reads the finished
//! samples back and decodes only the rest; a run with different settings
//! refuses to mix them. The complete output is written atomically at the
//! end, and the journal removed.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::run::SampleRow;

const MAGIC: &str = "dlogp_eval_journal";

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds samples of a run with other settings ({keys})\nhint: rerun with the same settings to resume, or pass `restart` to discard it")]
    Mismatch { path: PathBuf, keys: String },
    #[error(
        "{path}:{line}: not a journal line ({reason})\nhint: pass `restart` to discard the journal"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// An open journal, appended to as samples finish.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// The journal path for an output file.
    pub fn path_for(output: &Path) -> PathBuf {
        let mut name = output.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    }

    /// Opens (or, with `restart` or when absent, creates) the journal at
    /// `path` for `settings`, returning it with the samples it already holds.
    /// A trailing line cut short by an interruption is dropped.
    pub fn open(
        path: &Path,
        settings: &Value,
        restart: bool,
    ) -> Result<(Journal, Vec<SampleRow>), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if restart || !path.exists() {
            let mut file = File::create(path).map_err(io)?;
            let header = json!({ MAGIC: 1, "settings": settings });
            writeln!(file, "{header}").map_err(io)?;
            file.sync_data().map_err(io)?;
            return Ok((
                Journal {
                    path: path.to_path_buf(),
                    file,
                },
                Vec::new(),
            ));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let mut rows = Vec::new();
        let mut good_len = 0u64;
        // settings keys that differ from the journal's
        let mut mismatch: Vec<String> = Vec::new();
        {
            let mut reader = BufReader::new(&mut file);
            let mut line = String::new();
            let mut n = 0;
            loop {
                line.clear();
                let read = reader.read_line(&mut line).map_err(io)?;
                if read == 0 {
                    break;
                }
                n += 1;
                if !line.ends_with('\n') {
                    // the last write was cut short: drop it
                    break;
                }
                let corrupt = |reason: String| JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: n,
                    reason,
                };
                if n == 1 {
                    let header: Value =
                        serde_json::from_str(&line).map_err(|e| corrupt(e.to_string()))?;
                    if header.get(MAGIC).is_none() {
                        return Err(corrupt("no journal header".to_string()));
                    }
                    mismatch = differing_keys(&header["settings"], settings);
                } else {
                    let row: SampleRow =
                        serde_json::from_str(&line).map_err(|e| corrupt(e.to_string()))?;
                    rows.push(row);
                }
                good_len += read as u64;
            }
        }
        if good_len == 0 || (rows.is_empty() && !mismatch.is_empty()) {
            // not even a header, or no samples to lose: start over
            return Self::open(path, settings, true);
        }
        if !mismatch.is_empty() {
            return Err(JournalError::Mismatch {
                path: path.to_path_buf(),
                keys: mismatch.join(", "),
            });
        }
        file.set_len(good_len).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
            },
            rows,
        ))
    }

    /// Appends one finished sample (one write, then flushed to the OS).
    pub fn append(&mut self, row: &SampleRow) -> Result<(), JournalError> {
        let mut line = serde_json::to_string(row).expect("rows serialize");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Removes the journal at `path` (if any) once the complete output is
    /// written; the `Journal` writing it must be gone.
    pub fn discard(path: &Path) -> Result<(), JournalError> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(JournalError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Top-level keys whose values differ between two settings objects.
fn differing_keys(old: &Value, new: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (old.as_object(), new.as_object()) else {
        return vec!["settings".to_string()];
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Finish;

    fn row(i: usize) -> SampleRow {
        SampleRow {
            id: format!("p{i}"),
            sample: i % 2,
            config: "base".to_string(),
            response: format!("response {i} with \"quotes\"\nand lines"),
            extracted: Some(i.to_string()),
            correct: i % 3 == 0,
            replacement_ratio: 0.125,
            n_tokens: i,
            finish: Finish::Eog,
        }
    }

    #[test]
    fn resumes_rows_and_drops_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl.partial");
        let settings = json!({"k": 2, "seed": 1});
        let (mut j, rows) = Journal::open(&path, &settings, false).unwrap();
        assert!(rows.is_empty());
        for i in 0..3 {
            j.append(&row(i)).unwrap();
        }
        drop(j);
        // an interrupted write: half a line at the end
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"p3\",\"sam").unwrap();
        drop(f);
        let (mut j, rows) = Journal::open(&path, &settings, false).unwrap();
        assert_eq!(rows, (0..3).map(row).collect::<Vec<_>>());
        j.append(&row(3)).unwrap();
        drop(j);
        let (j, rows) = Journal::open(&path, &settings, false).unwrap();
        assert_eq!(rows, (0..4).map(row).collect::<Vec<_>>());
        drop(j);
        Journal::discard(&path).unwrap();
        assert!(!path.exists());
        Journal::discard(&path).unwrap(); // already gone: fine
    }

    #[test]
    fn other_settings_are_refused_unless_restarting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.partial");
        let (mut j, _) = Journal::open(&path, &json!({"k": 2, "seed": 1}), false).unwrap();
        j.append(&row(0)).unwrap();
        drop(j);
        let e = Journal::open(&path, &json!({"k": 4, "seed": 1, "top_p": 0.7}), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("(k, top_p)") && e.contains("`restart`"), "{e}");
        let (_, rows) = Journal::open(&path, &json!({"k": 4}), true).unwrap();
        assert!(rows.is_empty());
        // a journal without samples never blocks a run with other settings
        let (_, rows) = Journal::open(&path, &json!({"k": 8}), false).unwrap();
        assert!(rows.is_empty());
        let header = std::fs::read_to_string(&path).unwrap();
        assert!(
            header.contains("\"k\":8") && header.lines().count() == 1,
            "{header}"
        );
        let (_, rows) = Journal::open(&path, &json!({"k": 4}), false).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.partial");
        std::fs::write(
            &path,
            "{\"dlogp_eval_journal\":1,\"settings\":{}}\nnot json\n",
        )
        .unwrap();
        let e = Journal::open(&path, &json!({}), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("s.partial:2"), "{e}");
    }
}
