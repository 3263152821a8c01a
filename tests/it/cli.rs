//! llama.cpp's dialect: the same request by llama.cpp-style flags and by
//! dlogp's long flags gives byte-identical output, on every command that
//! loads models.

use std::path::Path;
use std::process::Output;

use crate::common::*;

fn ok(args: &[&str]) -> Output {
    let out = dlogp(args);
    assert!(
        out.status.success(),
        "dlogp {} failed: {}",
        args.join(" "),
        stderr(&out)
    );
    out
}

fn tiny() -> (String, String) {
    (
        p(&fixture("tiny-llama.gguf")).to_string(),
        p(&fixture("tiny-lora-random.gguf")).to_string(),
    )
}

/// `dlogp tasks arith -n N --seed 5 -o dir/arith.jsonl`.
fn arith(dir: &Path, n: &str) -> String {
    let path = dir.join("arith.jsonl");
    ok(&["tasks", "arith", "-n", n, "--seed", "5", "-o", p(&path)]);
    p(&path).to_string()
}

#[test]
fn generate_by_llama_cpp_flags_is_byte_identical() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let prompt_file = dir.path().join("prompt.txt");
    std::fs::write(&prompt_file, "the answer is\n").unwrap();
    let long = ok(&[
        "generate",
        "--base",
        &base,
        "--rl-lora",
        &lora,
        "--lora-scale",
        "0.5",
        "--max-tokens",
        "12",
        "--seed",
        "3",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--top-k",
        "20",
        "--ctx-size",
        "256",
        "--batch-size",
        "64",
        "--threads",
        "1",
        "--gpu-layers",
        "0",
        "--samples",
        "3",
        "--output",
        "-",
        "--quiet",
        "the answer is",
    ]);
    let rows = String::from_utf8(long.stdout.clone()).unwrap();
    assert_eq!(rows.lines().count(), 3, "3 samples as JSONL: {rows}");
    for llama in [
        vec![
            "generate",
            "-m",
            &base,
            "--lora-scaled",
            &lora,
            "0.5",
            "-n",
            "12",
            "-s",
            "3",
            "--temp",
            "0.8",
            "--top-p",
            "0.9",
            "--top-k",
            "20",
            "-c",
            "256",
            "-b",
            "64",
            "-t",
            "1",
            "-ngl",
            "0",
            "-fa",
            "off",
            "--samples",
            "3",
            "-q",
            "-p",
            "the answer is",
        ],
        vec![
            "generate",
            "--model",
            &base,
            "--lora",
            &lora,
            "--lora-scale",
            "0.5",
            "--n-predict",
            "12",
            "-s",
            "3",
            "--temp",
            "0.8",
            "--top-p",
            "0.9",
            "--top-k",
            "20",
            "-c",
            "256",
            "-b",
            "64",
            "-t",
            "1",
            "--n-gpu-layers",
            "0",
            "--samples",
            "3",
            "-q",
            "-f",
            p(&prompt_file),
        ],
    ] {
        let out = ok(&llama);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            rows,
            "dlogp {}",
            llama.join(" ")
        );
    }
}

#[test]
fn negative_numbers_are_values() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let score = |flags: &[&str]| -> Vec<u8> {
        let mut args = vec!["score", "-m", &base, "-i", p(&rows), "-q", "-t", "1"];
        args.extend_from_slice(flags);
        ok(&args).stdout
    };
    let reversed = score(&["--lora", &lora, "--lora-scale", "-1"]);
    assert_eq!(reversed, score(&["--lora-scaled", &lora, "-1"]));
    assert_ne!(
        reversed,
        score(&["--lora", &lora]),
        "scale -1 is not scale 1"
    );
    let first: serde_json::Value =
        serde_json::from_slice(reversed.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert!(first["dlogp"].is_number(), "{first}");

    // --seed -1: a random seed, announced so the run can be repeated
    let out = ok(&["generate", "-m", &base, "-n", "4", "-s", "-1", "the"]);
    let err = stderr(&out);
    let drawn: String = err
        .split("drew seed ")
        .nth(1)
        .unwrap_or_else(|| panic!("the drawn seed is announced: {err}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let again = ok(&["generate", "-m", &base, "-n", "4", "-s", &drawn, "the"]);
    assert_eq!(out.stdout, again.stdout, "--seed {drawn} repeats the run");
    let bad = dlogp(&["generate", "-m", &base, "--seed", "-2", "the"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(
        err.contains("--seed") && err.contains("-1 for a random seed"),
        "{err}"
    );
    let bad = dlogp(&[
        "score",
        "-m",
        &base,
        "--lora-scaled",
        &lora,
        "x",
        "-i",
        p(&rows),
    ]);
    let err = stderr(&bad);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains("invalid --lora-scaled") && err.contains("finite number"),
        "{err}"
    );
}

#[test]
fn score_by_llama_cpp_flags_is_byte_identical() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let long = ok(&[
        "score",
        "--base",
        &base,
        "--rl-lora",
        &lora,
        "--lora-scale",
        "2",
        "--ctx-size",
        "128",
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--gpu-layers",
        "0",
        "--input",
        p(&rows),
        "--quiet",
    ]);
    assert!(!long.stdout.is_empty());
    let llama = ok(&[
        "score",
        "-m",
        &base,
        "--lora-scaled",
        &lora,
        "2",
        "-c",
        "128",
        "-b",
        "16",
        "-t",
        "1",
        "-ngl",
        "0",
        "-fa",
        "off",
        "-i",
        p(&rows),
        "-q",
    ]);
    assert_eq!(llama.stdout, long.stdout);
}

#[test]
fn eval_intervene_and_analyze_by_llama_cpp_flags_are_byte_identical() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let data = arith(dir.path(), "3");
    let file = |name: &str| p(&dir.path().join(name)).to_string();
    let (a, b) = (file("long.jsonl"), file("llama.jsonl"));
    ok(&[
        "eval",
        "--base",
        &base,
        "--rl-lora",
        &lora,
        "--data",
        &data,
        "--modes",
        "base,rl",
        "-k",
        "2",
        "--max-tokens",
        "6",
        "--seed",
        "7",
        "--temperature",
        "0.9",
        "--threads",
        "1",
        "--output",
        &a,
        "-q",
    ]);
    ok(&[
        "eval", "-m", &base, "--lora", &lora, "-d", &data, "--modes", "base,rl", "-k", "2", "-n",
        "6", "-s", "7", "--temp", "0.9", "-t", "1", "-ngl", "0", "-o", &b, "-q",
    ]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "eval"
    );
    assert_eq!(read_jsonl(Path::new(&a)).len(), 3 * 2 * 2);

    let (a, b) = (file("long.csv"), file("llama.csv"));
    ok(&[
        "intervene",
        "--base",
        &base,
        "--rl-lora",
        &lora,
        "--data",
        &data,
        "--criteria",
        "dlogp",
        "--taus",
        "-0.5",
        "-k",
        "1",
        "--max-tokens",
        "6",
        "--seed",
        "2",
        "--threads",
        "1",
        "--csv",
        &a,
        "-q",
    ]);
    ok(&[
        "intervene",
        "-m",
        &base,
        "--lora",
        &lora,
        "-d",
        &data,
        "--criteria",
        "dlogp",
        "--taus",
        "-0.5",
        "-k",
        "1",
        "-n",
        "6",
        "-s",
        "2",
        "-t",
        "1",
        "--csv",
        &b,
        "-q",
    ]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "intervene"
    );

    let (a, b) = (file("long.json"), file("llama.json"));
    ok(&[
        "analyze",
        "--base",
        &base,
        "--rl-lora",
        &lora,
        "--data",
        &data,
        "--max-tokens",
        "6",
        "--seed",
        "4",
        "--threads",
        "1",
        "--json",
        &a,
        "-q",
    ]);
    ok(&[
        "analyze", "-m", &base, "--lora", &lora, "-d", &data, "-n", "6", "-s", "4", "-t", "1",
        "--json", &b, "-q",
    ]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "analyze"
    );
}

/// Every command that loads models takes llama.cpp's names for the same
/// settings (`score` decodes nothing, `train` has no RL side and `serve` no
/// seed: requests carry it).
#[test]
fn every_model_command_speaks_llama_cpp() {
    use clap::CommandFactory;
    let cli = dlogp::cli::Cli::command();
    let mut commands = vec!["score", "generate", "eval", "intervene", "analyze"];
    if cfg!(feature = "serve") {
        commands.push("serve");
    }
    if cfg!(feature = "train") {
        commands.push("train");
    }
    for name in commands {
        let cmd = cli
            .get_subcommands()
            .find(|c| c.get_name() == name)
            .unwrap_or_else(|| panic!("no {name}"));
        let has_long = |long: &str| {
            cmd.get_arguments().any(|a| {
                a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|v| v.contains(&long))
            })
        };
        let has_short = |s: char, long: &str| {
            cmd.get_arguments().any(|a| {
                a.get_short() == Some(s) && has_long(long) && {
                    a.get_long() == Some(long)
                        || a.get_all_aliases().is_some_and(|v| v.contains(&long))
                }
            })
        };
        for long in [
            "model",
            "n-gpu-layers",
            "ngl",
            "ctx-size",
            "threads",
            "batch-size",
        ] {
            assert!(has_long(long), "{name} --{long}");
        }
        for long in ["flash-attn", "fa"] {
            assert!(has_long(long), "{name} --{long}");
        }
        assert!(has_short('m', "model"), "{name} -m");
        assert!(
            has_short('c', "ctx-size") && has_short('t', "threads"),
            "{name}"
        );
        assert!(has_short('b', "batch-size"), "{name} -b");
        if name == "score" {
            // teacher-forced: nothing is predicted or sampled
            for long in ["lora", "lora-scaled", "lora-scale"] {
                assert!(has_long(long), "{name} --{long}");
            }
            continue;
        }
        assert!(has_short('n', "n-predict"), "{name} -n");
        if name != "train" {
            for long in [
                "lora",
                "lora-scaled",
                "lora-scale",
                "temp",
                "top-p",
                "top-k",
            ] {
                assert!(has_long(long), "{name} --{long}");
            }
        }
        if name != "serve" {
            assert!(has_short('s', "seed"), "{name} -s");
        }
    }
}

/// `serve --host localhost` listens (on loopback), with llama-server's `-np`.
#[cfg(feature = "serve")]
#[test]
fn serve_takes_a_host_name() {
    let (base, lora) = tiny();
    let server = crate::http::Server::start(&[
        "-m",
        &base,
        "--lora",
        &lora,
        "--host",
        "localhost",
        "-np",
        "2",
        "-ngl",
        "0",
        "-n",
        "8",
    ]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    let r = server.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "the answer is", "max_tokens": 4, "seed": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `inspect` shows every metadata key (the committed adapter's
/// `dlogp.train.*` and `dlogp.compact.*` too), long values cut and arrays
/// summarised, LoRA targets by projection unless --tensors; `--json` has
/// every value complete.
#[test]
fn inspect_shows_all_metadata() {
    let adapter = root().join("gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf");
    let text = String::from_utf8(ok(&["inspect", p(&adapter)]).stdout).unwrap();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    assert!(
        line("dlogp.train.seed").trim_end().ends_with(" 1"),
        "{}",
        line("dlogp.train.seed")
    );
    assert!(line("dlogp.compact.rank").trim_end().ends_with(" 8"));
    let settings = line("dlogp.train.settings");
    assert!(
        settings.contains("…") && settings.contains("chars)"),
        "cut: {settings}"
    );
    assert!(
        line("attn_q").contains("30 layers: 0-29"),
        "{}",
        line("attn_q")
    );
    assert!(
        !text.contains("blk.0.attn_q"),
        "targets summarised:\n{text}"
    );
    assert!(text.lines().count() < 50, "{text}");

    let listed = String::from_utf8(ok(&["inspect", "--tensors", p(&adapter)]).stdout).unwrap();
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.trim() == "blk.29.ffn_up.weight")
            .count(),
        1,
        "{listed}"
    );
    assert!(
        listed.contains("blk.29.ffn_up.weight.lora_b"),
        "every tensor listed"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&ok(&["inspect", "--json", p(&adapter)]).stdout).unwrap();
    let meta = &json["metadata"];
    assert_eq!(meta["dlogp.train.seed"], 1);
    assert_eq!(meta["dlogp.compact.type"], "F16");
    let settings: serde_json::Value =
        serde_json::from_str(meta["dlogp.train.settings"].as_str().unwrap()).expect("whole");
    assert_eq!(settings["lora"]["rank"], 16, "{settings}");
    assert_eq!(json["lora"]["targets"].as_array().unwrap().len(), 210);

    let model = smollm2();
    let text = String::from_utf8(ok(&["inspect", p(&model)]).stdout).unwrap();
    assert!(
        text.contains("[string; 49152] \"<|endoftext|>\", \"<|im_start|>\""),
        "arrays summarised"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ok(&["inspect", "--json", p(&model)]).stdout).unwrap();
    let tokens = json["metadata"]["tokenizer.ggml.tokens"]
        .as_array()
        .unwrap();
    assert_eq!(tokens.len(), 49152, "complete in --json");
    assert_eq!(tokens[1], "<|im_start|>");
}

/// Without score files or --base, analyze uses the default pair (and
/// generated arithmetic problems), shows progress and says what it wrote;
/// train uses the default base. Elsewhere both name the missing default.
#[test]
fn analyze_and_train_use_the_default_pair() {
    smollm2();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("a.json");
    let out = ok(&[
        "analyze",
        "--limit",
        "1",
        "-n",
        "8",
        "-t",
        "2",
        "--json",
        p(&json),
    ]);
    let err = stderr(&out);
    assert!(err.contains(&format!("wrote {} (JSON)", p(&json))), "{err}");
    assert!(
        err.contains("base-generated: 1 responses generated and scored"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(v.is_object());
    let mut cases = vec![vec!["analyze", "--json", "x.json"]];
    if cfg!(feature = "train") {
        cases.push(vec!["train", "--arith", "2", "-o", "x.gguf"]);
    }
    for args in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dlogp"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("no --base given, and the default model gguf/SmolLM2-135M-Instruct.Q4_1.gguf is not in"),
            "{args:?}: {err}"
        );
    }
}

/// Logs carry no colour escapes when stderr is not a terminal, with or
/// without NO_COLOR.
#[test]
fn logs_are_plain_off_a_terminal() {
    let (base, _) = tiny();
    for no_color in [None, Some("1")] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dlogp"));
        cmd.args(["generate", "-m", &base, "-n", "2", "-s", "-1", "the"])
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        assert!(err.contains("WARN") && err.contains("drew seed"), "{err}");
        assert!(!err.contains('\u{1b}'), "no escapes: {err:?}");
    }
}

/// `path`'s size and the first 16 hex digits of its SHA-256.
fn size_and_hash(path: &str) -> (u64, String) {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    let hex: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (bytes.len() as u64, hex[..16].to_string())
}

/// The eval summary, the intervene JSON, the analyze JSON and report footer
/// and the score summary name what made them.
#[test]
fn every_json_output_carries_its_provenance() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let data = arith(dir.path(), "2");
    let file = |name: &str| p(&dir.path().join(name)).to_string();
    let (base_size, base_hash) = size_and_hash(&base);
    let (lora_size, lora_hash) = size_and_hash(&lora);
    let (data_size, data_hash) = size_and_hash(&data);
    let check = |v: &serde_json::Value, command: &str, decodes: bool| {
        let pv = &v["provenance"];
        assert_eq!(pv["command"], command, "{pv}");
        assert_eq!(pv["dlogp_version"], env!("CARGO_PKG_VERSION"));
        let features = pv["features"].as_array().unwrap();
        assert_eq!(
            features.contains(&serde_json::json!("serve")),
            cfg!(feature = "serve"),
            "{pv}"
        );
        assert_eq!(pv["base"]["path"], base.as_str());
        assert_eq!(pv["base"]["bytes"], base_size);
        assert_eq!(pv["base"]["sha256"], base_hash.as_str());
        assert_eq!(pv["base"]["architecture"], "llama");
        assert_eq!(pv["adapter"]["path"], lora.as_str());
        assert_eq!(pv["adapter"]["bytes"], lora_size);
        assert_eq!(pv["adapter"]["sha256"], lora_hash.as_str());
        assert_eq!(pv["lora_scale"], 0.5);
        if decodes {
            assert_eq!(pv["data"]["path"], data.as_str());
            assert_eq!(pv["data"]["bytes"], data_size);
            assert_eq!(pv["data"]["sha256"], data_hash.as_str());
            assert_eq!(pv["seed"], 9);
            assert_eq!(pv["decode"]["criterion"], "kl");
            assert_eq!(pv["decode"]["tau"], 0.25);
            assert_eq!(pv["decode"]["sampling"]["top_k"], 5);
            assert_eq!(pv["settings"]["max_tokens"], 4);
            assert!(
                pv["template"].as_str().unwrap().contains("{question}"),
                "{pv}"
            );
        }
    };
    let decode = [
        "-m",
        base.as_str(),
        "--lora-scaled",
        lora.as_str(),
        "0.5",
        "-d",
        data.as_str(),
        "-n",
        "4",
        "-s",
        "9",
        "--criterion",
        "kl",
        "--tau",
        "0.25",
        "--top-k",
        "5",
        "-t",
        "1",
        "-q",
    ];
    let summary = file("summary.json");
    ok(&[&["eval", "-k", "1", "--summary", &summary][..], &decode].concat());
    check(&read_json(&summary), "eval", true);

    let sweep = file("sweep.json");
    ok(&[
        &[
            "intervene",
            "--taus",
            "0.5",
            "--criteria",
            "kl",
            "-k",
            "1",
            "--json",
            &sweep,
        ][..],
        &decode,
    ]
    .concat());
    check(&read_json(&sweep), "intervene", true);

    let (analysis, report) = (file("analysis.json"), file("report.md"));
    ok(&[
        &["analyze", "--json", &analysis, "--report", &report][..],
        &decode,
    ]
    .concat());
    check(&read_json(&analysis), "analyze", true);
    let md = std::fs::read_to_string(&report).unwrap();
    let footer = &md[md.find("## Provenance").expect("a provenance footer")..];
    for needle in [
        format!("base: {base} ({base_size} bytes, sha256 {base_hash}…, llama)"),
        format!("RL adapter: {lora} ({lora_size} bytes, sha256 {lora_hash}…, llama)"),
        "LoRA scale: 0.5".to_string(),
        "seed: 9".to_string(),
        "criterion kl, τ 0.25".to_string(),
    ] {
        assert!(footer.contains(&needle), "{needle} in {footer}");
    }

    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let scored = file("score.json");
    ok(&[
        "score",
        "-m",
        &base,
        "--lora-scaled",
        &lora,
        "0.5",
        "-i",
        p(&rows),
        "-o",
        &file("t.jsonl"),
        "--summary",
        &scored,
        "-q",
    ]);
    let v = read_json(&scored);
    check(&v, "score", false);
    assert_eq!(v["provenance"]["data"]["path"], p(&rows));
    assert!(
        v["n_tokens"].as_u64().unwrap() > 0,
        "the summary is still there: {v}"
    );
}

fn read_json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// This checkout's build has llama.cpp's llamafile GEMM off: no warning at
/// start-up, and the provenance says so with the system info line.
#[test]
fn the_checkout_build_is_batch_invariant_and_says_so() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let summary = dir.path().join("s.json");
    let out = ok(&[
        "score",
        "-m",
        &base,
        "--lora",
        &lora,
        "-i",
        p(&rows),
        "-o",
        "/dev/null",
        "--summary",
        p(&summary),
    ]);
    assert!(!stderr(&out).contains("llamafile GEMM"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(v["provenance"]["llamafile_gemm"], false);
    let info = v["provenance"]["llama_cpp"].as_str().unwrap();
    assert!(
        info.starts_with("CPU :") && !info.contains("LLAMAFILE = 1"),
        "{info}"
    );
}
