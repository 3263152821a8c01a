//! Tensor descriptors from the tensor-info section.

use super::error::{GgufError, Origin};
use super::ggml_type::GgmlType;

/// The most dimensions a ggml tensor has.
pub const MAX_DIMS: usize = 4;

/// One tensor's name, shape, type and data offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Shape in ggml order: `dims[0]` (ne0) is the contiguous dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    fn shape_error(&self, reason: &str) -> GgufError {
        GgufError::TensorShape {
            origin: Origin::default(),
            name: self.name.clone(),
            dims: self.dims.clone(),
            ggml_type: self.ggml_type,
            reason: reason.to_string(),
        }
    }

    /// Number of elements (product of dims); errors when it overflows an `i64`
    /// as ggml counts in `int64_t`.
    pub fn n_elements(&self) -> Result<u64, GgufError> {
        let mut n: u64 = 1;
        for &d in &self.dims {
            n = n
                .checked_mul(d)
                .filter(|&n| i64::try_from(n).is_ok())
                .ok_or_else(|| self.shape_error("element count overflows"))?;
        }
        Ok(n)
    }

    /// Size of the tensor's data in bytes, as `ggml_nbytes` computes it.
    pub fn n_bytes(&self) -> Result<u64, GgufError> {
        let n_elements = self.n_elements()?;
        let block = self.ggml_type.block_size();
        let ne0 = self.dims.first().copied().unwrap_or(1);
        if ne0 % block != 0 {
            return Err(self.shape_error(&format!(
                "ne0 = {ne0} is not a multiple of the block size {block}"
            )));
        }
        if n_elements == 0 {
            return Ok(0);
        }
        (n_elements / block)
            .checked_mul(self.ggml_type.type_size())
            .ok_or_else(|| self.shape_error("byte size overflows"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dims: Vec<u64>, t: GgmlType) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims,
            ggml_type: t,
            offset: 0,
        }
    }

    #[test]
    fn q4_1_embedding_size() {
        let t = info(vec![576, 49152], GgmlType::Q4_1);
        assert_eq!(t.n_elements().ok(), Some(576 * 49152));
        assert_eq!(t.n_bytes().ok(), Some(576 / 32 * 20 * 49152));
        assert_eq!(info(vec![3, 5], GgmlType::F16).n_bytes().ok(), Some(30));
        assert_eq!(info(vec![], GgmlType::F32).n_bytes().ok(), Some(4));
    }

    #[test]
    fn bad_shapes_error() {
        assert!(info(vec![33, 2], GgmlType::Q8_0).n_bytes().is_err());
        assert!(info(vec![u64::MAX, 2], GgmlType::F32).n_bytes().is_err());
        assert!(info(vec![1 << 40, 1 << 30], GgmlType::F32)
            .n_elements()
            .is_err());
        // i64-sized element count whose byte size overflows u64
        assert!(info(vec![1 << 62], GgmlType::F64).n_bytes().is_err());
    }
}
