//! `dlogp analyze`: the distribution analysis of METHOD.md §1 (histograms on
//! a log density axis, sparsity, top tokens in context, Δlog p by token
//! probability) from `dlogp score` outputs, or end to end from a pair and a
//! dataset (generate with each model, score both sets, analyze).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{ModelArgs, PairArgs};
use super::eval::{bench_provenance, load_bench, DataArgs, SamplingArgs};
use crate::analysis::plot;
use crate::analysis::report::{analyze, AnalysisOptions, TokenSet};
use crate::analysis::{read_scores, Metric};
use crate::analysis::{FileInfo, NoiseFloor, Provenance};
use crate::decode::Mode;
use crate::eval::Preset;
use crate::io::{is_std_stream, write_atomic};
use crate::runtime::{noise_floor_dlogp, NoiseProbe, Overlap, ScoreOptions, ScoreSequence, Token};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlotFormat {
    Svg,
    Png,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// `dlogp score` output on responses the base model generated (`-` for stdin).
    #[arg(long, value_name = "JSONL")]
    pub base_generated: Option<PathBuf>,
    /// `dlogp score` output on responses the RL model generated (`-` for stdin).
    #[arg(long, value_name = "JSONL")]
    pub rl_generated: Option<PathBuf>,
    /// Instead of score files, a pair: analyze generates with each model,
    /// scores both sets and analyzes them (without score files or --base:
    /// the default pair).
    #[command(flatten)]
    pub pair: PairArgs,
    /// Problems to generate from (JSONL, `-` for stdin; default: --limit
    /// seeded arithmetic problems, as `dlogp tasks arith --seed 0`).
    #[arg(long, short = 'd', value_name = "JSONL")]
    pub data: Option<PathBuf>,
    /// Field layout of --data (as in `dlogp eval`).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Use only the first N problems.
    #[arg(long, default_value_t = 16)]
    pub limit: usize,
    /// Responses per problem and model.
    #[arg(long, short = 'k', default_value_t = 1)]
    pub k: usize,
    /// The report: .html (self-contained, inline SVG) or .md (plots written
    /// beside it in REPORT_plots/); `-`: HTML on stdout.
    #[arg(long, short = 'r', value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// All numbers as JSON (`-` for stdout).
    #[arg(long, value_name = "JSON")]
    pub json: Option<PathBuf>,
    /// Also write each histogram to this directory.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Image format for --plots and Markdown reports.
    #[arg(long, value_enum, default_value_t = PlotFormat::Svg)]
    pub plot_format: PlotFormat,
    /// Histogram bins.
    #[arg(long, default_value_t = 60)]
    pub bins: usize,
    /// Tokens in each top list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Tokens of context on each side in the top lists.
    #[arg(long, default_value_t = 8)]
    pub context: usize,
    /// Measure the pair's noise floor (generating from a pair): score both
    /// sets again with the base against the base plus a LoRA whose B is
    /// ~1e-7 (a practically zero update), and shade the |Δlog p| it leaves
    /// (p99 and max) on the Δlog p histogram.
    #[arg(long)]
    pub noise_floor: bool,
    /// |Δlog p| above this counts as large in the probability breakdown.
    #[arg(long, default_value_t = 1.0)]
    pub large: f64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// No progress or summary on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn read_set(path: &Path, name: &str) -> anyhow::Result<TokenSet> {
    if is_std_stream(path) {
        return Ok(TokenSet {
            name: name.to_string(),
            tokens: read_scores(std::io::stdin().lock(), "<stdin>")?,
        });
    }
    let source = path.display().to_string();
    let file =
        File::open(path).with_context(|| format!("{source}: could not open the score file"))?;
    Ok(TokenSet {
        name: name.to_string(),
        tokens: read_scores(BufReader::new(file), &source)?,
    })
}

/// Generate with the base and with the RL model, score both sets on the
/// pair, and (with --noise-floor) measure the floor on the same responses.
fn generate_and_score(
    args: &AnalyzeArgs,
    pair_args: &PairArgs,
) -> anyhow::Result<(Vec<TokenSet>, Provenance, Option<NoiseFloor>)> {
    if pair_args.spec().is_none() {
        anyhow::bail!("analysis needs an RL model\nhint: pass --rl FILE or --lora FILE");
    }
    let data_args = DataArgs {
        data: args
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(GENERATED)),
        preset: args.preset,
        question_field: None,
        answer_field: None,
        limit: Some(args.limit),
        template: None,
        extract: None,
        last_number: false,
        raw: false,
        chat: false,
        no_contract: false,
        tasks: args
            .data
            .is_none()
            .then(|| crate::eval::tasks::arith(args.limit, 0, None)),
        prompting: None,
    };
    let mut data_args = data_args;
    data_args.resolve_contract(pair_args)?;
    let bench = load_bench(pair_args, &data_args, &args.sampling, &args.model, args.k)?;
    let prov = bench_provenance(
        "analyze",
        pair_args,
        &data_args,
        &args.sampling,
        serde_json::json!({"k": args.k}),
    )?;
    let mut sets = Vec::new();
    for (mode, name) in [(Mode::Base, "base-generated"), (Mode::Rl, "RL-generated")] {
        let n = bench.tasks.len() * bench.k;
        let bar = progress_bar(name, n, args.quiet);
        let tokens = bench.score_records_with(args.sampling.defaults(mode)?, |_| bar.inc(1))?;
        bar.finish_and_clear();
        if !args.quiet {
            eprintln!(
                "{name}: {n} responses generated and scored, {} tokens",
                tokens.len()
            );
        }
        sets.push(TokenSet {
            name: name.to_string(),
            tokens,
        });
    }
    let floor = if args.noise_floor {
        Some(measure_noise_floor(&bench, pair_args, &args.model, &sets)?)
    } else {
        None
    };
    Ok((sets, prov, floor))
}

/// The noise floor on the responses of `sets` (ids `PROBLEM#SAMPLE`, as
/// `Bench::score_records` writes them).
fn measure_noise_floor(
    bench: &crate::eval::Bench,
    pair_args: &PairArgs,
    model: &super::args::ModelArgs,
    sets: &[TokenSet],
) -> anyhow::Result<NoiseFloor> {
    let problem: HashMap<&str, usize> = bench
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut rows: Vec<ScoreSequence> = Vec::new();
    for set in sets {
        let mut last: Option<String> = None;
        for r in &set.tokens {
            let id = r.id_text().into_owned();
            if last.as_deref() != Some(id.as_str()) {
                let p = id
                    .rsplit_once('#')
                    .and_then(|(task, _)| problem.get(task))
                    .with_context(|| format!("response `{id}` names no problem"))?;
                rows.push(ScoreSequence {
                    label: format!("{} {id}", set.name),
                    prompt: bench.prompts[*p].clone(),
                    response: Vec::new(),
                });
                last = Some(id);
            }
            let t = r.token.context("a generated token without its id")?;
            rows.last_mut().expect("pushed").response.push(Token(t));
        }
    }
    let probe = NoiseProbe::default();
    let options = ScoreOptions {
        n_ctx: bench.options.n_ctx,
        n_batch: model.batch_size,
        n_seq: 8,
        threads: bench.options.threads,
        overlap: Overlap::Concurrent,
        flash_attention: false,
    };
    let dlogp = noise_floor_dlogp(
        pair_args.base(),
        &model.load_options(),
        &rows,
        options,
        &probe,
    )?;
    NoiseFloor::from_dlogp(probe.describe(), &dlogp)
        .context("no tokens to measure the noise floor on")
}

/// The file name (without extension) of the multi-panel figure.
const FIGURE: &str = "figure";

/// What `--data` stands for when analyze generates its own problems.
const GENERATED: &str = "arith (generated: dlogp tasks arith --seed 0)";

fn progress_bar(name: &str, total: usize, quiet: bool) -> ProgressBar {
    if quiet || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:.bold} [{bar:30}] {pos}/{len} responses ({elapsed}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    let report_kind = match &args.report {
        Some(p) if is_std_stream(p) => Some(true),
        Some(p) => match p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("html" | "htm") => Some(true),
            Some("md" | "markdown") => Some(false),
            _ => anyhow::bail!("{}: unknown report format (use .html or .md)", p.display()),
        },
        None => None,
    };
    if args.report.is_none() && args.json.is_none() && args.plots.is_none() {
        anyhow::bail!("nothing to write\nhint: pass --report report.html, --json analysis.json or --plots DIR");
    }
    super::stdio::one_stdout(&[
        ("--report", args.report.as_deref()),
        ("--json", args.json.as_deref()),
    ])?;
    super::stdio::one_stdin(&[
        ("--base-generated", args.base_generated.as_deref()),
        ("--rl-generated", args.rl_generated.as_deref()),
        ("--data", args.data.as_deref()),
    ])?;
    if args.plots.as_deref().is_some_and(is_std_stream) {
        anyhow::bail!("--plots needs a directory, not `-`\nhint: --report - writes the HTML report, plots inline, to stdout");
    }
    if args.bins == 0 {
        anyhow::bail!("invalid --bins: must be at least 1");
    }
    let models_given = args.pair.base.is_some()
        || args.pair.rl.is_some()
        || args.pair.rl_lora.is_some()
        || args.pair.lora_scaled.is_some()
        || args.data.is_some();
    let files_given = args.base_generated.is_some() || args.rl_generated.is_some();
    if args.noise_floor && files_given {
        anyhow::bail!("--noise-floor needs a pair to measure, not score files\nhint: measure it with `dlogp score --noise-floor` on the same rows, or analyze from --base/--data");
    }
    let sets = match (&args.base_generated, &args.rl_generated) {
        _ if models_given && files_given => {
            anyhow::bail!("give score files (--base-generated/--rl-generated) or models (--base ... --data), not both")
        }
        (None, None) => {
            let pair = args.pair.clone().resolve()?;
            generate_and_score(&args, &pair)?
        }
        (b, r) => {
            let mut prov = Provenance::new("analyze");
            let info = |p: &Option<PathBuf>| -> anyhow::Result<Option<FileInfo>> {
                p.as_deref()
                    .map(|p| {
                        FileInfo::read(p)
                            .map_err(|e| anyhow::anyhow!("{}: could not read: {e}", p.display()))
                    })
                    .transpose()
            };
            prov.settings = serde_json::json!({
                "base_generated": info(b)?,
                "rl_generated": info(r)?,
            });
            let mut sets = Vec::new();
            if let Some(p) = b {
                sets.push(read_set(p, "base-generated")?);
            }
            if let Some(p) = r {
                sets.push(read_set(p, "RL-generated")?);
            }
            (sets, prov, None)
        }
    };
    let (sets, mut prov, floor) = sets;
    let gate = *args.sampling.defaults(Mode::Extrapolate)?.gate();
    let tau_metric = Metric::of_criterion(gate.criterion());
    let options = AnalysisOptions {
        bins: args.bins,
        top: args.top,
        context: args.context,
        large_threshold: args.large,
        tau: tau_metric.map(|m| (m, gate.tau())),
        ..AnalysisOptions::default()
    };
    let mut analysis = analyze(&sets, &options);
    analysis.noise_floor = floor;
    if let Some(s) = prov.settings.as_object_mut() {
        s.extend([
            ("bins".to_string(), args.bins.into()),
            ("top".to_string(), args.top.into()),
            ("context".to_string(), args.context.into()),
            ("large".to_string(), args.large.into()),
        ]);
    } else {
        prov.settings = serde_json::json!({
            "bins": args.bins, "top": args.top, "context": args.context, "large": args.large,
        });
    }
    analysis.provenance = Some(prov);
    let ext = match args.plot_format {
        PlotFormat::Svg => "svg",
        PlotFormat::Png => "png",
    };
    // what was written, said at the end
    let mut wrote: Vec<String> = Vec::new();
    if let Some(dir) = &args.plots {
        if !plot::ENABLED {
            return Err(plot::PlotError::Disabled.into());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: could not create", dir.display()))?;
        analysis
            .figure()
            .save(&dir.join(format!("{FIGURE}.{ext}")))?;
        let mut n = 1;
        for m in Metric::ALL {
            if let Some(p) = analysis.histogram_plot(m) {
                p.save(&dir.join(format!("{m}.{ext}")))?;
                n += 1;
            }
        }
        wrote.push(format!("{} ({n} plots)", dir.display()));
    }
    if let (Some(path), Some(html)) = (&args.report, report_kind) {
        let text = if html {
            let mut svgs = HashMap::new();
            for m in Metric::ALL.into_iter().filter(|_| plot::ENABLED) {
                if let Some(p) = analysis.histogram_plot(m) {
                    svgs.insert(m, p.to_svg()?);
                }
            }
            let figure = if plot::ENABLED {
                Some(analysis.figure().to_svg()?)
            } else {
                None
            };
            analysis.to_html(figure, &svgs)
        } else {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("report");
            let dir_name = format!("{stem}_plots");
            let dir = path.with_file_name(&dir_name);
            if plot::ENABLED {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("{}: could not create", dir.display()))?;
            }
            let mut links = HashMap::new();
            let mut figure = None;
            if plot::ENABLED {
                analysis
                    .figure()
                    .save(&dir.join(format!("{FIGURE}.{ext}")))?;
                figure = Some(format!("{dir_name}/{FIGURE}.{ext}"));
            }
            for m in Metric::ALL.into_iter().filter(|_| plot::ENABLED) {
                if let Some(p) = analysis.histogram_plot(m) {
                    p.save(&dir.join(format!("{m}.{ext}")))?;
                    links.insert(m, format!("{dir_name}/{m}.{ext}"));
                }
            }
            wrote.push(format!(
                "{} ({} plots)",
                dir.display(),
                links.len() + usize::from(figure.is_some())
            ));
            analysis.to_markdown(figure.as_deref(), &links)
        };
        write_atomic(path, text.as_bytes())
            .with_context(|| format!("{}: could not write", path.display()))?;
        if !is_std_stream(path) {
            wrote.insert(0, format!("{} (report)", path.display()));
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&analysis)? + "\n";
        write_atomic(path, text.as_bytes())
            .with_context(|| format!("{}: could not write", path.display()))?;
        if !is_std_stream(path) {
            wrote.push(format!("{} (JSON)", path.display()));
        }
    }
    if !args.quiet {
        let d = &analysis.metrics[0];
        for sp in &d.sparsity {
            let above = |t: f64| {
                sp.share_above
                    .iter()
                    .find(|x| x.0 == t)
                    .map_or(0.0, |x| x.1)
            };
            eprintln!(
                "{}: {} tokens, Δlog p in [{:.2}, {:.2}], |Δlog p| > 0.1: {:.2}%, > 1: {:.2}%",
                sp.set,
                sp.n_tokens,
                sp.min,
                sp.max,
                100.0 * above(0.1),
                100.0 * above(1.0)
            );
        }
        if let Some(n) = &analysis.noise_floor {
            eprintln!("{}", n.line());
        }
        for w in &wrote {
            eprintln!("wrote {w}");
        }
    }
    Ok(())
}
