//! Rotary position embeddings in the **rotate-half** convention.
//!
//! The head dimension `d` is split in two halves `[x1, x2]` that rotate together:
//! `rope(x)[p] = x[p]·cos(p·ω) + rotate_half(x[p])·sin(p·ω)` with
//! `rotate_half([x1, x2]) = [−x2, x1]` and inverse frequencies `ω_i = base^(−2i/d)` for
//! `i < d/2`, duplicated over both halves. (The interleaved variant, which rotates adjacent
//! pairs `(x_{2i}, x_{2i+1})`, is a different function; the original model uses this one.)
//!
//! [`Rope`] holds the `cos`/`sin` tables; [`reference_rope`] is a slow scalar twin used to test
//! them.

use tch::{Device, Kind, Tensor};

/// Precomputed rotary tables for positions `0..max_len`.
#[derive(Debug)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Builds the tables for heads of size `head_dim` (even) on `device`.
    pub fn new(head_dim: i64, max_len: i64, base: f64, device: Device) -> Self {
        let half = head_dim / 2;
        // Computed in f64 then rounded once, so the tables do not depend on the device's float
        // arithmetic.
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| base.powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        let mut cos = Vec::with_capacity((max_len * head_dim) as usize);
        let mut sin = Vec::with_capacity((max_len * head_dim) as usize);
        for p in 0..max_len {
            for _half in 0..2 {
                for w in &inv_freq {
                    let angle = p as f64 * w;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let table = |v: Vec<f32>| {
            Tensor::from_slice(&v)
                .view([max_len, head_dim])
                .to_device(device)
        };
        Self {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// The tables as the original's `RotaryEmbedding` computes them, in float32 tensor
    /// operations on the CPU: `inv_freq = 1 / base^(arange(0, d, 2) / d)`, the outer product
    /// with `arange(max_len)` (`einsum("l,d->ld")`), duplicated over both halves, then `cos` and
    /// `sin`; then moved to `device`. They differ from [`Rope::new`]'s (rounded once from f64)
    /// in the last bits.
    pub fn as_original(head_dim: i64, max_len: i64, base: f64, device: Device) -> Self {
        let cpu = (Kind::Float, Device::Cpu);
        let exponents = Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Float)
            / head_dim as f64;
        let inv_freq = Tensor::pow_scalar(base, &exponents).reciprocal(); // (d/2)
        let t = Tensor::arange(max_len, cpu); // (max_len)
        let freqs = Tensor::einsum("l,d->ld", &[t, inv_freq], None::<&[i64]>); // (max_len, d/2)
        let emb = Tensor::cat(&[&freqs, &freqs], -1); // (max_len, d)
        Self {
            cos: emb.cos().to_device(device),
            sin: emb.sin().to_device(device),
        }
    }

    /// Applies the rotation to `xs` `[b, n_head, t, head_dim]` (positions `0..t`); returns the
    /// same shape and dtype.
    pub fn apply(&self, xs: &Tensor) -> Tensor {
        let t = xs.size()[2];
        let cos = self.cos.narrow(0, 0, t).to_kind(xs.kind()); // (t, hd)
        let sin = self.sin.narrow(0, 0, t).to_kind(xs.kind()); // (t, hd)
        xs * cos + rotate_half(xs) * sin
    }

    /// Applies the rotation to `xs` `[b, n_head, 1, head_dim]`, row `i` at position
    /// `positions[i]` (`[b]` int64); returns the same shape and dtype.
    pub fn apply_at(&self, xs: &Tensor, positions: &Tensor) -> Tensor {
        let b = positions.size()[0];
        let head_dim = self.cos.size()[1];
        let table = |t: &Tensor| {
            t.index_select(0, positions)
                .view([b, 1, 1, head_dim])
                .to_kind(xs.kind())
        }; // (b, 1, 1, hd)
        xs * table(&self.cos) + rotate_half(xs) * table(&self.sin)
    }
}

/// `[x1, x2] → [−x2, x1]` over the last dimension.
pub fn rotate_half(xs: &Tensor) -> Tensor {
    let chunks = xs.chunk(2, -1);
    Tensor::cat(&[chunks[1].neg(), chunks[0].shallow_clone()], -1)
}

/// Scalar reference of the rotation of one head vector `x` (length even) at position `pos`.
pub fn reference_rope(x: &[f64], pos: usize, base: f64) -> Vec<f64> {
    let d = x.len();
    let half = d / 2;
    let mut out = vec![0.0; d];
    for i in 0..half {
        let angle = pos as f64 * base.powf(-2.0 * i as f64 / d as f64);
        let (s, c) = angle.sin_cos();
        out[i] = x[i] * c - x[i + half] * s;
        out[i + half] = x[i + half] * c + x[i] * s;
    }
    out
}

/// `xs` as a flat `Vec<f64>` (test helper for comparisons).
#[cfg(test)]
pub(crate) fn to_vec_f64(xs: &Tensor) -> Vec<f64> {
    let flat = xs.to_kind(tch::Kind::Double).flatten(0, -1);
    Vec::<f64>::try_from(&flat).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn rotate_half_by_hand() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        assert_eq!(to_vec_f64(&rotate_half(&x)), vec![-3.0, -4.0, 1.0, 2.0]);
    }

    #[test]
    fn position_zero_is_identity_and_position_one_matches_hand_values() {
        let rope = Rope::new(4, 3, 100.0, Device::Cpu);
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]).view([1, 1, 2, 4]);
        let y = to_vec_f64(&rope.apply(&x));
        assert_eq!(&y[..4], &[1.0, 0.0, 0.0, 1.0]);
        // Position 1, head_dim 4, base 100: ω = [1, 0.1].
        // x = [1, 0, 0, 1]: out[0] = cos 1, out[1] = −sin 0.1, out[2] = sin 1, out[3] = cos 0.1.
        let want = [1f64.cos(), -(0.1f64.sin()), 1f64.sin(), 0.1f64.cos()];
        for (a, b) in y[4..].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn apply_at_rotates_each_row_at_its_own_position() {
        tch::manual_seed(1);
        let rope = Rope::new(8, 6, 100.0, Device::Cpu);
        let xs = Tensor::randn([3, 2, 6, 8], (Kind::Float, Device::Cpu));
        let all = rope.apply(&xs); // every position
        let positions = Tensor::from_slice(&[4i64, 0, 5]);
        let picked = xs
            .gather(
                2,
                &positions.view([3, 1, 1, 1]).expand([3, 2, 1, 8], false),
                false,
            )
            .contiguous(); // (3, 2, 1, 8)
        let got = rope.apply_at(&picked, &positions);
        for (row, pos) in [(0, 4), (1, 0), (2, 5)] {
            let want = all.get(row).narrow(1, pos, 1);
            let d = (got.get(row) - want).abs().max().double_value(&[]);
            assert!(d < 1e-6, "row {row} at position {pos} differs by {d:e}");
        }
    }

    #[test]
    fn tables_match_the_scalar_reference() {
        tch::manual_seed(0);
        let (hd, t, base) = (8, 6, 100.0);
        let rope = Rope::new(hd, 16, base, Device::Cpu);
        let xs = Tensor::randn([2, 3, t, hd], (Kind::Float, Device::Cpu));
        let ys = rope.apply(&xs);
        for b in 0..2 {
            for h in 0..3 {
                for p in 0..t {
                    let x = to_vec_f64(&xs.get(b).get(h).get(p));
                    let want = reference_rope(&x, p as usize, base);
                    let got = to_vec_f64(&ys.get(b).get(h).get(p));
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-5, "b{b} h{h} p{p}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn rotation_preserves_norms_and_relative_positions() {
        tch::manual_seed(1);
        let rope = Rope::new(8, 10, 100.0, Device::Cpu);
        let q = Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu));
        // Put the same q and k at positions (2, 5) and (6, 9): the dot product depends only on
        // the offset.
        let at = |x: &Tensor, p: i64| {
            let seq = Tensor::zeros([1, 1, 10, 8], (Kind::Float, Device::Cpu));
            seq.narrow(2, p, 1).copy_(x);
            rope.apply(&seq).narrow(2, p, 1)
        };
        let d1 = (at(&q, 2) * at(&k, 5)).sum(Kind::Float).double_value(&[]);
        let d2 = (at(&q, 6) * at(&k, 9)).sum(Kind::Float).double_value(&[]);
        assert!((d1 - d2).abs() < 1e-5);
        let n0 = q.norm().double_value(&[]);
        let n1 = at(&q, 7).norm().double_value(&[]);
        assert!((n0 - n1).abs() < 1e-5);
    }
}
