//! Reward modeling in the fine-tuning loop (`data.problem_type = "reward_modeling"`, TRL's
//! `RewardTrainer`).
//!
//! The data are preference records, the layouts DPO reads (`prompt`, `chosen`, `rejected`,
//! as text or messages; an optional `margin`), prepared as TRL prepares them
//! ([`lantern_data::dpo::read_rewards`]): each preference is one example of two sequences,
//! prompt + chosen and prompt + rejected, laid out as a multiple-choice example is (two
//! "choices", the chosen one right). The model is a sequence classifier with one output, the
//! reward, read at each sequence's last token; the loss of a preference is
//! `−log σ(r_c − r_r − margin)` (plus `data.center_rewards_coefficient · (r_c + r_r)²`), its
//! mean over the preferences. Evaluation reports the loss, the share of preferences whose
//! chosen reward is higher (TRL's `accuracy`), the mean margin and the rewards' range.

use crate::{Error, Result};
use lantern_data::chat::{read_tokenizer_config, special_token, ChatTemplate};
use lantern_data::dpo::{read_rewards, PreferenceOptions, RewardData};
use lantern_data::labelled::{Encoded, Target};
use lantern_models::task::TaskConfig;
use std::path::Path;
use tokenizers::Tokenizer;

/// How preference records become reward-modeling examples.
pub struct RewardReader {
    /// transformers' `tokenizer.eos_token`: `tokenizer_config.json`'s, else the model's
    /// end-of-sequence id's token.
    eos: Option<String>,
    template: Option<ChatTemplate>,
    max_length: usize,
    vocab_size: usize,
}

impl RewardReader {
    /// The reader for a tokenizer (its folder's `tokenizer_config.json` gives the
    /// end-of-sequence token and the chat template), `max_length` and the model's vocabulary.
    pub fn new(
        tokenizer: &Tokenizer,
        tokenizer_path: &Path,
        eos_id: Option<u32>,
        (max_length, vocab_size): (usize, usize),
    ) -> Result<Self> {
        let folder = tokenizer_path.parent().unwrap_or(Path::new("."));
        let tok_cfg = read_tokenizer_config(folder)?;
        let eos = special_token(&tok_cfg, "eos_token")
            .or_else(|| eos_id.and_then(|id| tokenizer.id_to_token(id)));
        Ok(Self {
            eos,
            template: ChatTemplate::from_folder_config(folder, &tok_cfg)?,
            max_length,
            vocab_size,
        })
    }

    /// [`RewardReader::new`] for `model`: its end-of-sequence id (a decoder's) and vocabulary.
    pub fn for_model(
        (tokenizer, tokenizer_path): (&Tokenizer, &Path),
        model: &TaskConfig,
        max_length: usize,
    ) -> Result<Self> {
        let eos = match model {
            TaskConfig::Decoder(c) => c.eos_token_id,
            TaskConfig::Bert(_) => None,
        };
        Self::new(
            tokenizer,
            tokenizer_path,
            eos,
            (max_length, model.vocab_size()),
        )
    }

    /// The examples of `path`, and a line for the run's log when records were dropped.
    pub fn read(
        &self,
        path: &Path,
        tokenizer: &Tokenizer,
    ) -> Result<(Vec<Encoded>, Option<String>)> {
        let opts = PreferenceOptions {
            max_length: self.max_length,
            truncation: Default::default(),
            eos_token: self.eos.as_deref(),
            chat_template: self.template.as_ref(),
            vocab_size: self.vocab_size,
        };
        let data: RewardData = read_rewards(path, tokenizer, &opts).map_err(Error::from)?;
        let note = (data.dropped > 0).then(|| {
            format!(
                "{}: {} record(s) dropped, a sequence longer than data.max_length {}",
                path.display(),
                data.dropped,
                self.max_length
            )
        });
        Ok((data.examples.into_iter().map(encoded).collect(), note))
    }
}

/// One preference as a two-sequence example: chosen then rejected, the first right by its
/// margin.
fn encoded(e: lantern_data::dpo::RewardExample) -> Encoded {
    let choice_lens = vec![e.chosen.len(), e.rejected.len()];
    let ids: Vec<u32> = e.chosen.into_iter().chain(e.rejected).collect();
    Encoded {
        type_ids: vec![0; ids.len()],
        ids,
        label: Some(Target::Preference(e.margin.unwrap_or(0.0))),
        line: e.line,
        word_ids: Vec::new(),
        choice_lens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preference_is_two_sequences_chosen_first() {
        let e = encoded(lantern_data::dpo::RewardExample {
            chosen: vec![1, 2, 3],
            rejected: vec![1, 4],
            margin: Some(0.5),
            line: 7,
        });
        assert_eq!(e.ids, [1, 2, 3, 1, 4]);
        assert_eq!(e.choice_lens, [3, 2]);
        assert_eq!(e.label, Some(Target::Preference(0.5)));
        let b = lantern_data::labelled::pad_batch(&[&e], 0);
        assert_eq!((b.rows, b.cols), (2, 3));
        assert_eq!(b.ids, [1, 2, 3, 1, 4, 0]);
        assert_eq!(b.attention_mask, [1, 1, 1, 1, 1, 0]);
        assert_eq!((b.labels, b.targets), (vec![0], vec![0.5]));
    }
}
