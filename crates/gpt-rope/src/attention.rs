//! Multi-head attention arithmetic, written once for [`crate::Gpt`] and
//! [`crate::ensemble::GptEnsemble`]: split a projection into heads, rotate queries and keys
//! ([`Rope`]), attend under a mask, merge the heads back. Each model keeps its own projections
//! (one linear layer, or K batched ones) and hands the projected tensors to these helpers with
//! the members folded into the rows (`rows` = `b`, or `K·b`).
//!
//! Two forms:
//! - [`Heads::attend`]: every query position (`[rows, t, 3c]` → `[rows, t, c]`), optionally
//!   keeping the attention weights for analysis, and in the original's operations when the
//!   layer computes as the original ([`Heads::as_original`]);
//! - [`Heads::attend_at`]: one query position per row (keys and values at every position, the
//!   query only where the answer is read), the cheap path of the last block.

use tch::{Kind, Tensor};

use crate::{ModelError, Rope};

/// Head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    /// Number of heads.
    pub n_head: i64,
    /// Size of each head (`c / n_head`, even).
    pub head_dim: i64,
    /// Attend in the original's operations (`CausalSelfAttentionRoPE`): scores `q·kᵀ / √hd` (a
    /// division, as the original writes it), masked to −∞, softmax in the input's dtype,
    /// dropout on the weights drawn as its `attn_drop`, times `v`; so that the same weights give
    /// the same numbers and the same dropout masks. Otherwise the fused kernel (or, keeping the
    /// weights, its arithmetic written out).
    pub as_original: bool,
}

impl Heads {
    /// Attention at every position.
    ///
    /// # Arguments
    /// - `qkv`: `[rows, t, 3c]`, the fused projection in q, k, v order;
    /// - `allowed`: `[rows, 1, t, t]` bool, true where a query may attend to a key;
    /// - `p_drop`: attention dropout probability (0 outside training);
    /// - `weights`: when given, the explicit path is taken and the attention weights
    ///   `[rows, n_head, t, t]` (before dropout) are pushed onto it.
    ///
    /// With [`Heads::as_original`], the original's operations whether or not `weights` is given.
    ///
    /// # Returns
    /// `[rows, t, c]`, heads concatenated in head order.
    pub fn attend(
        &self,
        qkv: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        p_drop: f64,
        weights: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor, ModelError> {
        let (rows, t, _) = qkv.size3()?;
        let qkv = self.split(qkv, rows, t, 3); // (3, rows, nh, t, hd)
        let q = rope.apply(&qkv.get(0)); // (rows, nh, t, hd)
        let k = rope.apply(&qkv.get(1)); // (rows, nh, t, hd)
        let v = qkv.get(2); // (rows, nh, t, hd)
        let train = p_drop > 0.0;
        let ys = if self.as_original {
            let scores = q.matmul(&k.transpose(-2, -1)) / (self.head_dim as f64).sqrt(); // (rows, nh, t, t)
            let w = scores
                .masked_fill(&allowed.logical_not(), f64::NEG_INFINITY)
                .softmax(-1, q.kind());
            let ys = w.dropout(p_drop, train).matmul(&v);
            if let Some(kept) = weights {
                kept.push(w);
            }
            ys
        } else {
            match weights {
                Some(kept) => {
                    // The explicit path: the arithmetic of the fused kernel, with the weights kept.
                    let scale = 1.0 / (self.head_dim as f64).sqrt();
                    let scores = q.matmul(&k.transpose(-2, -1)) * scale; // (rows, nh, t, t)
                    let scores = scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
                    let w = scores.softmax(-1, Kind::Float).to_kind(q.kind()); // (rows, nh, t, t)
                    let ys = w.dropout(p_drop, train).matmul(&v);
                    kept.push(w);
                    ys
                }
                None => sdpa(&q, &k, &v, allowed, p_drop),
            }
        }; // (rows, nh, t, hd)
        Ok(self.merge(&ys, rows, t)) // (rows, t, c)
    }

    /// Heads back into the channels: `[rows, nh, t, hd]` → `[rows, t, nh·hd]`.
    fn merge(&self, ys: &Tensor, rows: i64, t: i64) -> Tensor {
        ys.transpose(1, 2)
            .contiguous()
            .view([rows, t, self.n_head * self.head_dim])
    }

    /// Attention at one query position per row.
    ///
    /// # Arguments
    /// - `q`: the query projection at the read positions, `rows·c` elements in row order (e.g.
    ///   `[rows, 1, c]` or `[K, b, c]`, contiguous);
    /// - `kv`: `[rows, t, 2c]`, the key and value projections at every position;
    /// - `positions`: `[rows]` int64, the query's position in each row;
    /// - `allowed`: `[rows, 1, t, t]` bool, as in [`Heads::attend`]; row `positions[i]` of it
    ///   is the query's mask;
    /// - `p_drop`: attention dropout probability.
    ///
    /// # Returns
    /// `[rows, c]`, equal to row `positions[i]` of [`Heads::attend`].
    pub fn attend_at(
        &self,
        q: &Tensor,
        kv: &Tensor,
        positions: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        p_drop: f64,
    ) -> Result<Tensor, ModelError> {
        let (rows, t, _) = kv.size3()?;
        let (nh, hd) = (self.n_head, self.head_dim);
        let kv = self.split(kv, rows, t, 2); // (2, rows, nh, t, hd)
        let k = rope.apply(&kv.get(0)); // (rows, nh, t, hd)
        let v = kv.get(1); // (rows, nh, t, hd)
        let q = q.view([rows, 1, nh, hd]).transpose(1, 2); // (rows, nh, 1, hd)
        let q = rope.apply_at(&q, positions);
        let mask = allowed.f_gather(
            2,
            &positions
                .view([rows, 1, 1, 1])
                .expand([rows, 1, 1, t], false),
            false,
        )?; // (rows, 1, 1, t)
        let ys = sdpa(&q, &k, &v, &mask, p_drop); // (rows, nh, 1, hd)
        Ok(ys.reshape([rows, nh * hd])) // (rows, c): heads in head order
    }

    /// `[rows, t, parts·c]` → `(parts, rows, n_head, t, head_dim)`.
    fn split(&self, xs: &Tensor, rows: i64, t: i64, parts: i64) -> Tensor {
        xs.view([rows, t, parts, self.n_head, self.head_dim])
            .permute([2, 0, 3, 1, 4])
    }
}

/// Row `positions[i]` of each row of `xs` `[rows, t, c]`: returns `[rows, c]`.
///
/// # Errors
/// A position outside its row (checked by libtorch before anything reads it).
pub(crate) fn gather_rows(xs: &Tensor, positions: &Tensor) -> Result<Tensor, ModelError> {
    let (rows, _, c) = xs.size3()?;
    let index = positions.view([rows, 1, 1]).expand([rows, 1, c], false); // (rows, 1, c)
    Ok(xs.f_gather(1, &index, false)?.view([rows, c]))
}

/// libtorch's fused scaled-dot-product attention with an explicit boolean mask (scale
/// `1/√head_dim`, no causal flag: the mask already is causal).
fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, p_drop: f64) -> Tensor {
    Tensor::scaled_dot_product_attention(q, k, v, Some(mask), p_drop, false, None, false)
}
