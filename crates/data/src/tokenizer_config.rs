//! `tokenizer_config.json`: what transformers reads beside `tokenizer.json` to know a
//! tokenizer's special tokens, its class and the model's longest input. Without it
//! `AutoTokenizer` loads a model folder with no padding token (and, for a Llama folder, with no
//! special tokens at all), so `tokenizer(texts, padding=True)` fails.
//!
//! [`tokenizer_config`] builds the file from the tokenizer itself and what the model's
//! `config.json` says ([`ModelTokens`]): the keys transformers 5's `save_pretrained` writes
//! that change what loads, and nothing else. [`tokenizer_config_bytes`] is what every model
//! folder gets: the transformers folder's own file when the model came from one (it is the
//! authority), else the built one.
//!
//! The class named decides how transformers rebuilds the tokenizer. `GPT2Tokenizer`,
//! `RobertaTokenizer` and `BertTokenizer` take only the vocabulary (and merges) and the
//! post-processor from `tokenizer.json` and rebuild the rest as their model's pipeline, so they
//! are named only when the tokenizer *is* that pipeline. Anything else is
//! `PreTrainedTokenizerFast` (transformers 5's `TokenizersBackend`; named so that transformers 4
//! reads it too), which runs `tokenizer.json` as it is: a Llama folder needs it, since
//! `LlamaTokenizer` hardcodes SentencePiece's Metaspace pipeline.

use std::path::Path;

use serde_json::{json, Map, Value};
use tokenizers::{ModelWrapper, Tokenizer};

use crate::error::{Error, Result};
use crate::tokenizer::{load_tokenizer, DECODER_ENDS};

/// The file's name in a model folder.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The class that runs `tokenizer.json` unchanged.
const GENERIC_CLASS: &str = "PreTrainedTokenizerFast";

/// The model family a `tokenizer_config.json` is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerFamily {
    /// GPT-2: BOS, EOS (and UNK, GPT-2's convention) are the end-of-text token.
    Gpt2,
    /// Another decoder (Llama): BOS and EOS are the end-of-text token.
    Decoder,
    /// The BERT family: BERT's `[PAD] [UNK] [CLS] [SEP] [MASK]` or RoBERTa's
    /// `<s> </s> <unk> <pad> <mask>`, by what the tokenizer has.
    Encoder,
}

/// What `tokenizer_config.json` takes from the model rather than the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelTokens {
    pub family: TokenizerFamily,
    /// The longest input the model takes, in tokens (transformers' `model_max_length`).
    pub max_length: usize,
    /// `config.json`'s `eos_token_id` (decoders); `None`: the tokenizer's end-of-text token.
    pub eos_id: Option<u32>,
    /// `config.json`'s `pad_token_id`: a fine-tuned decoder's padding (its end-of-text id).
    /// Encoders pad with `[PAD]` when the tokenizer has it, else with this id's token.
    pub pad_id: Option<u32>,
}

/// The `tokenizer_config.json` of `tokenizer` in a folder of `model`, as a JSON object with
/// sorted keys (serialising it gives the same bytes every time).
///
/// Special tokens are named only when the tokenizer has them: transformers adds a named token
/// it does not find to the vocabulary, past the model's embedding table. No `add_bos_token`:
/// transformers then adds what `tokenizer.json`'s post-processor adds (BERT's `[CLS]`/`[SEP]`,
/// nothing for Lantern's GPT-2 and Llama tokenizers), as Lantern does.
pub fn tokenizer_config(tokenizer: &Tokenizer, model: &ModelTokens) -> Result<Value> {
    let token_of = |id: u32, key: &str| {
        tokenizer.id_to_token(id).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "config.json's {key} {id} is not in the tokenizer's vocabulary"
            ))
        })
    };
    let has = |t: &str| tokenizer.token_to_id(t).is_some();
    let pipeline = Pipeline::of(tokenizer)?;
    let mut c = Map::new();
    let mut put = |k: &str, v: Value| {
        c.insert(k.to_string(), v);
    };
    put("model_max_length", json!(model.max_length));
    match model.family {
        TokenizerFamily::Gpt2 | TokenizerFamily::Decoder => {
            let end = match model.eos_id {
                Some(id) => Some(token_of(id, "eos_token_id")?),
                None => DECODER_ENDS.into_iter().find(|t| has(t)).map(String::from),
            };
            let gpt2 = model.family == TokenizerFamily::Gpt2;
            let unk = pipeline
                .unk
                .clone()
                .or_else(|| end.clone().filter(|_| gpt2));
            if let Some(end) = end {
                put("bos_token", json!(end));
                put("eos_token", json!(end));
            }
            if let Some(unk) = unk {
                put("unk_token", json!(unk));
            }
            if let Some(id) = model.pad_id {
                put("pad_token", json!(token_of(id, "pad_token_id")?));
            }
            // GPT2Tokenizer rebuilds the pre-tokenizer without a prefix space unless told;
            // a tokenizer with one is rare enough to take the generic class.
            if gpt2 && pipeline.byte_level_bpe().is_some_and(|(prefix, _)| !prefix) {
                put("tokenizer_class", json!("GPT2Tokenizer"));
                put("add_prefix_space", json!(false));
            } else {
                put("tokenizer_class", json!(GENERIC_CLASS));
            }
        }
        TokenizerFamily::Encoder => {
            let bert_names = has("[CLS]");
            let named: &[(&str, &str)] = if bert_names {
                &[
                    ("unk_token", "[UNK]"),
                    ("cls_token", "[CLS]"),
                    ("sep_token", "[SEP]"),
                    ("mask_token", "[MASK]"),
                ]
            } else {
                &[
                    ("bos_token", "<s>"),
                    ("eos_token", "</s>"),
                    ("unk_token", "<unk>"),
                    ("cls_token", "<s>"),
                    ("sep_token", "</s>"),
                    ("mask_token", "<mask>"),
                ]
            };
            for (key, t) in named {
                if has(t) {
                    put(key, json!(t));
                }
            }
            if let Some(unk) = &pipeline.unk {
                put("unk_token", json!(unk));
            }
            // As fine-tuning pads: `[PAD]`, else config.json's pad id (RoBERTa's `<pad>`).
            let pad = match (has("[PAD]"), model.pad_id) {
                (true, _) => Some("[PAD]".to_string()),
                (false, Some(id)) => Some(token_of(id, "pad_token_id")?),
                (false, None) => has("<pad>").then(|| "<pad>".to_string()),
            };
            if let Some(pad) = pad {
                put("pad_token", json!(pad));
            }
            if let Some(bert) = pipeline.bert_wordpiece() {
                put("tokenizer_class", json!("BertTokenizer"));
                put("do_lower_case", json!(bert.lowercase));
                put("strip_accents", bert.strip_accents);
                put("tokenize_chinese_chars", json!(bert.chinese_chars));
            } else if let (false, Some((prefix_space, trim_offsets))) =
                (bert_names, pipeline.byte_level_bpe())
            {
                put("tokenizer_class", json!("RobertaTokenizer"));
                put("add_prefix_space", json!(prefix_space));
                put("trim_offsets", json!(trim_offsets));
            } else {
                put("tokenizer_class", json!(GENERIC_CLASS));
            }
        }
    }
    Ok(Value::Object(c))
}

/// The bytes of `tokenizer_config.json` for a model folder holding `tokenizer`: the first of
/// the `sources` folders (the one the tokenizer was read from, then the transformers folder
/// the model came from, or the folder being exported) that has one beside a `tokenizer.json`
/// that is this tokenizer, copied as it is but for a `pad_token` added when `model.pad_id`
/// names one the file lacks; else [`tokenizer_config`]'s, pretty-printed. The tokenizer's own
/// folder comes first because its settings (the chat template above all) are the ones the
/// data were prepared with, as transformers saves the `processing_class` it was given.
pub fn tokenizer_config_bytes(
    tokenizer: &Tokenizer,
    model: &ModelTokens,
    sources: &[&Path],
) -> Result<Vec<u8>> {
    if let Some(path) = sources
        .iter()
        .map(|d| d.join(TOKENIZER_CONFIG_FILE))
        .filter(|p| p.is_file())
        .find(|p| same_tokenizer(tokenizer, &p.with_file_name(crate::TOKENIZER_FILE)))
    {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        return inherit(bytes, tokenizer, model.pad_id, &path);
    }
    let v = tokenizer_config(tokenizer, model)?;
    Ok(serde_json::to_vec_pretty(&v).expect("a JSON value serialises"))
}

/// A transformers folder's `tokenizer_config.json` (`path`, for messages), with `pad_token`
/// set to `pad_id`'s token when it has none and the folder's `chat_template.jinja` as its
/// `chat_template` when it has none; else the file's bytes as they are.
fn inherit(
    bytes: Vec<u8>,
    tokenizer: &Tokenizer,
    pad_id: Option<u32>,
    path: &Path,
) -> Result<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::format(path, "not a JSON object"))?;
    let mut changed = false;
    // transformers 5 saves a chat template beside this file (chat_template.jinja); it goes
    // into the file here, where transformers reads it too, so that every folder made from this
    // one (checkpoints, exports) keeps it.
    let jinja = path.with_file_name(crate::chat::CHAT_TEMPLATE_FILE);
    if obj.get("chat_template").is_none_or(Value::is_null) && jinja.is_file() {
        let t = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
        obj.insert("chat_template".into(), json!(t));
        changed = true;
    }
    if let Some(id) = pad_id.filter(|_| obj.get("pad_token").is_none_or(Value::is_null)) {
        let pad = tokenizer.id_to_token(id).ok_or_else(|| {
            Error::format(
                path,
                format!("config.json's pad_token_id {id} is not in the tokenizer's vocabulary"),
            )
        })?;
        obj.insert("pad_token".into(), json!(pad));
        changed = true;
    }
    if !changed {
        return Ok(bytes);
    }
    Ok(serde_json::to_vec_pretty(&v).expect("a JSON value serialises"))
}

/// Whether `path` is a tokenizer.json of the same tokenizer (compared as the tokenizers crate
/// writes both, so formatting and key order do not count).
fn same_tokenizer(tokenizer: &Tokenizer, path: &Path) -> bool {
    let Ok(other) = load_tokenizer(path) else {
        return false;
    };
    match (tokenizer.to_string(false), other.to_string(false)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A BERT normalizer's settings, which `BertTokenizer` rebuilds it from.
struct BertSettings {
    lowercase: bool,
    strip_accents: Value,
    chinese_chars: bool,
}

/// The parts of a tokenizer's pipeline that decide which transformers class rebuilds it
/// faithfully, as the tokenizers crate serialises them (without the vocabulary).
struct Pipeline {
    normalizer: Value,
    pre_tokenizer: Value,
    model: ModelKind,
    /// The model's unknown token, if it has one.
    unk: Option<String>,
}

enum ModelKind {
    /// BPE as GPT-2's and RoBERTa's classes rebuild it: no dropout, no subword prefix or
    /// suffix, no byte fallback.
    PlainBpe,
    /// WordPiece with its prefix and longest word.
    WordPiece(String, usize),
    Other,
}

impl Pipeline {
    fn of(tokenizer: &Tokenizer) -> Result<Self> {
        let json = |v: serde_json::Result<Value>| {
            v.map_err(|e| Error::InvalidArgument(format!("cannot serialise the tokenizer: {e}")))
        };
        let normalizer = json(serde_json::to_value(tokenizer.get_normalizer()))?;
        let pre_tokenizer = json(serde_json::to_value(tokenizer.get_pre_tokenizer()))?;
        let empty = |s: &Option<String>| s.as_deref().unwrap_or("").is_empty();
        let (model, unk) = match tokenizer.get_model() {
            ModelWrapper::BPE(b) => {
                let plain = b.dropout.is_none_or(|d| d == 0.0)
                    && empty(&b.continuing_subword_prefix)
                    && empty(&b.end_of_word_suffix)
                    && !b.byte_fallback;
                let kind = if plain {
                    ModelKind::PlainBpe
                } else {
                    ModelKind::Other
                };
                (kind, b.unk_token.clone())
            }
            ModelWrapper::WordPiece(w) => (
                ModelKind::WordPiece(
                    w.continuing_subword_prefix.clone(),
                    w.max_input_chars_per_word,
                ),
                Some(w.unk_token.clone()),
            ),
            _ => (ModelKind::Other, None),
        };
        let unk = unk.filter(|u| tokenizer.token_to_id(u).is_some());
        Ok(Self {
            normalizer,
            pre_tokenizer,
            model,
            unk,
        })
    }

    fn kind(v: &Value) -> Option<&str> {
        v.get("type").and_then(Value::as_str)
    }

    /// `(add_prefix_space, trim_offsets)` of a byte-level BPE without normalizer, the pipeline
    /// `GPT2Tokenizer` and `RobertaTokenizer` rebuild (GPT-2's split regex included).
    fn byte_level_bpe(&self) -> Option<(bool, bool)> {
        let p = &self.pre_tokenizer;
        let flag = |k: &str, default: bool| p.get(k).and_then(Value::as_bool).unwrap_or(default);
        (matches!(self.model, ModelKind::PlainBpe)
            && self.normalizer.is_null()
            && Self::kind(p) == Some("ByteLevel")
            && flag("use_regex", true))
        .then(|| (flag("add_prefix_space", false), flag("trim_offsets", true)))
    }

    /// BERT's pipeline, as `BertTokenizer` rebuilds it: BertNormalizer (cleaning text),
    /// BertPreTokenizer, WordPiece with `##` and words of up to 100 characters.
    fn bert_wordpiece(&self) -> Option<BertSettings> {
        let n = &self.normalizer;
        let flag = |k: &str| n.get(k).and_then(Value::as_bool);
        let wordpiece = matches!(&self.model, ModelKind::WordPiece(p, 100) if p == "##");
        (wordpiece
            && self.unk.is_some()
            && Self::kind(n) == Some("BertNormalizer")
            && flag("clean_text") == Some(true)
            && Self::kind(&self.pre_tokenizer) == Some("BertPreTokenizer"))
        .then(|| BertSettings {
            lowercase: flag("lowercase").unwrap_or(true),
            strip_accents: n.get("strip_accents").cloned().unwrap_or(Value::Null),
            chinese_chars: flag("handle_chinese_chars").unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{train_bpe_from_texts, train_wordpiece_from_texts, EOT};
    use std::path::PathBuf;

    const TEXT: &str = "The quick brown fox jumps over the lazy dog. The lazy dog sleeps; \
        the quick fox runs. Numbers 12345 and symbols too.\n";

    fn golden(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden")
            .join(rel)
    }

    fn bpe() -> Tokenizer {
        train_bpe_from_texts(&[TEXT; 3], 300).unwrap()
    }

    fn decoder(family: TokenizerFamily, eos_id: Option<u32>, pad_id: Option<u32>) -> ModelTokens {
        ModelTokens {
            family,
            max_length: 128,
            eos_id,
            pad_id,
        }
    }

    fn encoder(pad_id: u32) -> ModelTokens {
        ModelTokens {
            family: TokenizerFamily::Encoder,
            max_length: 512,
            eos_id: None,
            pad_id: Some(pad_id),
        }
    }

    #[test]
    fn gpt2_names_its_class_and_end_of_text_everywhere() {
        let tok = bpe();
        let eot = tok.token_to_id(EOT).unwrap();
        let lm = tokenizer_config(&tok, &decoder(TokenizerFamily::Gpt2, Some(eot), None)).unwrap();
        assert_eq!(
            lm,
            json!({
                "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": false,
                "bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "model_max_length": 128,
            })
        );
        // A classifier pads with config.json's pad id; without an eos id, EOT by name.
        let cls = tokenizer_config(&tok, &decoder(TokenizerFamily::Gpt2, None, Some(eot))).unwrap();
        assert_eq!(cls["pad_token"], EOT);
        assert_eq!(cls["eos_token"], EOT);
    }

    #[test]
    fn llama_takes_the_generic_class_and_no_unknown_token() {
        let tok = bpe();
        let eot = tok.token_to_id(EOT).unwrap();
        let m = decoder(TokenizerFamily::Decoder, Some(eot), Some(eot));
        assert_eq!(
            tokenizer_config(&tok, &m).unwrap(),
            json!({
                "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT,
                "pad_token": EOT, "model_max_length": 128,
            })
        );
    }

    #[test]
    fn a_gpt2_model_with_another_tokenizer_takes_the_generic_class() {
        let wp = train_wordpiece_from_texts(&[TEXT; 5], 120).unwrap();
        let sep = wp.token_to_id("[SEP]").unwrap();
        let c = tokenizer_config(&wp, &decoder(TokenizerFamily::Gpt2, Some(sep), None)).unwrap();
        assert_eq!(c["tokenizer_class"], GENERIC_CLASS);
        assert_eq!(c["eos_token"], "[SEP]");
        assert_eq!(c["unk_token"], "[UNK]", "the model's own unknown token");
    }

    #[test]
    fn bert_wordpiece_is_a_bert_tokenizer_with_its_normalizer_settings() {
        let want = json!({
            "tokenizer_class": "BertTokenizer", "do_lower_case": true, "strip_accents": null,
            "tokenize_chinese_chars": true, "unk_token": "[UNK]", "cls_token": "[CLS]",
            "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
            "model_max_length": 512,
        });
        let trained = train_wordpiece_from_texts(&[TEXT; 5], 120).unwrap();
        assert_eq!(tokenizer_config(&trained, &encoder(0)).unwrap(), want);
        let qa = crate::tokenizer::load_tokenizer(&golden("qa/tokenizer.json")).unwrap();
        assert_eq!(tokenizer_config(&qa, &encoder(0)).unwrap(), want);
    }

    /// Every key written for a RoBERTa or XLM-R tokenizer agrees with the file transformers'
    /// `save_pretrained` wrote for it (tests/golden), but `model_max_length`.
    #[test]
    fn roberta_and_xlmr_agree_with_transformers_files() {
        for (dir, class) in [
            ("roberta_tiny/tokenizer", "RobertaTokenizer"),
            ("xlmr_tokenizer", GENERIC_CLASS),
        ] {
            let tok =
                crate::tokenizer::load_tokenizer(&golden(dir).join("tokenizer.json")).unwrap();
            let c = tokenizer_config(&tok, &encoder(1)).unwrap();
            let text = std::fs::read_to_string(golden(dir).join(TOKENIZER_CONFIG_FILE)).unwrap();
            let hf: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(c["tokenizer_class"], class, "{dir}");
            for (k, v) in c.as_object().unwrap() {
                if !["model_max_length", "tokenizer_class"].contains(&k.as_str()) {
                    assert_eq!(&hf[k], v, "{dir}: {k}");
                }
            }
            for k in [
                "bos_token",
                "eos_token",
                "unk_token",
                "cls_token",
                "sep_token",
                "pad_token",
            ] {
                assert!(c.get(k).is_some(), "{dir}: {k}");
            }
            assert_eq!(c["mask_token"], "<mask>");
            assert_eq!(c["model_max_length"], 512);
        }
    }

    #[test]
    fn ids_outside_the_vocabulary_are_errors() {
        let tok = bpe();
        for m in [
            decoder(TokenizerFamily::Gpt2, Some(100_000), None),
            decoder(TokenizerFamily::Decoder, None, Some(100_000)),
        ] {
            let msg = tokenizer_config(&tok, &m).unwrap_err().to_string();
            assert!(
                msg.contains("100000") && msg.contains("vocabulary"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_transformers_folder_s_file_is_copied_and_given_a_pad_token() {
        let tok = bpe();
        let eot = tok.token_to_id(EOT).unwrap();
        let src = tempfile::tempdir().unwrap();
        // Formatted otherwise than the tokenizers crate writes it: still the same tokenizer.
        let v: Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
        std::fs::write(
            src.path().join(crate::TOKENIZER_FILE),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
        let theirs = b"{\"model_max_length\": 1024, \"chat_template\": \"{{ x }}\"}";
        std::fs::write(src.path().join(TOKENIZER_CONFIG_FILE), theirs).unwrap();

        let lm = decoder(TokenizerFamily::Gpt2, Some(eot), None);
        let bytes = tokenizer_config_bytes(&tok, &lm, &[src.path()]).unwrap();
        assert_eq!(bytes, theirs, "copied byte for byte");

        let cls = decoder(TokenizerFamily::Gpt2, Some(eot), Some(eot));
        let bytes = tokenizer_config_bytes(&tok, &cls, &[src.path()]).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"model_max_length": 1024, "chat_template": "{{ x }}", "pad_token": EOT})
        );
        assert_eq!(
            bytes,
            tokenizer_config_bytes(&tok, &cls, &[src.path()]).unwrap()
        );

        // Another tokenizer than the folder's: the folder's file does not describe it.
        let other = train_bpe_from_texts(&["other words entirely, other words"; 3], 270).unwrap();
        let bytes = tokenizer_config_bytes(&other, &lm, &[src.path()]).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, tokenizer_config(&other, &lm).unwrap());
        // No source, or one without the file: built.
        let none = tokenizer_config_bytes(&tok, &lm, &[]).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&none).unwrap(),
            tokenizer_config(&tok, &lm).unwrap()
        );
        assert_eq!(none, tokenizer_config_bytes(&tok, &lm, &[]).unwrap());

        // Several folders: the first with the file beside the same tokenizer. A model folder
        // without either is passed over, as is one whose file describes another tokenizer.
        let (bare, stranger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(
            stranger.path().join(crate::TOKENIZER_FILE),
            other.to_string(false).unwrap(),
        )
        .unwrap();
        std::fs::write(stranger.path().join(TOKENIZER_CONFIG_FILE), b"{}").unwrap();
        for folders in [
            [bare.path(), src.path()],
            [stranger.path(), src.path()],
            [src.path(), stranger.path()],
        ] {
            assert_eq!(tokenizer_config_bytes(&tok, &lm, &folders).unwrap(), theirs);
        }

        std::fs::write(src.path().join(TOKENIZER_CONFIG_FILE), "[1, 2]").unwrap();
        let msg = tokenizer_config_bytes(&tok, &cls, &[src.path()])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(TOKENIZER_CONFIG_FILE) && msg.contains("not a JSON object"),
            "{msg}"
        );
    }
}
