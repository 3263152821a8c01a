//! Files in and out: JSONL input rows, and output files that are never left
//! half-written.

mod output;
mod rows;

pub use output::{write_atomic, Output};
pub use rows::{read_rows, InputRow, RowBody, RowsError};
