//! Pure-Rust GGUF v2/v3 reading and v3 writing.
//!
//! - [`GgufFile`] parses the header, metadata and tensor infos, checking every
//!   count and length against the bytes left before allocating; tensor data is
//!   read only on request ([`GgufFile::read_tensor_data`]).
//! - [`GgufWriter`] builds files and writes them atomically.
//! - [`lora`] writes LoRA adapters in the layout llama.cpp loads and makes
//!   initial adapters shaped after a base model; [`lowrank`] compacts them.
//! - [`Inspection`] summarises a file for people.
//! - [`validate`] finds the values llama.cpp would abort on ([`problems`]).
//! - [`fixtures`] builds the tiny deterministic models and adapters tests use.

mod error;
mod f16;
pub mod fixtures;
mod ggml_type;
mod inspect;
pub mod lora;
pub mod lowrank;
mod reader;
pub(crate) mod rng;
mod tensor;
pub mod validate;
mod value;
mod writer;

#[cfg(test)]
mod tests;

pub use error::{GgufError, Origin};
pub use f16::{f16_to_f32, f32_to_f16};
pub use fixtures::{tiny_llama, write_fixtures, TinyLlamaConfig};
pub use ggml_type::{GgmlType, ALL_GGML_TYPES};
pub use inspect::{block_ranges, file_type_name, value_json, value_summary, FileKind, Inspection};
pub use lora::{
    lora_adapter_writer, lora_adapter_writer_as, lora_for_model, write_lora_adapter, LoraAdapter,
    LoraInit, LoraTensor,
};
pub use lowrank::{compact_lora, Compacted};
pub use reader::{GgufFile, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use tensor::TensorInfo;
pub use validate::{problems, Problem, Subject};
pub use value::{Array, Value, ValueType};
pub use writer::{rewrite_metadata, write_atomic, GgufWriter};
