//! What a training loop needs of a model of K ≥ 1 members, whether it is one [`Gpt`] (K = 1) or
//! a batched [`crate::ensemble::GptEnsemble`]: the last-token forward pass of every member at
//! once, each member's parameters under [`Gpt`]'s names (for its optimiser and its checkpoints),
//! and loading a member from a [`Gpt`] parameter list (resume).
//!
//! Members never mix: member `k`'s logits depend only on member `k`'s parameters and inputs.

use tch::{Device, Tensor};

use crate::{Gpt, GptConfig, Mode, ModelError};

/// Member `k`'s view of one trainable tensor: either row `k` of a stacked `[K, …]` leaf or a
/// leaf that belongs to the member alone.
#[derive(Debug)]
pub struct MemberParam {
    name: String,
    leaf: Tensor,
    row: Option<i64>,
}

impl MemberParam {
    /// Row `k` of the stacked leaf `leaf` (`[K, …]`), named `name`.
    pub fn row(name: impl Into<String>, leaf: &Tensor, k: i64) -> Self {
        Self {
            name: name.into(),
            leaf: leaf.shallow_clone(),
            row: Some(k),
        }
    }

    /// A leaf owned by one member, named `name`.
    pub fn own(name: impl Into<String>, leaf: &Tensor) -> Self {
        Self {
            name: name.into(),
            leaf: leaf.shallow_clone(),
            row: None,
        }
    }

    /// The parameter's name in a single [`Gpt`] (`blocks.0.ln_1.bias`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a row of a stacked leaf shared by all members (rather than the member's
    /// own leaf).
    pub fn is_row(&self) -> bool {
        self.row.is_some()
    }

    /// The autograd leaf that holds the value (shared by all members when stacked).
    pub fn leaf(&self) -> &Tensor {
        &self.leaf
    }

    /// The member's value: a detached view of the leaf's storage, with [`Gpt`]'s shape (writes
    /// to it update the model).
    pub fn value(&self) -> Tensor {
        let value = self.leaf.detach();
        match self.row {
            Some(k) => value.select(0, k),
            None => value,
        }
    }

    /// The member's gradient from the last backward pass, or `None` when the leaf has none.
    pub fn grad(&self) -> Option<Tensor> {
        let grad = self.leaf.grad();
        if !grad.defined() {
            return None;
        }
        Some(match self.row {
            Some(k) => grad.select(0, k),
            None => grad,
        })
    }
}

/// A model of K ≥ 1 members of one [`GptConfig`], as a training loop drives it.
pub trait Members {
    /// Number of members `K`.
    fn members(&self) -> i64;

    /// The configuration shared by all members.
    fn config(&self) -> &GptConfig;

    /// The device of the parameters.
    fn device(&self) -> Device;

    /// Logits at one position per row of every member (the last-token path of
    /// [`Gpt::forward_at`]).
    ///
    /// # Arguments
    /// - `ids`: `[K, b, t]` int64 token ids, right-padded (member `k` reads `ids[k]`);
    /// - `key_pad`: optional `[K, b, t]` bool, `true` at PAD positions;
    /// - `positions`: `[K, b]` int64, the position to read in each row;
    /// - `mode`: [`Mode::Train`] enables dropout.
    ///
    /// # Returns
    /// K logits `[b, v]`; the `k`-th equals member `k` as a [`Gpt`] on `ids[k]`.
    ///
    /// # Errors
    /// Wrong shapes or kinds, `t > max_len`, ids outside the vocabulary.
    fn forward_at_members(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<Vec<Tensor>, ModelError>;

    /// Member `k`'s view of every parameter, under the names and shapes of a single [`Gpt`],
    /// sorted by name.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `k` is not a member index.
    fn member_params(&self, k: i64) -> Result<Vec<MemberParam>, ModelError>;

    /// The model itself as a [`Gpt`], when it is a single one (then member 0 needs no copy for
    /// analysis).
    fn as_gpt(&self) -> Option<&Gpt> {
        None
    }

    /// Member `k`'s parameters under [`Gpt`]'s names, sorted by name: detached views sharing
    /// the model's storage (copy them to keep a snapshot).
    ///
    /// # Errors
    /// As [`Members::member_params`].
    fn member_state(&self, k: i64) -> Result<Vec<(String, Tensor)>, ModelError> {
        Ok(self
            .member_params(k)?
            .into_iter()
            .map(|p| (p.name.clone(), p.value()))
            .collect())
    }

    /// Copies a single model's parameters (as [`Gpt::named_parameters`] names them) into member
    /// `k`. Every parameter must be given exactly once with its [`Gpt`] shape.
    ///
    /// # Errors
    /// [`ModelError::Shape`] for an unknown, missing or mis-shaped parameter or a bad `k`.
    fn load_member(&self, k: i64, params: &[(String, Tensor)]) -> Result<(), ModelError> {
        let own = self.member_params(k)?;
        if params.len() != own.len() {
            return Err(ModelError::Shape {
                what: "member parameters",
                expected: format!("{} tensors", own.len()),
                found: format!("{} tensors", params.len()),
            });
        }
        tch::no_grad(|| {
            for (name, src) in params {
                let mut dst = own
                    .iter()
                    .find(|p| p.name == *name)
                    .map(MemberParam::value)
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
                dst.f_copy_(src)?;
            }
            Ok(())
        })
    }
}

/// A single [`Gpt`] is the one-member case.
impl Members for Gpt {
    fn members(&self) -> i64 {
        1
    }

    fn config(&self) -> &GptConfig {
        Gpt::config(self)
    }

    fn device(&self) -> Device {
        self.tok_emb().device()
    }

    fn forward_at_members(
        &self,
        ids: &Tensor,
        key_pad: Option<&Tensor>,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<Vec<Tensor>, ModelError> {
        let size = ids.size();
        if size.len() != 3 || size[0] != 1 {
            return Err(ModelError::Shape {
                what: "input ids",
                expected: "[1, b, t]".into(),
                found: format!("{size:?}"),
            });
        }
        let pad = key_pad.map(|p| p.squeeze_dim(0));
        Ok(vec![self.forward_at(
            &ids.squeeze_dim(0),
            pad.as_ref(),
            &positions.squeeze_dim(0),
            mode,
        )?])
    }

    fn member_params(&self, k: i64) -> Result<Vec<MemberParam>, ModelError> {
        if k != 0 {
            return Err(ModelError::Shape {
                what: "member index",
                expected: "0".into(),
                found: k.to_string(),
            });
        }
        Ok(self
            .named_parameters()
            .iter()
            .map(|(name, t)| MemberParam::own(name.as_str(), t))
            .collect())
    }

    fn as_gpt(&self) -> Option<&Gpt> {
        Some(self)
    }
}
