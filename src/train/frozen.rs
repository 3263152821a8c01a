//! A frozen base weight `W (n_out, n_in)` applied as `y = x Wᵀ`.
//!
//! With a plain `matmul`, candle's backward also computes `xᵀ · dy`, the
//! weight gradient, which a frozen weight never uses. [`FrozenLinear`] runs as
//! a custom op on the CPU instead: an f32 GEMM forward, and a backward that
//! returns only the input gradient `dy · W`. That halved time and memory of
//! a SmolLM2 LoRA step. On other devices it falls back to `matmul` (correct,
//! with the wasted weight gradient).

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

/// A frozen weight matrix, stored `(n_out, n_in)` as in the GGUF (row-major).
#[derive(Debug, Clone)]
pub struct FrozenLinear {
    w: Tensor,
    /// `Wᵀ`, contiguous `(n_in, n_out)`, for the forward GEMM.
    wt: Tensor,
}

impl FrozenLinear {
    /// Wrap `w: (n_out, n_in)`; it is detached so it never tracks gradients.
    pub fn new(w: Tensor) -> Result<FrozenLinear> {
        let w = w.detach().contiguous()?;
        let wt = w.t()?.contiguous()?;
        Ok(FrozenLinear { w, wt })
    }

    pub fn weight(&self) -> &Tensor {
        &self.w
    }

    pub fn n_out(&self) -> usize {
        self.w.dims()[0]
    }

    pub fn n_in(&self) -> usize {
        self.w.dims()[1]
    }

    /// `x Wᵀ` for `x: (n, n_in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if matches!(x.device(), Device::Cpu) {
            x.apply_op1(FrozenMatmul {
                w: self.w.clone(),
                wt: self.wt.clone(),
            })
        } else {
            x.matmul(&self.wt)
        }
    }
}

struct FrozenMatmul {
    w: Tensor,
    wt: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, k) = layout.shape().dims2()?;
        let data = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("frozen-matmul: f32 input expected"),
        };
        let x = match layout.contiguous_offsets() {
            Some((start, end)) => Tensor::from_slice(&data[start..end], (n, k), &Device::Cpu)?,
            None => candle_core::bail!("frozen-matmul: contiguous input expected"),
        };
        let y = x.matmul(&self.wt)?;
        let shape = y.shape().clone();
        let values = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(values), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn forward_and_input_gradient_match_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1.0f32, 2.0, 3.0], [-1.0, 0.5, 0.0]], &dev)?; // (2, 3)
        let x = Var::new(&[[1.0f32, 0.0, -1.0], [2.0, 1.0, 0.5]], &dev)?; // (2, 3)
        let lin = FrozenLinear::new(w.clone())?;
        let y = lin.forward(x.as_tensor())?;
        assert_eq!(y.to_vec2::<f32>()?, vec![vec![-2.0, -1.0], vec![5.5, -1.5]]);
        let coef = Tensor::new(&[[1.0f32, 2.0], [3.0, -1.0]], &dev)?;
        let grads = (y * &coef)?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("input gradient");
        // d/dx Σ coef ⊙ (x Wᵀ) = coef · W
        assert_eq!(g.to_vec2::<f32>()?, coef.matmul(&w)?.to_vec2::<f32>()?);
        // and no gradient for the frozen weight
        assert!(grads.get(lin.weight()).is_none());
        Ok(())
    }
}
