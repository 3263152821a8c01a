//! libdlogp, the llama.cpp sampler plugin: its header is current, and a C
//! host built against the same llama.cpp generates exactly what
//! `dlogp generate` does.

// the C host tests are Linux-only; their helpers are unused elsewhere
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

#[test]
fn plugin_header_is_current() {
    let root = root();
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        // the C API is src/plugin/ffi.rs alone (not every `pub const` of the crate)
        .with_src(root.join("src/plugin/ffi.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = root.join("include/dlogp.h");
    let committed = std::fs::read(&path).unwrap_or_default();
    if fresh != committed {
        if std::env::var_os("DLOGP_BLESS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
        } else {
            panic!(
                "include/dlogp.h is stale\nhint: DLOGP_BLESS=1 cargo test --release --test it plugin_header"
            );
        }
    }
    let text = String::from_utf8(fresh).unwrap();
    for name in [
        "struct llama_sampler *dlogp_sampler_init(",
        "dlogp_sampler_feed_prompt(",
        "dlogp_last_error(",
        "struct dlogp_params dlogp_params_default(",
        "#define DLOGP_MODE_EXTRAPOLATE 3",
        "llama-cpp-sys-2",
        "uint32_t dlogp_abi_version(",
        "int32_t dlogp_abi_check(const struct dlogp_abi *host)",
        "#define DLOGP_HOST_ABI",
        "uint32_t compose;",
    ] {
        assert!(text.contains(name), "{name} missing from the header");
    }
}

/// The llama.cpp build under a `target/release/build` dir whose `lib`
/// holds `lib` (`libllama.a` or `libllama.so`): headers and libraries.
fn llama_build(build: &Path, lib: &str) -> PathBuf {
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(build)
        .unwrap_or_else(|e| panic!("{}: {e}", build.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("llama-cpp-sys-2-"))
        })
        .map(|p| p.join("out"))
        .filter(|out| out.join("lib").join(lib).exists() && out.join("include/llama.h").exists())
        .map(|out| {
            let t = std::fs::metadata(out.join("lib").join(lib))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, out)
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .unwrap_or_else(|| {
            panic!(
                "a llama-cpp-sys-2 build with {lib} under {}",
                build.display()
            )
        })
        .1
}

/// How the C host links llama.cpp and libdlogp.
enum Link {
    /// The suite's libdlogp (its own static llama.cpp) and the host's own
    /// static llama.cpp: two copies of llama.cpp in one process.
    Standalone,
    /// The shared libdlogp (feature `shared-llama`) and the `libllama.so`
    /// it links, from this release dir: one llama.cpp, one weight copy.
    Shared(PathBuf),
}

/// The shared libdlogp that scripts/test.sh builds into
/// `<target>/shared-llama`, if it is there and no older than the sources.
fn shared_build() -> Result<PathBuf, String> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_dlogp"));
    let target = exe.parent().and_then(Path::parent).expect("target dir");
    let release = target.join("shared-llama/release");
    let so = release.join("libdlogp.so");
    let built = std::fs::metadata(&so)
        .and_then(|m| m.modified())
        .map_err(|_| format!("no shared libdlogp at {}", so.display()))?;
    if built < newest_mtime(&root().join("src")) {
        return Err(format!("{} is older than the sources", so.display()));
    }
    Ok(release)
}

/// Compile tests/c/host.c against include/dlogp.h, llama.cpp and libdlogp.
fn build_host(dir: &Path, link: &Link) -> PathBuf {
    let root = root();
    let exe = dir.join(match link {
        Link::Standalone => "host",
        Link::Shared(_) => "host-shared",
    });
    let mut cc = Command::new("cc");
    cc.arg(root.join("tests/c/host.c"))
        .arg("-I")
        .arg(root.join("include"))
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Standalone => {
            let release = PathBuf::from(env!("CARGO_BIN_EXE_dlogp"))
                .parent()
                .unwrap()
                .to_path_buf();
            let so = release.join(if cfg!(target_os = "macos") {
                "libdlogp.dylib"
            } else {
                "libdlogp.so"
            });
            // `cargo test` does not build the cdylib: scripts/test.sh runs
            // `cargo build --release` first. Refuse a library older than the sources.
            let built = std::fs::metadata(&so)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| {
                    panic!("{} is missing\nhint: cargo build --release", so.display())
                });
            let newest = newest_mtime(&root.join("src"));
            assert!(
                built >= newest,
                "{} is older than the sources\nhint: cargo build --release (scripts/test.sh does)",
                so.display()
            );
            let llama = llama_build(&release.join("build"), "libllama.a");
            let lib = llama.join("lib");
            cc.arg("-I")
                .arg(llama.join("include"))
                .arg(&so)
                .arg(format!("-Wl,-rpath,{}", release.display()))
                .arg(lib.join("libllama.a"))
                .arg(lib.join("libggml.a"))
                .arg(lib.join("libggml-cpu.a"))
                .arg(lib.join("libggml-base.a"))
                .args(["-lstdc++", "-lm", "-lpthread", "-ldl"]);
        }
        Link::Shared(release) => {
            let llama = llama_build(&release.join("build"), "libllama.so");
            let lib = llama.join("lib");
            // RPATH (not RUNPATH) so libdlogp's own libllama.so.0 is found too
            cc.arg("-I")
                .arg(llama.join("include"))
                .arg(release.join("libdlogp.so"))
                .arg(lib.join("libllama.so"))
                .arg(lib.join("libggml.so"))
                .arg(lib.join("libggml-base.so"))
                .arg(format!(
                    "-Wl,--disable-new-dtags,-rpath,{}:{}",
                    release.display(),
                    lib.display()
                ));
        }
    }
    let out = cc
        .args(["-Wall", "-Werror", "-std=c11"])
        .output()
        .expect("a C compiler (cc)");
    assert!(
        out.status.success(),
        "compiling the C host failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn newest_mtime(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH)
        };
        newest = newest.max(t);
    }
    newest
}

fn line<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no `{label}:` line in {stdout}"))
        .trim()
}

/// What one run of the C host showed.
struct HostRun {
    /// Positions where the gate fired (keyed mode).
    fired: usize,
    /// The same at top-k 1 (`dlogp generate`'s trace of the composed run).
    fired_k1: usize,
    /// Peak RSS and PSS in KiB with one dlogp sampler loaded.
    memory: (u64, u64),
}

/// Run the C host (`shared`: on the host's own model) and `dlogp generate
/// --trace` with the same settings; the host's tokens (also after clone and
/// reset) must equal generate's.
#[allow(clippy::too_many_arguments)]
fn check_host(
    host: &Path,
    shared: bool,
    dir: &Path,
    base: &Path,
    rl: &Path,
    lora: Option<&Path>,
    prompt: &str,
    n: &str,
    (mode, mode_name, seed, tau, gamma): (&str, &str, &str, &str, &str),
) -> HostRun {
    let mut args = vec![p(rl), p(base), prompt, n, seed, mode, tau, gamma];
    if let Some(l) = lora {
        args.push(p(l));
    }
    let mut cmd = Command::new(host);
    if shared {
        cmd.env("DLOGP_HOST_SHARED", "1");
    }
    let out = cmd.args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "host failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(line(&stdout, "checks"), "ok");
    let tokens = line(&stdout, "tokens").to_string();

    let trace = dir.join(format!("trace-{mode_name}-{seed}.jsonl"));
    let rows = dir.join("rows.jsonl");
    let (rl_flag, rl_path) = match lora {
        Some(l) => ("--rl-lora", l),
        None => ("--rl", rl),
    };
    let g_args = vec![
        "generate",
        "--base",
        p(base),
        rl_flag,
        p(rl_path),
        "--raw",
        "--mode",
        mode_name,
        "--tau",
        tau,
        "--gamma",
        gamma,
        "--seed",
        seed,
        "--max-tokens",
        n,
        "--ctx-size",
        "256",
        "--threads",
        "2",
        "--quiet",
        "-o",
        p(&rows),
    ];
    let mut g0 = g_args.clone();
    g0.extend(["--trace", p(&trace), prompt]);
    let g = dlogp(&g0);
    assert!(g.status.success(), "{}", stderr(&g));
    let trace = read_jsonl(&trace);
    let expected: Vec<String> = trace
        .iter()
        .map(|r| r["chosen"].as_u64().unwrap().to_string())
        .collect();
    let fired = trace.iter().filter(|r| r["gate"] == true).count();
    assert!(!expected.is_empty());
    assert_eq!(tokens, expected.join(" "), "{mode_name} seed {seed}");
    assert_eq!(line(&stdout, "clone"), tokens, "the clone diverged");
    assert_eq!(line(&stdout, "reset"), tokens, "the reset sampler diverged");
    let stats: Vec<usize> = line(&stdout, "stats")
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(stats, vec![expected.len(), fired]);

    // Composable mode at top-k 1: the distribution the plugin writes is a
    // point mass, so the host's own `dist` must draw generate's tokens.
    let trace1 = dir.join(format!("trace-{mode_name}-{seed}-k1.jsonl"));
    let mut g1 = g_args.clone();
    g1.extend(["--top-k", "1", "--trace", p(&trace1), prompt]);
    let g = dlogp(&g1);
    assert!(g.status.success(), "{}", stderr(&g));
    let trace1 = read_jsonl(&trace1);
    let greedy: Vec<String> = trace1
        .iter()
        .map(|r| r["chosen"].as_u64().unwrap().to_string())
        .collect();
    let fired_k1 = trace1.iter().filter(|r| r["gate"] == true).count();
    assert_eq!(
        line(&stdout, "compose"),
        greedy.join(" "),
        "{mode_name} seed {seed}: composed with the host's dist at top-k 1"
    );
    let memory: Vec<u64> = line(&stdout, "memory")
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    HostRun {
        fired,
        fired_k1,
        memory: (memory[0], memory[1]),
    }
}

// The host's link line (libstdc++, -ldl) is Linux's.
#[cfg(target_os = "linux")]
#[test]
fn plugin_c_host_equals_generate() {
    let dir = tempfile::tempdir().unwrap();
    let host = build_host(dir.path(), &Link::Standalone);
    let (base, rl) = (fixture("tiny-llama.gguf"), fixture("tiny-llama-b.gguf"));
    // mode numbers as in dlogp.h
    let mut fired = Vec::new();
    for case in [
        // two unrelated random models: Δlog p is large, so τ is far below 0
        ("3", "extrapolate", "7", "-6", "0.1"),
        ("2", "replace", "1", "-0.1", "0.1"),
        ("3", "extrapolate", "12", "0.5", "1.0"),
        ("4", "global", "5", "-0.3", "0.3"),
        ("0", "base", "2", "-0.3", "0.1"),
    ] {
        let run = check_host(
            &host,
            false,
            dir.path(),
            &base,
            &rl,
            None,
            "the answer is",
            "40",
            case,
        );
        fired.push((run.fired, run.fired_k1));
    }
    assert!(
        fired[0].0 > 0 && fired[0].0 < 40,
        "extrapolate fired {} times",
        fired[0].0
    );
    assert_eq!(fired[4], (0, 0));
    // the composed distribution re-sampled somewhere (not the base's argmax alone)
    assert!(
        fired.iter().take(3).any(|f| f.1 > 0),
        "no gate fired at top-k 1: {fired:?}"
    );
}

/// The realistic case: SmolLM2 as the base in the plugin, SmolLM2 + a LoRA
/// adapter as the host's model.
#[cfg(target_os = "linux")]
#[test]
fn plugin_c_host_equals_generate_smollm2_lora() {
    let dir = tempfile::tempdir().unwrap();
    let host = build_host(dir.path(), &Link::Standalone);
    let base = smollm2();
    let lora = strong_lora(dir.path());
    let fired = check_host(
        &host,
        false,
        dir.path(),
        &base,
        &base,
        Some(&lora),
        // the chat template's text, tokenized as written by both sides
        "<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n<|im_start|>assistant\n",
        "48",
        ("3", "extrapolate", "4", "-0.3", "0.1"),
    )
    .fired;
    assert!(fired > 0 && fired < 48, "the gate fired {fired} times");
}

/// One weight copy for a LoRA pair: the shared libdlogp (feature
/// `shared-llama`, linked to llama.cpp's shared libraries like the host)
/// builds its base context on the host's own model, where the standalone
/// libdlogp loads the base file again. Both give `dlogp generate`'s tokens;
/// the shared one's peak RSS is smaller by about the model's size (the
/// standalone plugin maps and reads the whole file a second time).
#[cfg(target_os = "linux")]
#[test]
fn plugin_shared_model_is_one_weight_copy() {
    let shared = match shared_build() {
        Ok(release) => release,
        Err(why) => {
            eprintln!(
                "SKIPPED: {why} (scripts/test.sh builds it: cargo build --release --lib \
                 --no-default-features --features shared-llama into <target>/shared-llama)"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let standalone = build_host(dir.path(), &Link::Standalone);
    let host = build_host(dir.path(), &Link::Shared(shared));
    let base = smollm2();
    let lora = strong_lora(dir.path());
    let run = |host: &Path, shared: bool| {
        check_host(
            host,
            shared,
            dir.path(),
            &base,
            &base,
            Some(&lora),
            "<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n<|im_start|>assistant\n",
            "48",
            ("3", "extrapolate", "4", "-0.3", "0.1"),
        )
    };
    let two = run(&standalone, false);
    let one = run(&host, true);
    assert_eq!(one.fired, two.fired);
    assert!(one.fired > 0, "the gate never fired");
    let model_kib = std::fs::metadata(&base).unwrap().len() / 1024;
    eprintln!(
        "memory (KiB): standalone peak RSS {} PSS {}; shared peak RSS {} PSS {}; model file {model_kib}",
        two.memory.0, two.memory.1, one.memory.0, one.memory.1
    );
    assert!(
        two.memory.0 >= one.memory.0 + model_kib * 8 / 10,
        "peak RSS: standalone {} KiB, shared {} KiB, model {model_kib} KiB",
        two.memory.0,
        one.memory.0
    );
}

/// libdlogp in llama-cpp-python (examples/python/dlogp_llama_cpp.py): its
/// generations equal `dlogp generate`'s on the SmolLM2 pair, keyed and
/// composed (tests/python/host_equals_generate.py). Needs the venv that
/// scripts/test-python-host.sh makes (llama-cpp-python builds llama.cpp from
/// source, minutes); without it the test says so and checks nothing.
#[cfg(target_os = "linux")]
#[test]
fn plugin_in_llama_cpp_python_equals_generate() {
    let cache = std::env::var_os("DLOGP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dlogp")));
    let Some(python) = cache
        .map(|c| c.join("python-host-venv/bin/python"))
        .filter(|p| p.exists())
    else {
        eprintln!("SKIPPED: no llama-cpp-python venv (run scripts/test-python-host.sh once)");
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import llama_cpp"])
        .output()
        .unwrap();
    if !probe.status.success() {
        eprintln!("SKIPPED: {} has no llama_cpp", python.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build_host(dir.path(), &Link::Standalone); // the same freshness check of libdlogp
    let dlogp_bin = PathBuf::from(env!("CARGO_BIN_EXE_dlogp"));
    let release = dlogp_bin.parent().unwrap();
    let root = root();
    let out = Command::new(&python)
        .arg(root.join("tests/python/host_equals_generate.py"))
        .arg(&dlogp_bin)
        .arg(smollm2())
        .arg(root.join("gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf"))
        .arg(dir.path())
        .env("DLOGP_LIB_DIR", release)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
