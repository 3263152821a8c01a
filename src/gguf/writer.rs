//! Building GGUF v3 files in memory and writing them atomically.

use std::path::Path;

use super::error::GgufError;
use super::f16::f32_to_f16;
use super::ggml_type::GgmlType;
use super::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::tensor::{TensorInfo, MAX_DIMS};
use super::value::Value;

/// The GGUF version written.
pub const WRITE_VERSION: u32 = 3;

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// A GGUF file under construction: metadata in insertion order, tensors in
/// insertion order, data laid out back to back with alignment padding.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key`, replacing an existing value in place (keeping its position).
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// The value set for `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Tensor alignment: `general.alignment` if set to a power of two, else 32.
    pub fn alignment(&self) -> Result<u64, GgufError> {
        match self.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => Ok(a),
                _ => Err(GgufError::BadAlignment {
                    origin: Default::default(),
                    value: v.to_string(),
                }),
            },
        }
    }

    /// Add a tensor from raw bytes whose length must match `dims` and `ggml_type`.
    pub fn add_tensor_raw(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let info = TensorInfo {
            name: name.clone(),
            dims: dims.to_vec(),
            ggml_type,
            offset: 0,
        };
        if dims.len() > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                origin: Default::default(),
                name,
                n_dims: dims.len() as u64,
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor {
                origin: Default::default(),
                name,
            });
        }
        let expected = info.n_bytes()?;
        if expected != data.len() as u64 {
            return Err(GgufError::DataLength {
                name,
                dims: dims.to_vec(),
                ggml_type,
                expected,
                got: data.len() as u64,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        Ok(self)
    }

    /// Add an F32 tensor.
    pub fn add_tensor_f32(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        values: &[f32],
    ) -> Result<&mut Self, GgufError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor_raw(name, dims, GgmlType::F32, data)
    }

    /// Add an F16 tensor, converting with round-to-nearest-even.
    pub fn add_tensor_f16(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        values: &[f32],
    ) -> Result<&mut Self, GgufError> {
        let data = values
            .iter()
            .flat_map(|&v| f32_to_f16(v).to_le_bytes())
            .collect();
        self.add_tensor_raw(name, dims, GgmlType::F16, data)
    }

    /// Serialize the whole file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let alignment = self.alignment()?;
        let align = |n: u64| n.checked_next_multiple_of(alignment).unwrap_or(u64::MAX);
        let mut offset = 0u64;
        let infos: Vec<TensorInfo> = self
            .tensors
            .iter()
            .map(|t| {
                let info = TensorInfo {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: t.ggml_type,
                    offset,
                };
                offset = align(offset + t.data.len() as u64);
                info
            })
            .collect();
        let mut out = header_bytes(&self.metadata, &infos, alignment)?;
        let data_start = out.len() as u64;
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            let end = out.len() as u64 - data_start;
            pad(&mut out, data_start + align(end));
        }
        Ok(out)
    }

    /// Write the file atomically: a temporary file in the same directory is
    /// written, synced and renamed over `path`; on error it is removed.
    pub fn write(&self, path: &Path) -> Result<(), GgufError> {
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
    }
}

/// The header of a GGUF v3 file (magic, counts, metadata, tensor infos with
/// their offsets as given), padded to `alignment`: the data section follows.
fn header_bytes(
    metadata: &[(String, Value)],
    tensors: &[TensorInfo],
    alignment: u64,
) -> Result<Vec<u8>, GgufError> {
    let mut out = Vec::new();
    out.extend_from_slice(&GGUF_MAGIC);
    out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut out, key);
        out.extend_from_slice(&value.value_type().id().to_le_bytes());
        put_value(&mut out, key, value)?;
    }
    for t in tensors {
        put_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    let header_end = (out.len() as u64)
        .checked_next_multiple_of(alignment)
        .unwrap_or(u64::MAX);
    pad(&mut out, header_end);
    Ok(out)
}

/// Rewrite the metadata of the GGUF file at `src` into `dst` (which may be
/// `src` itself) without touching its tensors: the header is rebuilt from
/// `metadata` and the tensor infos as they are (names, shapes, types,
/// offsets), and the data section is copied byte for byte. The result is
/// written to a temporary file beside `dst` and renamed over it, so `dst` is
/// either the old file or the whole new one.
///
/// `metadata` must keep the file's alignment (`general.alignment`), since
/// the tensor offsets are kept; keys must be unique.
pub fn rewrite_metadata(
    src: &Path,
    dst: &Path,
    metadata: &[(String, Value)],
) -> Result<(), GgufError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let file = super::reader::GgufFile::open(src)?;
    let mut seen = std::collections::HashSet::new();
    for (k, _) in metadata {
        if !seen.insert(k.as_str()) {
            return Err(GgufError::DuplicateKey {
                origin: super::error::Origin(Some(dst.to_path_buf())),
                key: k.clone(),
            });
        }
    }
    let mut probe = GgufWriter::new();
    if let Some((_, v)) = metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        probe.set(ALIGNMENT_KEY, v.clone());
    }
    let alignment = probe.alignment()?;
    if alignment != file.alignment {
        return Err(GgufError::BadAlignment {
            origin: super::error::Origin(Some(dst.to_path_buf())),
            value: format!(
                "{alignment} (the tensors are laid out for {}; the alignment cannot change in a metadata rewrite)",
                file.alignment
            ),
        });
    }
    let header = header_bytes(metadata, &file.tensors, alignment)?;
    let mut input = std::fs::File::open(src).map_err(|e| GgufError::io(src, e))?;
    input
        .seek(SeekFrom::Start(file.data_offset))
        .map_err(|e| GgufError::io(src, e))?;
    let mut out = crate::io::Output::create(dst).map_err(|e| GgufError::io(dst, e))?;
    out.write_all(&header).map_err(|e| GgufError::io(dst, e))?;
    let data_len = file.file_len - file.data_offset;
    let copied = std::io::copy(&mut Read::take(&mut input, data_len), &mut out)
        .map_err(|e| GgufError::io(src, e))?;
    if copied != data_len {
        return Err(GgufError::io(
            src,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file shrank while it was copied ({copied} of {data_len} data bytes)"),
            ),
        ));
    }
    out.commit().map_err(|e| GgufError::io(dst, e))
}

fn pad(out: &mut Vec<u8>, to: u64) {
    let to = usize::try_from(to).unwrap_or(out.len());
    if to > out.len() {
        out.resize(to, 0);
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, value: &Value) -> Result<(), GgufError> {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => {
            out.extend_from_slice(&a.elem.id().to_le_bytes());
            out.extend_from_slice(&(a.items.len() as u64).to_le_bytes());
            for item in &a.items {
                let found = item.value_type();
                if found != a.elem {
                    return Err(GgufError::MixedArray {
                        key: key.to_string(),
                        elem: a.elem,
                        found,
                    });
                }
                put_value(out, key, item)?;
            }
        }
    }
    Ok(())
}

/// Write `bytes` to `path` through a synced temporary file and a rename
/// (the one atomic writer of the crate, [`crate::io::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GgufError> {
    crate::io::write_atomic(path, bytes).map_err(|e| GgufError::io(path, e))
}
