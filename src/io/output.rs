//! Output destinations: stdout (`-`) or a file written through a temporary
//! file in the same directory and renamed into place only on success.
//!
//! A temporary file is named after its output and the writing process
//! (`.OUT.dlogp-PID-XXXXXX.tmp`), so that:
//! - on SIGINT, SIGTERM or SIGHUP every live temporary file is removed before
//!   the process exits with the shell's code (128 + signal: 130, 143, 129);
//! - one left by a process that can no longer clean up (SIGKILL, a crash) is
//!   recognised and removed by the next run writing the same output.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use tempfile::NamedTempFile;

/// A buffered output: stdout, a file committed atomically, or a device.
pub enum Output {
    Stdout(BufWriter<io::Stdout>),
    File {
        temp: BufWriter<Temp>,
        path: PathBuf,
    },
    /// A device, FIFO or socket (`/dev/null`, a named pipe): written in
    /// place, since renaming a file over it would replace it.
    Special(BufWriter<std::fs::File>),
}

/// A registered temporary file (see [`install_signal_cleanup`]); dropping it
/// deletes the file and its registration.
pub struct Temp {
    file: Option<NamedTempFile>,
}

impl Write for Temp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("temporary file already persisted")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            forget_temp(f.path());
        }
    }
}

/// An output that would overwrite one of the inputs.
#[derive(Debug, thiserror::Error)]
#[error("{output} is the same file as the input {input}; writing it would destroy the input\nhint: write the output to another path")]
pub struct SameFileError {
    pub output: PathBuf,
    pub input: PathBuf,
}

impl Output {
    /// Open `-` (stdout) or a temporary file beside `path`.
    pub fn create(path: &Path) -> io::Result<Output> {
        if is_std_stream(path) {
            return Ok(Output::Stdout(BufWriter::new(io::stdout())));
        }
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            return Ok(Output::Special(BufWriter::new(f)));
        }
        let temp = Temp {
            file: Some(temp_beside(path)?),
        };
        Ok(Output::File {
            temp: BufWriter::new(temp),
            path: path.to_path_buf(),
        })
    }

    /// Flush and, for a file, move it into place. Dropping an `Output`
    /// without calling this removes the temporary file.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Output::Stdout(mut w) => w.flush(),
            Output::Special(mut w) => w.flush(),
            Output::File { temp, path } => {
                let mut temp = temp.into_inner().map_err(|e| e.into_error())?;
                match temp.file.take() {
                    Some(file) => persist(file, &path),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::Special(w) => w.write(buf),
            Output::File { temp, .. } => temp.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.write_all(buf),
            Output::Special(w) => w.write_all(buf),
            Output::File { temp, .. } => temp.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::Special(w) => w.flush(),
            Output::File { temp, .. } => temp.flush(),
        }
    }
}

/// Write a whole file atomically (temp file + fsync + rename + directory
/// fsync), or write the bytes to stdout for `-`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut out = Output::create(path)?;
    out.write_all(bytes)?;
    out.commit()
}

/// Whether `path` names stdin or stdout (`-`).
pub fn is_std_stream(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Refuse an output path that is the same file as one of `inputs` (by device
/// and inode, so links and other spellings of the path count) or as another
/// output. `-` and paths that do not exist yet never clash.
pub fn ensure_distinct(outputs: &[&Path], inputs: &[&Path]) -> Result<(), SameFileError> {
    for (i, out) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(&outputs[..i]);
        for input in others {
            if same_file(out, input) {
                return Err(SameFileError {
                    output: out.to_path_buf(),
                    input: input.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// Whether two paths name one existing file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if is_std_stream(a) || is_std_stream(b) {
        return false;
    }
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        // one of them does not exist (yet): only the same spelling clashes
        return a == b && a.exists();
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// The directory a file is written into.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The temporary-file name prefix for `path` written by process `pid`.
fn temp_prefix(path: &Path, pid: Option<u32>) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    match pid {
        Some(pid) => format!(".{name}.dlogp-{pid}-"),
        None => format!(".{name}.dlogp-"),
    }
}

/// A new temporary file beside `path`, registered for removal on a signal;
/// stale ones from dead processes are removed first.
fn temp_beside(path: &Path) -> io::Result<NamedTempFile> {
    let dir = parent_dir(path);
    remove_stale_temps(path);
    install_signal_cleanup();
    let mut live = live_temps();
    let temp = tempfile::Builder::new()
        .prefix(&temp_prefix(path, Some(std::process::id())))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    live.push(temp.path().to_path_buf());
    Ok(temp)
}

/// Sync, make readable and rename a temporary file into place.
fn persist(temp: NamedTempFile, path: &Path) -> io::Result<()> {
    let temp_path = temp.path().to_path_buf();
    let result = (|| {
        temp.as_file().sync_all()?;
        // temp files are private (0600); a written output is an ordinary file
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        temp.persist(path).map_err(|e| e.error)?;
        // persist the rename itself; best effort (not every platform allows it)
        if let Ok(d) = std::fs::File::open(parent_dir(path)) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    forget_temp(&temp_path);
    result
}

// ---- temporary files that outlive their writer ------------------------------

/// Temporary files of this process not yet committed or dropped.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live_temps() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary file was committed or dropped.
fn forget_temp(path: &Path) {
    live_temps().retain(|p| p != path);
}

/// Remove this process's live temporary files (for a process about to exit
/// without unwinding).
pub fn remove_live_temps() {
    let live = std::mem::take(&mut *live_temps());
    for p in live {
        let _ = std::fs::remove_file(p);
    }
}

/// On SIGINT, SIGTERM and SIGHUP: remove the live temporary files and exit
/// with 128 + the signal number. Installed once, when the first temporary
/// file is created, by a thread that waits for the signals (the handler
/// itself only wakes it).
fn install_signal_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            else {
                tracing::warn!("could not install the signal handler; an interrupted run may leave a temporary file");
                return;
            };
            let spawned = std::thread::Builder::new()
                .name("dlogp-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        remove_live_temps();
                        // _exit: no destructors or atexit handlers run while
                        // other threads may be inside llama.cpp.
                        signal_hook::low_level::exit(128 + sig);
                    }
                });
            if spawned.is_err() {
                tracing::warn!("could not start the signal thread; an interrupted run may leave a temporary file");
            }
        }
    });
}

/// Remove temporary files for `path` left by processes that are gone (killed
/// by SIGKILL, or aborted); report those whose process may still run.
fn remove_stale_temps(path: &Path) {
    let dir = parent_dir(path);
    let prefix = temp_prefix(path, None);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if !name.ends_with(".tmp") {
            continue;
        }
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let stale = entry.path();
        match process_alive(pid) {
            Some(false) => match std::fs::remove_file(&stale) {
                Ok(()) => tracing::warn!(
                    "removed {}, left by an earlier run (process {pid}) that was killed",
                    stale.display()
                ),
                Err(e) => tracing::warn!(
                    "{} is left from an earlier run (process {pid}) and could not be removed: {e}",
                    stale.display()
                ),
            },
            _ => tracing::warn!(
                "{} belongs to process {pid}, which may still be writing {}",
                stale.display(),
                path.display()
            ),
        }
    }
}

/// Whether process `pid` exists: known on Linux (`/proc`), `None` elsewhere.
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        Some(proc.join(pid.to_string()).exists())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut out = Output::create(&path).unwrap();
        out.write_all(b"hello\n").unwrap();
        assert!(!path.exists(), "nothing at the final path before commit");
        let temps = names(dir.path());
        assert_eq!(temps.len(), 1);
        assert!(
            temps[0].starts_with(&format!(".out.jsonl.dlogp-{}-", std::process::id())),
            "named after the output and the process: {temps:?}"
        );
        assert!(live_temps().iter().any(|p| p.starts_with(dir.path())));
        out.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        assert_eq!(names(dir.path()), vec!["out.jsonl"]);
        assert!(!live_temps().iter().any(|p| p.starts_with(dir.path())));
    }

    #[test]
    fn dropped_output_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        {
            let mut out = Output::create(&path).unwrap();
            out.write_all(b"partial").unwrap();
        }
        assert!(!path.exists());
        assert_eq!(names(dir.path()).len(), 0, "temp file removed");
        assert!(!live_temps().iter().any(|p| p.starts_with(dir.path())));
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let null = Path::new("/dev/null");
        write_atomic(null, b"discarded").unwrap();
        let m = std::fs::metadata(null).unwrap();
        assert!(
            m.file_type().is_char_device(),
            "/dev/null is still a device"
        );
    }

    #[test]
    fn commit_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // pid 2^31 - 2 does not exist (above Linux's pid_max)
        let dead = dir.path().join(".out.jsonl.dlogp-2147483646-abcdef.tmp");
        // pid 1 always exists
        let alive = dir.path().join(".out.jsonl.dlogp-1-abcdef.tmp");
        let other = dir.path().join(".other.jsonl.dlogp-2147483646-abcdef.tmp");
        for p in [&dead, &alive, &other] {
            std::fs::write(p, "x").unwrap();
        }
        write_atomic(&path, b"y").unwrap();
        let left = names(dir.path());
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists(), "{left:?}");
        }
        assert!(alive.exists() && other.exists(), "{left:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"y");
    }

    #[test]
    fn same_file_by_inode_not_by_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "x").unwrap();
        let spelled = dir.path().join(".").join("a.jsonl");
        let other = dir.path().join("b.jsonl");
        std::fs::write(&other, "x").unwrap();
        assert!(same_file(&a, &spelled));
        assert!(!same_file(&a, &other));
        assert!(!same_file(&a, Path::new("-")));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.jsonl");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            let hard = dir.path().join("hard.jsonl");
            std::fs::hard_link(&a, &hard).unwrap();
            assert!(same_file(&link, &a) && same_file(&hard, &a));
        }
        let e = ensure_distinct(&[&other, &spelled], &[&a]).unwrap_err();
        assert_eq!(e.output, spelled);
        assert!(e.to_string().contains("same file as the input"), "{e}");
        assert!(ensure_distinct(&[&other, &dir.path().join("new.jsonl")], &[&a]).is_ok());
        // two outputs that are one file
        assert!(ensure_distinct(&[&other, &other], &[]).is_err());
        assert!(ensure_distinct(&[Path::new("-"), Path::new("-")], &[Path::new("-")]).is_ok());
    }
}
