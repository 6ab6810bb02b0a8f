//! What a model folder's `tokenizer_config.json` takes from the model rather than the tokenizer
//! ([`ModelTokens`]: family, longest input, end-of-text and padding ids), for each config that
//! writes a folder, read from the same fields its `config.json` is written from, so the two
//! files agree. [`lantern_data::tokenizer_config_bytes`] builds the file.

use lantern_data::{ModelTokens, TokenizerFamily};
use lantern_models::bert::BertConfig;
use lantern_models::decoder::DecoderConfig;
use lantern_models::task::TaskConfig;

/// A language model's, `eos_id` being its `config.json`'s end-of-text id; a Llama's own
/// `pad_token_id` (one from a transformers folder) is its padding.
pub fn of_lm(lm: &DecoderConfig, eos_id: Option<u32>) -> ModelTokens {
    let (family, pad_id) = match lm {
        DecoderConfig::Gpt(_) => (TokenizerFamily::Gpt2, None),
        DecoderConfig::Llama(c) => (TokenizerFamily::Decoder, c.pad_token_id),
    };
    ModelTokens {
        family,
        max_length: lm.max_positions(),
        eos_id,
        pad_id,
    }
}

/// A BERT-family encoder's (any head).
pub fn of_encoder(c: &BertConfig) -> ModelTokens {
    ModelTokens {
        family: TokenizerFamily::Encoder,
        max_length: c.max_tokens(),
        eos_id: None,
        pad_id: Some(c.pad_token_id),
    }
}

/// A fine-tuning model's: an encoder, or a decoder classifier with its end-of-text and
/// padding ids.
pub fn of_task(cfg: &TaskConfig) -> ModelTokens {
    match cfg {
        TaskConfig::Bert(c) => of_encoder(c),
        TaskConfig::Decoder(c) => ModelTokens {
            pad_id: c.pad_token_id,
            ..of_lm(&c.lm, c.eos_token_id)
        },
    }
}

/// The folders a run's `tokenizer_config.json` may come from, in order: the one its
/// tokenizer was read from, then the `init_from` model's
/// ([`lantern_data::tokenizer_config_bytes`] takes the first beside the same tokenizer).
pub fn tokenizer_sources<'a>(
    tokenizer_path: &'a std::path::Path,
    init_from: Option<&'a std::path::Path>,
) -> Vec<&'a std::path::Path> {
    tokenizer_path
        .parent()
        .into_iter()
        .chain(init_from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lantern_models::decoder::classifier::DecoderClsConfig;
    use lantern_models::gpt::GptConfig;
    use lantern_models::llama::LlamaConfig;

    #[test]
    fn families_lengths_and_ids() {
        let gpt = DecoderConfig::Gpt(GptConfig::preset("gpt-tiny", 300).unwrap());
        let t = of_lm(&gpt, Some(7));
        assert_eq!(t.family, TokenizerFamily::Gpt2);
        assert_eq!(
            (t.max_length, t.eos_id, t.pad_id),
            (gpt.max_positions(), Some(7), None)
        );

        let mut llama = LlamaConfig::preset("llama-tiny", 300).unwrap();
        llama.pad_token_id = Some(3);
        let lm = DecoderConfig::Llama(llama);
        let t = of_lm(&lm, Some(7));
        assert_eq!((t.family, t.pad_id), (TokenizerFamily::Decoder, Some(3)));

        // A classifier's pad id is its own (the language model's moves into it).
        let mut cls = DecoderClsConfig::from_lm(lm.clone());
        cls.eos_token_id = Some(7);
        cls.pad_token_id = Some(7);
        let t = of_task(&TaskConfig::Decoder(cls));
        assert_eq!((t.eos_id, t.pad_id), (Some(7), Some(7)));
        assert_eq!(t.max_length, lm.max_positions());

        let bert = BertConfig::preset("bert-tiny", 300).unwrap();
        let t = of_task(&TaskConfig::Bert(bert.clone()));
        assert_eq!(t.family, TokenizerFamily::Encoder);
        assert_eq!(
            (t.max_length, t.pad_id),
            (bert.max_tokens(), Some(bert.pad_token_id))
        );
    }
}
