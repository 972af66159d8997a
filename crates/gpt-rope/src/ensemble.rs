//! K independent [`Gpt`] models of one shape as one batched computation.
//!
//! A sweep of small runs (seeds, learning rates, weight decays) leaves a CPU's vector units or a
//! GPU mostly idle when each model runs alone: per-operation overheads dominate a model this
//! small. [`GptEnsemble`] stacks the K members' parameters along a leading dimension and runs
//! them together, so every operation of a step is launched once for all members:
//!
//! - every parameter of [`Gpt`] gets a leading `K` dimension under the same name
//!   (`tok_emb.weight` `[K, V, C]`, `blocks.0.attn.qkv.weight` `[K, 3C, C]`, `ln_f.bias`
//!   `[K, C]`, …);
//! - the embedding is a per-member gather; linear layers are batched matrix products
//!   (`baddbmm` with each member's bias); LayerNorm normalises without affine parameters and
//!   then applies each member's scale and shift;
//! - attention folds the members into the batch (`[K·B, n_head, T, head_dim]`) and uses the same
//!   rotate-half [`Rope`] tables as [`Gpt`];
//! - [`GptEnsemble::forward_at`] projects one position per row, as [`Gpt::forward_at`].
//!
//! Members never mix: member `k`'s logits depend only on member `k`'s parameters and inputs, so
//! a loss that is a sum of per-member losses gives each member the gradient it would get alone.
//! [`GptEnsemble::member_state`] and [`GptEnsemble::load_member`] convert a member to and from
//! the parameter list of a single [`Gpt`] (same names and shapes), so a member can be saved as a
//! normal checkpoint and loaded into [`Gpt`].
//!
//! Dropout, when the configuration has some, draws its masks from libtorch's global generator
//! for all members at once: each member gets independent masks, but not the masks its separate
//! run would draw.

use crate::init_normal;
use tch::{Device, Kind, Tensor, nn};

use crate::{Gpt, GptConfig, ModelError, Rope};

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
        let wt = self.ws.transpose(1, 2); // (K, in, out)
        match &self.bs {
            Some(bs) => bs.unsqueeze(1).baddbmm(xs, &wt, 1.0, 1.0), // (K, n, out)
            None => xs.bmm(&wt),                                    // (K, n, out)
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
}

/// K models of one [`GptConfig`] with their own weights, run as one batched computation.
///
/// Build it with [`GptEnsemble::new`] (fresh weights drawn from the global generator) or
/// [`GptEnsemble::from_seeds`] (member `k` equal to `Gpt::new` under `tch::manual_seed(seed_k)`).
#[derive(Debug)]
pub struct GptEnsemble {
    cfg: GptConfig,
    members: i64,
    tok_emb: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Tensor,
    rope: Rope,
    /// Every parameter by its [`Gpt`] name, in a stable (sorted) order.
    params: Vec<(String, Tensor)>,
}

impl GptEnsemble {
    /// Creates the `[K, …]` variables under `vs`, each member initialised as [`Gpt::new`] would
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
        let tok_emb = (vs / "tok_emb").var("weight", &[k, v, c], init_normal());
        let blocks: Vec<Block> = (0..cfg.n_layer)
            .map(|i| Block::new(vs / "blocks" / i, k, c))
            .collect();
        let ln_f = LayerNorm::new(vs / "ln_f", k, c);
        let head = if cfg.tie_weights {
            tok_emb.shallow_clone()
        } else {
            (vs / "head").var("weight", &[k, v, c], init_normal())
        };
        let rope = Rope::new(cfg.head_dim(), cfg.max_len, cfg.rope_base, vs.device());
        let mut params = vec![("tok_emb.weight".to_string(), tok_emb.shallow_clone())];
        let mut push_linear = |name: String, l: &Linear| {
            params.push((format!("{name}.weight"), l.ws.shallow_clone()));
            if let Some(bs) = &l.bs {
                params.push((format!("{name}.bias"), bs.shallow_clone()));
            }
        };
        for (i, block) in blocks.iter().enumerate() {
            push_linear(format!("blocks.{i}.attn.qkv"), &block.qkv);
            push_linear(format!("blocks.{i}.attn.out"), &block.out);
            push_linear(format!("blocks.{i}.mlp.0"), &block.mlp_fc);
            push_linear(format!("blocks.{i}.mlp.2"), &block.mlp_proj);
        }
        let mut push_norm = |name: String, ln: &LayerNorm| {
            params.push((format!("{name}.weight"), ln.ws.shallow_clone()));
            params.push((format!("{name}.bias"), ln.bs.shallow_clone()));
        };
        for (i, block) in blocks.iter().enumerate() {
            push_norm(format!("blocks.{i}.ln_1"), &block.ln_1);
            push_norm(format!("blocks.{i}.ln_2"), &block.ln_2);
        }
        push_norm("ln_f".to_string(), &ln_f);
        if !cfg.tie_weights {
            params.push(("head.weight".to_string(), head.shallow_clone()));
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            cfg: cfg.clone(),
            members,
            tok_emb,
            blocks,
            ln_f,
            head,
            rope,
            params,
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
            let _member = Gpt::new(&member_vs.root(), cfg)?;
            ensemble.load_member(
                k as i64,
                &member_vs.variables().into_iter().collect::<Vec<_>>(),
            )?;
        }
        Ok(ensemble)
    }

    /// The configuration shared by all members.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Number of members `K`.
    pub fn members(&self) -> i64 {
        self.members
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.tok_emb.device()
    }

    /// Every parameter `[K, …]` by its [`Gpt`] name (`tok_emb.weight`, `blocks.0.ln_1.bias`, …),
    /// sorted by name. These are the trainable leaves (shallow clones sharing storage).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    }

    /// Member `k`'s parameters under the names and shapes of a single [`Gpt`], sorted by name:
    /// detached views sharing the ensemble's storage (copy them to keep a snapshot).
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `k` is not a member index.
    pub fn member_state(&self, k: i64) -> Result<Vec<(String, Tensor)>, ModelError> {
        self.check_member(k)?;
        Ok(self
            .params
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().select(0, k)))
            .collect())
    }

    /// Copies a single model's parameters (as [`Gpt`]'s var store names them) into member `k`.
    /// Every parameter must be given exactly once with its [`Gpt`] shape.
    ///
    /// # Errors
    /// [`ModelError::Shape`] for an unknown, missing or mis-shaped parameter or a bad `k`.
    pub fn load_member(&self, k: i64, params: &[(String, Tensor)]) -> Result<(), ModelError> {
        self.check_member(k)?;
        if params.len() != self.params.len() {
            return Err(ModelError::Shape {
                what: "member parameters",
                expected: format!("{} tensors", self.params.len()),
                found: format!("{} tensors", params.len()),
            });
        }
        tch::no_grad(|| {
            for (name, src) in params {
                let dst = self
                    .params
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.detach().select(0, k))
                    .ok_or_else(|| ModelError::Shape {
                        what: "member parameters",
                        expected: "the parameter names of Gpt".into(),
                        found: format!("unknown `{name}`"),
                    })?;
                if dst.size() != src.size() {
                    return Err(ModelError::Shape {
                        what: "member parameter",
                        expected: format!("`{name}` {:?}", dst.size()),
                        found: format!("{:?}", src.size()),
                    });
                }
                let mut dst = dst;
                dst.f_copy_(src)?;
            }
            Ok(())
        })
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

    /// Runs the blocks; returns the residual stream after the last block, `[K, b·t, c]`.
    fn trunk(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        train: bool,
    ) -> Result<(i64, i64, Tensor), ModelError> {
        let (b, t, allowed) = self.attention_mask(ids, key_pad)?;
        let (k, c) = (self.members, self.cfg.d_model);
        let (n_head, head_dim) = (self.cfg.n_head, self.cfg.head_dim());
        let p_drop = if train { self.cfg.dropout } else { 0.0 };
        // A gather per member (rather than one embedding over a flattened table) keeps an
        // out-of-vocabulary id an error instead of a read from the next member's table.
        let index = ids.reshape([k, b * t, 1]).expand([k, b * t, c], false); // (K, b·t, c)
        let mut xs = self
            .tok_emb
            .f_gather(1, &index, false)?
            .dropout(p_drop, train); // (K, b·t, c)
        for block in &self.blocks {
            let qkv = block.qkv.forward(&block.ln_1.forward(&xs)); // (K, b·t, 3c)
            let qkv = qkv
                .view([k * b, t, 3, n_head, head_dim])
                .permute([2, 0, 3, 1, 4]); // (3, K·b, nh, t, hd)
            let q = self.rope.apply(&qkv.get(0)); // (K·b, nh, t, hd)
            let key = self.rope.apply(&qkv.get(1)); // (K·b, nh, t, hd)
            let v = qkv.get(2); // (K·b, nh, t, hd)
            let ys = Tensor::scaled_dot_product_attention(
                &q,
                &key,
                &v,
                Some(&allowed),
                p_drop,
                false,
                None,
                false,
            ); // (K·b, nh, t, hd)
            let ys = ys.transpose(1, 2).contiguous().view([k, b * t, c]); // (K, b·t, c)
            xs = &xs + block.out.forward(&ys).dropout(p_drop, train);
            let h = block.mlp_fc.forward(&block.ln_2.forward(&xs)).gelu("none"); // (K, b·t, 4c)
            xs = &xs + block.mlp_proj.forward(&h).dropout(p_drop, train);
        }
        Ok((b, t, xs))
    }

    /// `ln_f` then each member's head: `[K, n, c]` → `[K, n, v]`.
    fn project(&self, xs: &Tensor) -> Tensor {
        let xs = self.ln_f.forward(xs); // (K, n, c)
        if xs.requires_grad() {
            // Head first (`U·xᵀ`), so that the backward writes the `[K, v, c]` head gradient in
            // the head's own layout; `x·Uᵀ` would produce it transposed and copy the whole table.
            self.head.bmm(&xs.transpose(1, 2)).transpose(1, 2) // (K, n, v)
        } else {
            // Without a backward (evaluation), `x·Uᵀ` gives contiguous logits, which the
            // per-row metrics then read without a copy.
            xs.bmm(&self.head.transpose(1, 2)) // (K, n, v)
        }
    }

    /// Logits at every position of every member.
    ///
    /// # Arguments
    /// - `ids`: `[K, b, t]` int64 token ids, right-padded (member `k` reads `ids[k]`);
    /// - `key_pad`: optional `[K, b, t]` bool, `true` at PAD positions;
    /// - `train`: enables dropout.
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
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (b, t, xs) = self.trunk(ids, key_pad, train)?;
        Ok(self
            .project(&xs)
            .reshape([self.members, b, t, self.cfg.vocab_size]))
    }

    /// Logits at one position per row of every member (the last-token path of
    /// [`Gpt::forward_at`]).
    ///
    /// # Arguments
    /// - `ids`, `key_pad`, `train`: as in [`GptEnsemble::forward`];
    /// - `positions`: `[K, b]` int64, the position to read in each row.
    ///
    /// # Returns
    /// Logits `[K, b, v]`, equal to `forward(ids)[k, i, positions[k, i]]`.
    pub fn forward_at(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        positions: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (b, t, xs) = self.trunk(ids, key_pad, train)?;
        let (k, c) = (self.members, self.cfg.d_model);
        if positions.size() != [k, b] {
            return Err(ModelError::Shape {
                what: "positions",
                expected: format!("[{k}, {b}]"),
                found: format!("{:?}", positions.size()),
            });
        }
        // Row i of member k sits at i·t + position in the flattened (b·t) axis.
        let rows = Tensor::arange(b, (Kind::Int64, positions.device())) * t; // (b)
        let flat = (positions + rows.unsqueeze(0))
            .view([k, b, 1])
            .expand([k, b, c], false); // (K, b, c)
        let last = xs.f_gather(1, &flat, false)?; // (K, b, c)
        Ok(self.project(&last))
    }
}

/// Per-member mean cross-entropy of `logits` `[K, b, v]` against `targets` `[K, b]` (int64), in
/// float32: returns `[K]`. Its sum is the loss whose gradient gives every member the gradient
/// of its own [`crate::last_token_loss`].
pub fn member_losses(logits: &Tensor, targets: &Tensor) -> Tensor {
    let (k, b, v) = logits.size3().unwrap_or((1, 1, 1));
    logits
        .to_kind(Kind::Float)
        .reshape([k * b, v])
        .cross_entropy_loss::<Tensor>(
            &targets.reshape([k * b]),
            None,
            tch::Reduction::None,
            -100,
            0.0,
        )
        .view([k, b])
        .mean_dim(1, false, Kind::Float) // (K)
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
        assert_eq!(ens.parameters().len(), gpt_vars.len());
        for (name, t) in ens.parameters() {
            let mut want = vec![3];
            want.extend(gpt_vars[&name].size());
            assert_eq!(t.size(), want, "{name}");
        }
        let total: i64 = ens.parameters().iter().map(|(_, t)| t.numel() as i64).sum();
        assert_eq!(total, 3 * tiny().num_params());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let vs = VarStore::new(Device::Cpu);
        let ens = GptEnsemble::new(&vs.root(), &tiny(), 2).unwrap();
        let wrong_k = Tensor::zeros([3, 1, 2], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            ens.forward(&wrong_k, None, false),
            Err(ModelError::Shape { .. })
        ));
        let too_long = Tensor::zeros([2, 1, 6], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            ens.forward(&too_long, None, false),
            Err(ModelError::TooLong { len: 6, .. })
        ));
        // Id 13 is one past member 0's vocabulary: an error, not member 1's first row.
        let out_of_vocab = Tensor::from_slice(&[1i64, 13, 1, 2]).view([2, 1, 2]);
        assert!(ens.forward(&out_of_vocab, None, false).is_err());
        assert!(ens.member_state(2).is_err());
        assert!(GptEnsemble::new(&vs.root(), &tiny(), 0).is_err());
    }
}
