//! Fused CPU kernels with explicit backward passes, for the three places
//! where chains of small candle ops cost the most: the attention softmax,
//! RMSNorm with a frozen weight, and the log-softmax + gather of the head.
//! Each equals its composition in [`super::ops`] in value and gradient
//! (tested below); [`super::model`] uses them on the CPU and the compositions
//! elsewhere. Unlike candle-nn's fused kernels, every one has a backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{op}: f32 input expected"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: contiguous input expected"),
    }
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Causal softmax of `scale · x` over the last dimension of `x: (b, rows, T)`
/// with `rows` a multiple of `T` (query heads stacked as rows): row `r`
/// is query position `r mod T` and attends to columns `0..=r mod T`.
pub struct CausalSoftmax {
    pub scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (_, rows, t) = layout.shape().dims3()?;
        if t == 0 || rows % t != 0 {
            candle_core::bail!("causal-softmax: rows ({rows}) must be a multiple of T ({t})");
        }
        let mut y = vec![0.0f32; x.len()];
        for (row_i, (xr, yr)) in x.chunks_exact(t).zip(y.chunks_exact_mut(t)).enumerate() {
            let n = row_i % t + 1;
            let max = xr[..n]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * self.scale));
            let mut z = 0.0f32;
            for j in 0..n {
                let e = (xr[j] * self.scale - max).exp();
                yr[j] = e;
                z += e;
            }
            let inv = 1.0 / z;
            for v in &mut yr[..n] {
                *v *= inv;
            }
        }
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    /// dx = scale · y ⊙ (g − Σ_j g_j y_j)
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, t) = res.dims3()?;
        let y = values(res)?;
        let g = values(grad_res)?;
        let mut dx = vec![0.0f32; y.len()];
        for ((yr, gr), dr) in y
            .chunks_exact(t)
            .zip(g.chunks_exact(t))
            .zip(dx.chunks_exact_mut(t))
        {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for j in 0..t {
                dr[j] = self.scale * yr[j] * (gr[j] - dot);
            }
        }
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

/// Split `x: (T, heads · head_dim)` (a projection's output) into heads and
/// rotate adjacent pairs: `(heads, T, head_dim)`, contiguous. `cos` and `sin`
/// are `(n_pos, head_dim / 2)` tables, row-major. The backward rotates back.
pub struct RopeHeads {
    pub heads: usize,
    pub head_dim: usize,
    pub cos: std::sync::Arc<Vec<f32>>,
    pub sin: std::sync::Arc<Vec<f32>>,
}

impl RopeHeads {
    /// `dst[h, t, :] = R(±θ_t) src[t, h, :]` (`forward`), or the inverse
    /// layout change with the opposite rotation (`!forward`).
    fn rotate(&self, src: &[f32], t: usize, forward: bool) -> Vec<f32> {
        let (nh, d) = (self.heads, self.head_dim);
        let half = d / 2;
        let mut dst = vec![0.0f32; src.len()];
        for pos in 0..t {
            let cos = &self.cos[pos * half..(pos + 1) * half];
            let sin = &self.sin[pos * half..(pos + 1) * half];
            for h in 0..nh {
                let a = pos * nh * d + h * d; // (T, heads, d) layout
                let b = h * t * d + pos * d; // (heads, T, d) layout
                let (from, to) = if forward { (a, b) } else { (b, a) };
                let sign = if forward { 1.0 } else { -1.0 };
                for i in 0..half {
                    let (x0, x1) = (src[from + 2 * i], src[from + 2 * i + 1]);
                    let (c, s) = (cos[i], sign * sin[i]);
                    dst[to + 2 * i] = x0 * c - x1 * s;
                    dst[to + 2 * i + 1] = x0 * s + x1 * c;
                }
            }
        }
        dst
    }
}

impl CustomOp1 for RopeHeads {
    fn name(&self) -> &'static str {
        "rope-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (t, w) = layout.shape().dims2()?;
        if w != self.heads * self.head_dim || t * self.head_dim / 2 > self.cos.len() {
            candle_core::bail!("rope-heads: input ({t}, {w}) does not fit the heads or the tables");
        }
        let y = self.rotate(x, t, true);
        Ok((
            CpuStorage::F32(y),
            Shape::from((self.heads, t, self.head_dim)),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (t, _) = arg.dims2()?;
        let g = values(grad_res)?;
        let dx = self.rotate(&g, t, false);
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// RMSNorm over the last dimension with a frozen weight: input gradient only.
pub struct FrozenRmsNorm {
    pub weight: Vec<f32>,
    pub eps: f32,
}

impl FrozenRmsNorm {
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / row.len() as f64;
        (1.0 / (ms + f64::from(self.eps)).sqrt()) as f32
    }
}

impl CustomOp1 for FrozenRmsNorm {
    fn name(&self) -> &'static str {
        "frozen-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let e = self.weight.len();
        if layout.shape().dims().last() != Some(&e) {
            candle_core::bail!("frozen-rms-norm: last dimension must be {e}");
        }
        let mut y = vec![0.0f32; x.len()];
        for (xr, yr) in x.chunks_exact(e).zip(y.chunks_exact_mut(e)) {
            let r = self.inv_rms(xr);
            for j in 0..e {
                yr[j] = xr[j] * r * self.weight[j];
            }
        }
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    /// dx_i = r·w_i·g_i − x_i · r³ / E · Σ_j g_j w_j x_j
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let e = self.weight.len();
        let x = values(arg)?;
        let g = values(grad_res)?;
        let mut dx = vec![0.0f32; x.len()];
        for ((xr, gr), dr) in x
            .chunks_exact(e)
            .zip(g.chunks_exact(e))
            .zip(dx.chunks_exact_mut(e))
        {
            let r = self.inv_rms(xr);
            let dot: f32 = (0..e).map(|j| gr[j] * self.weight[j] * xr[j]).sum();
            let c = r * r * r * dot / e as f32;
            for j in 0..e {
                dr[j] = r * self.weight[j] * gr[j] - xr[j] * c;
            }
        }
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// From logits `(n, V)`: `(n, 2)` rows [log-softmax at `targets[i]`, entropy].
/// Only the first column is differentiable (the entropy is a statistic).
pub struct LogSoftmaxGather {
    pub targets: Vec<u32>,
}

impl CustomOp1 for LogSoftmaxGather {
    fn name(&self) -> &'static str {
        "log-softmax-gather"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (n, v) = layout.shape().dims2()?;
        if self.targets.len() != n {
            candle_core::bail!(
                "log-softmax-gather: {} targets for {n} rows",
                self.targets.len()
            );
        }
        let mut out = Vec::with_capacity(2 * n);
        for (xr, &t) in x.chunks_exact(v).zip(&self.targets) {
            let max = xr.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
            let (mut z, mut zs) = (0.0f64, 0.0f64);
            for &a in xr {
                let s = f64::from(a - max);
                let e = s.exp();
                z += e;
                zs += e * s;
            }
            let lse = z.ln();
            out.push((f64::from(xr[t as usize] - max) - lse) as f32);
            out.push((lse - zs / z) as f32);
        }
        Ok((CpuStorage::F32(out), Shape::from((n, 2))))
    }

    /// d logits[i, v] = g_i · (δ(v = target_i) − softmax_v)
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (n, v) = arg.dims2()?;
        let x = values(arg)?;
        let out = values(res)?;
        let g = values(grad_res)?;
        let mut dx = vec![0.0f32; x.len()];
        for i in 0..n {
            let gi = g[2 * i];
            let t = self.targets[i] as usize;
            let xr = &x[i * v..(i + 1) * v];
            // log p(v) = x_v − x_t + log p(t)
            let shift = out[2 * i] - xr[t];
            let dr = &mut dx[i * v..(i + 1) * v];
            for j in 0..v {
                dr[j] = -gi * (xr[j] + shift).exp();
            }
            dr[t] += gi;
        }
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops;
    use candle_core::{Device, Var, D};

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let (a, b) = (values(a).unwrap(), values(b).unwrap());
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    fn input(shape: &[usize], seed: u64) -> Var {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Value and input gradient of `f` under a fixed random cotangent.
    fn value_and_grad(x: &Var, f: &dyn Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let y = f(x.as_tensor());
        let w = input(y.dims(), 99);
        let grads = (&y * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (y, grads.get(x.as_tensor()).unwrap().clone())
    }

    #[test]
    fn causal_softmax_equals_the_composition() {
        let x = input(&[3, 5, 5], 1);
        let scale = 0.7;
        let mask = ops::causal_mask(5, &Device::Cpu).unwrap();
        let (y1, g1) = value_and_grad(&x, &|x| x.apply_op1(CausalSoftmax { scale }).unwrap());
        let (y2, g2) = value_and_grad(&x, &|x| {
            ops::softmax(
                &x.affine(f64::from(scale), 0.0)
                    .unwrap()
                    .broadcast_add(&mask)
                    .unwrap(),
            )
            .unwrap()
        });
        close(&y1, &y2, 1e-6);
        close(&g1, &g2, 1e-5);
    }

    #[test]
    fn rope_heads_equals_the_composition() {
        let (t, nh, d) = (5, 3, 4);
        let x = input(&[t, nh * d], 4);
        let (cos, sin) = ops::rope_tables(8, d, 100.0, &Device::Cpu).unwrap();
        let table = |m: &Tensor| std::sync::Arc::new(values(m).unwrap());
        let op = || RopeHeads {
            heads: nh,
            head_dim: d,
            cos: table(&cos),
            sin: table(&sin),
        };
        let (y1, g1) = value_and_grad(&x, &|x| x.apply_op1(op()).unwrap());
        let (y2, g2) = value_and_grad(&x, &|x| {
            let h = x
                .reshape((t, nh, d))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap();
            ops::rope_adjacent(&h, &cos, &sin).unwrap()
        });
        close(&y1, &y2, 1e-6);
        close(&g1, &g2, 1e-5);
    }

    #[test]
    fn rms_norm_equals_the_composition() {
        let x = input(&[4, 6], 2);
        let w: Vec<f32> = (0..6).map(|i| 0.5 + i as f32 * 0.2).collect();
        let wt = Tensor::new(w.as_slice(), &Device::Cpu).unwrap();
        let (y1, g1) = value_and_grad(&x, &|x| {
            x.apply_op1(FrozenRmsNorm {
                weight: w.clone(),
                eps: 1e-5,
            })
            .unwrap()
        });
        let (y2, g2) = value_and_grad(&x, &|x| ops::rms_norm(x, &wt, 1e-5).unwrap());
        close(&y1, &y2, 1e-6);
        close(&g1, &g2, 1e-5);
    }

    #[test]
    fn log_softmax_gather_equals_the_composition() {
        let x = input(&[3, 7], 3);
        let targets = vec![0u32, 6, 3];
        let t = Tensor::new(targets.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let fused = |x: &Tensor| {
            x.apply_op1(LogSoftmaxGather {
                targets: targets.clone(),
            })
            .unwrap()
        };
        let (y1, g1) = value_and_grad(&x, &|x| {
            fused(x).narrow(1, 0, 1).unwrap().squeeze(1).unwrap()
        });
        let (y2, g2) = value_and_grad(&x, &|x| {
            ops::log_softmax(x)
                .unwrap()
                .gather(&t, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
        });
        close(&y1, &y2, 1e-6);
        close(&g1, &g2, 1e-5);
        // the entropy column
        let lp = ops::log_softmax(x.as_tensor()).unwrap();
        let h = (lp.exp().unwrap() * &lp)
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .neg()
            .unwrap();
        close(
            &fused(x.as_tensor())
                .narrow(1, 1, 1)
                .unwrap()
                .squeeze(1)
                .unwrap(),
            &h,
            1e-5,
        );
    }
}
