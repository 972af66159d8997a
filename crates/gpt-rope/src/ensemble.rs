//! K independent [`Gpt`] models of one shape as one batched computation.
//!
//! A sweep of small runs (seeds, learning rates, weight decays) leaves a CPU's vector units or a
//! GPU mostly idle when each model runs alone: per-operation overheads dominate the transformer
//! blocks of a model this small. [`GptEnsemble`] stacks the members' block parameters along a
//! leading dimension and runs the blocks of all members together, so each of those operations is
//! launched once for all members:
//!
//! - every block and final-LayerNorm parameter of [`Gpt`] gets a leading `K` dimension under the
//!   same name (`blocks.0.attn.qkv.weight` `[K, 3C, C]`, `ln_f.bias` `[K, C]`, …); linear layers
//!   are batched matrix products (`baddbmm` with each member's bias); LayerNorm normalises
//!   without affine parameters and then applies each member's scale and shift;
//! - attention folds the members into the batch (`[K·B, n_head, T, head_dim]`) and uses the same
//!   rotate-half [`Rope`] tables as [`Gpt`];
//! - the vocabulary-sized tables (`tok_emb.weight` and `head.weight`, `[V, C]`, most of the
//!   parameters) stay one tensor per member, used by the same `embedding` and `linear` calls as
//!   [`Gpt`]: their work grows with `K` anyway, and separate tables let every backward pass write
//!   each member's gradient in place, where stacked tables would cost a copy of all `K` tables
//!   (or of the logits) at every step;
//! - [`Members::forward_at_members`] computes the last block and the projection at one
//!   position per row only, as [`Gpt::forward_at`], and returns each member's logits as its own
//!   tensor.
//!
//! Members never mix: member `k`'s logits depend only on member `k`'s parameters and inputs, so
//! a loss that is a sum of per-member losses gives each member the gradient it would get alone.
//! [`Members::member_params`] gives member `k`'s view of every parameter (value and gradient)
//! under the names and shapes of a single [`Gpt`]; [`Members::member_state`] and
//! [`Members::load_member`] convert a member to and from a [`Gpt`] parameter list, so a member
//! can be saved as a normal checkpoint and loaded into [`Gpt`].
//!
//! Dropout, when the configuration has some, draws its masks from libtorch's global generator
//! for all members at once: each member gets independent masks, but not the masks its separate
//! run would draw.

use tch::{Device, Kind, Tensor, nn};

use crate::attention::{self, Heads};
use crate::{Gpt, GptConfig, MemberParam, Members, Mode, ModelError, Rope, init_normal};

/// A batched linear layer: `K` weights `[K, out, in]` and optional biases `[K, out]`.
#[derive(Debug)]
struct Linear {
    ws: Tensor,
    bs: Option<Tensor>,
}

impl Linear {
    fn new(vs: nn::Path, k: i64, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let ws = vs.var("weight", &[k, out_dim, in_dim], init_normal());
        let bs = bias.then(|| vs.var("bias", &[k, out_dim], nn::Init::Const(0.0)));
        Self { ws, bs }
    }

    /// `xs` `[K, n, in]` → `[K, n, out]`.
    fn forward(&self, xs: &Tensor) -> Tensor {
        let out = self.ws.size()[1];
        self.forward_part(xs, 0, out)
    }

    /// Output features `from..from + len` only: `xs` `[K, n, in]` → `[K, n, len]`.
    fn forward_part(&self, xs: &Tensor, from: i64, len: i64) -> Tensor {
        let wt = self.ws.narrow(1, from, len).transpose(1, 2); // (K, in, len)
        match &self.bs {
            Some(bs) => bs
                .narrow(1, from, len)
                .unsqueeze(1)
                .baddbmm(xs, &wt, 1.0, 1.0), // (K, n, len)
            None => xs.bmm(&wt), // (K, n, len)
        }
    }
}

/// A batched LayerNorm: weights and biases `[K, C]`.
#[derive(Debug)]
struct LayerNorm {
    ws: Tensor,
    bs: Tensor,
    dim: i64,
}

impl LayerNorm {
    fn new(vs: nn::Path, k: i64, dim: i64) -> Self {
        let ws = vs.var("weight", &[k, dim], nn::Init::Const(1.0));
        let bs = vs.var("bias", &[k, dim], nn::Init::Const(0.0));
        Self { ws, bs, dim }
    }

    /// `xs` `[K, n, C]` → `[K, n, C]`.
    fn forward(&self, xs: &Tensor) -> Tensor {
        // eps 1e-5 as torch.nn.LayerNorm; the affine part is per member, so it is applied after.
        let normed = xs.layer_norm([self.dim], None::<&Tensor>, None::<&Tensor>, 1e-5, true);
        normed * self.ws.unsqueeze(1) + self.bs.unsqueeze(1)
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    qkv: Linear,
    out: Linear,
    ln_2: LayerNorm,
    mlp_fc: Linear,
    mlp_proj: Linear,
}

impl Block {
    fn new(vs: nn::Path, k: i64, c: i64) -> Self {
        let attn = &vs / "attn";
        let mlp = &vs / "mlp";
        Self {
            ln_1: LayerNorm::new(&vs / "ln_1", k, c),
            qkv: Linear::new(&attn / "qkv", k, c, 3 * c, true),
            out: Linear::new(&attn / "out", k, c, c, true),
            ln_2: LayerNorm::new(&vs / "ln_2", k, c),
            mlp_fc: Linear::new(&mlp / 0, k, c, 4 * c, true),
            mlp_proj: Linear::new(&mlp / 2, k, 4 * c, c, true),
        }
    }

    /// The MLP half of the block on the residual stream `xs` `[K, n, c]`, with dropout `p`.
    fn mlp(&self, xs: &Tensor, p: f64) -> Tensor {
        let h = self.mlp_fc.forward(&self.ln_2.forward(xs)).gelu("none"); // (K, n, 4c)
        xs + self.mlp_proj.forward(&h).dropout(p, p > 0.0)
    }
}

/// K models of one [`GptConfig`] with their own weights, run as one batched computation.
///
/// Build it with [`GptEnsemble::new`] (fresh weights drawn from the global generator) or
/// [`GptEnsemble::from_seeds`] (member `k` equal to `Gpt::new` under `tch::manual_seed(seed_k)`).
#[derive(Debug)]
pub struct GptEnsemble {
    cfg: GptConfig,
    members: i64,
    /// One `[V, C]` token-embedding table per member.
    tok_emb: Vec<Tensor>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// One `[V, C]` output head per member (the embedding tables themselves when tied).
    head: Vec<Tensor>,
    rope: Rope,
    heads: Heads,
    /// The stacked `[K, …]` parameters by their [`Gpt`] name, sorted by name.
    stacked: Vec<(String, Tensor)>,
}

impl GptEnsemble {
    /// Creates the variables under `vs`, each member initialised as [`Gpt::new`] would
    /// (N(0, 0.02) weights, zero biases, unit LayerNorm scales) from the global generator.
    ///
    /// # Errors
    /// [`ModelError::Config`] when `cfg` does not validate or `members < 1`.
    pub fn new(vs: &nn::Path, cfg: &GptConfig, members: i64) -> Result<Self, ModelError> {
        cfg.validate()?;
        if members < 1 {
            return Err(ModelError::Config {
                key: "members",
                reason: format!("an ensemble needs at least one member, got {members}"),
            });
        }
        let (k, v, c) = (members, cfg.vocab_size, cfg.d_model);
        let table = |name: &str, m: i64| (vs / name / m).var("weight", &[v, c], init_normal());
        let tok_emb: Vec<Tensor> = (0..k).map(|m| table("tok_emb", m)).collect();
        let blocks: Vec<Block> = (0..cfg.n_layer)
            .map(|i| Block::new(vs / "blocks" / i, k, c))
            .collect();
        let ln_f = LayerNorm::new(vs / "ln_f", k, c);
        let head = if cfg.tie_weights {
            tok_emb.iter().map(Tensor::shallow_clone).collect()
        } else {
            (0..k).map(|m| table("head", m)).collect()
        };
        let rope = Rope::new(cfg.head_dim(), cfg.max_len, cfg.rope_base, vs.device());
        let mut stacked = Vec::new();
        let mut push_linear = |name: String, l: &Linear| {
            stacked.push((format!("{name}.weight"), l.ws.shallow_clone()));
            if let Some(bs) = &l.bs {
                stacked.push((format!("{name}.bias"), bs.shallow_clone()));
            }
        };
        for (i, block) in blocks.iter().enumerate() {
            push_linear(format!("blocks.{i}.attn.qkv"), &block.qkv);
            push_linear(format!("blocks.{i}.attn.out"), &block.out);
            push_linear(format!("blocks.{i}.mlp.0"), &block.mlp_fc);
            push_linear(format!("blocks.{i}.mlp.2"), &block.mlp_proj);
        }
        let mut push_norm = |name: String, ln: &LayerNorm| {
            stacked.push((format!("{name}.weight"), ln.ws.shallow_clone()));
            stacked.push((format!("{name}.bias"), ln.bs.shallow_clone()));
        };
        for (i, block) in blocks.iter().enumerate() {
            push_norm(format!("blocks.{i}.ln_1"), &block.ln_1);
            push_norm(format!("blocks.{i}.ln_2"), &block.ln_2);
        }
        push_norm("ln_f".to_string(), &ln_f);
        stacked.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            cfg: cfg.clone(),
            members,
            tok_emb,
            blocks,
            ln_f,
            head,
            rope,
            heads: Heads {
                n_head: cfg.n_head,
                head_dim: cfg.head_dim(),
                as_original: false,
            },
            stacked,
        })
    }

    /// An ensemble of `seeds.len()` members where member `k` holds exactly the weights
    /// `Gpt::new` creates after `tch::manual_seed(seeds[k])` (each member is built as a
    /// temporary [`Gpt`] on the same device and copied in). Leaves the global generator seeded
    /// by the last member's construction.
    ///
    /// # Errors
    /// As [`GptEnsemble::new`]; [`ModelError::Config`] when `seeds` is empty.
    pub fn from_seeds(vs: &nn::Path, cfg: &GptConfig, seeds: &[u64]) -> Result<Self, ModelError> {
        let ensemble = Self::new(vs, cfg, seeds.len() as i64)?;
        for (k, &seed) in seeds.iter().enumerate() {
            tch::manual_seed(seed as i64);
            let member_vs = nn::VarStore::new(vs.device());
            let member = Gpt::new(&member_vs.root(), cfg)?;
            ensemble.load_member(k as i64, &member.named_parameters())?;
        }
        Ok(ensemble)
    }

    fn check_member(&self, k: i64) -> Result<(), ModelError> {
        if (0..self.members).contains(&k) {
            Ok(())
        } else {
            Err(ModelError::Shape {
                what: "member index",
                expected: format!("0..{}", self.members),
                found: k.to_string(),
            })
        }
    }

    /// Checks `ids` `[K, b, t]` and `key_pad`, returns `(b, t)` and the `[K·b, 1, t, t]` mask of
    /// allowed (query, key) pairs.
    fn attention_mask(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
    ) -> Result<(i64, i64, Tensor), ModelError> {
        let size = ids.size();
        let [k, b, t] = size[..] else {
            return Err(ModelError::Shape {
                what: "input ids",
                expected: format!("[{}, b, t]", self.members),
                found: format!("{size:?}"),
            });
        };
        if k != self.members || b == 0 || t == 0 {
            return Err(ModelError::Shape {
                what: "input ids",
                expected: format!("a non-empty [{}, b, t]", self.members),
                found: format!("{size:?}"),
            });
        }
        let allowed = crate::allowed_pairs(ids, key_pad, self.cfg.max_len)?; // (K·b, 1, t, t)
        Ok((b, t, allowed))
    }

    /// Runs the first `blocks` blocks; returns `(b, t)`, the residual stream after them,
    /// `[K, b·t, c]`, and the `[K·b, 1, t, t]` attention mask.
    fn trunk(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        mode: Mode,
        blocks: usize,
    ) -> Result<(i64, i64, Tensor, Tensor), ModelError> {
        let (b, t, allowed) = self.attention_mask(ids, key_pad)?;
        let (k, c) = (self.members, self.cfg.d_model);
        let p = mode.dropout(self.cfg.dropout);
        let embedded = self
            .tok_emb
            .iter()
            .zip(ids.unbind(0))
            .map(|(table, member_ids)| {
                Tensor::f_embedding(table, &member_ids.reshape([b * t]), -1, false, false)
            })
            .collect::<Result<Vec<_>, _>>()?; // K × (b·t, c)
        let mut xs = Tensor::stack(&embedded, 0).dropout(p, p > 0.0); // (K, b·t, c)
        for block in &self.blocks[..blocks] {
            let qkv = block.qkv.forward(&block.ln_1.forward(&xs)); // (K, b·t, 3c)
            let ys =
                self.heads
                    .attend(&qkv.view([k * b, t, 3 * c]), &self.rope, &allowed, p, None)?; // (K·b, t, c)
            let ys = ys.view([k, b * t, c]); // (K, b·t, c)
            xs = &xs + block.out.forward(&ys).dropout(p, p > 0.0);
            xs = block.mlp(&xs, p);
        }
        Ok((b, t, xs, allowed))
    }

    /// The last block at one position per row: `xs` `[K, b·t, c]` (the residual stream before
    /// it), `positions` `[K, b]` → `[K, b, c]`. Keys and values are computed at every position;
    /// the query, the attention output and the MLP only at the read positions (as
    /// [`Gpt::forward_at`]).
    fn last_block_at(
        &self,
        block: &Block,
        xs: &Tensor,
        allowed: &Tensor,
        positions: &Tensor,
        (b, t): (i64, i64),
        mode: Mode,
    ) -> Result<Tensor, ModelError> {
        let (k, c) = (self.members, self.cfg.d_model);
        let p = mode.dropout(self.cfg.dropout);
        // Each of the K·b rows reads its own position, as in `Gpt::forward_at`; a position
        // outside its row is an error here.
        let flat_positions = positions.reshape([k * b]); // (K·b)
        let at = |ys: &Tensor| -> Result<Tensor, ModelError> {
            Ok(
                attention::gather_rows(&ys.reshape([k * b, t, c]), &flat_positions)?
                    .view([k, b, c]),
            ) // (K, b, c)
        };
        let normed = block.ln_1.forward(xs); // (K, b·t, c)
        let kv = block.qkv.forward_part(&normed, c, 2 * c); // (K, b·t, 2c)
        let q = block.qkv.forward_part(&at(&normed)?, 0, c); // (K, b, c)
        let ys = self.heads.attend_at(
            &q,
            &kv.view([k * b, t, 2 * c]),
            &flat_positions,
            &self.rope,
            allowed,
            p,
        )?; // (K·b, c)
        let ys = ys.view([k, b, c]); // (K, b, c)
        let xs = at(xs)? + block.out.forward(&ys).dropout(p, p > 0.0); // (K, b, c)
        Ok(block.mlp(&xs, p))
    }

    /// `ln_f` for all members, then each member's head: `[K, n, c]` → K × `[n, v]`.
    fn project(&self, xs: &Tensor) -> Vec<Tensor> {
        self.ln_f
            .forward(xs)
            .unbind(0)
            .iter()
            .zip(&self.head)
            .map(|(x, head)| x.linear::<Tensor>(head, None)) // (n, v)
            .collect()
    }

    /// Logits at every position of every member.
    ///
    /// # Arguments
    /// - `ids`: `[K, b, t]` int64 token ids, right-padded (member `k` reads `ids[k]`);
    /// - `key_pad`: optional `[K, b, t]` bool, `true` at PAD positions;
    /// - `mode`: [`Mode::Train`] enables dropout.
    ///
    /// # Returns
    /// Logits `[K, b, t, v]`; `[k]` equals member `k` as a [`Gpt`] on `ids[k]`.
    ///
    /// # Errors
    /// Wrong shapes or kinds, `t > max_len`, ids outside the vocabulary.
    pub fn forward(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor, ModelError> {
        let (b, t, xs, _) = self.trunk(ids, key_pad, mode, self.blocks.len())?;
        Ok(Tensor::stack(&self.project(&xs), 0).reshape([self.members, b, t, self.cfg.vocab_size]))
    }

    /// [`Members::forward_at_members`] stacked into one `[K, b, v]` tensor.
    ///
    /// # Errors
    /// As [`Members::forward_at_members`].
    pub fn forward_at(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<Tensor, ModelError> {
        Ok(Tensor::stack(
            &self.forward_at_members(ids, key_pad, positions, mode)?,
            0,
        ))
    }
}

impl Members for GptEnsemble {
    fn members(&self) -> i64 {
        self.members
    }

    fn config(&self) -> &GptConfig {
        &self.cfg
    }

    fn device(&self) -> Device {
        self.ln_f.ws.device()
    }

    fn forward_at_members(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<Vec<Tensor>, ModelError> {
        let size = ids.size();
        let (k, b) = (self.members, size.get(1).copied().unwrap_or(0));
        if positions.size() != [k, b] || positions.kind() != Kind::Int64 {
            return Err(ModelError::Shape {
                what: "positions",
                expected: format!("[{k}, {b}] int64"),
                found: format!("{:?} {:?}", positions.size(), positions.kind()),
            });
        }
        let (last_block, earlier) = self.blocks.split_last().ok_or(ModelError::Config {
            key: "n_layer",
            reason: "the model has no blocks".into(),
        })?;
        let (b, t, xs, allowed) = self.trunk(ids, key_pad, mode, earlier.len())?;
        let last = self.last_block_at(last_block, &xs, &allowed, positions, (b, t), mode)?; // (K, b, c)
        Ok(self.project(&last))
    }

    fn member_params(&self, k: i64) -> Result<Vec<MemberParam>, ModelError> {
        self.check_member(k)?;
        let m = k as usize;
        let mut out: Vec<MemberParam> = self
            .stacked
            .iter()
            .map(|(n, t)| MemberParam::row(n.as_str(), t, k))
            .collect();
        out.push(MemberParam::own("tok_emb.weight", &self.tok_emb[m]));
        if !self.cfg.tie_weights {
            out.push(MemberParam::own("head.weight", &self.head[m]));
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }
}

/// Per-member mean cross-entropy of each member's `logits` `[b, v]` against its row of
/// `targets` `[K, b]` (int64), in float32: returns `[K]`. Its sum is the loss whose gradient
/// gives every member the gradient of its own [`crate::last_token_loss`].
pub fn member_losses(logits: &[Tensor], targets: &Tensor) -> Tensor {
    let losses: Vec<Tensor> = logits
        .iter()
        .zip(targets.unbind(0))
        .map(|(l, t)| crate::last_token_loss(l, &t))
        .collect();
    Tensor::stack(&losses, 0) // (K)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 13,
            d_model: 8,
            n_layer: 2,
            n_head: 2,
            max_len: 5,
            ..Default::default()
        }
    }

    #[test]
    fn parameters_have_a_leading_member_dimension_and_gpt_names() {
        let vs = VarStore::new(Device::Cpu);
        let ens = GptEnsemble::new(&vs.root(), &tiny(), 3).unwrap();
        let single = VarStore::new(Device::Cpu);
        let _gpt = Gpt::new(&single.root(), &tiny()).unwrap();
        let gpt_vars = single.variables();
        for k in 0..3 {
            let member = ens.member_params(k).unwrap();
            assert_eq!(member.len(), gpt_vars.len());
            for p in &member {
                assert_eq!(p.value().size(), gpt_vars[p.name()].size(), "{}", p.name());
            }
        }
        // Stacked leaves carry a leading member dimension; the vocabulary tables are each
        // member's own (untied: one embedding and one head per member).
        let (mut total, mut own) = (0i64, 0);
        for k in 0..3 {
            for p in ens.member_params(k).unwrap() {
                let single = gpt_vars[p.name()].size();
                if p.is_row() {
                    let mut want = vec![3];
                    want.extend(&single);
                    assert_eq!(p.leaf().size(), want, "{}", p.name());
                    if k == 0 {
                        total += p.leaf().numel() as i64;
                    }
                } else {
                    assert_eq!(p.leaf().size(), single, "{}", p.name());
                    total += p.leaf().numel() as i64;
                    own += 1;
                }
            }
        }
        assert_eq!(own, 6);
        assert_eq!(total, 3 * tiny().num_params());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let vs = VarStore::new(Device::Cpu);
        let ens = GptEnsemble::new(&vs.root(), &tiny(), 2).unwrap();
        let wrong_k = Tensor::zeros([3, 1, 2], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            ens.forward(&wrong_k, None, Mode::Eval),
            Err(ModelError::Shape { .. })
        ));
        let too_long = Tensor::zeros([2, 1, 6], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            ens.forward(&too_long, None, Mode::Eval),
            Err(ModelError::TooLong { len: 6, .. })
        ));
        // Id 13 is one past member 0's vocabulary: an error, not member 1's first row.
        let out_of_vocab = Tensor::from_slice(&[1i64, 13, 1, 2]).view([2, 1, 2]);
        assert!(ens.forward(&out_of_vocab, None, Mode::Eval).is_err());
        assert!(ens.member_state(2).is_err());
        assert!(ens.member_params(-1).is_err());
        assert!(GptEnsemble::new(&vs.root(), &tiny(), 0).is_err());
    }
}
