//! The model's hyper-parameters, shared by the model crate and everything that only reads or
//! writes configurations.

use serde::{Deserialize, Serialize};

/// A model hyper-parameter out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model config: `{key}` {reason}")]
pub struct InvalidKey {
    /// The offending key (the name used in config files).
    pub key: &'static str,
    /// Why it is rejected.
    pub reason: String,
}

/// Hyper-parameters of the GPT-RoPE model (`gpt_rope::Gpt`). Field names match the original's
/// config keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptConfig {
    /// Vocabulary size `V` (set from the dataset's vocabulary, not from config files).
    #[serde(skip)]
    pub vocab_size: i64,
    /// Model width `C`. Default 128.
    pub d_model: i64,
    /// Number of transformer blocks. Default 1.
    pub n_layer: i64,
    /// Attention heads; `d_model / n_head` must be even (RoPE rotates pairs). Default 1.
    pub n_head: i64,
    /// Dropout probability used for embeddings, attention, residual and MLP. Default 0.0.
    pub dropout: f64,
    /// Longest input sequence accepted. Default 64.
    pub max_len: i64,
    /// RoPE base θ of the inverse frequencies `θ^(−2i/head_dim)`. Default 100.
    pub rope_base: f64,
    /// Ties the output head to the token embedding. Default false (the paper's setting).
    pub tie_weights: bool,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            vocab_size: 0,
            d_model: 128,
            n_layer: 1,
            n_head: 1,
            dropout: 0.0,
            max_len: 64,
            rope_base: 100.0,
            tie_weights: false,
        }
    }
}

impl GptConfig {
    /// This configuration for a vocabulary of `vocab_size` tokens (config files do not set it:
    /// it comes from the dataset).
    pub fn with_vocab(&self, vocab_size: i64) -> Self {
        Self {
            vocab_size,
            ..self.clone()
        }
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.d_model / self.n_head.max(1)
    }

    /// Checks every value, naming the key at fault.
    ///
    /// # Errors
    /// [`InvalidKey`] naming the first key out of range.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let bad = |key, reason: String| Err(InvalidKey { key, reason });
        if self.vocab_size < 1 {
            return bad(
                "vocab_size",
                format!("must be at least 1, got {}", self.vocab_size),
            );
        }
        if self.d_model < 2 {
            return bad(
                "d_model",
                format!("must be at least 2, got {}", self.d_model),
            );
        }
        if self.n_layer < 1 {
            return bad(
                "n_layer",
                format!("must be at least 1, got {}", self.n_layer),
            );
        }
        if self.n_head < 1 || self.d_model % self.n_head != 0 {
            return bad(
                "n_head",
                format!(
                    "must be ≥ 1 and divide d_model {}, got {}",
                    self.d_model, self.n_head
                ),
            );
        }
        if self.head_dim() % 2 != 0 {
            return bad(
                "n_head",
                format!(
                    "d_model / n_head = {} must be even for rotary embeddings",
                    self.head_dim()
                ),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        if self.max_len < 1 {
            return bad(
                "max_len",
                format!("must be at least 1, got {}", self.max_len),
            );
        }
        if !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            return bad(
                "rope_base",
                format!("must be a finite number > 1, got {}", self.rope_base),
            );
        }
        Ok(())
    }

    /// Number of trainable parameters the model will have.
    pub fn num_params(&self) -> i64 {
        let (v, c) = (self.vocab_size, self.d_model);
        let block =
            2 * (2 * c) + (3 * c * c + 3 * c) + (c * c + c) + (4 * c * c + 4 * c) + (4 * c * c + c);
        let head = if self.tie_weights { 0 } else { v * c };
        v * c + self.n_layer * block + 2 * c + head
    }
}
