//! Tokenizers: train a GPT-2-style byte-level BPE tokenizer or a BERT-style WordPiece one, or
//! load any `tokenizer.json` (BPE, WordPiece such as all-MiniLM-L6-v2's, ...).
//!
//! The trained tokenizer follows GPT-2 (Radford et al. 2019, and the Hugging Face `gpt2`
//! tokenizer.json): ByteLevel pre-tokenizer with GPT-2's split regex, no prefix space, ByteLevel
//! decoder, no normalizer. Its initial alphabet is all 256 byte symbols, so every string encodes
//! (no unknown token) and `decode(encode(s)) == s` for any text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

use crate::error::{Error, Result};

/// GPT-2's end-of-text token, appended after every document.
pub const EOT: &str = "<|endoftext|>";

/// The end-of-text tokens of decoders' tokenizers, GPT-2's (and Lantern's) first, then
/// SentencePiece Llamas' and Llama 3's: the token a decoder classifier pads with when its
/// config names none.
pub const DECODER_ENDS: [&str; 3] = [EOT, "</s>", "<|end_of_text|>"];

/// The smallest useful vocabulary: the 256 byte symbols plus [`EOT`].
pub const MIN_BPE_VOCAB: usize = 257;

/// Train a byte-level BPE tokenizer on the given text files (each read whole; invalid UTF-8 is
/// replaced by U+FFFD rather than failing, since a stray byte should not stop a data run).
pub fn train_bpe(files: &[PathBuf], vocab_size: usize) -> Result<Tokenizer> {
    let mut texts = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    train_bpe_from_texts(&texts, vocab_size)
}

/// Train a byte-level BPE tokenizer on in-memory texts (one text per document or file).
///
/// `vocab_size` counts everything: 256 byte symbols, [`EOT`] and the merges. The result can be
/// smaller than asked for when the corpus runs out of pairs to merge; use
/// `get_vocab_size(true)` on the result for the real size.
pub fn train_bpe_from_texts<S: AsRef<str> + Sync>(
    texts: &[S],
    vocab_size: usize,
) -> Result<Tokenizer> {
    train_bpe_from_iter(texts.iter().map(|t| t.as_ref()), vocab_size)
}

/// [`train_bpe_from_texts`] on texts as they come (a corpus read from disk while the trainer
/// counts its words, on all cores): only the word counts are held, not the text.
pub fn train_bpe_from_iter<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    if vocab_size < MIN_BPE_VOCAB {
        return Err(Error::InvalidArgument(format!(
            "BPE vocabulary size {vocab_size} is too small: the 256 byte symbols and {EOT} need {MIN_BPE_VOCAB}"
        )));
    }
    let byte_level = ByteLevel::default()
        .add_prefix_space(false)
        // GPT-2 keeps offsets untrimmed; offsets do not affect ids, only what they point at.
        .trim_offsets(false)
        .use_regex(true);
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        // Pairs seen once are noise on small corpora and would spend vocabulary on them.
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();

    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .train(&mut trainer, texts)
        .map_err(|e| Error::TokenizerTraining(e.to_string()))?;
    Ok(tokenizer)
}

/// BERT's special tokens, with ids 0..5 in a trained WordPiece vocabulary.
pub const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Train a BERT-style WordPiece tokenizer (as `bert-base-uncased`'s: BertNormalizer with
/// lowercasing, BertPreTokenizer, `##` continuation prefix) on in-memory texts, with
/// [`BERT_SPECIALS`] first and BERT's post-processor (`[CLS] a [SEP]` and
/// `[CLS] a [SEP] b [SEP]` with token types 0/1), ready for MLM pretraining or classification.
/// The vocabulary is learned by [`crate::wordpiece::learn_vocab`]: the same texts give the same
/// tokenizer, byte for byte.
pub fn train_wordpiece_from_texts<S: AsRef<str> + Sync>(
    texts: &[S],
    vocab_size: usize,
) -> Result<Tokenizer> {
    train_wordpiece_from_iter(texts.iter(), vocab_size)
}

/// [`train_wordpiece_from_texts`] on texts as they come: only the word counts are held.
pub fn train_wordpiece_from_iter<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = S>,
    S: AsRef<str>,
{
    if vocab_size < 64 {
        return Err(Error::InvalidArgument(format!(
            "WordPiece vocabulary size {vocab_size} is too small (at least 64)"
        )));
    }
    // Words of the corpus as the tokenizer will see them: BERT's normalisation (lowercase,
    // accents stripped, CJK split) and pre-tokenisation (whitespace and punctuation).
    let normalizer = BertNormalizer::default();
    let mut words: BTreeMap<String, u64> = BTreeMap::new();
    for text in texts {
        let mut n = NormalizedString::from(text.as_ref());
        normalizer
            .normalize(&mut n)
            .map_err(|e| Error::TokenizerTraining(e.to_string()))?;
        let mut pre = PreTokenizedString::from(n);
        BertPreTokenizer
            .pre_tokenize(&mut pre)
            .map_err(|e| Error::TokenizerTraining(e.to_string()))?;
        for (w, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            *words.entry(w.to_string()).or_default() += 1;
        }
    }
    let vocab = crate::wordpiece::learn_vocab(&words, &BERT_SPECIALS, vocab_size, 2);
    let vocab: ahash::AHashMap<String, u32> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token("[UNK]".to_string())
        .continuing_subword_prefix(crate::wordpiece::PREFIX.to_string())
        .build()
        .map_err(|e| Error::TokenizerTraining(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| Error::TokenizerTraining(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    // Special tokens in the input text stay whole (as the trainer of `tokenizers` adds them).
    tokenizer
        .add_special_tokens(
            BERT_SPECIALS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| Error::TokenizerTraining(e.to_string()))?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| Error::TokenizerTraining(format!("{t} missing after training")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".to_string(), sep),
        ("[CLS]".to_string(), cls),
    )));
    Ok(tokenizer)
}

/// [`train_wordpiece_from_texts`] on text files (invalid UTF-8 replaced, as [`train_bpe`]).
pub fn train_wordpiece(files: &[PathBuf], vocab_size: usize) -> Result<Tokenizer> {
    let mut texts = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    train_wordpiece_from_texts(&texts, vocab_size)
}

/// Checks that a tokenizer fits a model: its ids must all be embeddable, and a tokenizer much
/// smaller than the table is almost certainly the wrong one (another model's vocabulary), so
/// the sizes must agree exactly. `path` names the tokenizer file.
pub fn check_vocab(tokenizer: &Tokenizer, model_vocab: usize, path: &Path) -> Result<()> {
    let n = vocab_size(tokenizer);
    if n != model_vocab {
        return Err(Error::Tokenizer {
            path: path.to_path_buf(),
            problem: format!(
                "tokenizer vocabulary size {n} differs from the model's vocab_size {model_vocab}"
            ),
        });
    }
    Ok(())
}

/// Load a `tokenizer.json` (BPE, WordPiece, or anything else the tokenizers crate reads).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::Tokenizer {
            path: path.to_path_buf(),
            problem: "tokenizer file does not exist".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_tokenizer(&bytes, path)
}

/// Parses tokenizer.json bytes (`path` is for messages): UTF-8 JSON the tokenizers crate
/// accepts, with a non-empty vocabulary.
pub fn parse_tokenizer(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
    let problem = |p: String| Error::Tokenizer {
        path: path.to_path_buf(),
        problem: p,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| problem(format!("not UTF-8 text ({e})")))?;
    let tok = text
        .parse::<Tokenizer>()
        .map_err(|e| problem(format!("not a valid tokenizer.json: {e}")))?;
    if tok.get_vocab_size(true) == 0 {
        return Err(problem("the tokenizer has an empty vocabulary".into()));
    }
    Ok(tok)
}

/// [`parse_tokenizer`], and every id it can produce must be below `model_vocab` (the rows of
/// the embedding table), so a mismatched tokenizer fails here and not as a bad gather later.
pub fn check_tokenizer_bytes(bytes: &[u8], path: &Path, model_vocab: usize) -> Result<Tokenizer> {
    let tok = parse_tokenizer(bytes, path)?;
    let need = vocab_size(&tok);
    if need > model_vocab {
        return Err(Error::Tokenizer {
            path: path.to_path_buf(),
            problem: format!(
                "the tokenizer produces ids up to {}, but the model's vocabulary has {model_vocab}",
                need - 1
            ),
        });
    }
    Ok(tok)
}

/// Number of ids a model's embedding table must have for this tokenizer: one more than the
/// largest id, added tokens included. This is usually `get_vocab_size(true)`, but a
/// tokenizer.json may leave holes in its id range, and the table must cover the largest id.
pub fn vocab_size(tokenizer: &Tokenizer) -> usize {
    let max_id = tokenizer.get_vocab(true).into_values().max();
    let by_ids = max_id.map_or(0, |m| m as usize + 1);
    by_ids.max(tokenizer.get_vocab_size(true))
}

/// The id of the token that ends a document: [`EOT`] for GPT-style tokenizers, else BERT's
/// `[SEP]` or the `</s>` of RoBERTa-style ones, so a pretrained encoder's tokenizer can also be
/// used to prepare a dataset.
pub fn document_separator(tokenizer: &Tokenizer) -> Option<(u32, &'static str)> {
    [EOT, "[SEP]", "</s>"]
        .into_iter()
        .find_map(|t| tokenizer.token_to_id(t).map(|id| (id, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The quick brown fox jumps over the lazy dog.\n\
        The lazy dog sleeps;  the quick fox   runs.\n\tIndented line\n\n\
        Numbers 12345 and symbols !@#$%^&*() too.\n";

    fn small() -> Tokenizer {
        let texts = vec![TEXT; 3];
        train_bpe_from_texts(&texts, 300).expect("training on a small text works")
    }

    #[test]
    fn round_trip_ascii_with_spaces_and_newlines() {
        let tok = small();
        for s in [
            TEXT,
            "  leading and trailing spaces  ",
            "\n\nnewlines\r\nand tabs\t\t",
            "unseen words: zyxwvut qqq",
            "",
        ] {
            let enc = tok.encode(s, false).unwrap();
            let dec = tok.decode(enc.get_ids(), false).unwrap();
            assert_eq!(dec, s);
        }
    }

    #[test]
    fn round_trip_non_ascii_bytes() {
        // Characters never seen in training still encode, byte by byte.
        let tok = small();
        let s = "naïve café — 日本語 🦀";
        let enc = tok.encode(s, false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), s);
    }

    #[test]
    fn eot_is_one_special_token() {
        let tok = small();
        let eot = tok.token_to_id(EOT).expect("EOT in vocabulary");
        let enc = tok.encode(format!("fox{EOT}dog"), false).unwrap();
        assert!(enc.get_ids().contains(&eot));
        assert_eq!(document_separator(&tok), Some((eot, EOT)));
        assert!(vocab_size(&tok) <= 300);
        assert!(vocab_size(&tok) > MIN_BPE_VOCAB, "some merges were learned");
    }

    #[test]
    fn training_is_deterministic() {
        let a = small().to_string(false).unwrap();
        let b = small().to_string(false).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let tok = small();
        tok.save(&path, false).unwrap();
        let loaded = load_tokenizer(&path).unwrap();
        let enc = loaded.encode(TEXT, false).unwrap();
        assert_eq!(enc.get_ids(), tok.encode(TEXT, false).unwrap().get_ids());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let msg = load_tokenizer(&missing).unwrap_err().to_string();
        assert!(
            msg.contains("nope.json") && msg.contains("does not exist"),
            "{msg}"
        );

        let latin1 = dir.path().join("latin1.json");
        std::fs::write(&latin1, b"{\"caf\xe9\": 1}").unwrap();
        let msg = load_tokenizer(&latin1).unwrap_err().to_string();
        assert!(
            msg.contains("latin1.json") && msg.contains("UTF-8"),
            "{msg}"
        );
        let tok = small().to_string(false).unwrap();
        let msg = check_tokenizer_bytes(tok.as_bytes(), Path::new("t.json"), 100)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("t.json") && msg.contains("vocabulary has 100"),
            "{msg}"
        );

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{ not json").unwrap();
        let msg = load_tokenizer(&bad).unwrap_err().to_string();
        assert!(
            msg.contains("bad.json") && msg.contains("not a valid"),
            "{msg}"
        );
    }

    #[test]
    fn wordpiece_has_bert_specials_and_post_processor() {
        let texts = vec![TEXT; 5];
        let tok = train_wordpiece_from_texts(&texts, 120).unwrap();
        for (i, t) in BERT_SPECIALS.iter().enumerate() {
            assert_eq!(tok.token_to_id(t), Some(i as u32), "{t}");
        }
        let enc = tok.encode(("The quick fox", "lazy dogs"), true).unwrap();
        let ids = enc.get_ids();
        assert_eq!(ids[0], 2, "[CLS] first");
        assert_eq!(*ids.last().unwrap(), 3, "[SEP] last");
        assert_eq!(ids.iter().filter(|&&i| i == 3).count(), 2);
        assert_eq!(
            enc.get_type_ids().last(),
            Some(&1),
            "second segment has type 1"
        );
        // Lowercased, and unknown characters map to [UNK].
        let a = tok.encode("THE", false).unwrap();
        assert_eq!(a.get_ids(), tok.encode("the", false).unwrap().get_ids());
        assert!(tok.encode("日", false).unwrap().get_ids().contains(&1));
        let n = vocab_size(&tok);
        assert!(n > 60 && n <= 120, "{n}");
        assert!(check_vocab(&tok, n, Path::new("t.json")).is_ok());
        let msg = check_vocab(&tok, n + 1, Path::new("t.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("t.json") && msg.contains("differs"), "{msg}");
    }

    #[test]
    fn train_bpe_reads_files_and_rejects_tiny_vocab() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, TEXT).unwrap();
        let tok = train_bpe(std::slice::from_ref(&f), 280).unwrap();
        assert!(tok.token_to_id(EOT).is_some());
        assert!(matches!(
            train_bpe(&[f], 100),
            Err(Error::InvalidArgument(_))
        ));
        let missing = dir.path().join("missing.txt");
        let msg = train_bpe(&[missing], 300).unwrap_err().to_string();
        assert!(msg.contains("missing.txt"), "{msg}");
    }
}
