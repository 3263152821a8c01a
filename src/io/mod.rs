//! Files in and out: JSONL input rows, and output files that are never left
//! half-written.

mod output;
mod rows;

pub use output::{
    ensure_distinct, is_std_stream, remove_live_temps, same_file, write_atomic, Output,
    SameFileError,
};
pub use rows::{read_rows, read_rows_from, InputRow, RowBody, RowsError};
