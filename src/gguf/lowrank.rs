//! Low-rank compaction of LoRA updates: the best rank-k approximation
//! (Eckart–Young, in the Frobenius norm) of `scale · B·A`, stored as balanced
//! factors `B' = Q_B·U_k·√Σ_k`, `A' = √Σ_k·V_kᵀ·Q_Aᵀ` with scale 1.
//!
//! `B·A` has rank ≤ r, so the SVD only needs thin QR factorisations of `B`
//! and `Aᵀ` and the SVD of an r × r core: `scale·B·A = Q_B (scale·R_B·R_Aᵀ) Q_Aᵀ`.
//! Everything runs in f64.

use super::lora::LoraTensor;

/// One compacted update.
#[derive(Debug, Clone)]
pub struct Compacted {
    /// The new factors, rank `k`, to be applied with scale 1.
    pub tensor: LoraTensor,
    /// Singular values of `scale · B·A`, largest first (all r of them).
    pub singular_values: Vec<f64>,
    /// Share of ‖scale · B·A‖²_F kept by the first `k` (1 for a zero update).
    pub retained_energy: f64,
}

/// The best rank-`rank` approximation of `scale · t.b · t.a`. `rank` is
/// clamped to `t.rank`; at `rank == t.rank` the update is reproduced up to
/// rounding.
pub fn compact_lora(t: &LoraTensor, scale: f64, rank: usize) -> Compacted {
    let r = t.rank;
    let k = rank.clamp(1, r);
    // B is (n_out, r) row-major; Aᵀ is (n_in, r) row-major.
    let b: Vec<f64> = t.b.iter().map(|&x| f64::from(x)).collect();
    let mut at = vec![0.0f64; t.n_in * r];
    for j in 0..r {
        for i in 0..t.n_in {
            at[i * r + j] = f64::from(t.a[j * t.n_in + i]);
        }
    }
    let (qb, rb) = thin_qr(&b, t.n_out, r);
    let (qa, ra) = thin_qr(&at, t.n_in, r);
    // core = scale · R_B · R_Aᵀ  (r × r)
    let mut core = vec![0.0f64; r * r];
    for i in 0..r {
        for j in 0..r {
            let s: f64 = (0..r).map(|l| rb[i * r + l] * ra[j * r + l]).sum();
            core[i * r + j] = scale * s;
        }
    }
    let (u, sigma, v) = jacobi_svd(&core, r);
    let total: f64 = sigma.iter().map(|s| s * s).sum();
    let kept: f64 = sigma[..k].iter().map(|s| s * s).sum();
    let retained_energy = if total > 0.0 { kept / total } else { 1.0 };

    // B' = Q_B · U_k · √Σ_k  (n_out × k)
    let mut new_b = vec![0.0f32; t.n_out * k];
    for i in 0..t.n_out {
        for c in 0..k {
            let s: f64 = (0..r).map(|l| qb[i * r + l] * u[l * r + c]).sum();
            new_b[i * k + c] = (s * sigma[c].sqrt()) as f32;
        }
    }
    // A' = √Σ_k · V_kᵀ · Q_Aᵀ  (k × n_in)
    let mut new_a = vec![0.0f32; k * t.n_in];
    for c in 0..k {
        for i in 0..t.n_in {
            let s: f64 = (0..r).map(|l| qa[i * r + l] * v[l * r + c]).sum();
            new_a[c * t.n_in + i] = (s * sigma[c].sqrt()) as f32;
        }
    }
    Compacted {
        tensor: LoraTensor {
            base_name: t.base_name.clone(),
            n_in: t.n_in,
            n_out: t.n_out,
            rank: k,
            a: new_a,
            b: new_b,
        },
        singular_values: sigma,
        retained_energy,
    }
}

/// Thin QR of the row-major (n × r) matrix `m` by modified Gram–Schmidt with
/// one re-orthogonalisation pass: `(Q, R)` with Q (n × r) and R (r × r) upper
/// triangular, `Q·R = m`. A column dependent on the earlier ones gets a zero
/// column in Q and a zero diagonal in R, so `Q·R = m` still holds.
fn thin_qr(m: &[f64], n: usize, r: usize) -> (Vec<f64>, Vec<f64>) {
    let mut q = m.to_vec();
    let mut rr = vec![0.0f64; r * r];
    let col_norm = |q: &[f64], j: usize| (0..n).map(|i| q[i * r + j].powi(2)).sum::<f64>().sqrt();
    for j in 0..r {
        let original = col_norm(&q, j);
        for _pass in 0..2 {
            for p in 0..j {
                let d: f64 = (0..n).map(|i| q[i * r + p] * q[i * r + j]).sum();
                rr[p * r + j] += d;
                for i in 0..n {
                    q[i * r + j] -= d * q[i * r + p];
                }
            }
        }
        let norm = col_norm(&q, j);
        if norm <= original * 1e-12 || norm == 0.0 {
            for i in 0..n {
                q[i * r + j] = 0.0;
            }
        } else {
            rr[j * r + j] = norm;
            for i in 0..n {
                q[i * r + j] /= norm;
            }
        }
    }
    (q, rr)
}

/// SVD of the row-major (r × r) matrix `m` by one-sided Jacobi rotations:
/// `(U, σ, V)` with `m = U·diag(σ)·Vᵀ`, σ sorted largest first. Columns of U
/// for zero singular values are zero (they never contribute).
fn jacobi_svd(m: &[f64], r: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut w = m.to_vec();
    let mut v = vec![0.0f64; r * r];
    for i in 0..r {
        v[i * r + i] = 1.0;
    }
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..r {
            for qc in p + 1..r {
                let (mut alpha, mut beta, mut gamma) = (0.0f64, 0.0f64, 0.0f64);
                for i in 0..r {
                    let (x, y) = (w[i * r + p], w[i * r + qc]);
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for mat in [&mut w, &mut v] {
                    for i in 0..r {
                        let (x, y) = (mat[i * r + p], mat[i * r + qc]);
                        mat[i * r + p] = c * x - s * y;
                        mat[i * r + qc] = s * x + c * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..r)
        .map(|j| (0..r).map(|i| w[i * r + j].powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut order: Vec<usize> = (0..r).collect();
    order.sort_by(|&x, &y| norms[y].total_cmp(&norms[x]));
    let mut u = vec![0.0f64; r * r];
    let mut vs = vec![0.0f64; r * r];
    let mut sigma = vec![0.0f64; r];
    for (c, &j) in order.iter().enumerate() {
        sigma[c] = norms[j];
        for i in 0..r {
            vs[i * r + c] = v[i * r + j];
            if norms[j] > 0.0 {
                u[i * r + c] = w[i * r + j] / norms[j];
            }
        }
    }
    (u, sigma, vs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::rng::Rng;

    /// Row-major (n_out × n_in) product `scale · B·A`.
    fn update(t: &LoraTensor, scale: f64) -> Vec<f64> {
        let mut out = vec![0.0; t.n_out * t.n_in];
        for i in 0..t.n_out {
            for j in 0..t.n_in {
                let s: f64 = (0..t.rank)
                    .map(|l| f64::from(t.b[i * t.rank + l]) * f64::from(t.a[l * t.n_in + j]))
                    .sum();
                out[i * t.n_in + j] = scale * s;
            }
        }
        out
    }

    fn frob(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    fn diff(x: &[f64], y: &[f64]) -> Vec<f64> {
        x.iter().zip(y).map(|(a, b)| a - b).collect()
    }

    /// Orthonormal columns: (n × k) row-major, from Gram–Schmidt of normals.
    fn orthonormal(rng: &mut Rng, n: usize, k: usize) -> Vec<f64> {
        let m: Vec<f64> = rng
            .normals_f32(n * k, 1.0)
            .into_iter()
            .map(f64::from)
            .collect();
        thin_qr(&m, n, k).0
    }

    /// A rank-`r` adapter whose update has exactly the singular values `sigma`
    /// (scale 1): B = U·diag(σ), A = Vᵀ.
    fn known_spectrum(n_out: usize, n_in: usize, sigma: &[f64]) -> LoraTensor {
        let r = sigma.len();
        let mut rng = Rng::for_label(5, "spectrum");
        let u = orthonormal(&mut rng, n_out, r);
        let v = orthonormal(&mut rng, n_in, r);
        let b = (0..n_out * r)
            .map(|x| (u[x] * sigma[x % r]) as f32)
            .collect();
        let mut a = vec![0.0f32; r * n_in];
        for l in 0..r {
            for j in 0..n_in {
                a[l * n_in + j] = v[j * r + l] as f32;
            }
        }
        LoraTensor {
            base_name: "blk.0.attn_q.weight".into(),
            n_in,
            n_out,
            rank: r,
            a,
            b,
        }
    }

    #[test]
    fn full_rank_reproduces_the_update_with_the_scale_folded_in() {
        let mut rng = Rng::for_label(1, "full");
        let (n_in, n_out, r) = (40, 24, 6);
        let t = LoraTensor {
            base_name: "blk.3.ffn_up.weight".into(),
            n_in,
            n_out,
            rank: r,
            a: rng.normals_f32(r * n_in, 0.2),
            b: rng.normals_f32(n_out * r, 0.05),
        };
        let c = compact_lora(&t, 2.5, r);
        assert_eq!(c.tensor.rank, r);
        let want = update(&t, 2.5);
        let got = update(&c.tensor, 1.0);
        assert!(frob(&diff(&want, &got)) <= 1e-6 * frob(&want));
        assert!((c.retained_energy - 1.0).abs() < 1e-12);
        // ‖update‖²_F = Σ σ²
        let s2: f64 = c.singular_values.iter().map(|s| s * s).sum();
        assert!((s2.sqrt() - frob(&want)).abs() <= 1e-9 * frob(&want));
        assert!(c.singular_values.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn truncation_is_the_eckart_young_optimum() {
        let sigma = [5.0, 3.0, 2.0, 0.5, 0.25];
        let t = known_spectrum(30, 50, &sigma);
        for (i, (got, want)) in compact_lora(&t, 1.0, 5)
            .singular_values
            .iter()
            .zip(sigma)
            .enumerate()
        {
            assert!((got - want).abs() < 1e-5, "σ{i}: {got} vs {want}");
        }
        let full = update(&t, 1.0);
        for k in 1..=4 {
            let c = compact_lora(&t, 1.0, k);
            assert_eq!((c.tensor.a.len(), c.tensor.b.len()), (k * 50, 30 * k));
            // the error of the best rank-k approximation is √(Σ_{i≥k} σ_i²)
            let err = frob(&diff(&full, &update(&c.tensor, 1.0)));
            let tail = sigma[k..].iter().map(|s| s * s).sum::<f64>().sqrt();
            assert!(
                (err - tail).abs() < 1e-5,
                "rank {k}: error {err}, optimum {tail}"
            );
            let total: f64 = sigma.iter().map(|s| s * s).sum();
            let kept: f64 = sigma[..k].iter().map(|s| s * s).sum();
            assert!((c.retained_energy - kept / total).abs() < 1e-6);
        }
    }

    #[test]
    fn factors_are_balanced() {
        // ‖column c of B'‖ = ‖row c of A'‖ = √σ_c: neither factor carries the
        // scale alone, which keeps F16 storage accurate.
        let t = known_spectrum(20, 36, &[4.0, 1.0, 0.01]);
        let c = compact_lora(&t, 1.0, 3).tensor;
        for col in 0..3 {
            let bn = (0..20)
                .map(|i| f64::from(c.b[i * 3 + col]).powi(2))
                .sum::<f64>()
                .sqrt();
            let an = (0..36)
                .map(|j| f64::from(c.a[col * 36 + j]).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((bn - an).abs() < 1e-5 * bn.max(1e-3), "{bn} vs {an}");
        }
    }

    #[test]
    fn rank_deficient_and_zero_updates() {
        // B has two identical columns: rank 2 of 3; a rank-2 compaction is exact.
        let mut rng = Rng::for_label(2, "deficient");
        let (n_in, n_out) = (16, 12);
        let mut b = rng.normals_f32(n_out * 3, 1.0);
        for i in 0..n_out {
            b[i * 3 + 2] = b[i * 3];
        }
        let t = LoraTensor {
            base_name: "blk.0.attn_v.weight".into(),
            n_in,
            n_out,
            rank: 3,
            a: rng.normals_f32(3 * n_in, 1.0),
            b,
        };
        let c = compact_lora(&t, 1.0, 2);
        let want = update(&t, 1.0);
        assert!(frob(&diff(&want, &update(&c.tensor, 1.0))) <= 1e-5 * frob(&want));
        assert!((c.retained_energy - 1.0).abs() < 1e-9);

        // B = 0 (an untrained adapter): the result is exactly zero.
        let zero = LoraTensor {
            b: vec![0.0; n_out * 3],
            ..t
        };
        let c = compact_lora(&zero, 1.0, 2);
        assert!(c.tensor.b.iter().chain(&c.tensor.a).all(|&x| x == 0.0));
        assert_eq!(c.retained_energy, 1.0);
    }
}
