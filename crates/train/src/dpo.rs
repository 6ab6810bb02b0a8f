//! Direct Preference Optimization (Rafailov et al. 2023) in the training loop, as TRL's
//! `DPOTrainer` with its default sigmoid loss: `data.train` names a JSONL file of preference
//! records (`lantern_data::dpo`: `prompt`, `chosen`, `rejected`), and `lantern train` trains
//! the `model.init_from` causal LM to prefer the chosen completions, against itself as it was
//! loaded (the reference, frozen).
//!
//! - A sample is one preference; a micro-batch of B preferences is 2B rows, prompt + chosen
//!   for each, then prompt + rejected for each (TRL's collator), each cut to `max_length`
//!   (keeping the start) and padded on the right; the targets weigh 1 where they are
//!   completion tokens.
//! - Each row's log-probability is the sum over its completion's tokens. The reference's are
//!   computed once, before training, by the `init_from` weights (TRL's
//!   `precompute_ref_log_probs`; its default, a frozen copy run on every batch, gives the
//!   same numbers): a resume computes them again from the same weights, and LoRA's reference
//!   is the pretrained model the adapters start from, as peft's disabled adapters give.
//! - With `d = β·((π_c − ref_c) − (π_r − ref_r))` per preference, the loss is
//!   `−log σ(d)`, averaged over the step's preferences on every rank; evaluations report its
//!   mean over every validation preference (`val_loss`) and the share with `d > 0` (TRL's
//!   `rewards/accuracies`, as `val_accuracy`).
//! - The order is SFT's: a seeded shuffle per epoch, a pure function of (seed, sample).

use crate::config::RunConfig;
use crate::sft::{epoch_index, train_and_validation, Tokenization};
use crate::task::LossModel;
use crate::trainer::Batch;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use lantern_data::dpo::{read_preferences, PreferenceData, PreferenceExample, PreferenceOptions};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// TRL's `beta` default.
pub const DEFAULT_BETA: f64 = 0.1;

/// The preferences of a DPO batch: how far from the reference the loss reads them.
#[derive(Debug, Clone)]
pub struct Pairs {
    /// (2B) f32: the reference's log-probabilities of the rows, chosen then rejected; `None`
    /// while the reference's own are being computed.
    pub reference: Option<Tensor>,
    pub beta: f64,
}

/// The examples of a DPO run.
pub struct DpoSet {
    pub train: Vec<PreferenceExample>,
    pub val: Vec<PreferenceExample>,
    /// The reference's log-probabilities (chosen, rejected) of each example, filled by
    /// [`DpoSet::compute_reference`].
    ref_train: Vec<[f32; 2]>,
    ref_val: Vec<[f32; 2]>,
    pub pad: u32,
    pub max_length: usize,
    pub beta: f64,
    pub conversational: bool,
    /// `train.group_by_length`: the preferences per optimizer step (every rank's).
    pub group: Option<usize>,
    /// What reading the files said, for the run's log.
    pub notes: Vec<String>,
}

/// SFT's keys that DPO has no use for.
fn sft_only(cfg: &RunConfig) -> Option<&'static str> {
    let d = &cfg.data;
    [
        ("text_field", d.text_field.is_some()),
        ("completion_only_loss", d.completion_only_loss.is_some()),
        ("assistant_only_loss", d.assistant_only_loss.is_some()),
        ("packing", d.packing.is_some()),
        ("packing_strategy", d.packing_strategy.is_some()),
        ("loss_type", d.loss_type.is_some()),
    ]
    .into_iter()
    .find_map(|(k, set)| set.then_some(k))
}

impl DpoSet {
    /// Reads `data.train` (and `data.validation`, or holds `data.val_fraction` out) with the
    /// run's tokenizer, as [`crate::sft::SftSet::load`] does.
    pub fn load(
        cfg: &RunConfig,
        (tokenizer, tokenizer_path): (&Tokenizer, &Path),
        eos_id: Option<u32>,
        (context, vocab): (usize, usize),
        per_step: usize,
    ) -> Result<Self> {
        let d = &cfg.data;
        let train_path = d.train.as_ref().expect("DPO data has data.train");
        if let Some(k) = sft_only(cfg) {
            return Err(Error::Config(format!(
                "data.{k} is a setting of SFT records; {} holds preference records (DPO)",
                train_path.display()
            )));
        }
        if cfg.model.init_from.is_none() {
            return Err(Error::Config(
                "DPO trains a pretrained model against itself: set model.init_from".into(),
            ));
        }
        let beta = d.beta.unwrap_or(DEFAULT_BETA);
        if !(beta > 0.0 && beta.is_finite()) {
            return Err(Error::Config(format!(
                "data.beta must be positive, got {beta}"
            )));
        }
        let tk = Tokenization::of(cfg, (tokenizer, tokenizer_path), eos_id, context)?;
        let opts = PreferenceOptions {
            max_length: tk.max_length,
            eos_token: tk.eos.as_deref(),
            chat_template: tk.template.as_ref(),
            vocab_size: vocab,
        };
        let mut notes = Vec::new();
        let mut read = |p: &PathBuf| -> Result<PreferenceData> {
            let data = read_preferences(p, tokenizer, &opts)?;
            if data.dropped > 0 {
                notes.push(format!(
                    "{}: {} record(s) dropped, their prompt filling max_length {}",
                    p.display(),
                    data.dropped,
                    tk.max_length
                ));
            }
            Ok(data)
        };
        let train = read(train_path)?;
        let conversational = train.conversational;
        let (train, val) = train_and_validation(
            cfg,
            (train_path, train),
            read,
            |d: &PreferenceData| match d.conversational {
                true => "conversational preference",
                false => "text preference",
            },
            |d| d.examples,
        )?;
        Ok(Self {
            ref_train: Vec::new(),
            ref_val: Vec::new(),
            train,
            val,
            pad: tk.pad(tokenizer),
            max_length: tk.max_length,
            beta,
            conversational,
            group: cfg.train.group_by_length.then_some(per_step),
            notes,
        })
    }

    /// The reference's log-probabilities of every example, by `model` (the `init_from`
    /// weights, frozen), `b` preferences at a time.
    pub fn compute_reference(
        &mut self,
        model: &dyn LossModel,
        b: usize,
        device: &Device,
    ) -> Result<()> {
        let b = b.max(1);
        let of = |examples: &[PreferenceExample]| -> Result<Vec<[f32; 2]>> {
            let mut out = Vec::with_capacity(examples.len());
            for chunk in examples.chunks(b) {
                let rows: Vec<&PreferenceExample> = chunk.iter().collect();
                let batch = self.rows(&rows, None, device)?;
                let logps = model.row_logps(&batch)?.to_vec1::<f32>()?;
                let n = chunk.len();
                out.extend((0..n).map(|i| [logps[i], logps[n + i]]));
            }
            Ok(out)
        };
        let (t, v) = (of(&self.train)?, of(&self.val)?);
        (self.ref_train, self.ref_val) = (t, v);
        Ok(())
    }

    /// The training example of global sample `i` (SFT's per-epoch order).
    pub fn train_index(&self, seed: u64, i: u64, cache: &mut Option<(u64, Vec<usize>)>) -> usize {
        let lengths = || {
            self.train
                .iter()
                .map(|e| e.prompt.len() + e.chosen.len().max(e.rejected.len()))
                .collect()
        };
        epoch_index(self.train.len(), (self.group, lengths), seed, i, cache)
    }

    /// Training examples `idx` as one batch, with their reference log-probabilities.
    pub fn train_batch(&self, idx: &[usize], device: &Device) -> Result<Batch> {
        let rows: Vec<&PreferenceExample> = idx.iter().map(|&i| &self.train[i]).collect();
        let refs: Vec<[f32; 2]> = idx
            .iter()
            .map(|&i| self.reference(&self.ref_train, i))
            .collect();
        self.rows(&rows, Some(&refs), device)
    }

    /// Validation examples `from .. from + b` (in file order) as one batch; `None` past the
    /// last.
    pub fn val_batch(&self, from: usize, b: usize, device: &Device) -> Result<Option<Batch>> {
        let from = from.min(self.val.len());
        let to = (from + b).min(self.val.len());
        if from == to {
            return Ok(None);
        }
        let rows: Vec<&PreferenceExample> = self.val[from..to].iter().collect();
        let refs: Vec<[f32; 2]> = (from..to)
            .map(|i| self.reference(&self.ref_val, i))
            .collect();
        Ok(Some(self.rows(&rows, Some(&refs), device)?))
    }

    fn reference(&self, refs: &[[f32; 2]], i: usize) -> [f32; 2] {
        // Filled before the first batch; an empty table is a bug of the caller.
        *refs
            .get(i)
            .expect("the reference's log-probabilities are computed first")
    }

    /// The tokens of one preference's two rows, as read: each row's all but its last.
    pub fn tokens_of(&self, e: &PreferenceExample) -> u64 {
        let row = |c: &[u32]| ((e.prompt.len() + c.len()).min(self.max_length) - 1) as u64;
        row(&e.chosen) + row(&e.rejected)
    }

    /// The mean length of the rows' inputs, rounded: the sequence length their FLOPs per
    /// token are counted at.
    pub fn mean_input_len(&self) -> usize {
        let n = 2 * self.train.len().max(1);
        let total: u64 = self.train.iter().map(|e| self.tokens_of(e)).sum();
        (total as f64 / n as f64).round().max(1.0) as usize
    }

    /// B preferences as 2B rows (chosen then rejected), each prompt + completion cut to
    /// `max_length` and padded on the right to the longest; a row reads all its tokens but the
    /// last and predicts all but the first, the loss weighing completion tokens only.
    fn rows(
        &self,
        rows: &[&PreferenceExample],
        refs: Option<&[[f32; 2]]>,
        device: &Device,
    ) -> Result<Batch> {
        let seqs: Vec<(Vec<u32>, usize)> = [false, true]
            .iter()
            .flat_map(|&rejected| {
                rows.iter().map(move |e| {
                    let c = if rejected { &e.rejected } else { &e.chosen };
                    let mut s: Vec<u32> = e.prompt.iter().chain(c).copied().collect();
                    s.truncate(self.max_length);
                    (s, e.prompt.len())
                })
            })
            .collect();
        let t = seqs.iter().map(|(s, _)| s.len() - 1).max().unwrap_or(0);
        let n = seqs.len();
        let mut inputs = vec![self.pad; n * t];
        let mut targets = vec![self.pad; n * t];
        let mut weights = vec![0f32; n * t];
        for (r, (s, prompt)) in seqs.iter().enumerate() {
            let len = s.len() - 1;
            let at = r * t;
            inputs[at..at + len].copy_from_slice(&s[..len]);
            targets[at..at + len].copy_from_slice(&s[1..]);
            // Target i is token i + 1: a completion token from position prompt - 1 on.
            for w in weights[at..at + len]
                .iter_mut()
                .skip(prompt.saturating_sub(1))
            {
                *w = 1.0;
            }
        }
        let reference = match refs {
            Some(refs) => {
                let v: Vec<f32> = refs
                    .iter()
                    .map(|r| r[0])
                    .chain(refs.iter().map(|r| r[1]))
                    .collect();
                Some(Tensor::from_vec(v, n, device)?)
            }
            None => None,
        };
        Ok(Batch {
            ids: Tensor::from_slice(&inputs, (n, t), device)?,
            targets: Tensor::from_slice(&targets, n * t, device)?,
            weights: Some(Tensor::from_slice(&weights, n * t, device)?),
            // The loss is a mean over preferences.
            n_targets: rows.len(),
            packing: None,
            loss: Default::default(),
            pairs: Some(Pairs {
                reference,
                beta: self.beta,
            }),
        })
    }

    /// One line on the data for the run's log.
    pub fn describe(&self) -> String {
        format!(
            "dpo: {} preference records, {} train / {} validation examples, max_length {}, \
             beta {}",
            if self.conversational {
                "conversational"
            } else {
                "text"
            },
            self.train.len(),
            self.val.len(),
            self.max_length,
            self.beta
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(examples: Vec<PreferenceExample>, max_length: usize) -> DpoSet {
        DpoSet {
            train: examples,
            val: Vec::new(),
            ref_train: Vec::new(),
            ref_val: Vec::new(),
            pad: 0,
            max_length,
            beta: 0.1,
            conversational: false,
            group: None,
            notes: Vec::new(),
        }
    }

    fn ex(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PreferenceExample {
        PreferenceExample {
            prompt: prompt.to_vec(),
            chosen: chosen.to_vec(),
            rejected: rejected.to_vec(),
            line: 1,
        }
    }

    /// TRL's collator: chosen rows, then rejected ones, cut to max_length and padded; the
    /// targets weigh 1 on completion tokens.
    #[test]
    fn rows_are_chosen_then_rejected_with_completion_targets() {
        let s = set(
            vec![
                ex(&[1, 2, 3], &[4, 5], &[6]),
                ex(&[7, 8], &[9], &[10, 11, 12]),
            ],
            4,
        );
        let refs = [[-1.0, -2.0], [-3.0, -4.0]];
        let rows: Vec<&PreferenceExample> = s.train.iter().collect();
        let b = s.rows(&rows, Some(&refs), &Device::Cpu).unwrap();
        assert_eq!(
            b.ids.to_vec2::<u32>().unwrap(),
            [[1, 2, 3], [7, 8, 0], [1, 2, 3], [7, 8, 10]]
        );
        assert_eq!(
            b.targets.to_vec1::<u32>().unwrap(),
            [2, 3, 4, 8, 9, 0, 2, 3, 6, 8, 10, 11]
        );
        assert_eq!(
            b.weights.unwrap().to_vec1::<f32>().unwrap(),
            [0., 0., 1., 0., 1., 0., 0., 0., 1., 0., 1., 1.]
        );
        assert_eq!(b.n_targets, 2);
        let p = b.pairs.unwrap();
        assert_eq!(
            p.reference.unwrap().to_vec1::<f32>().unwrap(),
            [-1.0, -3.0, -2.0, -4.0]
        );
    }
}
