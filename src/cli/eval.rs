//! `dlogp eval`: a verifiable dataset under one or more decoding
//! configurations, k samples per problem, graded; Avg@k, Pass@k, replacement
//! ratio, length and speed. Also the flags and glue `dlogp intervene` and
//! `dlogp analyze` share (the bench itself is [`crate::eval::Bench`]).

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::args::{parse_seed, DecodeArgs, ModelArgs, PairArgs, Seed};
use crate::analysis::{DecodeSettings, FileInfo, Provenance};
use crate::decode::{DecodeConfig, Mode};
use crate::eval::verify::check_template;
use crate::eval::{
    markdown_table, Bench, BenchError, BenchEvent, BenchModels, BenchSpec, ContractSource,
    DatasetSpec, Extraction, Grader, Journal, NamedConfig, Preset, PromptOverrides, Prompting,
    RunStats, SampleRow, Task, TaskContract,
};
use crate::io::{ensure_distinct, is_std_stream, write_atomic, Output};

/// The dataset and how problems become prompts and answers are graded.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The problems (JSONL; `-` for stdin).
    #[arg(long, short = 'd', value_name = "JSONL")]
    pub data: PathBuf,
    /// Field layout: gsm8k (question/answer after ####), math (problem/answer),
    /// arith (question/answer, as `dlogp tasks arith` writes). Default: arith.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// The field holding the question (overrides the preset).
    #[arg(long)]
    pub question_field: Option<String>,
    /// The field holding the reference answer (overrides the preset).
    #[arg(long)]
    pub answer_field: Option<String>,
    /// Use only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompt template; `{question}` is replaced by the problem. Default: the
    /// RL adapter's task contract (`dlogp.task.template`, recorded by
    /// `dlogp train`), else METHOD.md §5's `\boxed{}` prompt.
    #[arg(long)]
    pub template: Option<String>,
    /// How answers are pulled from responses, tried in order. Default: the
    /// contract's (`dlogp.task.extraction`), else boxed,gsm8k.
    #[arg(long, value_delimiter = ',')]
    pub extract: Option<Vec<Extraction>>,
    /// When no extraction method finds an answer, grade the response's last number.
    #[arg(long)]
    pub last_number: bool,
    /// Use prompts as written instead of rendering the chat template
    /// (default: as the contract says, else the chat template).
    #[arg(long, conflicts_with = "chat")]
    pub raw: bool,
    /// Render the chat template even when the contract says its prompts were raw.
    #[arg(long)]
    pub chat: bool,
    /// Ignore the RL side's task contract: METHOD.md §5's prompt and grading
    /// unless other flags say otherwise.
    #[arg(long)]
    pub no_contract: bool,
    /// Problems made in memory instead of read from --data (analyze's
    /// default), which then only names them.
    #[arg(skip)]
    pub tasks: Option<Vec<Task>>,
    /// The prompt and grading settings, resolved by [`DataArgs::resolve_contract`].
    #[arg(skip)]
    pub prompting: Option<Prompting>,
}

impl DataArgs {
    /// What the flags set explicitly.
    pub fn overrides(&self) -> PromptOverrides {
        PromptOverrides {
            template: self.template.clone(),
            chat_template: match (self.raw, self.chat) {
                (true, _) => Some(false),
                (false, true) => Some(true),
                (false, false) => None,
            },
            extraction: self.extract.clone(),
            last_number: self.last_number,
        }
    }

    /// Decide the prompt template, chat-template use and grading: the flags,
    /// then the task contract of the RL side (`dlogp.task.*` in the adapter
    /// or RL model, unless --no-contract), then METHOD.md §5; say which on
    /// stderr. A contract that cannot be read is an error naming its key.
    pub fn resolve_contract(&mut self, pair: &PairArgs) -> anyhow::Result<()> {
        let rl = pair.rl_lora.as_ref().or(pair.rl.as_ref());
        let found = match rl {
            Some(path) if !self.no_contract => TaskContract::read(path)?.map(|c| (path.clone(), c)),
            _ => None,
        };
        let prompting = Prompting::resolve(found, &self.overrides());
        if let Some(t) = &self.template {
            check_template(t)?;
        }
        if prompting.contract.extraction.is_empty() {
            anyhow::bail!(
                "invalid --extract: give at least one method (boxed, gsm8k, last-number)"
            );
        }
        tracing::info!("{}", prompting.describe());
        self.prompting = Some(prompting);
        Ok(())
    }

    /// The resolved settings; [`DataArgs::resolve_contract`] must have run.
    pub fn prompting(&self) -> &Prompting {
        self.prompting
            .as_ref()
            .expect("DataArgs::resolve_contract decides the prompts")
    }

    /// The prompt template in use.
    pub fn template(&self) -> &str {
        &self.prompting().contract.template
    }

    /// Whether prompts are used as written (no chat template).
    pub fn raw(&self) -> bool {
        !self.prompting().contract.chat_template
    }

    pub fn load(&self) -> anyhow::Result<Vec<Task>> {
        check_template(self.template())?;
        if self.limit == Some(0) {
            anyhow::bail!("invalid --limit: must be at least 1");
        }
        if let Some(tasks) = &self.tasks {
            let mut tasks = tasks.clone();
            tasks.truncate(self.limit.unwrap_or(usize::MAX));
            return Ok(tasks);
        }
        let mut spec: DatasetSpec = self.preset.unwrap_or(Preset::Arith).into();
        if let Some(q) = &self.question_field {
            spec.question_field = q.clone();
        }
        if let Some(a) = &self.answer_field {
            spec.answer_field = a.clone();
        }
        let name = self.source_name();
        let mut tasks = if is_std_stream(&self.data) {
            crate::eval::load(std::io::stdin().lock(), &name, &spec)?
        } else {
            let file = File::open(&self.data)
                .with_context(|| format!("{name}: could not open the dataset"))?;
            crate::eval::load(BufReader::new(file), &name, &spec)?
        };
        if let Some(n) = self.limit {
            if n == 0 {
                anyhow::bail!("invalid --limit: must be at least 1");
            }
            tasks.truncate(n);
        }
        Ok(tasks)
    }

    /// The dataset's name in messages: its path, or `<stdin>` for `-`.
    pub fn source_name(&self) -> String {
        if is_std_stream(&self.data) {
            "<stdin>".to_string()
        } else {
            self.data.display().to_string()
        }
    }

    pub fn grader(&self) -> Grader {
        self.prompting().contract.grader()
    }
}

/// Decoding settings shared by every configuration (each may override the
/// gate, γ, proposer and sampling in its name).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Defaults of every configuration (names in --modes override them).
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Tokens per response at most (`-n/--n-predict` as in llama.cpp).
    #[arg(
        long,
        short = 'n',
        visible_alias = "n-predict",
        default_value_t = 512,
        allow_negative_numbers = true
    )]
    pub max_tokens: usize,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Seed of every random draw (-1: a random seed, announced on stderr).
    #[arg(long, short = 's', value_parser = parse_seed, default_value = "0", allow_negative_numbers = true)]
    pub seed: Seed,
    /// Draft length K for speculative gating (1: lockstep, both models every
    /// token; the tokens are the same either way). 1 is the fastest measured
    /// with the default pair on 2 cores for 1, 4 and 8 prompts
    /// (scripts/bench-settings.sh); K 4 pays when the gate fires on only a
    /// few per cent of tokens, or where a batch costs far less than its
    /// tokens decoded one by one (GPUs).
    #[arg(long, default_value_t = 1)]
    pub draft: usize,
    /// Sequences decoded side by side.
    #[arg(long, default_value_t = 8)]
    pub sequences: u32,
}

impl SamplingArgs {
    /// The configuration a bare mode name resolves against.
    pub fn defaults(&self, mode: Mode) -> anyhow::Result<DecodeConfig> {
        if !(1..=256).contains(&self.sequences) {
            anyhow::bail!(
                "invalid --sequences {}: must be between 1 and 256 (llama.cpp's limit)",
                self.sequences
            );
        }
        if self.max_tokens == 0 {
            anyhow::bail!("invalid --max-tokens: must be at least 1");
        }
        if self.draft == 0 {
            anyhow::bail!("invalid --draft 0: must be at least 1 (1 decodes in lockstep)");
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            anyhow::bail!(
                "invalid --stop \"\" (stop string {}): an empty stop string would end every response at once",
                i + 1
            );
        }
        self.decode.resolve(mode, self.seed.value)
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Decoding configurations, comma-separated: a mode (base, rl, replace,
    /// extrapolate, global) with optional overrides, e.g.
    /// `base,rl,extrapolate,extrapolate:gamma=0.2:tau=-0.5,replace:criterion=kl:tau=0.1`.
    /// Default: base,rl,extrapolate with an RL model, base without.
    #[arg(long)]
    pub modes: Option<String>,
    /// Samples per problem (Avg@k and Pass@k use all k).
    #[arg(long, short = 'k', default_value_t = 4)]
    pub k: usize,
    /// The summary as JSON {"k", "n_problems", "seed", "configs": [...]}; `-` for stdout.
    #[arg(long, value_name = "JSON")]
    pub summary: Option<PathBuf>,
    #[command(flatten)]
    pub rows: RowsArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The per-sample rows, resuming and quiet: flags every bench command
/// (`eval`, `tune`, `intervene`) has.
#[derive(Debug, Clone, Args)]
pub struct RowsArgs {
    /// Per-sample JSONL rows {"id", "sample", "config", "response", "extracted",
    /// "correct", "replacement_ratio", "n_tokens", "finish"}. Progress goes to
    /// OUTPUT.partial, from which an interrupted run resumes (`-`: stdout, no
    /// journal; the table then goes to stderr).
    #[arg(long, short = 'o', value_name = "JSONL")]
    pub output: Option<PathBuf>,
    /// Discard OUTPUT.partial from an earlier run instead of resuming it.
    #[arg(long)]
    pub restart: bool,
    /// No progress bar or table.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The bench `eval`, `intervene` and `analyze` run on, from their flags:
/// flags are checked and the dataset read before any model loads.
pub fn load_bench(
    pair_args: &PairArgs,
    data: &DataArgs,
    sampling: &SamplingArgs,
    model_args: &ModelArgs,
    k: usize,
) -> anyhow::Result<Bench> {
    if k == 0 {
        return Err(BenchError::NoSamples.into());
    }
    let defaults = sampling.defaults(Mode::Base)?;
    let tasks = data.load()?;
    let threads = model_args.threads()?;
    let models = match pair_args.spec() {
        Some(spec) => BenchModels::Pair(spec),
        None => BenchModels::Base(pair_args.base().to_path_buf()),
    };
    let n_seq = sampling.sequences;
    let (rl, lora_scale) = match (&pair_args.rl, &pair_args.rl_lora) {
        (Some(p), _) => (Some(p.display().to_string()), None),
        (None, Some(p)) => (Some(p.display().to_string()), Some(pair_args.lora_scale)),
        _ => (None, None),
    };
    let d = &defaults;
    let settings = json!({
        "base": pair_args.base().display().to_string(),
        "rl": rl,
        "lora_scale": lora_scale,
        "data": data.data.display().to_string(),
        "problems": tasks.iter().map(|t| &t.id).collect::<Vec<_>>(),
        "template": data.template(),
        "raw": data.raw(),
        "extraction": data.grader().methods,
        "k": k,
        "seed": sampling.seed.value,
        "criterion": d.gate().criterion(),
        "tau": d.gate().tau(),
        "gamma": d.gamma(),
        "proposer": d.proposer(),
        "sampling": d.sampling(),
        "max_tokens": sampling.max_tokens,
        "stop": sampling.stop,
    });
    Ok(Bench::load(BenchSpec {
        models,
        load: model_args.load_options(),
        tasks,
        source_name: data.source_name(),
        template: data.template().to_string(),
        raw: data.raw(),
        grader: data.grader(),
        k,
        ctx_size: model_args.ctx_size,
        max_tokens: sampling.max_tokens,
        stop: sampling.stop.clone(),
        draft: sampling.draft,
        n_seq,
        threads,
        defaults,
        settings,
    })?)
}

/// The provenance of a bench's outputs: the pair, the dataset, template,
/// seed and decoding defaults, and `extra` settings of the command. How the
/// work is scheduled (--sequences, --draft, --threads) is left out: it never
/// changes a result (ARCHITECTURE.md, "Batching never changes results").
pub fn bench_provenance(
    command: &str,
    pair: &PairArgs,
    data: &DataArgs,
    sampling: &SamplingArgs,
    extra: serde_json::Value,
) -> anyhow::Result<Provenance> {
    let mut prov = pair.provenance(command)?;
    prov.data = Some(if data.tasks.is_some() {
        FileInfo::named(data.source_name())
    } else {
        FileInfo::read(&data.data)
            .map_err(|e| anyhow::anyhow!("{}: could not read: {e}", data.data.display()))?
    });
    prov.template = Some(data.template().to_string());
    prov.seed = Some(sampling.seed.value);
    let mut decode = DecodeSettings::from(&sampling.defaults(Mode::Base)?);
    decode.mode = None;
    prov.decode = Some(decode);
    let mut settings = json!({
        "max_tokens": sampling.max_tokens,
        "stop": sampling.stop,
        "raw": data.raw(),
        "extraction": data.grader().methods,
        "contract": match &data.prompting().source {
            ContractSource::File(p) => Some(p.display().to_string()),
            ContractSource::MethodDefault => None,
        },
        "limit": data.limit,
        "preset": data.preset,
    });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    prov.settings = settings;
    Ok(prov)
}

/// `value` (a JSON object) with a `"provenance"` key added.
pub fn with_provenance(
    value: &impl serde::Serialize,
    prov: &Provenance,
) -> anyhow::Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    out.insert("provenance".to_string(), serde_json::to_value(prov)?);
    match serde_json::to_value(value)? {
        serde_json::Value::Object(m) => out.extend(m),
        other => {
            out.insert("result".to_string(), other);
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// Shows a bench's progress on stderr: a bar per run, a line when resuming
/// or calibrating; nothing when `quiet`.
pub fn progress(quiet: bool) -> impl FnMut(BenchEvent<'_>) {
    let mut bar = ProgressBar::hidden();
    move |event: BenchEvent<'_>| match event {
        BenchEvent::Start { total, resumed } => {
            if resumed > 0 && !quiet {
                eprintln!("resuming: {resumed} samples already done, {total} to go");
            }
            bar = progress_bar(total, quiet);
        }
        BenchEvent::Config(name) => bar.set_message(name.to_string()),
        BenchEvent::Sample => bar.inc(1),
        BenchEvent::Finish => bar.finish_and_clear(),
        BenchEvent::Calibrating { samples, problems } => {
            if !quiet {
                eprintln!("calibrating τ on {samples} base samples of {problems} problems");
            }
        }
    }
}

/// Writes rows as JSONL atomically.
fn write_rows(path: &Path, rows: &[&SampleRow]) -> anyhow::Result<()> {
    let mut out =
        Output::create(path).with_context(|| format!("{}: could not create", path.display()))?;
    for r in rows {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    }
    out.commit()
        .with_context(|| format!("{}: could not write", path.display()))
}

fn progress_bar(total: usize, quiet: bool) -> ProgressBar {
    if quiet || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:.bold} [{bar:30}] {pos}/{len} samples ({elapsed}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The journal beside `--output`: `None` without one, and for stdout (`-`:
/// rows go to stdout at the end, and an interrupted run starts afresh).
fn journal_for(output: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    Ok(output.filter(|o| !is_std_stream(o)).map(Journal::path_for))
}

/// Print a result table: on stdout, or on stderr when an output already
/// goes to stdout (and then not at all with `quiet`).
fn print_table(table: &str, stdout_taken: bool, quiet: bool) {
    if !stdout_taken {
        print!("{table}");
    } else if !quiet {
        eprint!("{table}");
    }
}

/// Remove the journal once every output is written.
fn discard_journal(journal: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = journal {
        Journal::discard(path)
            .with_context(|| format!("{}: could not remove the journal", path.display()))?;
    }
    Ok(())
}

/// Check before any work (and before a journal exists) that each output can
/// be created: its directory exists, and it is none of `inputs` nor another
/// output.
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path]) -> anyhow::Result<()> {
    ensure_distinct(outputs, inputs)?;
    for out in outputs {
        if is_std_stream(out) {
            continue;
        }
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "{}: the directory {} does not exist\nhint: create it first (mkdir -p {})",
                out.display(),
                dir.display(),
                dir.display()
            );
        }
        if out.is_dir() {
            anyhow::bail!("{}: is a directory, not a file", out.display());
        }
    }
    Ok(())
}

/// What `eval`, `tune` and `intervene` write besides the per-sample rows:
/// each file with its flag, for the checks and the one-stdout rule.
pub type OutputFlags<'a> = [(&'static str, Option<&'a Path>)];

/// The set-up and wrap-up the bench commands (`eval`, `tune`, `intervene`)
/// share. `open` checks every output against the inputs (and that at most
/// one goes to stdout) before anything loads, then loads the bench and
/// records its provenance; `run` decodes, resuming the journal beside
/// `--output`; `finish` writes the rows, removes the journal and prints the
/// result table.
pub struct BenchCommand {
    pub bench: Bench,
    pub prov: Provenance,
    output: Option<PathBuf>,
    journal: Option<PathBuf>,
    stdout_taken: bool,
    restart: bool,
    quiet: bool,
}

/// The flags every bench command has, as `BenchCommand::open` reads them.
pub struct BenchFlags<'a> {
    pub command: &'static str,
    pub pair: &'a PairArgs,
    pub data: &'a DataArgs,
    pub sampling: &'a SamplingArgs,
    pub model: &'a ModelArgs,
    pub k: usize,
    pub rows: &'a RowsArgs,
}

impl BenchCommand {
    /// `files`: the command's other outputs by flag; `settings`: its own
    /// settings for the provenance.
    pub fn open(
        flags: BenchFlags<'_>,
        files: &OutputFlags<'_>,
        settings: serde_json::Value,
    ) -> anyhow::Result<BenchCommand> {
        let output = flags.rows.output.as_deref();
        let journal = journal_for(output)?;
        let outputs: Vec<&Path> = std::iter::once(output)
            .chain(files.iter().map(|&(_, p)| p))
            .chain(std::iter::once(journal.as_deref()))
            .flatten()
            .collect();
        check_outputs(&outputs, &flags.pair.inputs_and(&[&flags.data.data]))?;
        let mut named = vec![("--output", output)];
        named.extend_from_slice(files);
        let stdout_taken = super::stdio::one_stdout(&named)?;
        let bench = load_bench(flags.pair, flags.data, flags.sampling, flags.model, flags.k)?;
        let prov = bench_provenance(
            flags.command,
            flags.pair,
            flags.data,
            flags.sampling,
            settings,
        )?;
        Ok(BenchCommand {
            bench,
            prov,
            output: output.map(Path::to_path_buf),
            journal,
            stdout_taken,
            restart: flags.rows.restart,
            quiet: flags.rows.quiet,
        })
    }

    /// Decode every configuration (resuming the journal), with progress.
    pub fn run(&self, configs: &[NamedConfig]) -> anyhow::Result<(Vec<SampleRow>, Vec<RunStats>)> {
        Ok(self.bench.run(
            configs,
            self.journal.as_deref(),
            self.restart,
            progress(self.quiet),
        )?)
    }

    /// Writes `value` with the provenance as pretty JSON to `path`, if given.
    pub fn write_json(
        &self,
        path: Option<&Path>,
        value: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        if let Some(path) = path {
            let text = serde_json::to_string_pretty(&with_provenance(value, &self.prov)?)? + "\n";
            write_atomic(path, text.as_bytes())
                .with_context(|| format!("{}: could not write", path.display()))?;
        }
        Ok(())
    }

    /// Once every other output is written: the rows to `--output`, the
    /// journal removed, `table` printed (on stderr when stdout is taken).
    pub fn finish(
        self,
        configs: &[NamedConfig],
        rows: &[SampleRow],
        table: &str,
    ) -> anyhow::Result<()> {
        if let Some(path) = &self.output {
            write_rows(path, &self.bench.ordered(configs, rows))?;
        }
        discard_journal(self.journal.as_deref())?;
        print_table(table, self.stdout_taken, self.quiet);
        Ok(())
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let cmd = BenchCommand::open(
        BenchFlags {
            command: "eval",
            pair: &args.pair,
            data: &args.data,
            sampling: &args.sampling,
            model: &args.model,
            k: args.k,
            rows: &args.rows,
        },
        &[("--summary", args.summary.as_deref())],
        json!({"k": args.k, "modes": args.modes}),
    )?;
    let list = args.modes.clone().unwrap_or_else(|| {
        if cmd.bench.pair.is_some() {
            "base,rl,extrapolate".to_string()
        } else {
            "base".to_string()
        }
    });
    let configs = cmd.bench.configs(&list)?;
    let (rows, stats) = cmd.run(&configs)?;
    let summary = cmd.bench.summary(&configs, &rows, &stats)?;
    cmd.write_json(args.summary.as_deref(), &summary)?;
    cmd.finish(&configs, &rows, &markdown_table(&summary))?;
    if !args.rows.quiet {
        eprintln!(
            "{} problems × {} samples × {} configurations",
            summary.n_problems,
            summary.k,
            summary.configs.len()
        );
    }
    Ok(())
}
