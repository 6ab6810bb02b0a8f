//! The masked-language-model collator of BERT (Devlin et al. 2019, §3.1, and transformers'
//! `DataCollatorForLanguageModeling`): each non-special, non-padding token is chosen with
//! probability `mlm_probability` (15%); a chosen token is replaced by `[MASK]` with
//! probability 80%, by a uniformly random token of the vocabulary with 10%, and kept with 10%.
//! The loss is taken only at chosen positions (`weights` 1 there, 0 elsewhere; transformers'
//! label -100).
//!
//! Masking is a pure function of `(seed, sample index)`: each sample draws from its own
//! stream `Rng::derive(seed, index)`, so a resumed run, a different batch size or another
//! data-parallel rank masks every sample exactly as before.

use crate::error::{Error, Result};
use lantern_kernels::Rng;

#[derive(Debug, Clone)]
pub struct MlmCollator {
    pub mask_id: u32,
    pub vocab_size: u32,
    /// Ids never chosen: [CLS], [SEP], [PAD] and any other special token.
    special: Vec<bool>,
    pub mlm_probability: f64,
    pub seed: u64,
}

/// One masked sample. `targets[i]` is the original token (the label) where `weights[i]` is 1;
/// elsewhere it is the input token, and must be ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct MlmSample {
    pub input_ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
}

impl MlmSample {
    /// transformers' labels: the original id at chosen positions, -100 elsewhere.
    pub fn hf_labels(&self) -> Vec<i64> {
        self.targets
            .iter()
            .zip(&self.weights)
            .map(|(&t, &w)| if w > 0.0 { t as i64 } else { -100 })
            .collect()
    }
}

impl MlmCollator {
    /// `special_ids` must include the padding id. Errors if an id is outside the vocabulary or
    /// the probability is not in (0, 1).
    pub fn new(
        vocab_size: u32,
        mask_id: u32,
        special_ids: &[u32],
        mlm_probability: f64,
        seed: u64,
    ) -> Result<Self> {
        if !(mlm_probability > 0.0 && mlm_probability < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "mlm_probability {mlm_probability} must be in (0, 1)"
            )));
        }
        let mut special = vec![false; vocab_size as usize];
        for &id in special_ids.iter().chain([&mask_id]) {
            let slot = special.get_mut(id as usize).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "special token id {id} is >= the vocabulary size {vocab_size}"
                ))
            })?;
            *slot = true;
        }
        Ok(Self {
            mask_id,
            vocab_size,
            special,
            mlm_probability,
            seed,
        })
    }

    /// The mask token's spellings: BERT's (and DistilBERT's), then RoBERTa's.
    pub const MASK_TOKENS: [&'static str; 2] = ["[MASK]", "<mask>"];

    /// A collator for a BERT-style tokenizer: [MASK] (RoBERTa's `<mask>`), and as specials its
    /// added special tokens ([PAD], [UNK], [CLS], [SEP], [MASK], or `<s>`, `<pad>`, `</s>`,
    /// `<unk>`, `<mask>`); an error names what is missing.
    pub fn for_tokenizer(
        tokenizer: &tokenizers::Tokenizer,
        vocab_size: u32,
        mlm_probability: f64,
        seed: u64,
    ) -> Result<Self> {
        let mask_id = Self::MASK_TOKENS
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "the tokenizer has no [MASK] (or <mask>) token, needed for MLM".into(),
                )
            })?;
        let specials: Vec<u32> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        Self::new(vocab_size, mask_id, &specials, mlm_probability, seed)
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Masks sample number `index` (its global position in the data order). Ids outside the
    /// vocabulary are an error.
    pub fn mask(&self, ids: &[u32], index: u64) -> Result<MlmSample> {
        let mut rng = Rng::derive(self.seed, index);
        let mut out = MlmSample {
            input_ids: ids.to_vec(),
            targets: ids.to_vec(),
            weights: vec![0.0; ids.len()],
        };
        for (i, &id) in ids.iter().enumerate() {
            if id >= self.vocab_size {
                return Err(Error::InvalidArgument(format!(
                    "token id {id} at position {i} of sample {index} is >= the vocabulary size {}",
                    self.vocab_size
                )));
            }
            // Three draws per token whatever happens, so that one token's outcome never shifts
            // the stream of the next (masking stays local and easy to reason about).
            let choose = rng.next_f64();
            let how = rng.next_f64();
            let random = rng.below(self.vocab_size as u64) as u32;
            if self.is_special(id) || choose >= self.mlm_probability {
                continue;
            }
            out.weights[i] = 1.0;
            out.input_ids[i] = if how < 0.8 {
                self.mask_id
            } else if how < 0.9 {
                random
            } else {
                id
            };
        }
        Ok(out)
    }

    /// A padded batch of masked samples: rows of `sequences` (numbered from `first_index`)
    /// padded to the longest with `pad_id`. Returns (input_ids, targets, weights,
    /// attention_mask), each B·T row-major.
    pub fn batch(&self, sequences: &[Vec<u32>], first_index: u64, pad_id: u32) -> Result<MlmBatch> {
        let t = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let mut b = MlmBatch {
            rows: sequences.len(),
            cols: t,
            ..Default::default()
        };
        for (r, seq) in sequences.iter().enumerate() {
            let s = self.mask(seq, first_index + r as u64)?;
            let pad = t - seq.len();
            b.input_ids.extend(
                s.input_ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad_id, pad)),
            );
            b.targets.extend(
                s.targets
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad_id, pad)),
            );
            b.weights.extend(
                s.weights
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0.0, pad)),
            );
            b.attention_mask
                .extend(std::iter::repeat_n(1u32, seq.len()).chain(std::iter::repeat_n(0, pad)));
        }
        Ok(b)
    }
}

/// A padded MLM batch, every field B·T row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MlmBatch {
    pub rows: usize,
    pub cols: usize,
    pub input_ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
    pub attention_mask: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: u32 = 1000;
    const PAD: u32 = 0;
    const CLS: u32 = 2;
    const SEP: u32 = 3;
    const MASK: u32 = 4;

    fn collator(seed: u64) -> MlmCollator {
        MlmCollator::new(V, MASK, &[PAD, 1, CLS, SEP], 0.15, seed).unwrap()
    }

    /// 2000 rows of [CLS] w.. [SEP] [PAD].. with words 5..V.
    fn corpus() -> Vec<Vec<u32>> {
        let mut r = Rng::new(99);
        (0..2000)
            .map(|_| {
                let n = 20 + r.below(40) as usize;
                let mut s = vec![CLS];
                s.extend((0..n).map(|_| 5 + r.below((V - 5) as u64) as u32));
                s.push(SEP);
                s
            })
            .collect()
    }

    #[test]
    fn proportions_match_bert() {
        let c = collator(7);
        let b = c.batch(&corpus(), 0, PAD).unwrap();
        let (mut eligible, mut chosen, mut masked, mut kept, mut random) = (0, 0, 0, 0, 0);
        for i in 0..b.input_ids.len() {
            let orig = b.targets[i];
            if b.attention_mask[i] == 0 || c.is_special(orig) {
                assert_eq!(b.weights[i], 0.0, "special or padding chosen at {i}");
                assert_eq!(b.input_ids[i], orig, "special or padding changed at {i}");
                continue;
            }
            eligible += 1;
            if b.weights[i] == 0.0 {
                assert_eq!(b.input_ids[i], orig, "unchosen token changed");
                continue;
            }
            chosen += 1;
            match b.input_ids[i] {
                MASK => masked += 1,
                x if x == orig => kept += 1,
                _ => random += 1,
            }
        }
        // ~80k eligible tokens, ~12k chosen. Binomial standard deviations: chosen rate
        // sqrt(.15·.85/80k) ≈ 0.0013, sub-rates sqrt(.8·.2/12k) ≈ 0.0037 and
        // sqrt(.1·.9/12k) ≈ 0.0027. Tolerances are 4σ or more: a wrong rule (e.g. 15% of
        // all tokens with specials, or 10/10 swapped for 20/0) is off by far more.
        let rate = chosen as f64 / eligible as f64;
        assert!(eligible > 60_000, "{eligible}");
        assert!((rate - 0.15).abs() < 0.006, "chosen rate {rate}");
        let f = |n: i32| n as f64 / chosen as f64;
        assert!(
            (f(masked) - 0.8).abs() < 0.016,
            "[MASK] share {}",
            f(masked)
        );
        // A random draw equals the original 1 time in V: "kept" includes those (0.1% of 10%).
        assert!((f(kept) - 0.1).abs() < 0.012, "kept share {}", f(kept));
        assert!(
            (f(random) - 0.1).abs() < 0.012,
            "random share {}",
            f(random)
        );
    }

    #[test]
    fn deterministic_per_sample_index() {
        let c = collator(3);
        let rows = corpus();
        let whole = c.batch(&rows[..8], 100, PAD).unwrap();
        // The same sample masked alone, by its index, is the same as inside any batch.
        let alone = c.mask(&rows[5], 105).unwrap();
        let t = whole.cols;
        let n = rows[5].len();
        assert_eq!(
            &whole.input_ids[5 * t..5 * t + n],
            alone.input_ids.as_slice()
        );
        assert_eq!(c.mask(&rows[5], 105).unwrap(), alone);
        assert_ne!(
            c.mask(&rows[5], 106).unwrap(),
            alone,
            "other index, other mask"
        );
        assert_ne!(
            collator(4).mask(&rows[5], 105).unwrap(),
            alone,
            "other seed"
        );
        let labels = alone.hf_labels();
        assert!(labels.iter().all(|&l| l == -100 || l >= 5));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(MlmCollator::new(10, 11, &[0], 0.15, 0).is_err());
        assert!(MlmCollator::new(10, 4, &[0], 1.5, 0).is_err());
        let msg = collator(0).mask(&[2, 5000, 3], 0).unwrap_err().to_string();
        assert!(msg.contains("5000"), "{msg}");
    }
}
