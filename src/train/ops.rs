//! Differentiable building blocks composed from candle's basic operations.
//!
//! candle-nn's fused `rms_norm`, `softmax_last_dim` and `rope*` kernels have
//! no backward pass and return no error: gradients stop there silently. These
//! versions use only ops with a backward (mul, sum, sqrt, exp, narrow, cat…).

use candle_core::{DType, Device, Result, Tensor, D};

/// `x / sqrt(mean(x², last dim) + eps) * weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// Softmax over the last dimension. The max is detached: softmax is
/// shift-invariant, so this changes no value and no gradient.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Log-softmax over the last dimension (detached max, as in [`softmax`]).
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Cosine and sine tables for positions `0..n_pos`, shape `(n_pos, head_dim / 2, 1)`:
/// θ_i = pos · base^(−2i / head_dim), as llama.cpp's `rope` computes them.
pub fn rope_tables(
    n_pos: usize,
    head_dim: usize,
    base: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(n_pos * half);
    let mut sin = Vec::with_capacity(n_pos * half);
    for pos in 0..n_pos {
        for i in 0..half {
            let theta = pos as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
            cos.push(theta.cos() as f32);
            sin.push(theta.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (n_pos, half, 1), device)?,
        Tensor::from_vec(sin, (n_pos, half, 1), device)?,
    ))
}

/// Rotary embedding over **adjacent pairs** `(x[2i], x[2i+1])` of the last
/// dimension of `x: (heads, seq, head_dim)`, with tables from [`rope_tables`]
/// cut to `seq` rows. GGUF llama files store q/k rows permuted for exactly
/// this rotation (llama.cpp's `LLAMA_ROPE_TYPE_NORM`); the half-split variant
/// agrees at position 0 only.
pub fn rope_adjacent(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (h, t, d) = x.dims3()?;
    let x = x.reshape((h, t, d / 2, 2))?;
    let x0 = x.narrow(3, 0, 1)?;
    let x1 = x.narrow(3, 1, 1)?;
    let cos = cos.narrow(0, 0, t)?.unsqueeze(0)?;
    let sin = sin.narrow(0, 0, t)?.unsqueeze(0)?;
    let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[r0, r1], 3)?.reshape((h, t, d))
}

/// Additive causal mask `(seq, seq)`: 0 on and below the diagonal, −∞ above.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
        }
    }

    #[test]
    fn rms_norm_by_hand() -> Result<()> {
        let x = Tensor::new(&[[3.0f32, 4.0]], &Device::Cpu)?;
        let w = Tensor::new(&[1.0f32, 2.0], &Device::Cpu)?;
        // mean(9, 16) = 12.5; 1/sqrt(12.5) = 0.28284
        let y = rms_norm(&x, &w, 0.0)?.flatten_all()?.to_vec1::<f32>()?;
        close(&y, &[3.0 * 0.282_842_7, 8.0 * 0.282_842_7], 1e-6);
        Ok(())
    }

    #[test]
    fn softmax_and_log_softmax_by_hand() -> Result<()> {
        let x = Tensor::new(&[[1.0f32, 2.0, 3.0]], &Device::Cpu)?;
        let z: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        let want: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp() / z).collect();
        close(&softmax(&x)?.flatten_all()?.to_vec1()?, &want, 1e-6);
        let want_log: Vec<f32> = want.iter().map(|p| p.ln()).collect();
        close(&log_softmax(&x)?.flatten_all()?.to_vec1()?, &want_log, 1e-6);
        Ok(())
    }

    #[test]
    fn rope_rotates_adjacent_pairs() -> Result<()> {
        // head_dim 4: pair (0, 1) turns by pos·1, pair (2, 3) by pos·base^(−1/2).
        let (cos, sin) = rope_tables(2, 4, 100.0, &Device::Cpu)?;
        let x = Tensor::new(
            &[[[1.0f32, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]]],
            &Device::Cpu,
        )?;
        let y = rope_adjacent(&x, &cos, &sin)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (c1, s1) = (1.0f32.cos(), 1.0f32.sin());
        let (c2, s2) = (0.1f32.cos(), 0.1f32.sin());
        close(&y, &[1.0, 0.0, 0.0, 1.0, c1, s1, -s2, c2], 1e-6);
        Ok(())
    }

    /// The composed ops pass gradients (the fused candle-nn kernels would not).
    #[test]
    fn gradients_flow_through_every_op() -> Result<()> {
        let x = Var::new(&[[0.5f32, -1.0, 2.0, 0.25]], &Device::Cpu)?;
        let w = Tensor::new(&[1.0f32, 2.0, 0.5, 1.5], &Device::Cpu)?;
        let (cos, sin) = rope_tables(1, 4, 10000.0, &Device::Cpu)?;
        let n = rms_norm(x.as_tensor(), &w, 1e-5)?;
        let r = rope_adjacent(&n.unsqueeze(0)?, &cos, &sin)?.squeeze(0)?;
        let y = (softmax(&r)? + log_softmax(&r)?)?;
        let loss = (y * Tensor::new(&[[1.0f32, -2.0, 3.0, 0.5]], &Device::Cpu)?)?.sum_all()?;
        let grads = loss.backward()?;
        let g = grads.get(x.as_tensor()).expect("x has a gradient");
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        assert!(g.iter().any(|v| v.abs() > 1e-4), "{g:?}");
        Ok(())
    }
}
