//! Verifiable evaluation: datasets, the seeded arithmetic task generator,
//! answer extraction and equivalence, and Avg@k / Pass@k.

pub mod dataset;
pub mod metrics;
pub mod tasks;
pub mod verify;

pub use dataset::{load, DatasetSpec, Preset};
pub use metrics::{avg_at_k, pass_at_k, summarize};
pub use tasks::{arith, Task};
pub use verify::{extract, is_equivalent, prompt_for, Extraction, DEFAULT_PROMPT_TEMPLATE};
