//! Parsing GGUF headers, metadata and tensor infos (never the tensor data
//! unless asked), with every length checked against the bytes left.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::error::{GgufError, Origin};
use super::f16::f16_to_f32;
use super::ggml_type::GgmlType;
use super::tensor::{TensorInfo, MAX_DIMS};
use super::value::{Array, Value, ValueType};

/// The 4 bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Metadata key holding the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Deepest array nesting accepted (llama.cpp itself accepts none).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Smallest encoding of one key/value pair: key length, type, one byte.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of one tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// A parsed GGUF file: everything except the tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    /// Key/value pairs in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    pub file_len: u64,
}

/// A position-tracking reader that refuses to read past the known length.
struct Input<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Input<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, n: u64, what: &dyn Fn() -> String) -> Result<(), GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                origin: Origin::default(),
                what: what(),
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    /// Read exactly `n` bytes; `n` must have been checked against `remaining`.
    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, GgufError> {
        self.need(n, what)?;
        let len = usize::try_from(n).map_err(|_| GgufError::TooLarge {
            origin: Origin::default(),
            what: what(),
            offset: self.pos,
            count: n,
            available: self.remaining(),
        })?;
        let mut buf = vec![0u8; len];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<(), GgufError> {
        let n = buf.len() as u64;
        self.need(n, what)?;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                GgufError::Truncated {
                    origin: Origin::default(),
                    what: what(),
                    offset: self.pos,
                    needed: n,
                    available: 0,
                }
            } else {
                GgufError::Read {
                    origin: Origin::default(),
                    offset: self.pos,
                    source: e,
                }
            }
        })?;
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let offset = self.pos;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            origin: Origin::default(),
            what: what(),
            offset,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of `{key}`");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array::<1>(&what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array::<2>(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array::<2>(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array::<4>(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array::<4>(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array::<4>(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array::<8>(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array::<8>(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array::<8>(&what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(&what)?[0] != 0),
            ValueType::String => Value::String(self.string(&what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestedTooDeep {
                        origin: Origin::default(),
                        key: key.to_string(),
                        max: MAX_ARRAY_DEPTH,
                    });
                }
                let type_offset = self.pos;
                let raw = self.u32(&|| format!("array type of `{key}`"))?;
                let elem =
                    ValueType::try_from(raw).map_err(|found| GgufError::UnknownValueType {
                        origin: Origin::default(),
                        key: key.to_string(),
                        found,
                        offset: type_offset,
                    })?;
                let count_offset = self.pos;
                let count = self.u64(&|| format!("array length of `{key}`"))?;
                let fits = count
                    .checked_mul(elem.min_encoded_size())
                    .is_some_and(|n| n <= self.remaining());
                if !fits {
                    return Err(GgufError::TooLarge {
                        origin: Origin::default(),
                        what: format!("array `{key}`"),
                        offset: count_offset,
                        count,
                        available: self.remaining(),
                    });
                }
                // `count` is bounded by the bytes left, so this allocation is too.
                let mut items = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(Array { elem, items })
            }
        })
    }
}

impl GgufFile {
    /// Read the header, metadata and tensor infos of the file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        GgufFile::parse(BufReader::new(file)).map_err(|e| e.with_path(path))
    }

    /// Parse an in-memory GGUF file.
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        GgufFile::parse(std::io::Cursor::new(bytes))
    }

    /// Parse from a seekable stream positioned anywhere; the stream's length
    /// bounds every count and every tensor's data.
    pub fn parse<R: Read + Seek>(mut reader: R) -> Result<GgufFile, GgufError> {
        let read_err = |e| GgufError::Read {
            origin: Origin::default(),
            offset: 0,
            source: e,
        };
        let file_len = reader.seek(SeekFrom::End(0)).map_err(read_err)?;
        reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut input = Input {
            inner: reader,
            pos: 0,
            len: file_len,
        };

        let n = input.remaining().min(4);
        let magic = input.bytes(n, &|| "magic".to_string())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::NotGguf {
                origin: Origin::default(),
                found: magic,
            });
        }
        let version = input.u32(&|| "version".to_string())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion {
                origin: Origin::default(),
                version,
            });
        }
        let n_tensors = input.u64(&|| "tensor count".to_string())?;
        let n_kv = input.u64(&|| "metadata count".to_string())?;
        let min_bytes = n_tensors.checked_mul(MIN_TENSOR_INFO_BYTES).and_then(|t| {
            n_kv.checked_mul(MIN_KV_BYTES)
                .and_then(|k| k.checked_add(t))
        });
        if min_bytes.is_none_or(|n| n > input.remaining()) {
            let (what, count, offset) = if n_kv.saturating_mul(MIN_KV_BYTES) > input.remaining() {
                ("metadata count", n_kv, 16)
            } else {
                ("tensor count", n_tensors, 8)
            };
            return Err(GgufError::TooLarge {
                origin: Origin::default(),
                what: what.to_string(),
                offset,
                count,
                available: input.remaining(),
            });
        }

        let mut metadata = Vec::with_capacity(usize::try_from(n_kv).unwrap_or(0));
        let mut keys = HashSet::new();
        for i in 0..n_kv {
            let key = input.string(&|| format!("key of metadata entry {i}"))?;
            let type_offset = input.pos;
            let raw = input.u32(&|| format!("value type of `{key}`"))?;
            let ty = ValueType::try_from(raw).map_err(|found| GgufError::UnknownValueType {
                origin: Origin::default(),
                key: key.clone(),
                found,
                offset: type_offset,
            })?;
            let value = input.value(ty, &key, 0)?;
            if !keys.insert(key.clone()) {
                return Err(GgufError::DuplicateKey {
                    origin: Origin::default(),
                    key,
                });
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::BadAlignment {
                        origin: Origin::default(),
                        value: v.to_string(),
                    })
                }
            },
        };

        let mut tensors = Vec::with_capacity(usize::try_from(n_tensors).unwrap_or(0));
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let name = input.string(&|| format!("name of tensor {i}"))?;
            let n_dims = input.u32(&|| format!("dimension count of `{name}`"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(GgufError::TooManyDims {
                    origin: Origin::default(),
                    name,
                    n_dims: u64::from(n_dims),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(input.u64(&|| format!("dimensions of `{name}`"))?);
            }
            let raw = input.u32(&|| format!("type of `{name}`"))?;
            let ggml_type =
                GgmlType::try_from(raw).map_err(|found| GgufError::UnknownGgmlType {
                    origin: Origin::default(),
                    name: name.clone(),
                    found,
                })?;
            let offset = input.u64(&|| format!("data offset of `{name}`"))?;
            if !names.insert(name.clone()) {
                return Err(GgufError::DuplicateTensor {
                    origin: Origin::default(),
                    name,
                });
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        // `alignment` is a power of two, so this only overflows near u64::MAX.
        let data_offset = input
            .pos
            .checked_next_multiple_of(alignment)
            .unwrap_or(u64::MAX);
        let file = GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file_len,
        };
        for t in &file.tensors {
            file.check_tensor(t)?;
        }
        Ok(file)
    }

    /// Absolute byte range of a tensor's data, checked against alignment and file length.
    fn check_tensor(&self, t: &TensorInfo) -> Result<(u64, u64), GgufError> {
        if t.offset % self.alignment != 0 {
            return Err(GgufError::TensorMisaligned {
                origin: Origin::default(),
                name: t.name.clone(),
                offset: t.offset,
                alignment: self.alignment,
            });
        }
        let n_bytes = t.n_bytes()?;
        let start = self.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.file_len => Ok((s, n_bytes)),
            _ => Err(GgufError::TensorOutOfBounds {
                origin: Origin::default(),
                name: t.name.clone(),
                start: start.unwrap_or(u64::MAX),
                end: end.unwrap_or(u64::MAX),
                file_len: self.file_len,
            }),
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// Whether the file is an adapter (`general.type = "adapter"`): the one
    /// test of "adapter or model" (llama.cpp's own), used by loading,
    /// validation and `inspect`.
    pub fn is_adapter(&self) -> bool {
        self.get_str("general.type") == Some("adapter")
    }

    /// Whether the file is a LoRA adapter llama.cpp loads: an adapter with
    /// `adapter.type = "lora"`.
    pub fn is_lora_adapter(&self) -> bool {
        self.is_adapter() && self.get_str("adapter.type") == Some("lora")
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The value of `"{arch}.{suffix}"`, e.g. `arch_key("block_count")`.
    pub fn arch_key(&self, suffix: &str) -> Option<&Value> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Read one tensor's raw bytes from the file at `path` (the file this was parsed from).
    pub fn read_tensor_data(&self, path: &Path, t: &TensorInfo) -> Result<Vec<u8>, GgufError> {
        let (start, n_bytes) = self.check_tensor(t).map_err(|e| e.with_path(path))?;
        let mut file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        let actual_len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| GgufError::io(path, e))?;
        let mut input = Input {
            inner: file,
            pos: start,
            len: actual_len,
        };
        input
            .inner
            .seek(SeekFrom::Start(start))
            .map_err(|e| GgufError::io(path, e))?;
        input
            .bytes(n_bytes, &|| format!("data of tensor `{}`", t.name))
            .map_err(|e| e.with_path(path))
    }

    /// Read an F32 or F16 tensor as f32 values (ggml order).
    pub fn read_tensor_f32(&self, path: &Path, t: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        if !matches!(t.ggml_type, GgmlType::F32 | GgmlType::F16) {
            return Err(GgufError::UnsupportedTensorType {
                name: t.name.clone(),
                ggml_type: t.ggml_type,
            });
        }
        let bytes = self.read_tensor_data(path, t)?;
        Ok(decode_f32(t.ggml_type, &bytes))
    }
}

/// Decode little-endian F32 or F16 bytes; other types give an empty vector.
pub(crate) fn decode_f32(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => Vec::new(),
    }
}
