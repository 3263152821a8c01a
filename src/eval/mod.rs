//! Verifiable evaluation: datasets, the seeded arithmetic task generator,
//! answer extraction and equivalence, Avg@k / Pass@k, running a dataset
//! under decoding configurations (with a journal to resume from), and the
//! experiments on top: τ calibration, the token-replacement sweep and the
//! noise-aware τ × γ tuner.

pub mod bench;
pub mod calibrate;
pub mod contract;
pub mod dataset;
pub mod journal;
pub mod metrics;
pub mod run;
pub mod sweep;
pub mod tasks;
pub mod tune;
pub mod verify;

pub use bench::{
    Bench, BenchError, BenchEvent, BenchModels, BenchSpec, NamedConfig, ScoredResponse,
};
pub use calibrate::Calibration;
pub use contract::{ContractError, ContractSource, PromptOverrides, Prompting, TaskContract};
pub use dataset::{load, DatasetSpec, Preset};
pub use journal::{Journal, JournalError};
pub use metrics::{avg_at_k, pass_at_k, summarize};
pub use run::{
    markdown_table, problem_counts, summarize_config, ConfigSummary, EvalSummary, Evaluator,
    Grader, RunStats, SampleKey, SampleRow,
};
pub use sweep::{Point, Sweep, SweepPlan};
pub use tasks::{arith, Task};
pub use verify::{extract, is_equivalent, prompt_for, Extraction, DEFAULT_PROMPT_TEMPLATE};
