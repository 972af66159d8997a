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
//! - [`Mode`]: training (dropout on) or evaluation.
//! - [`ensemble::GptEnsemble`]: K models of one shape as one batched computation.
//! - [`Members`]: what a trainer needs of a model of K ≥ 1 members (both models implement it).
//! - [`rope`]: the rotary embedding tables and a slow reference twin used in tests.
//! - `attention`: the head arithmetic (split, rotate, attend, merge) both models share.
//!
//! # Glossary
//! `b` batch rows, `t` sequence length, `c` model width (`d_model`), `v` vocabulary size,
//! `n_head` heads, `head_dim` = `c / n_head`, `xs` activations, `key_pad` the `[b, t]` boolean
//! mask that is `true` at PAD positions.

mod attention;
pub mod ensemble;
pub mod members;
pub mod rope;

use tch::nn::Module;
use tch::{Kind, Tensor, nn};

use attention::Heads;
pub use members::{MemberParam, Members};
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

/// How a forward pass runs: with dropout (training) or without (evaluation, analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dropout on, as configured.
    Train,
    /// Dropout off.
    Eval,
}

impl Mode {
    /// The dropout probability to apply for a configured `p`.
    pub fn dropout(self, p: f64) -> f64 {
        match self {
            Mode::Train => p,
            Mode::Eval => 0.0,
        }
    }
}

/// `N(0, 0.02)`, the GPT-2 initialisation of every Linear and Embedding weight.
pub(crate) fn init_normal() -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    }
}

/// The bound of PyTorch's `kaiming_uniform_(w, a = √5)` for a weight with `fan_in` inputs,
/// computed as `torch.nn.init` does (gain √(2 / (1 + a²)), std gain / √fan_in, bound √3 · std),
/// in the same floating-point operations, so that the bounds are the same doubles.
fn kaiming_bound(fan_in: i64) -> f64 {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a.powf(2.0))).sqrt();
    let std = gain / (fan_in as f64).sqrt();
    3f64.sqrt() * std
}

/// A linear layer named like PyTorch's (`weight`, `bias`), initialised as the original:
/// weight N(0, 0.02), bias 0.
fn linear(vs: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: init_normal(),
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(vs, in_dim, out_dim, cfg)
}

/// A LayerNorm with PyTorch's defaults (eps 1e-5, weight 1, bias 0).
fn layer_norm(vs: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(vs, vec![dim], nn::LayerNormConfig::default())
}

/// Appends `(name.weight, name.bias)` of a linear layer.
fn push_linear(out: &mut Vec<(String, Tensor)>, name: &str, l: &nn::Linear) {
    out.push((format!("{name}.weight"), l.ws.shallow_clone()));
    if let Some(bs) = &l.bs {
        out.push((format!("{name}.bias"), bs.shallow_clone()));
    }
}

/// Appends `(name.weight, name.bias)` of a LayerNorm.
fn push_norm(out: &mut Vec<(String, Tensor)>, name: &str, ln: &nn::LayerNorm) {
    for (part, t) in [("weight", &ln.ws), ("bias", &ln.bs)] {
        if let Some(t) = t {
            out.push((format!("{name}.{part}"), t.shallow_clone()));
        }
    }
}

/// Causal self-attention with rotary embeddings: `qkv` then the shared head arithmetic, then
/// `out`.
#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    out: nn::Linear,
    heads: Heads,
    dropout: f64,
}

impl Attention {
    fn new(vs: nn::Path, cfg: &GptConfig) -> Self {
        let c = cfg.d_model;
        Self {
            qkv: linear(&vs / "qkv", c, 3 * c, true),
            out: linear(&vs / "out", c, c, true),
            heads: Heads {
                n_head: cfg.n_head,
                head_dim: cfg.head_dim(),
                as_original: false,
            },
            dropout: cfg.dropout,
        }
    }

    /// `xs` `[b, t, c]` → `[b, t, c]`; `allowed` `[b, 1, t, t]`. With `weights`, the attention
    /// weights `[b, n_head, t, t]` are pushed onto it.
    fn forward(
        &self,
        xs: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        mode: Mode,
        weights: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor, ModelError> {
        let p = mode.dropout(self.dropout);
        let qkv = self.qkv.forward(xs); // (b, t, 3c)
        let ys = self.heads.attend(&qkv, rope, allowed, p, weights)?; // (b, t, c)
        Ok(self.out.forward(&ys).dropout(p, p > 0.0))
    }

    /// The output at one query position per row (`positions` `[b]`): keys and values from
    /// every position of `xs` `[b, t, c]`, the query only at `positions`. Returns `[b, c]`,
    /// equal to row `positions[i]` of [`Attention::forward`].
    fn forward_at(
        &self,
        xs: &Tensor,
        positions: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        mode: Mode,
    ) -> Result<Tensor, ModelError> {
        let c = xs.size3()?.2;
        let p = mode.dropout(self.dropout);
        let (w, bias) = (&self.qkv.ws, self.qkv.bs.as_ref());
        let part =
            |from: i64, len: i64| (w.narrow(0, from, len), bias.map(|b| b.narrow(0, from, len)));
        let (w_kv, b_kv) = part(c, 2 * c);
        let kv = xs.linear(&w_kv, b_kv.as_ref()); // (b, t, 2c)
        let (w_q, b_q) = part(0, c);
        let q = attention::gather_rows(xs, positions)?.linear(&w_q, b_q.as_ref()); // (b, c)
        let ys = self.heads.attend_at(&q, &kv, positions, rope, allowed, p)?; // (b, c)
        Ok(self.out.forward(&ys).dropout(p, p > 0.0))
    }
}

#[derive(Debug)]
struct Block {
    ln_1: nn::LayerNorm,
    attn: Attention,
    ln_2: nn::LayerNorm,
    mlp_fc: nn::Linear,
    mlp_proj: nn::Linear,
    dropout: f64,
}

impl Block {
    fn new(vs: nn::Path, cfg: &GptConfig) -> Self {
        let c = cfg.d_model;
        let mlp = &vs / "mlp";
        Self {
            ln_1: layer_norm(&vs / "ln_1", c),
            attn: Attention::new(&vs / "attn", cfg),
            ln_2: layer_norm(&vs / "ln_2", c),
            mlp_fc: linear(&mlp / 0, c, 4 * c, true),
            mlp_proj: linear(&mlp / 2, 4 * c, c, true),
            dropout: cfg.dropout,
        }
    }

    fn named(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        push_norm(out, &format!("{prefix}.ln_1"), &self.ln_1);
        push_linear(out, &format!("{prefix}.attn.qkv"), &self.attn.qkv);
        push_linear(out, &format!("{prefix}.attn.out"), &self.attn.out);
        push_norm(out, &format!("{prefix}.ln_2"), &self.ln_2);
        push_linear(out, &format!("{prefix}.mlp.0"), &self.mlp_fc);
        push_linear(out, &format!("{prefix}.mlp.2"), &self.mlp_proj);
    }

    /// The MLP half of the block on the residual stream `xs` (any leading shape).
    fn mlp(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let p = mode.dropout(self.dropout);
        let h = self.mlp_fc.forward(&self.ln_2.forward(xs)).gelu("none"); // (…, 4c)
        xs + self.mlp_proj.forward(&h).dropout(p, p > 0.0)
    }

    fn forward(
        &self,
        xs: &Tensor,
        rope: &Rope,
        allowed: &Tensor,
        mode: Mode,
        weights: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor, ModelError> {
        let a = self
            .attn
            .forward(&self.ln_1.forward(xs), rope, allowed, mode, weights)?;
        Ok(self.mlp(&(xs + a), mode))
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
        mode: Mode,
    ) -> Result<Tensor, ModelError> {
        let a = self
            .attn
            .forward_at(&self.ln_1.forward(xs), positions, rope, allowed, mode)?; // (b, c)
        let xs = attention::gather_rows(xs, positions)? + a; // (b, c)
        Ok(self.mlp(&xs, mode))
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
    ln_f: nn::LayerNorm,
    head: Tensor,
    rope: Rope,
    /// Computes as the original (see [`Gpt::compute_as_original`]).
    as_original: bool,
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
        let ln_f = layer_norm(vs / "ln_f", cfg.d_model);
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
            as_original: false,
        })
    }

    /// Draws every parameter again as the original's `GPT2LikeEncoder` constructor does, from
    /// libtorch's default CPU generator (seed it first with `tch::manual_seed`): the same calls
    /// on tensors of the same shapes in the same order give the original's initial weights bit
    /// for bit, whatever the model's device.
    ///
    /// The order is the original's module order, twice. First each module's own initialiser as
    /// it is constructed: `tok_emb` N(0, 1) (`nn.Embedding`); per block `attn.qkv`,
    /// `attn.out`, `mlp.0`, `mlp.2` (`nn.Linear`: weight `kaiming_uniform_(a = √5)`, i.e.
    /// U(±1/√fan_in), then bias U(±1/√fan_in)); the LayerNorms ones and zeros; `head` (weight
    /// only). Then the original's `_init` pass over the modules (`apply`, children first in
    /// registration order): every Linear and Embedding weight N(0, 0.02), biases 0, LayerNorms
    /// 1 and 0. The first draws are overwritten but advance the generator as the original's do.
    /// The RoPE tables and the causal mask draw nothing.
    ///
    /// # Errors
    /// [`ModelError::Config`] for a model with a tied head (the original's is untied);
    /// [`ModelError::Torch`] when libtorch fails.
    pub fn init_as_original(&self) -> Result<(), ModelError> {
        if self.cfg.tie_weights {
            return Err(ModelError::Config {
                key: "tie_weights",
                reason: "must be false to initialise as the original, whose head is untied".into(),
            });
        }
        let cpu = |t: &Tensor| Tensor::empty(t.size(), (Kind::Float, tch::Device::Cpu));
        // Every Linear of the blocks in module order: its weight and bias.
        let mut linears: Vec<(&Tensor, Option<&Tensor>)> = Vec::new();
        for block in &self.blocks {
            for l in [
                &block.attn.qkv,
                &block.attn.out,
                &block.mlp_fc,
                &block.mlp_proj,
            ] {
                linears.push((&l.ws, l.bs.as_ref()));
            }
        }
        let mut tok = cpu(&self.tok_emb);
        let mut drawn: Vec<(Tensor, Option<Tensor>)> = Vec::with_capacity(linears.len());
        let mut head = cpu(&self.head);
        tch::no_grad(|| -> Result<(), ModelError> {
            // Construction: nn.Embedding, then each block's Linears, then the head.
            let _ = tok.f_normal_(0.0, 1.0)?;
            for (w, b) in &linears {
                let fan_in = w.size()[1];
                let mut dw = cpu(w);
                let _ = dw.f_uniform_(-kaiming_bound(fan_in), kaiming_bound(fan_in))?;
                let db = match b {
                    Some(b) => {
                        let mut db = cpu(b);
                        let bound = 1.0 / (fan_in as f64).sqrt();
                        let _ = db.f_uniform_(-bound, bound)?;
                        Some(db)
                    }
                    None => None,
                };
                drawn.push((dw, db));
            }
            let fan_in = head.size()[1];
            let _ = head.f_uniform_(-kaiming_bound(fan_in), kaiming_bound(fan_in))?;
            // The `_init` pass, in the same module order.
            let _ = tok.f_normal_(0.0, 0.02)?;
            for (dw, db) in &mut drawn {
                let _ = dw.f_normal_(0.0, 0.02)?;
                if let Some(db) = db {
                    let _ = db.f_zero_()?;
                }
            }
            let _ = head.f_normal_(0.0, 0.02)?;
            // Into the parameters.
            let into = |dst: &Tensor, src: &Tensor| -> Result<(), ModelError> {
                dst.shallow_clone().f_copy_(src)?;
                Ok(())
            };
            into(&self.tok_emb, &tok)?;
            for ((w, b), (dw, db)) in linears.iter().zip(&drawn) {
                into(w, dw)?;
                if let (Some(b), Some(db)) = (b, db) {
                    into(b, db)?;
                }
            }
            into(&self.head, &head)?;
            let norms = self
                .blocks
                .iter()
                .flat_map(|b| [&b.ln_1, &b.ln_2])
                .chain([&self.ln_f]);
            for ln in norms {
                if let Some(w) = &ln.ws {
                    let _ = w.shallow_clone().f_fill_(1.0)?;
                }
                if let Some(b) = &ln.bs {
                    let _ = b.shallow_clone().f_zero_()?;
                }
            }
            Ok(())
        })
    }

    /// From now on computes as the original's model does, operation for operation, so that the
    /// same weights give the same numbers and dropout draws the same masks:
    /// - the RoPE tables computed as the original's `RotaryEmbedding` computes them, in float32
    ///   tensor operations ([`Rope::as_original`]) instead of in f64;
    /// - attention in the original's operations (`Heads::as_original`: explicit scores,
    ///   division by √head_dim, softmax, dropout on the weights) instead of the fused kernel;
    /// - [`Gpt::forward_at`] runs every position through every block and the head (as
    ///   [`Gpt::forward`]) and then reads the requested positions, instead of computing the last
    ///   block only where the answer is read.
    ///
    /// Slower (the last block and the head at every position); what `rng = "torch"` runs.
    pub fn compute_as_original(&mut self) {
        self.rope = Rope::as_original(
            self.cfg.head_dim(),
            self.cfg.max_len,
            self.cfg.rope_base,
            self.tok_emb.device(),
        );
        for block in &mut self.blocks {
            block.attn.heads.as_original = true;
        }
        self.as_original = true;
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

    /// Every trainable tensor under its state-dict name (relative to the path the model was
    /// built on), sorted by name; shallow clones sharing storage.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("tok_emb.weight".to_string(), self.tok_emb.shallow_clone())];
        for (i, block) in self.blocks.iter().enumerate() {
            block.named(&format!("blocks.{i}"), &mut out);
        }
        push_norm(&mut out, "ln_f", &self.ln_f);
        if !self.cfg.tie_weights {
            out.push(("head.weight".to_string(), self.head.shallow_clone()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Checks `ids` `[b, t]` (int64, `t ≤ max_len`) and `key_pad` (`[b, t]` bool), and returns
    /// the `[b, 1, t, t]` mask of allowed (query, key) pairs.
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

    /// The embeddings `[b, t, c]` of `ids` (an id outside the vocabulary is an error).
    fn embed(&self, ids: &Tensor, mode: Mode) -> Result<Tensor, ModelError> {
        let p = mode.dropout(self.cfg.dropout);
        Ok(Tensor::f_embedding(&self.tok_emb, ids, -1, false, false)?.dropout(p, p > 0.0))
    }

    /// Logits at every position.
    ///
    /// # Arguments
    /// - `ids`: `[b, t]` int64 token ids, right-padded;
    /// - `key_pad`: optional `[b, t]` bool, `true` at PAD positions (those keys get −∞);
    /// - `mode`: [`Mode::Train`] enables dropout.
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
        mode: Mode,
    ) -> Result<Tensor, ModelError> {
        let allowed = self.attention_mask(ids, key_pad)?;
        let mut xs = self.embed(ids, mode)?; // (b, t, c)
        for block in &self.blocks {
            xs = block.forward(&xs, &self.rope, &allowed, mode, None)?;
        }
        Ok(self.project(&xs))
    }

    /// Logits at one position per row, the only ones the last-token loss and the evaluation use.
    /// The last block computes only the keys and values at every position, and its query,
    /// attention output and MLP at the `b` read positions; the vocabulary projection (the
    /// largest matrix product of the model) is likewise computed for `b` rows instead of `b·t`.
    ///
    /// # Arguments
    /// - `ids`, `key_pad`, `mode`: as in [`Gpt::forward`];
    /// - `positions`: `[b]` int64, the position to read in each row (e.g. `length − 1`).
    ///
    /// # Returns
    /// Logits `[b, v]`, equal to `forward(ids)[i, positions[i]]`.
    ///
    /// # Errors
    /// As [`Gpt::forward`], and `positions` of the wrong shape or outside their rows.
    pub fn forward_at(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<Tensor, ModelError> {
        let b = ids.size().first().copied().unwrap_or(0);
        if positions.size() != [b] || positions.kind() != Kind::Int64 {
            return Err(ModelError::Shape {
                what: "positions",
                expected: format!("[{b}] int64"),
                found: format!("{:?} {:?}", positions.size(), positions.kind()),
            });
        }
        if self.as_original {
            // The original's order: every position through the head, then the read positions.
            let logits = self.forward(ids, key_pad, mode)?; // (b, t, v)
            let v = logits.size3()?.2;
            let index = positions.view([b, 1, 1]).expand([b, 1, v], false); // (b, 1, v)
            return Ok(logits.f_gather(1, &index, false)?.view([b, v]));
        }
        let (last, earlier) = self.blocks.split_last().ok_or(ModelError::Config {
            key: "n_layer",
            reason: "the model has no blocks".into(),
        })?;
        let allowed = self.attention_mask(ids, key_pad)?;
        let mut xs = self.embed(ids, mode)?; // (b, t, c)
        for block in earlier {
            xs = block.forward(&xs, &self.rope, &allowed, mode, None)?;
        }
        let xs = last.forward_at(&xs, positions, &self.rope, &allowed, mode)?; // (b, c)
        Ok(self.project(&xs))
    }

    /// Logits plus what the analysis needs: the attention weights of every layer and the
    /// residual stream. Always without dropout.
    ///
    /// # Arguments
    /// `ids`, `key_pad`: as in [`Gpt::forward`].
    ///
    /// # Returns
    /// A [`Trace`] with logits `[b, t, v]`, `n_layer` attention tensors `[b, n_head, t, t]` and
    /// `n_layer + 1` residual tensors `[b, t, c]`.
    pub fn forward_traced(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
    ) -> Result<Trace, ModelError> {
        let allowed = self.attention_mask(ids, key_pad)?;
        let mut xs = self.embed(ids, Mode::Eval)?; // (b, t, c)
        let mut attention = Vec::with_capacity(self.blocks.len());
        let mut residual = vec![xs.shallow_clone()];
        for block in &self.blocks {
            xs = block.forward(&xs, &self.rope, &allowed, Mode::Eval, Some(&mut attention))?;
            residual.push(xs.shallow_clone());
        }
        Ok(Trace {
            logits: self.project(&xs),
            attention,
            residual,
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
            model.forward(&too_long, None, Mode::Eval),
            Err(ModelError::TooLong { len: 6, .. })
        ));
        let floats = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        assert!(matches!(
            model.forward(&floats, None, Mode::Eval),
            Err(ModelError::Shape { .. })
        ));
        let flat = Tensor::zeros([3], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            model.forward(&flat, None, Mode::Eval),
            Err(ModelError::Shape { .. })
        ));
        let ids = Tensor::from_slice(&[1i64, 2, 3, 4]).view([2, 2]);
        let pad = Tensor::zeros([2, 3], (Kind::Bool, Device::Cpu));
        assert!(matches!(
            model.forward(&ids, Some(&pad), Mode::Eval),
            Err(ModelError::Shape { .. })
        ));
        let out_of_vocab = Tensor::from_slice(&[1i64, 11]).view([1, 2]);
        assert!(model.forward(&out_of_vocab, None, Mode::Eval).is_err());
        let positions = Tensor::from_slice(&[0i64]);
        assert!(matches!(
            model.forward_at(&ids, None, &positions, Mode::Eval),
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
        let la = model.forward(&a, None, Mode::Eval).unwrap();
        let lb = model.forward(&b, None, Mode::Eval).unwrap();
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
        let full = model.forward(&ids, Some(&pad), Mode::Eval).unwrap();
        let positions = Tensor::from_slice(&[2i64, 1, 0]);
        let at = model
            .forward_at(&ids, Some(&pad), &positions, Mode::Eval)
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
        let e1 = model.forward(&ids, None, Mode::Eval).unwrap();
        let e2 = model.forward(&ids, None, Mode::Eval).unwrap();
        assert!(e1.equal(&e2));
        let t1 = model.forward(&ids, None, Mode::Train).unwrap();
        assert!(!t1.allclose(&e1, 1e-6, 1e-6, false));
    }
}
