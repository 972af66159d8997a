//! A GPT-2-like causal decoder with rotary position embeddings, on libtorch through `tch`.
//!
//! This is the model of the synthetic-task experiments of *Emergent Analogical Reasoning in
//! Transformers* (Minegishi et al., arXiv 2602.01992), parameter-compatible with the original
//! PyTorch model: the same weights and batch give the same logits, loss and gradients (checked
//! against a fixture the original wrote, see `tests/parity.rs`).
//!
//! # Architecture
//! - token embedding `tok_emb` `[V, C]`, dropout; no learned positions;
//! - `n_layer` pre-LayerNorm blocks: `x = x + attn(ln_1(x))`, `x = x + mlp(ln_2(x))`;
//! - attention: fused `qkv` linear `C → 3C` (with bias) split in q, k, v order, `n_head` heads of
//!   size `head_dim = C / n_head`; rotary embeddings on q and k in the **rotate-half** convention
//!   (see [`rope`]); scores scaled by `1/√head_dim`; causal mask plus key-padding mask; softmax;
//!   attention dropout; output linear `out` `C → C` with bias; residual dropout;
//! - MLP: `mlp.0` `C → 4C`, exact (erf) GELU, `mlp.2` `4C → C`, dropout;
//! - final LayerNorm `ln_f`, then `head` `C → V` without bias, untied unless
//!   [`GptConfig::tie_weights`].
//!
//! # Principal types
//! - [`GptConfig`]: the hyper-parameters; validated before any tensor exists.
//! - [`Gpt`]: the model; [`Gpt::forward`] (all positions), [`Gpt::forward_at`] (one position per
//!   row: the cheap path for last-token training and evaluation) and [`Gpt::forward_traced`]
//!   (logits plus per-layer attention weights and residual stream, for analysis).
//! - [`rope`]: the rotary embedding tables and a slow reference twin used in tests.
//!
//! # Glossary
//! `b` batch rows, `t` sequence length, `c` model width (`d_model`), `v` vocabulary size,
//! `n_head` heads, `head_dim` = `c / n_head`, `xs` activations, `key_pad` the `[b, t]` boolean
//! mask that is `true` at PAD positions.

pub mod ensemble;
pub mod rope;

use tch::{Kind, Tensor, nn};

pub use rope::Rope;
pub use run_config::GptConfig;

impl From<run_config::InvalidKey> for ModelError {
    fn from(e: run_config::InvalidKey) -> Self {
        ModelError::Config {
            key: e.key,
            reason: e.reason,
        }
    }
}

/// Errors of model construction and of forward passes on bad inputs.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("model config: `{key}` {reason}")]
    Config {
        /// The offending key (the name used in config files).
        key: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// An input tensor has the wrong shape or kind.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A sequence is longer than the model's `max_len`.
    #[error("input length {len} exceeds max_len {max_len}")]
    TooLong {
        /// The sequence length given.
        len: i64,
        /// The model's maximum.
        max_len: i64,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size}")]
    TokenId {
        /// The offending id.
        id: i64,
        /// The vocabulary size.
        vocab_size: i64,
    },
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// A linear layer `y = x Wᵀ + b` whose variables are named `weight` and `bias` like PyTorch's.
#[derive(Debug)]
struct Linear {
    ws: Tensor,
    bs: Option<Tensor>,
}

impl Linear {
    fn new(vs: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let ws = vs.var("weight", &[out_dim, in_dim], init_normal());
        let bs = bias.then(|| vs.var("bias", &[out_dim], nn::Init::Const(0.0)));
        Self { ws, bs }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.ws, self.bs.as_ref())
    }
}

/// `N(0, 0.02)`, the GPT-2 initialisation of every Linear and Embedding weight.
pub(crate) fn init_normal() -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    }
}

#[derive(Debug)]
struct LayerNorm {
    ws: Tensor,
    bs: Tensor,
    dim: i64,
}

impl LayerNorm {
    fn new(vs: nn::Path, dim: i64) -> Self {
        let ws = vs.var("weight", &[dim], nn::Init::Const(1.0));
        let bs = vs.var("bias", &[dim], nn::Init::Const(0.0));
        Self { ws, bs, dim }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        // eps 1e-5 as torch.nn.LayerNorm.
        xs.layer_norm([self.dim], Some(&self.ws), Some(&self.bs), 1e-5, true)
    }
}

/// Causal self-attention with rotary embeddings.
#[derive(Debug)]
struct Attention {
    qkv: Linear,
    out: Linear,
    n_head: i64,
    head_dim: i64,
    dropout: f64,
}

impl Attention {
    fn new(vs: nn::Path, cfg: &GptConfig) -> Self {
        let c = cfg.d_model;
        Self {
            qkv: Linear::new(&vs / "qkv", c, 3 * c, true),
            out: Linear::new(&vs / "out", c, c, true),
            n_head: cfg.n_head,
            head_dim: cfg.head_dim(),
            dropout: cfg.dropout,
        }
    }

    /// `xs` `[b, t, c]`, `allowed` `[b, 1, t, t]` (true where a query may attend to a key).
    /// Returns the output `[b, t, c]` and, when `want_weights`, the attention weights
    /// `[b, n_head, t, t]`.
    fn forward(
        &self,
        xs: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        train: bool,
        want_weights: bool,
    ) -> (Tensor, Option<Tensor>) {
        let (b, t, c) = xs.size3().unwrap_or_default();
        let qkv = self.qkv.forward(xs); // (b, t, 3c)
        let qkv = qkv
            .view([b, t, 3, self.n_head, self.head_dim])
            .permute([2, 0, 3, 1, 4]); // (3, b, nh, t, hd)
        let q = rope.apply(&qkv.get(0)); // (b, nh, t, hd)
        let k = rope.apply(&qkv.get(1)); // (b, nh, t, hd)
        let v = qkv.get(2); // (b, nh, t, hd)
        let p_drop = if train { self.dropout } else { 0.0 };
        let (ys, weights) = if want_weights {
            // The explicit path: the same arithmetic as the fused kernel, with the weights kept.
            let scale = 1.0 / (self.head_dim as f64).sqrt();
            let scores = q.matmul(&k.transpose(-2, -1)) * scale; // (b, nh, t, t)
            let scores = scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
            let weights = scores.softmax(-1, Kind::Float).to_kind(q.kind()); // (b, nh, t, t)
            let dropped = weights.dropout(p_drop, train);
            (dropped.matmul(&v), Some(weights))
        } else {
            let ys = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(allowed),
                p_drop,
                false,
                None,
                false,
            );
            (ys, None)
        };
        let ys = ys.transpose(1, 2).contiguous().view([b, t, c]); // (b, t, c)
        let ys = self.out.forward(&ys).dropout(p_drop, train);
        (ys, weights)
    }

    /// The output at one query position per row: keys and values come from every position of
    /// `xs` `[b, t, c]`, the query only from `positions` (`[b]` int64), with the mask row of
    /// that query from `allowed` `[b, 1, t, t]`. Returns `[b, c]`, equal to row
    /// `positions[i]` of [`Attention::forward`].
    fn forward_at(
        &self,
        xs: &Tensor,
        positions: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (b, t, c) = xs.size3()?;
        let (nh, hd) = (self.n_head, self.head_dim);
        let (w, bias) = (&self.qkv.ws, self.qkv.bs.as_ref());
        let part =
            |from: i64, len: i64| (w.narrow(0, from, len), bias.map(|b| b.narrow(0, from, len)));
        let (w_kv, b_kv) = part(c, 2 * c);
        let kv = xs
            .linear(&w_kv, b_kv.as_ref())
            .view([b, t, 2, nh, hd])
            .permute([2, 0, 3, 1, 4]); // (2, b, nh, t, hd)
        let k = rope.apply(&kv.get(0)); // (b, nh, t, hd)
        let v = kv.get(1); // (b, nh, t, hd)
        let (w_q, b_q) = part(0, c);
        // A position outside the row is an error here, before anything reads it.
        let x_q = xs.f_gather(
            1,
            &positions.view([b, 1, 1]).expand([b, 1, c], false),
            false,
        )?; // (b, 1, c)
        let q = x_q
            .linear(&w_q, b_q.as_ref())
            .view([b, 1, nh, hd])
            .transpose(1, 2); // (b, nh, 1, hd)
        let q = rope.apply_at(&q, positions);
        let mask = allowed.gather(
            2,
            &positions.view([b, 1, 1, 1]).expand([b, 1, 1, t], false),
            false,
        ); // (b, 1, 1, t)
        let p_drop = if train { self.dropout } else { 0.0 };
        let ys = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(&mask),
            p_drop,
            false,
            None,
            false,
        ); // (b, nh, 1, hd)
        let ys = ys.reshape([b, c]); // (b, c): nh·hd in head order
        Ok(self.out.forward(&ys).dropout(p_drop, train))
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp_fc: Linear,
    mlp_proj: Linear,
    dropout: f64,
}

impl Block {
    fn new(vs: nn::Path, cfg: &GptConfig) -> Self {
        let c = cfg.d_model;
        let mlp = &vs / "mlp";
        Self {
            ln_1: LayerNorm::new(&vs / "ln_1", c),
            attn: Attention::new(&vs / "attn", cfg),
            ln_2: LayerNorm::new(&vs / "ln_2", c),
            mlp_fc: Linear::new(&mlp / 0, c, 4 * c, true),
            mlp_proj: Linear::new(&mlp / 2, 4 * c, c, true),
            dropout: cfg.dropout,
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        train: bool,
        want_weights: bool,
    ) -> (Tensor, Option<Tensor>) {
        let (a, weights) =
            self.attn
                .forward(&self.ln_1.forward(xs), rope, allowed, train, want_weights);
        let xs = xs + a;
        let h = self.mlp_fc.forward(&self.ln_2.forward(&xs)).gelu("none"); // (b, t, 4c)
        let p_drop = if train { self.dropout } else { 0.0 };
        let xs = &xs + self.mlp_proj.forward(&h).dropout(p_drop, train);
        (xs, weights)
    }

    /// The block's output at one position per row (`positions` `[b]`): `xs` `[b, t, c]` →
    /// `[b, c]`, equal to row `positions[i]` of [`Block::forward`]. Only the keys and values
    /// are computed at every position; the query, the attention output and the MLP at `b`
    /// rows instead of `b·t`.
    fn forward_at(
        &self,
        xs: &Tensor,
        positions: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (b, _, c) = xs.size3()?;
        let a = self
            .attn
            .forward_at(&self.ln_1.forward(xs), positions, rope, allowed, train)?; // (b, c)
        let index = positions.view([b, 1, 1]).expand([b, 1, c], false); // (b, 1, c)
        let xs = xs.gather(1, &index, false).view([b, c]) + a; // (b, c)
        let h = self.mlp_fc.forward(&self.ln_2.forward(&xs)).gelu("none"); // (b, 4c)
        let p_drop = if train { self.dropout } else { 0.0 };
        Ok(&xs + self.mlp_proj.forward(&h).dropout(p_drop, train))
    }
}

/// Checks non-empty int64 token ids `[…, t]` (`t ≤ max_len`) and an optional key-padding mask of
/// the same shape (`true` at PAD), and returns the `[rows, 1, t, t]` mask of allowed (query, key)
/// pairs, `rows` being the product of the leading dimensions: causal, and never a PAD key.
pub(crate) fn allowed_pairs(
    ids: &Tensor,
    key_pad: Option<&Tensor>,
    max_len: i64,
) -> Result<Tensor, ModelError> {
    let size = ids.size();
    if ids.kind() != Kind::Int64 {
        return Err(ModelError::Shape {
            what: "input ids",
            expected: "int64".into(),
            found: format!("{:?}", ids.kind()),
        });
    }
    let t = size.last().copied().unwrap_or(0);
    if t > max_len {
        return Err(ModelError::TooLong { len: t, max_len });
    }
    let rows: i64 = size[..size.len().saturating_sub(1)].iter().product();
    let causal = Tensor::ones([t, t], (Kind::Bool, ids.device())).tril(0); // (t, t)
    let allowed = match key_pad {
        Some(pad) => {
            if pad.size() != size {
                return Err(ModelError::Shape {
                    what: "key padding mask",
                    expected: format!("{size:?}"),
                    found: format!("{:?}", pad.size()),
                });
            }
            let keys = pad
                .to_kind(Kind::Bool)
                .logical_not()
                .reshape([rows, 1, 1, t]); // (rows, 1, 1, t)
            causal.view([1, 1, t, t]).logical_and(&keys) // (rows, 1, t, t)
        }
        None => causal.view([1, 1, t, t]).expand([rows, 1, t, t], false),
    };
    Ok(allowed)
}

/// What [`Gpt`]'s blocks return: the residual stream, the attention mask they used and, when
/// traced, each layer's attention weights and residual stream.
struct Trunk {
    xs: Tensor,
    allowed: Tensor,
    attention: Vec<Tensor>,
    residual: Vec<Tensor>,
}

/// What [`Gpt::forward_traced`] returns besides the logits.
#[derive(Debug)]
pub struct Trace {
    /// Logits `[b, t, v]` at every position.
    pub logits: Tensor,
    /// Attention weights of each layer, `[b, n_head, t, t]` (rows: queries, columns: keys).
    pub attention: Vec<Tensor>,
    /// The residual stream `[b, t, c]`: the embeddings, then the output of each block (so
    /// `n_layer + 1` entries), before the final LayerNorm.
    pub residual: Vec<Tensor>,
}

/// The GPT-RoPE model. Build it with [`Gpt::new`] on a [`nn::Path`] of a `VarStore`; the
/// variables are named as in the original state dict (`tok_emb.weight`,
/// `blocks.0.attn.qkv.weight`, `blocks.0.mlp.0.bias`, `ln_f.weight`, `head.weight`, …).
#[derive(Debug)]
pub struct Gpt {
    cfg: GptConfig,
    tok_emb: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Tensor,
    rope: Rope,
}

impl Gpt {
    /// Creates the variables under `vs` (initialised as the original) and the RoPE tables.
    ///
    /// # Errors
    /// [`ModelError::Config`] when `cfg` does not validate.
    pub fn new(vs: &nn::Path, cfg: &GptConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        let tok_emb = (vs / "tok_emb").var("weight", &[cfg.vocab_size, cfg.d_model], init_normal());
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::new(vs / "blocks" / i, cfg))
            .collect();
        let ln_f = LayerNorm::new(vs / "ln_f", cfg.d_model);
        let head = if cfg.tie_weights {
            tok_emb.shallow_clone()
        } else {
            (vs / "head").var("weight", &[cfg.vocab_size, cfg.d_model], init_normal())
        };
        let rope = Rope::new(cfg.head_dim(), cfg.max_len, cfg.rope_base, vs.device());
        Ok(Self {
            cfg: cfg.clone(),
            tok_emb,
            blocks,
            ln_f,
            head,
            rope,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// The token embedding matrix `E`, `[v, c]`.
    pub fn tok_emb(&self) -> &Tensor {
        &self.tok_emb
    }

    /// The output head weight `U`, `[v, c]` (its rows are the unembedding vectors).
    pub fn head_weight(&self) -> &Tensor {
        &self.head
    }

    /// Checks `ids` `[b, t]` (int64, every id in the vocabulary, `t ≤ max_len`) and `key_pad`
    /// (`[b, t]` bool), and returns the `[b, 1, t, t]` mask of allowed (query, key) pairs.
    fn attention_mask(&self, ids: &Tensor, key_pad: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let size = ids.size();
        if size.len() != 2 || size.contains(&0) {
            return Err(ModelError::Shape {
                what: "input ids",
                expected: "a non-empty [b, t]".into(),
                found: format!("{size:?}"),
            });
        }
        allowed_pairs(ids, key_pad, self.cfg.max_len)
    }

    /// Runs the first `blocks` blocks and returns the residual stream after them, `[b, t, c]`
    /// (before `ln_f`), the attention mask, and the traces when requested.
    fn trunk(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        train: bool,
        trace: bool,
        blocks: usize,
    ) -> Result<Trunk, ModelError> {
        let allowed = self.attention_mask(ids, key_pad)?;
        let p_drop = if train { self.cfg.dropout } else { 0.0 };
        let mut xs =
            Tensor::f_embedding(&self.tok_emb, ids, -1, false, false)?.dropout(p_drop, train); // (b, t, c)
        let mut attention = Vec::new();
        let mut residual = Vec::new();
        if trace {
            residual.push(xs.shallow_clone());
        }
        for block in &self.blocks[..blocks] {
            let (next, weights) = block.forward(&xs, &self.rope, &allowed, train, trace);
            xs = next;
            if trace {
                attention.extend(weights);
                residual.push(xs.shallow_clone());
            }
        }
        Ok(Trunk {
            xs,
            allowed,
            attention,
            residual,
        })
    }

    /// Logits at every position.
    ///
    /// # Arguments
    /// - `ids`: `[b, t]` int64 token ids, right-padded;
    /// - `key_pad`: optional `[b, t]` bool, `true` at PAD positions (those keys get −∞);
    /// - `train`: enables dropout.
    ///
    /// # Returns
    /// Logits `[b, t, v]`.
    ///
    /// # Errors
    /// Wrong shapes or kinds, `t > max_len`, ids outside the vocabulary.
    pub fn forward(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let all = self.blocks.len();
        let xs = self.trunk(ids, key_pad, train, false, all)?.xs;
        Ok(self.project(&xs))
    }

    /// Logits at one position per row, the only ones the last-token loss and the evaluation use.
    /// The last block computes only the keys and values at every position, and its query,
    /// attention output and MLP at the `b` read positions; the vocabulary projection (the
    /// largest matrix product of the model) is likewise computed for `b` rows instead of `b·t`.
    ///
    /// # Arguments
    /// - `ids`, `key_pad`, `train`: as in [`Gpt::forward`];
    /// - `positions`: `[b]` int64, the position to read in each row (e.g. `length − 1`).
    ///
    /// # Returns
    /// Logits `[b, v]`, equal to `forward(ids)[i, positions[i]]`.
    pub fn forward_at(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        positions: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let b = ids.size().first().copied().unwrap_or(0);
        if positions.size() != [b] || positions.kind() != Kind::Int64 {
            return Err(ModelError::Shape {
                what: "positions",
                expected: format!("[{b}] int64"),
                found: format!("{:?} {:?}", positions.size(), positions.kind()),
            });
        }
        let (last_block, earlier) = self.blocks.split_last().ok_or(ModelError::Config {
            key: "n_layer",
            reason: "the model has no blocks".into(),
        })?;
        let trunk = self.trunk(ids, key_pad, train, false, earlier.len())?;
        let last =
            last_block.forward_at(&trunk.xs, positions, &self.rope, &trunk.allowed, train)?; // (b, c)
        Ok(self.project(&last))
    }

    /// Logits plus what the analysis needs: the attention weights of every layer and the
    /// residual stream. Always without dropout.
    ///
    /// # Arguments
    /// As [`Gpt::forward`].
    ///
    /// # Returns
    /// A [`Trace`] with logits `[b, t, v]`, `n_layer` attention tensors `[b, n_head, t, t]` and
    /// `n_layer + 1` residual tensors `[b, t, c]`.
    pub fn forward_traced(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
    ) -> Result<Trace, ModelError> {
        let all = self.blocks.len();
        let trunk = self.trunk(ids, key_pad, false, true, all)?;
        Ok(Trace {
            logits: self.project(&trunk.xs),
            attention: trunk.attention,
            residual: trunk.residual,
        })
    }

    /// `ln_f` then the head: `[…, c]` → `[…, v]`.
    fn project(&self, xs: &Tensor) -> Tensor {
        // `linear` (not `matmul` with a transposed view): its backward writes the head's gradient
        // directly in the `[v, c]` layout of the weight, with no transposed copy.
        self.ln_f.forward(xs).linear::<Tensor>(&self.head, None)
    }
}

/// Mean cross-entropy of `logits` `[b, v]` against `targets` `[b]` (int64), in float32 whatever
/// the logits' dtype (the loss of the original at each sequence's last position).
pub fn last_token_loss(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        targets,
        None,
        tch::Reduction::Mean,
        -100,
        0.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, nn::VarStore};

    fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 11,
            d_model: 8,
            n_layer: 2,
            n_head: 2,
            max_len: 5,
            ..Default::default()
        }
    }

    #[test]
    fn parameter_names_and_count_match_the_original_layout() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = tiny();
        let _model = Gpt::new(&vs.root(), &cfg).unwrap();
        let vars = vs.variables();
        let mut names: Vec<_> = vars.keys().cloned().collect();
        names.sort();
        assert!(names.contains(&"tok_emb.weight".to_string()));
        assert!(names.contains(&"blocks.1.attn.qkv.bias".to_string()));
        assert!(names.contains(&"blocks.0.mlp.2.weight".to_string()));
        assert!(names.contains(&"head.weight".to_string()));
        assert_eq!(names.len(), 1 + 2 * 12 + 2 + 1);
        let total: i64 = vars.values().map(|t| t.numel() as i64).sum();
        assert_eq!(total, cfg.num_params());
        assert_eq!(vars["blocks.0.mlp.0.weight"].size(), [32, 8]);
        assert_eq!(vars["blocks.0.attn.qkv.weight"].size(), [24, 8]);
    }

    #[test]
    fn tied_head_shares_the_embedding() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = GptConfig {
            tie_weights: true,
            ..tiny()
        };
        let model = Gpt::new(&vs.root(), &cfg).unwrap();
        assert!(!vs.variables().contains_key("head.weight"));
        assert_eq!(
            vs.variables()
                .values()
                .map(|t| t.numel() as i64)
                .sum::<i64>(),
            cfg.num_params()
        );
        assert_eq!(model.head_weight().data_ptr(), model.tok_emb().data_ptr());
    }

    #[test]
    fn bad_configs_name_their_key() {
        let cases = [
            (
                GptConfig {
                    n_head: 3,
                    ..tiny()
                },
                "n_head",
            ),
            (
                GptConfig {
                    d_model: 6,
                    n_head: 2,
                    ..tiny()
                },
                "n_head",
            ),
            (
                GptConfig {
                    dropout: 1.0,
                    ..tiny()
                },
                "dropout",
            ),
            (
                GptConfig {
                    rope_base: f64::NAN,
                    ..tiny()
                },
                "rope_base",
            ),
            (
                GptConfig {
                    vocab_size: 0,
                    ..tiny()
                },
                "vocab_size",
            ),
        ];
        for (cfg, key) in cases {
            assert_eq!(cfg.validate().map_err(|e| e.key), Err(key));
            // Building the model refuses it with the same key, before any tensor exists.
            let vs = nn::VarStore::new(Device::Cpu);
            match Gpt::new(&vs.root(), &cfg) {
                Err(ModelError::Config { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let vs = VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), &tiny()).unwrap();
        let too_long = Tensor::zeros([1, 6], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            model.forward(&too_long, None, false),
            Err(ModelError::TooLong { len: 6, .. })
        ));
        let floats = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        assert!(matches!(
            model.forward(&floats, None, false),
            Err(ModelError::Shape { .. })
        ));
        let flat = Tensor::zeros([3], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            model.forward(&flat, None, false),
            Err(ModelError::Shape { .. })
        ));
        let ids = Tensor::from_slice(&[1i64, 2, 3, 4]).view([2, 2]);
        let pad = Tensor::zeros([2, 3], (Kind::Bool, Device::Cpu));
        assert!(matches!(
            model.forward(&ids, Some(&pad), false),
            Err(ModelError::Shape { .. })
        ));
        let out_of_vocab = Tensor::from_slice(&[1i64, 11]).view([1, 2]);
        assert!(model.forward(&out_of_vocab, None, false).is_err());
        let positions = Tensor::from_slice(&[0i64]);
        assert!(matches!(
            model.forward_at(&ids, None, &positions, false),
            Err(ModelError::Shape { .. })
        ));
    }

    #[test]
    fn causal_prefix_does_not_see_the_future() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), &tiny()).unwrap();
        let a = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]);
        let b = Tensor::from_slice(&[1i64, 2, 9, 7]).view([1, 4]);
        let la = model.forward(&a, None, false).unwrap();
        let lb = model.forward(&b, None, false).unwrap();
        assert!(
            la.narrow(1, 0, 2)
                .allclose(&lb.narrow(1, 0, 2), 1e-6, 1e-6, false)
        );
        assert!(
            !la.narrow(1, 2, 1)
                .allclose(&lb.narrow(1, 2, 1), 1e-6, 1e-6, false)
        );
    }

    #[test]
    fn forward_at_and_traced_agree_with_forward() {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), &tiny()).unwrap();
        let ids = Tensor::from_slice(&[3i64, 4, 5, 6, 7, 0, 8, 0, 0]).view([3, 3]);
        let pad = Tensor::from_slice(&[false, false, false, false, false, true, false, true, true])
            .view([3, 3]);
        let full = model.forward(&ids, Some(&pad), false).unwrap();
        let positions = Tensor::from_slice(&[2i64, 1, 0]);
        let at = model
            .forward_at(&ids, Some(&pad), &positions, false)
            .unwrap();
        for (row, pos) in [(0, 2), (1, 1), (2, 0)] {
            assert!(
                at.get(row)
                    .allclose(&full.get(row).get(pos), 1e-5, 1e-6, false)
            );
        }
        let trace = model.forward_traced(&ids, Some(&pad)).unwrap();
        assert!(trace.logits.allclose(&full, 1e-5, 1e-6, false));
        assert_eq!(trace.attention.len(), 2);
        assert_eq!(trace.residual.len(), 3);
        assert_eq!(trace.attention[0].size(), [3, 2, 3, 3]);
        // Rows of attention weights sum to one and never look at the future or at PAD keys.
        let sums = trace.attention[1].sum_dim_intlist(-1, false, Kind::Float);
        assert!(sums.allclose(&Tensor::ones_like(&sums), 1e-5, 1e-6, false));
        let future: f64 = trace.attention[0]
            .triu(1)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]);
        assert_eq!(future, 0.0);
        let to_pad = trace.attention[0]
            .get(2)
            .select(-1, 1)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]);
        assert_eq!(to_pad, 0.0);
    }

    #[test]
    fn dropout_only_in_training() {
        tch::manual_seed(9);
        let vs = VarStore::new(Device::Cpu);
        let model = Gpt::new(
            &vs.root(),
            &GptConfig {
                dropout: 0.5,
                ..tiny()
            },
        )
        .unwrap();
        let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
        let e1 = model.forward(&ids, None, false).unwrap();
        let e2 = model.forward(&ids, None, false).unwrap();
        assert!(e1.equal(&e2));
        let t1 = model.forward(&ids, None, true).unwrap();
        assert!(!t1.allclose(&e1, 1e-6, 1e-6, false));
    }
}
