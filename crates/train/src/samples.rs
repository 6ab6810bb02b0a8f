//! Text sampled from a causal LM while it trains (`[sample]`, llm.c's `sample_every`): a look
//! at what the model writes, beside its losses. Rank 0 samples; nothing here touches the
//! training state, and each sample's random numbers depend only on `train.seed` and the step.

use crate::config::SampleSection;
use crate::{Error, Result};
use candle_core::Device;
use lantern_kernels::Rng;
use lantern_models::decoder::Decoder;
use lantern_models::sampling::{generate, Sampling, Stop};
use tokenizers::Tokenizer;

/// The random stream of samples, apart from every other use of `train.seed`.
const SAMPLE_STREAM: u64 = 0x5A3F_1E00;

/// What a run samples, and when.
pub struct Sampler {
    every: u64,
    prompt: Vec<u32>,
    how: Sampling,
    stop: Stop,
    seed: u64,
}

/// One sample: the prompt's text and the generated text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tokens: usize,
    pub text: String,
}

impl Sampler {
    /// `None` when `cfg.every` is 0. The prompt is `cfg.prompt` tokenized without special
    /// tokens, or the end-of-text token, or `bos`; samples stop at the end-of-text token and
    /// at `eos` (the model's `eos_token_id`s).
    pub fn new(
        cfg: &SampleSection,
        tok: &Tokenizer,
        (bos, eos): (Option<u32>, &[u32]),
        seed: u64,
    ) -> Result<Option<Self>> {
        if cfg.every == 0 {
            return Ok(None);
        }
        let eot = tok.token_to_id(lantern_data::tokenizer::EOT);
        let text = cfg.prompt.as_deref().unwrap_or("");
        let mut prompt = tok
            .encode(text, false)
            .map_err(|e| Error::Config(format!("sample.prompt: cannot tokenize it: {e}")))?
            .get_ids()
            .to_vec();
        if prompt.is_empty() {
            prompt.push(eot.or(bos).ok_or_else(|| {
                Error::Config(
                    "sample.prompt: the tokenizer has no <|endoftext|> and the model no \
                     bos_token_id to start from: give a prompt"
                        .into(),
                )
            })?);
        }
        let how = cfg.sampling().map_err(Error::Config)?;
        let mut stop_ids: Vec<u32> = eot.into_iter().chain(eos.iter().copied()).collect();
        stop_ids.dedup();
        Ok(Some(Self {
            every: cfg.every,
            prompt,
            how,
            stop: Stop {
                max_new: cfg.max_new_tokens,
                eot: stop_ids,
            },
            seed,
        }))
    }

    /// Whether the run samples after `step` (0: before training) of `last`.
    pub fn due(&self, step: u64, last: u64) -> bool {
        step.is_multiple_of(self.every) || step == last
    }

    /// A sample of `model` at `step`, decoded with `tok` (special tokens left out).
    pub fn sample(
        &self,
        model: &Decoder,
        tok: &Tokenizer,
        device: &Device,
        step: u64,
    ) -> Result<Sample> {
        let mut rng = Rng::derive(self.seed ^ SAMPLE_STREAM, step);
        let ids = generate(model, device, &self.prompt, &self.how, &self.stop, &mut rng)?;
        let text = tok
            .decode(&ids, true)
            .map_err(|e| Error::Config(format!("decoding a sample: {e}")))?;
        Ok(Sample {
            tokens: ids.len(),
            text,
        })
    }
}
