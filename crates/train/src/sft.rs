//! Supervised fine-tuning in the training loop: `data.train` names a JSONL file of TRL-style
//! records (`lantern_data::sft`) instead of prepared shards, and `lantern train` fine-tunes the
//! `model.init_from` causal LM on them, with everything else of a run as it is (precision,
//! accumulation, LoRA, data parallelism, checkpoints that resume exactly, early stopping).
//!
//! What differs from pretraining:
//! - a sample is one example, and a micro-batch is padded on the right to its longest example
//!   (TRL's collator without `padding_free`). Padding needs no attention mask: attention is
//!   causal, so no real token sees the padding after it, and positions start at 0 in every
//!   row; the padding's targets weigh 0;
//! - the loss is taken only where TRL's labels are not -100 (the completion of a
//!   prompt-completion record), and a step's loss is the mean over the step's trained tokens
//!   on every rank (transformers' `num_items_in_batch`), as for masked LM;
//! - the order is a seeded shuffle per epoch: global sample i is example `order_e[i mod n]`
//!   of epoch e = i div n, a pure function of (seed, i), so a resume, any accumulation and any
//!   world size see the same examples. A step never spans two epochs: an epoch's last step
//!   takes the examples left (transformers' data loader keeps its short last batch), so an
//!   epoch is ⌈n / global batch⌉ steps;
//! - an evaluation scores every validation example: the mean loss per trained token.
//!
//! With `data.packing` (TRL's `packing`), examples are packed into rows of `max_length` tokens
//! first (`lantern_data::packing`), training and validation alike, and a sample is a row. Rows
//! of several sequences run as TRL's padding-free batches do: positions restart and attention
//! stays within each sequence ([`lantern_models::Packing`]), and no token is predicted across a
//! boundary (TRL sets the label of each sequence's first token to -100). Every sequence's loss
//! is then what it is alone; what packing changes is which examples share a step, and the
//! padding. A row with nothing to train on is left out.

use crate::config::{RunConfig, TokenLoss};
use crate::trainer::Batch;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use lantern_data::chat::{read_tokenizer_config, special_token, ChatTemplate};
use lantern_data::dpo::PreferenceOptions;
use lantern_data::labelled::{length_grouped, permutation, split_indices};
use lantern_data::packing::{pack, PackingStrategy};
use lantern_data::sft::{read_sft, SftData, SftExample, SftFormat, SftOptions, Truncation};
use lantern_kernels::Rng;
use lantern_models::Packing;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Seeds the per-epoch order, apart from the run's other streams.
const ORDER_STREAM: u64 = 0x0073_6674_5f6f_7264; // "sft_ord"

/// TRL's `max_length` default.
pub const DEFAULT_MAX_LENGTH: usize = 1024;

/// The examples of an SFT run.
pub struct SftSet {
    pub train: Vec<SftExample>,
    pub val: Vec<SftExample>,
    /// The id padding is written with (its targets weigh 0, so any id would do).
    pub pad: u32,
    pub format: SftFormat,
    pub max_length: usize,
    /// `data.packing`: how the examples were packed into rows.
    pub packing: Option<PackingStrategy>,
    /// `data.loss_type`: how the loss weighs each target.
    pub loss: TokenLoss,
    /// `train.group_by_length`: the examples per optimizer step (every rank's) each epoch's
    /// order is grouped by.
    pub group: Option<usize>,
    /// What reading the files said (truncated and dropped records), for the run's log.
    pub notes: Vec<String>,
}

impl SftSet {
    /// Reads `data.train` (and `data.validation`, or holds `data.val_fraction` out) with the
    /// run's tokenizer. `eos_id` is the model's `eos_token_id`, `context` the longest input
    /// the model takes, `vocab` its embedding rows.
    pub fn load(
        cfg: &RunConfig,
        (tokenizer, tokenizer_path): (&Tokenizer, &Path),
        eos_id: Option<u32>,
        (context, vocab): (usize, usize),
        per_step: usize,
    ) -> Result<Self> {
        let d = &cfg.data;
        let train_path = d.train.as_ref().expect("SFT data has data.train");
        let tk = Tokenization::of(cfg, (tokenizer, tokenizer_path), eos_id, context)?;
        let max_length = tk.max_length;
        let text_field = d.text_field.as_deref().unwrap_or("text");
        let packing = d
            .packing
            .unwrap_or(false)
            .then(|| d.packing_strategy.unwrap_or_default());
        if packing.is_some() && tk.truncation == Truncation::KeepEnd {
            return Err(Error::Config(
                "data.truncation_mode = \"keep_end\" with data.packing: packing cuts (or \
                 splits) examples into rows itself, keeping their start; leave one of them out"
                    .into(),
            ));
        }
        let opts = SftOptions {
            text_field,
            max_length,
            truncate: packing.is_none(),
            truncation: tk.truncation,
            completion_only_loss: d.completion_only_loss.unwrap_or(true),
            eos_token: tk.eos.as_deref(),
            chat_template: tk.template.as_ref(),
            assistant_only_loss: d.assistant_only_loss.unwrap_or(false),
            vocab_size: vocab,
        };
        let mut notes = Vec::new();
        let mut read = |p: &PathBuf| -> Result<SftData> {
            let data = read_sft(p, tokenizer, &opts)?;
            if data.truncated + data.dropped > 0 {
                notes.push(format!(
                    "{}: {} record(s) cut to {max_length} tokens, {} dropped with nothing to \
                     train on",
                    p.display(),
                    data.truncated,
                    data.dropped
                ));
            }
            Ok(data)
        };
        let train = read(train_path)?;
        let format = train.format;
        let (train, val) = train_and_validation(
            cfg,
            (train_path, train),
            read,
            |d: &SftData| d.format.describe(),
            |d| d.examples,
        )?;
        let (train, val) = match packing {
            Some(strategy) => {
                let long = train.iter().filter(|e| e.ids.len() > max_length).count();
                let how = match strategy {
                    PackingStrategy::BfdSplit => "split into pieces",
                    PackingStrategy::Bfd => "cut",
                    PackingStrategy::Wrapped => "wrapped across rows",
                };
                let n = train.len();
                let (train, empty) = pack_rows(&train, max_length, strategy);
                let (val, _) = pack_rows(&val, max_length, strategy);
                notes.push(format!(
                    "packing ({}): {n} train examples into {} rows of at most {max_length} \
                     tokens, {long} longer than that {how}{}",
                    strategy.name(),
                    train.len(),
                    match empty {
                        0 => String::new(),
                        k => format!(", {k} row(s) with nothing to train on left out"),
                    }
                ));
                (train, val)
            }
            None => (train, val),
        };
        if train.is_empty() {
            return Err(Error::Config(format!(
                "{}: no training example left to train on",
                train_path.display()
            )));
        }
        Ok(Self {
            train,
            val,
            packing,
            loss: TokenLoss::of(d.loss_type.as_ref()).map_err(Error::Config)?,
            pad: tk.pad(tokenizer),
            format,
            max_length,
            group: cfg.train.group_by_length.then_some(per_step),
            notes,
        })
    }

    /// The training example of global sample `i`: position i mod n of epoch i div n's shuffled
    /// order (`cache` keeps the order of the epoch last asked for).
    pub fn train_index(&self, seed: u64, i: u64, cache: &mut Option<(u64, Vec<usize>)>) -> usize {
        let lengths = || self.train.iter().map(|e| e.ids.len()).collect();
        epoch_index(self.train.len(), (self.group, lengths), seed, i, cache)
    }

    /// Examples as one batch, padded on the right to the longest: row r reads `ids[..len-1]`
    /// and predicts `ids[1..]`, weighted where the predicted token is trained and not the
    /// first of its sequence. Rows of several sequences (packed) come with their
    /// [`Packing`].
    pub fn batch(&self, rows: &[&SftExample], device: &Device) -> Result<Batch> {
        let t = rows.iter().map(|e| e.ids.len() - 1).max().unwrap_or(0);
        let b = rows.len();
        let mut inputs = vec![self.pad; b * t];
        let mut targets = vec![self.pad; b * t];
        let mut weights = vec![0f32; b * t];
        let mut n_targets = 0;
        for (r, e) in rows.iter().enumerate() {
            let len = e.ids.len() - 1;
            let at = r * t;
            inputs[at..at + len].copy_from_slice(&e.ids[..len]);
            targets[at..at + len].copy_from_slice(&e.ids[1..]);
            for (w, &p) in weights[at..at + len].iter_mut().zip(&e.predicted()[1..]) {
                if p {
                    *w = 1.0;
                    n_targets += 1;
                }
            }
        }
        let packing = match rows.iter().any(|e| e.seq_lengths.len() > 1) {
            // The sequences of each row's inputs: the last one lacks its last token.
            true => {
                let lengths: Vec<Vec<usize>> = rows
                    .iter()
                    .map(|e| {
                        let mut l = e.seq_lengths.clone();
                        if let Some(last) = l.last_mut() {
                            *last -= 1;
                        }
                        l.retain(|&n| n > 0);
                        l
                    })
                    .collect();
                Some(Packing::new(&lengths, t, device)?)
            }
            false => None,
        };
        Ok(Batch {
            ids: Tensor::from_slice(&inputs, (b, t), device)?,
            targets: Tensor::from_slice(&targets, b * t, device)?,
            weights: Some(Tensor::from_slice(&weights, b * t, device)?),
            n_targets,
            packing,
            loss: self.loss,
            pairs: None,
            unpaired: None,
        })
    }

    /// The mean length of the training examples' inputs (all tokens but the last), rounded:
    /// the sequence length their FLOPs per token are counted at.
    pub fn mean_input_len(&self) -> usize {
        let total: usize = self.train.iter().map(|e| e.ids.len() - 1).sum();
        (total as f64 / self.train.len().max(1) as f64)
            .round()
            .max(1.0) as usize
    }

    /// One line on the data for the run's log.
    pub fn describe(&self) -> String {
        let targets: usize = self.train.iter().map(SftExample::targets).sum();
        let tokens: usize = self.train.iter().map(|e| e.ids.len()).sum();
        let what = match self.packing {
            Some(s) => format!("rows packed ({})", s.name()),
            None => "examples".to_string(),
        };
        format!(
            "sft: {} records, {} train / {} validation {what}, {tokens} train tokens of which \
             {targets} trained, max_length {}",
            self.format.describe(),
            self.train.len(),
            self.val.len(),
            self.max_length
        )
    }
}

/// The training and validation examples: `train`'s (read from `train_path`) and those
/// `read` gives of `data.validation`, whose records must have the same `layout`; or, without
/// that file, `data.val_fraction` (default 0.1) of `train`'s held out, chosen by `train.seed`.
pub(crate) fn train_and_validation<D, T: Clone>(
    cfg: &RunConfig,
    (train_path, train): (&Path, D),
    mut read: impl FnMut(&PathBuf) -> Result<D>,
    layout: impl Fn(&D) -> &'static str,
    examples: impl Fn(D) -> Vec<T>,
) -> Result<(Vec<T>, Vec<T>)> {
    if let Some(v) = &cfg.data.validation {
        let val = read(v)?;
        if layout(&val) != layout(&train) {
            return Err(Error::Config(format!(
                "{}: {} records, but data.train {} has {} records",
                v.display(),
                layout(&val),
                train_path.display(),
                layout(&train)
            )));
        }
        return Ok((examples(train), examples(val)));
    }
    let train = examples(train);
    let fraction = cfg.data.val_fraction.unwrap_or(0.1);
    let (ti, vi) = split_indices(train.len(), fraction, cfg.train.seed)
        .map_err(|e| Error::Config(format!("{}: {e}", train_path.display())))?;
    let pick = |idx: &[usize]| idx.iter().map(|&i| train[i].clone()).collect();
    Ok((pick(&ti), pick(&vi)))
}

/// What SFT and DPO records are tokenized with.
pub(crate) struct Tokenization {
    /// transformers' `tokenizer.eos_token`: `data.eos_token`, else `tokenizer_config.json`'s,
    /// else the model's `eos_token_id`'s token, else the tokenizer's end-of-text token.
    pub eos: Option<String>,
    /// `data.chat_template`, else the tokenizer folder's.
    pub template: Option<ChatTemplate>,
    /// `data.max_length` (default TRL's 1024, or the model's `context` if shorter).
    pub max_length: usize,
    /// `data.truncation_mode`.
    pub truncation: Truncation,
}

impl Tokenization {
    pub(crate) fn of(
        cfg: &RunConfig,
        (tokenizer, tokenizer_path): (&Tokenizer, &Path),
        eos_id: Option<u32>,
        context: usize,
    ) -> Result<Self> {
        let d = &cfg.data;
        let folder = tokenizer_path.parent().unwrap_or(Path::new("."));
        let tok_cfg = read_tokenizer_config(folder)?;
        let eos = match &d.eos_token {
            Some(e) => {
                if tokenizer.token_to_id(e).is_none() {
                    return Err(Error::Config(format!(
                        "data.eos_token {e:?} is not a token of {}",
                        tokenizer_path.display()
                    )));
                }
                Some(e.clone())
            }
            None => special_token(&tok_cfg, "eos_token")
                .or_else(|| eos_id.and_then(|id| tokenizer.id_to_token(id)))
                .or_else(|| {
                    lantern_data::tokenizer::DECODER_ENDS
                        .iter()
                        .find(|t| tokenizer.token_to_id(t).is_some())
                        .map(|t| t.to_string())
                }),
        };
        let template = match &d.chat_template {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?;
                Some(ChatTemplate::new(&text, &tok_cfg, p)?)
            }
            None => ChatTemplate::from_folder_config(folder, &tok_cfg)?,
        };
        let max_length = d.max_length.unwrap_or(DEFAULT_MAX_LENGTH.min(context));
        if max_length > context {
            return Err(Error::Config(format!(
                "data.max_length {max_length} exceeds the model's context of {context} tokens"
            )));
        }
        Ok(Self {
            eos,
            template,
            max_length,
            truncation: d.truncation_mode.unwrap_or_default(),
        })
    }

    /// How preference (DPO) and unpaired (KTO) records are read with these settings, for a
    /// model of `vocab_size` rows.
    pub(crate) fn preference_options(&self, vocab_size: usize) -> PreferenceOptions<'_> {
        PreferenceOptions {
            max_length: self.max_length,
            truncation: self.truncation,
            eos_token: self.eos.as_deref(),
            chat_template: self.template.as_ref(),
            vocab_size,
        }
    }

    /// The id padding is written with (its targets weigh 0, so any id would do).
    pub(crate) fn pad(&self, tokenizer: &Tokenizer) -> u32 {
        self.eos
            .as_deref()
            .and_then(|e| tokenizer.token_to_id(e))
            .unwrap_or(0)
    }
}

/// The example of global sample `i` of an epoch-shuffled run over `n` examples: position
/// i mod n of epoch i div n's order, a seeded permutation or, with `group` (examples per
/// optimizer step), transformers' length-grouped order over the examples' `lengths`. `cache`
/// keeps the order of the epoch last asked for.
pub(crate) fn epoch_index(
    n: usize,
    (group, lengths): (Option<usize>, impl Fn() -> Vec<usize>),
    seed: u64,
    i: u64,
    cache: &mut Option<(u64, Vec<usize>)>,
) -> usize {
    let n = n as u64;
    let epoch = i / n;
    if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
        let mut rng = Rng::derive(seed ^ ORDER_STREAM, epoch);
        let order = match group {
            Some(per_step) => length_grouped(&lengths(), per_step, &mut rng),
            None => permutation(n as usize, &mut rng),
        };
        *cache = Some((epoch, order));
    }
    cache.as_ref().expect("just filled").1[(i % n) as usize]
}

/// `examples` packed into rows, and how many rows with nothing to train on were left out
/// (they would add no loss, and a step of them alone none to divide by).
fn pack_rows(
    examples: &[SftExample],
    max_length: usize,
    strategy: PackingStrategy,
) -> (Vec<SftExample>, usize) {
    let mut rows = pack(examples, max_length, strategy);
    let n = rows.len();
    rows.retain(|r| r.targets() > 0);
    let left_out = n - rows.len();
    (rows, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], trained: &[bool]) -> SftExample {
        SftExample::new(ids.to_vec(), trained.to_vec(), 1)
    }

    fn set(n: usize) -> SftSet {
        SftSet {
            train: (0..n).map(|i| ex(&[i as u32, 1, 2], &[true; 3])).collect(),
            val: Vec::new(),
            pad: 9,
            format: SftFormat::Text,
            max_length: 8,
            packing: None,
            loss: TokenLoss::Nll,
            group: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn batches_pad_on_the_right_and_weigh_trained_targets() {
        let s = set(1);
        let a = ex(&[5, 6, 7, 8], &[false, false, true, true]);
        let b = ex(&[3, 4], &[true, true]);
        let batch = s.batch(&[&a, &b], &Device::Cpu).unwrap();
        assert_eq!(batch.ids.dims(), [2, 3]);
        assert_eq!(batch.ids.to_vec2::<u32>().unwrap(), [[5, 6, 7], [3, 9, 9]]);
        assert_eq!(batch.targets.to_vec1::<u32>().unwrap(), [6, 7, 8, 4, 9, 9]);
        assert_eq!(
            batch.weights.unwrap().to_vec1::<f32>().unwrap(),
            [0., 1., 1., 1., 0., 0.]
        );
        assert_eq!(batch.n_targets, 3);
    }

    /// A packed row: no target across the boundary (the second sequence's first token), the
    /// positions restart, and the last sequence's last token is not read.
    #[test]
    fn packed_rows_predict_within_their_sequences() {
        let s = set(1);
        let mut a = ex(&[5, 6, 7, 8, 9], &[true; 5]);
        a.seq_lengths = vec![2, 3];
        let b = ex(&[3, 4], &[true, true]);
        let batch = s.batch(&[&a, &b], &Device::Cpu).unwrap();
        assert_eq!(
            batch.ids.to_vec2::<u32>().unwrap(),
            [[5, 6, 7, 8], [3, 9, 9, 9]]
        );
        assert_eq!(
            batch.weights.unwrap().to_vec1::<f32>().unwrap(),
            [1., 0., 1., 1., 1., 0., 0., 0.]
        );
        assert_eq!(batch.n_targets, 4);
        let p = batch.packing.expect("a row of two sequences");
        assert_eq!(
            p.positions().to_vec2::<u32>().unwrap(),
            [[0, 1, 0, 1], [0, 0, 1, 2]]
        );
        // Single-sequence rows need none: the causal attention serves them.
        assert!(s.batch(&[&b], &Device::Cpu).unwrap().packing.is_none());
    }

    #[test]
    fn every_epoch_visits_each_example_once_in_its_own_order() {
        let s = set(7);
        let mut cache = None;
        let epoch = |e: u64, cache: &mut Option<(u64, Vec<usize>)>| -> Vec<usize> {
            (e * 7..(e + 1) * 7)
                .map(|i| s.train_index(3, i, cache))
                .collect()
        };
        let (e0, e1) = (epoch(0, &mut cache), epoch(1, &mut cache));
        for e in [&e0, &e1] {
            let mut sorted = e.clone();
            sorted.sort();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>());
        }
        assert_ne!(e0, e1);
        // A pure function of (seed, index): the same from a cold cache, in any order.
        assert_eq!(s.train_index(3, 9, &mut None), e1[2]);
        assert_eq!(s.train_index(3, 2, &mut cache), e0[2]);
    }

    #[test]
    fn grouped_epochs_are_transformers_length_grouped_orders() {
        let mut s = set(40);
        for (i, e) in s.train.iter_mut().enumerate() {
            e.ids = vec![1; 2 + (i * 7) % 13];
            e.trained = vec![true; e.ids.len()];
        }
        s.group = Some(4);
        let lengths: Vec<usize> = s.train.iter().map(|e| e.ids.len()).collect();
        let mut cache = None;
        for epoch in 0..2u64 {
            let got: Vec<usize> = (epoch * 40..(epoch + 1) * 40)
                .map(|i| s.train_index(5, i, &mut cache))
                .collect();
            let want = length_grouped(&lengths, 4, &mut Rng::derive(5 ^ ORDER_STREAM, epoch));
            assert_eq!(got, want);
        }
    }
}
