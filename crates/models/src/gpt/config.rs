use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// GPT-2 hyper-parameters; field names are HF's `GPT2Config` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest sequence (the learned position table's length), nanoGPT's `block_size`.
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// One rate for embedding, attention and residual dropout (nanoGPT's convention).
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
}

fn default_eps() -> f64 {
    1e-5
}

impl GptConfig {
    /// Named presets. `gpt-tiny` trains on two CPU cores in minutes; `gpt2-124m` is GPT-2 small.
    /// The vocabulary comes from the tokenizer the data was prepared with.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        let (n_positions, n_embd, n_layer, n_head) = match name {
            "gpt-tiny" => (128, 128, 4, 4),
            "gpt-small-cpu" => (256, 256, 4, 4),
            "gpt2-124m" => (1024, 768, 12, 12),
            "gpt2-350m" => (1024, 1024, 24, 16),
            other => {
                return Err(Error::Config(format!(
                    "unknown GPT preset {other:?} (known: gpt-tiny, gpt-small-cpu, gpt2-124m, gpt2-350m)"
                )))
            }
        };
        let c = Self {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size == 0 || self.n_positions == 0 || self.n_layer == 0 || self.n_head == 0 {
            return bad(format!("sizes must be positive: {self:?}"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Parameters counted once (the tied head is the embedding).
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        let block =
            2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c);
        self.vocab_size * c + self.n_positions * c + self.n_layer * block + 2 * c
    }

    /// Training FLOPs per token, PaLM/nanoGPT convention: 6·N + 12·L·H·Q·T, N without the
    /// position embedding (shared/ANCHORS.md).
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        let n = (self.num_params() - self.n_positions * self.n_embd) as f64;
        6.0 * n + 12.0 * (self.n_layer * self.n_head * self.head_dim() * seq_len) as f64
    }
}
