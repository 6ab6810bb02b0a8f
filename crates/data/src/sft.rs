//! Supervised fine-tuning examples for a causal language model, in the dataset layouts of TRL's
//! `SFTTrainer` (one JSON object per line):
//!
//! - language modeling: `{"text": "..."}` (the field is `text_field`), trained on every token;
//! - prompt-completion: `{"prompt": "...", "completion": "..."}`, trained on the completion's
//!   tokens only (TRL's `completion_only_loss`, on by default);
//! - conversational: `{"messages": [{"role": ..., "content": ...}, ...]}` and
//!   `{"prompt": [messages], "completion": [messages]}`, rendered by the model's chat template
//!   ([`crate::chat::ChatTemplate`]).
//!
//! Tokenization is TRL 1.x's: plain text gets the end-of-sequence token appended (unless it
//! already ends with it) and is tokenized with the tokenizer's special tokens (a Llama
//! tokenizer's BOS); the completion of a prompt-completion record starts where the tokens of
//! the prompt alone and of prompt + completion first differ (`common_prefix_length`);
//! conversations are rendered by the template and tokenized without special tokens (the
//! template writes them). Examples longer than `max_length` keep their first `max_length`
//! tokens, or their last with [`Truncation::KeepEnd`] (TRL's `truncation_mode`); an example
//! left with no trained token after its first is dropped (it has nothing to predict).

use std::ops::Range;
use std::path::Path;

use minijinja::value::ValueKind;
use minijinja::Value as JValue;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::labelled::bad;

/// Which end of a sequence longer than `max_length` is kept (TRL's `truncation_mode`, of
/// `SFTConfig` and `DPOConfig` alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// The first `max_length` tokens (TRL's default).
    #[default]
    KeepStart,
    /// The last `max_length` tokens: the end of a long completion survives a long prompt.
    KeepEnd,
}

impl Truncation {
    pub fn name(self) -> &'static str {
        match self {
            Self::KeepStart => "keep_start",
            Self::KeepEnd => "keep_end",
        }
    }

    /// The positions of a sequence of `len` tokens that are kept at `max_length` (Python's
    /// `[:max_length]` or `[-max_length:]`).
    pub fn kept(self, len: usize, max_length: usize) -> Range<usize> {
        match self {
            Self::KeepStart => 0..len.min(max_length),
            Self::KeepEnd => len.saturating_sub(max_length)..len,
        }
    }
}

/// One tokenized example: `ids` and, per token, whether the loss is taken there (TRL's labels
/// other than -100). The loss of position i predicts token i + 1 where `trained[i + 1]`.
/// A packed row ([`crate::packing`]) holds several sequences one after the other: no token is
/// predicted across their boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    pub trained: Vec<bool>,
    /// The lengths of the sequences in `ids`, in order: one for an example as read.
    pub seq_lengths: Vec<usize>,
    /// The record's line in its file (1-based); a packed row's first sequence's.
    pub line: usize,
}

impl SftExample {
    /// An example of one sequence.
    pub fn new(ids: Vec<u32>, trained: Vec<bool>, line: usize) -> Self {
        let n = ids.len();
        Self {
            ids,
            trained,
            seq_lengths: vec![n],
            line,
        }
    }

    /// Whether the loss is taken at token i: trained, and not the first of its sequence
    /// (nothing before it in the sequence predicts it).
    pub fn predicted(&self) -> Vec<bool> {
        let mut out = self.trained.clone();
        let mut start = 0;
        for &len in &self.seq_lengths {
            if let Some(first) = out.get_mut(start) {
                *first = false;
            }
            start += len;
        }
        out
    }

    /// Tokens the loss is taken at: trained tokens after the first of each sequence.
    pub fn targets(&self) -> usize {
        self.predicted().iter().filter(|&&t| t).count()
    }
}

/// Which layout a file's records have (one for the whole file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftFormat {
    Text,
    PromptCompletion,
    Messages,
    ConversationalPromptCompletion,
}

impl SftFormat {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Text => "language modeling (text)",
            Self::PromptCompletion => "prompt-completion",
            Self::Messages => "conversational (messages)",
            Self::ConversationalPromptCompletion => "conversational prompt-completion",
        }
    }
}

/// How records become examples.
#[derive(Debug, Clone)]
pub struct SftOptions<'a> {
    /// The text field of language-modeling records (TRL's `dataset_text_field`).
    pub text_field: &'a str,
    /// Truncation length in tokens (TRL's `max_length`).
    pub max_length: usize,
    /// Cut examples to `max_length` and drop those left with nothing to train on. Off for
    /// packing, which cuts (or splits) examples itself and, as TRL's, keeps every one.
    pub truncate: bool,
    /// Which end of a long example is kept.
    pub truncation: Truncation,
    /// Train on the completion only (prompt-completion records); TRL's `completion_only_loss`
    /// (its default `None` is `true` here).
    pub completion_only_loss: bool,
    /// The end-of-sequence token appended to plain text (TRL's `tokenizer.eos_token`); `None`
    /// when the tokenizer has none, which plain-text records then cannot do without.
    pub eos_token: Option<&'a str>,
    /// The chat template conversational records are rendered with.
    pub chat_template: Option<&'a ChatTemplate>,
    /// Train on the assistant's text only: the tokens the template's `{% generation %}` blocks
    /// wrote (TRL's `assistant_only_loss`; conversational records only).
    pub assistant_only_loss: bool,
    /// Rows of the model's embedding table: a token id at or past it is refused.
    pub vocab_size: usize,
}

/// A file's examples.
#[derive(Debug, Clone)]
pub struct SftData {
    pub examples: Vec<SftExample>,
    pub format: SftFormat,
    /// Records cut to `max_length`.
    pub truncated: usize,
    /// Records dropped for having nothing to predict.
    pub dropped: usize,
}

impl SftData {
    /// Tokens the loss is taken at, over all examples.
    pub fn targets(&self) -> usize {
        self.examples.iter().map(SftExample::targets).sum()
    }
}

/// A record before tokenization.
enum Record {
    Text(String),
    PromptCompletion(String, String),
    /// The messages, and the record's `tools` (function schemas the template may render).
    Messages(Vec<Message>, Option<JValue>),
    ConvPromptCompletion(Vec<Message>, Vec<Message>, Option<JValue>),
}

impl Record {
    fn format(&self) -> SftFormat {
        match self {
            Self::Text(_) => SftFormat::Text,
            Self::PromptCompletion(..) => SftFormat::PromptCompletion,
            Self::Messages(..) => SftFormat::Messages,
            Self::ConvPromptCompletion(..) => SftFormat::ConversationalPromptCompletion,
        }
    }
}

/// Line `n` of `path` as a JSON object, read as template values, which keep an object's keys
/// in order (a message's, for the template); the record's own keys are looked up by name.
pub(crate) fn record_object(path: &Path, n: usize, line: &str) -> Result<JValue> {
    let v: JValue =
        serde_json::from_str(line).map_err(|e| bad(path, n, format!("invalid JSON: {e}")))?;
    if v.kind() != ValueKind::Map {
        return Err(bad(path, n, "a record must be a JSON object"));
    }
    Ok(v)
}

/// A record's field `k`, absent when missing or null.
pub(crate) fn record_field(v: &JValue, k: &str) -> Option<JValue> {
    v.get_attr(k)
        .ok()
        .filter(|x| !x.is_undefined() && !x.is_none())
}

/// A record's messages in field `k`.
pub(crate) fn record_messages(path: &Path, n: usize, k: &str, x: &JValue) -> Result<Vec<Message>> {
    Message::list_from_json(x).map_err(|m| bad(path, n, format!("\"{k}\": {m}")))
}

/// TRL's `tools` column: a list of function schemas, or its JSON text.
pub(crate) fn record_tools(path: &Path, n: usize, v: &JValue) -> Result<Option<JValue>> {
    let Some(t) = record_field(v, "tools") else {
        return Ok(None);
    };
    let t = match t.kind() {
        ValueKind::String => serde_json::from_str::<JValue>(t.as_str().unwrap_or_default())
            .map_err(|e| bad(path, n, format!("\"tools\" is not JSON text: {e}")))?,
        _ => t,
    };
    match t.kind() {
        ValueKind::Seq => Ok(Some(t)),
        _ => Err(bad(
            path,
            n,
            format!("\"tools\" must be a list of function schemas, got {t}"),
        )),
    }
}

fn parse_record(path: &Path, n: usize, line: &str, text_field: &str) -> Result<Record> {
    let v = record_object(path, n, line)?;
    let field = |k: &str| record_field(&v, k);
    let messages = |k: &str, x: &JValue| record_messages(path, n, k, x);
    let string = |x: &JValue| x.as_str().map(str::to_string);
    let tools = || record_tools(path, n, &v);
    match (field("prompt"), field("completion"), field("messages")) {
        (Some(p), Some(c), None) => match (p.kind(), c.kind()) {
            (ValueKind::String, ValueKind::String) => Ok(Record::PromptCompletion(
                string(&p).unwrap_or_default(),
                string(&c).unwrap_or_default(),
            )),
            (ValueKind::Seq, ValueKind::Seq) => Ok(Record::ConvPromptCompletion(
                messages("prompt", &p)?,
                messages("completion", &c)?,
                tools()?,
            )),
            _ => Err(bad(
                path,
                n,
                "\"prompt\" and \"completion\" must both be strings or both be lists of messages",
            )),
        },
        (None, None, Some(m)) => Ok(Record::Messages(messages("messages", &m)?, tools()?)),
        // TRL takes any record with a prompt for a prompt-completion one, and so fails on
        // ultrachat_200k's, whose `prompt` column repeats the conversation's first turn.
        (Some(_), None, Some(_)) => Err(bad(
            path,
            n,
            "a prompt-completion record needs both \"prompt\" and \"completion\"; this one \
             has \"messages\" too: a conversation is \"messages\" alone (drop the \"prompt\" \
             column, as ultrachat_200k's, which repeats the first turn)",
        )),
        (Some(_), None, None) | (None, Some(_), _) => Err(bad(
            path,
            n,
            "a prompt-completion record needs both \"prompt\" and \"completion\"",
        )),
        (Some(_), Some(_), Some(_)) => Err(bad(
            path,
            n,
            "a record has either \"messages\" or \"prompt\" and \"completion\", not both",
        )),
        (None, None, None) => match field(text_field) {
            Some(s) if s.kind() == ValueKind::String => {
                Ok(Record::Text(string(&s).unwrap_or_default()))
            }
            Some(other) => Err(bad(
                path,
                n,
                format!("\"{text_field}\" must be a string, got {other}"),
            )),
            None => {
                let keys: Vec<String> = v
                    .try_iter()
                    .map(|it| it.map(|k| k.to_string()).collect())
                    .unwrap_or_default();
                Err(bad(
                    path,
                    n,
                    format!(
                        "no \"{text_field}\", \"prompt\"/\"completion\" or \"messages\" field \
                         (keys: {})",
                        keys.join(", ")
                    ),
                ))
            }
        },
    }
}

/// Refuses a token id at or past the model's `vocab_size`, naming line `n` of `path`.
pub(crate) fn check_vocab(path: &Path, n: usize, ids: &[u32], vocab_size: usize) -> Result<()> {
    match ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab_size)
    {
        Some((pos, &id)) => Err(bad(
            path,
            n,
            format!(
                "token id {id} at position {pos} is past the model's vocabulary of {vocab_size}"
            ),
        )),
        None => Ok(()),
    }
}

/// Reads and tokenizes a JSONL file of SFT records.
pub fn read_sft(path: &Path, tokenizer: &Tokenizer, opts: &SftOptions<'_>) -> Result<SftData> {
    let text = crate::records::text(path)?;
    let mut format = None;
    let mut data = SftData {
        examples: Vec::new(),
        format: SftFormat::Text,
        truncated: 0,
        dropped: 0,
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_record(path, n, line, opts.text_field)?;
        let f = record.format();
        match format {
            None => {
                format = Some((f, n));
                let conversational = matches!(
                    f,
                    SftFormat::Messages | SftFormat::ConversationalPromptCompletion
                );
                if opts.assistant_only_loss && !conversational {
                    return Err(bad(
                        path,
                        n,
                        format!(
                            "data.assistant_only_loss needs conversational records (messages), \
                             and this file's are {}",
                            f.describe()
                        ),
                    ));
                }
                if let (true, true, Some(t)) =
                    (opts.assistant_only_loss, conversational, opts.chat_template)
                {
                    if !t.marks_assistant() {
                        return Err(Error::format(
                            &t.source,
                            "data.assistant_only_loss needs a chat template that marks the \
                             assistant's text with {% generation %} ... {% endgeneration %}, and \
                             this one has none",
                        ));
                    }
                }
            }
            Some((first, at)) if first != f => {
                return Err(bad(
                    path,
                    n,
                    format!(
                        "a {} record in a file whose first record ({}) is {}: one layout per \
                         file",
                        f.describe(),
                        crate::records::place(path, at),
                        first.describe()
                    ),
                ))
            }
            Some(_) => {}
        }
        let (mut ids, mut trained) = tokenize(path, n, record, tokenizer, opts)?;
        check_vocab(path, n, &ids, opts.vocab_size)?;
        if opts.truncate && ids.len() > opts.max_length {
            let keep = opts.truncation.kept(ids.len(), opts.max_length);
            ids = ids[keep.clone()].to_vec();
            trained = trained[keep].to_vec();
            data.truncated += 1;
        }
        let ex = SftExample::new(ids, trained, n);
        if opts.truncate && ex.targets() == 0 {
            data.dropped += 1;
        } else {
            data.examples.push(ex);
        }
    }
    let Some((f, _)) = format else {
        return Err(Error::format(path, "no records (one JSON object per line)"));
    };
    data.format = f;
    if data.examples.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "all {} records were dropped: none has a token to train on after its first \
                 within data.max_length {}",
                data.dropped, opts.max_length
            ),
        ));
    }
    if data.targets() == 0 {
        return Err(Error::format(
            path,
            format!(
                "none of the {} records has a token to train on after its first",
                data.examples.len()
            ),
        ));
    }
    Ok(data)
}

pub(crate) fn encode(
    path: &Path,
    n: usize,
    tokenizer: &Tokenizer,
    text: &str,
    special: bool,
) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode(text, special)
        .map_err(|e| bad(path, n, format!("tokenizing: {e}")))?
        .get_ids()
        .to_vec())
}

/// Number of leading tokens `a` and `b` share.
pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn tokenize(
    path: &Path,
    n: usize,
    record: Record,
    tokenizer: &Tokenizer,
    opts: &SftOptions<'_>,
) -> Result<(Vec<u32>, Vec<bool>)> {
    let with_eos = |s: String| -> Result<String> {
        let eos = opts.eos_token.ok_or_else(|| {
            bad(
                path,
                n,
                "the tokenizer has no end-of-sequence token to end the text with (set \
                 data.eos_token)",
            )
        })?;
        Ok(if s.ends_with(eos) { s } else { s + eos })
    };
    let template = || {
        opts.chat_template.ok_or_else(|| {
            bad(
                path,
                n,
                "a conversational record needs the model's chat template, and the tokenizer \
                 has none (tokenizer_config.json's \"chat_template\", chat_template.jinja, or \
                 data.chat_template)",
            )
        })
    };
    let render = |t: &ChatTemplate, msgs: &[Message], tools: Option<&JValue>, gen: bool| {
        t.render_with_spans(msgs, tools, gen)
            .map_err(|e| bad(path, n, format!("chat template: {e}")))
    };
    // The whole conversation's tokens and, with `assistant_only_loss`, which of them the
    // template's `{% generation %}` blocks wrote (transformers' `assistant_masks`).
    let conversation = |t: &ChatTemplate,
                        msgs: &[Message],
                        tools: Option<&JValue>|
     -> Result<(Vec<u32>, Option<Vec<bool>>)> {
        let (text, spans) = render(t, msgs, tools, false)?;
        if !opts.assistant_only_loss {
            return Ok((encode(path, n, tokenizer, &text, false)?, None));
        }
        let enc = tokenizer
            .encode_char_offsets(text.as_str(), false)
            .map_err(|e| bad(path, n, format!("tokenizing: {e}")))?;
        let mask = assistant_mask(enc.get_offsets(), &spans);
        if !mask.contains(&true) {
            return Err(bad(
                path,
                n,
                "data.assistant_only_loss: the chat template marks no assistant text in this \
                 conversation (no {% generation %} block rendered)",
            ));
        }
        Ok((enc.get_ids().to_vec(), Some(mask)))
    };
    Ok(match record {
        Record::Text(t) => {
            let ids = encode(path, n, tokenizer, &with_eos(t)?, true)?;
            let trained = vec![true; ids.len()];
            (ids, trained)
        }
        Record::PromptCompletion(p, c) => {
            let prompt = encode(path, n, tokenizer, &p, true)?;
            let ids = encode(path, n, tokenizer, &(p + &with_eos(c)?), true)?;
            split_at_prompt(&prompt, ids, opts.completion_only_loss)
        }
        Record::Messages(m, tools) => {
            let (ids, assistant) = conversation(template()?, &m, tools.as_ref())?;
            let trained = assistant.unwrap_or_else(|| vec![true; ids.len()]);
            (ids, trained)
        }
        Record::ConvPromptCompletion(p, c, tools) => {
            let t = template()?;
            let prompt = render(t, &p, tools.as_ref(), true)?.0;
            let prompt = encode(path, n, tokenizer, &prompt, false)?;
            let all: Vec<Message> = p.into_iter().chain(c).collect();
            let (ids, assistant) = conversation(t, &all, tools.as_ref())?;
            let (ids, mut trained) = split_at_prompt(&prompt, ids, opts.completion_only_loss);
            // TRL takes the loss where every mask it has says so.
            if let Some(a) = assistant {
                trained.iter_mut().zip(a).for_each(|(t, a)| *t &= a);
            }
            (ids, trained)
        }
    })
}

/// transformers' `assistant_masks`: a token is the assistant's when its character range
/// overlaps one of `spans` (so a token cut by a span's edge counts).
pub fn assistant_mask(offsets: &[(usize, usize)], spans: &[(usize, usize)]) -> Vec<bool> {
    let mut mask = vec![false; offsets.len()];
    let mut s = 0;
    for (m, &(start, end)) in mask.iter_mut().zip(offsets) {
        while s < spans.len() && start >= spans[s].1 {
            s += 1;
        }
        if s == spans.len() {
            break;
        }
        *m = end > spans[s].0;
    }
    mask
}

/// The tokens of prompt + completion, trained from where they leave the prompt's own tokens
/// (all of them without `completion_only`).
fn split_at_prompt(prompt: &[u32], ids: Vec<u32>, completion_only: bool) -> (Vec<u32>, Vec<bool>) {
    let start = if completion_only {
        common_prefix(prompt, &ids)
    } else {
        0
    };
    let trained = (0..ids.len()).map(|i| i >= start).collect();
    (ids, trained)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer over a few words, `<eos>` special, with a post-processor that
    /// starts every sequence with `<bos>` (as a Llama tokenizer does).
    fn tokenizer() -> Tokenizer {
        let json = r#"{
          "version": "1.0",
          "added_tokens": [
            {"id": 0, "content": "<bos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<eos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
          ],
          "normalizer": null,
          "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [0], "tokens": ["<bos>"]}}},
          "decoder": null,
          "model": {"type": "WordLevel", "vocab": {"<bos>": 0, "<eos>": 1, "<unk>": 2, "what": 3, "is": 4, "red": 5, "blue": 6, "the": 7, "sky": 8, "?": 9}, "unk_token": "<unk>"}
        }"#;
        json.parse().unwrap()
    }

    fn opts() -> SftOptions<'static> {
        SftOptions {
            text_field: "text",
            max_length: 64,
            truncate: true,
            truncation: Truncation::KeepStart,
            completion_only_loss: true,
            eos_token: Some("<eos>"),
            chat_template: None,
            assistant_only_loss: false,
            vocab_size: 10,
        }
    }

    fn read(lines: &str, o: &SftOptions<'_>) -> Result<SftData> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sft.jsonl");
        std::fs::write(&p, lines).unwrap();
        read_sft(&p, &tokenizer(), o)
    }

    #[test]
    fn text_gets_eos_and_is_trained_everywhere() {
        let d = read(
            "{\"text\": \"the sky is blue\"}\n\n{\"text\": \"red<eos>\"}\n",
            &opts(),
        )
        .unwrap();
        assert_eq!(d.format, SftFormat::Text);
        assert_eq!(d.examples[0].ids, [0, 7, 8, 4, 6, 1]);
        assert!(d.examples[0].trained.iter().all(|&t| t));
        // Already ending with EOS: not doubled. Line numbers skip the blank line.
        assert_eq!(d.examples[1].ids, [0, 5, 1]);
        assert_eq!(d.examples[1].line, 3);
        assert_eq!(d.targets(), 5 + 2);
    }

    #[test]
    fn prompt_completion_trains_the_completion_only() {
        let line = "{\"prompt\": \"what is the sky ?\", \"completion\": \" blue\"}\n";
        let d = read(line, &opts()).unwrap();
        let e = &d.examples[0];
        assert_eq!(e.ids, [0, 3, 4, 7, 8, 9, 6, 1]);
        assert_eq!(
            e.trained,
            [false, false, false, false, false, false, true, true]
        );
        assert_eq!(e.targets(), 2);
        let all = SftOptions {
            completion_only_loss: false,
            ..opts()
        };
        assert!(read(line, &all).unwrap().examples[0]
            .trained
            .iter()
            .all(|&t| t));
    }

    #[test]
    fn truncation_keeps_the_start_and_drops_examples_left_without_targets() {
        let o = SftOptions {
            max_length: 4,
            ..opts()
        };
        let d = read(
            "{\"prompt\": \"what is the sky ?\", \"completion\": \"blue\"}\n\
             {\"prompt\": \"what\", \"completion\": \" is red\"}\n",
            &o,
        )
        .unwrap();
        assert_eq!((d.truncated, d.dropped), (2, 1));
        assert_eq!(d.examples.len(), 1);
        assert_eq!(d.examples[0].ids, [0, 3, 4, 5]);
        assert_eq!(d.examples[0].line, 2);
        let e = read(
            "{\"prompt\": \"what is the sky\", \"completion\": \"red\"}\n",
            &o,
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("all 1 records were dropped"));
        // For packing: nothing cut or dropped here (the packer cuts).
        let whole = SftOptions {
            truncate: false,
            ..o.clone()
        };
        let d = read(
            "{\"prompt\": \"what is the sky ?\", \"completion\": \"blue\"}\n\
             {\"prompt\": \"what\", \"completion\": \" is red\"}\n",
            &whole,
        )
        .unwrap();
        assert_eq!((d.truncated, d.dropped, d.examples.len()), (0, 0, 2));
        assert_eq!(d.examples[0].ids.len(), 8);
    }

    #[test]
    fn keep_end_keeps_the_last_tokens_and_their_mask() {
        let o = SftOptions {
            max_length: 4,
            truncation: Truncation::KeepEnd,
            ..opts()
        };
        // A prompt that alone fills max_length no longer drops its example: its completion's
        // end is what is kept.
        let d = read(
            "{\"prompt\": \"what is the sky\", \"completion\": \" red\"}\n\
             {\"prompt\": \"what\", \"completion\": \" is red\"}\n",
            &o,
        )
        .unwrap();
        assert_eq!((d.truncated, d.dropped), (2, 0));
        // [<bos> what is the sky red <eos>] -> its last 4.
        assert_eq!(d.examples[0].ids, [7, 8, 5, 1]);
        assert_eq!(d.examples[0].trained, [false, false, true, true]);
        // [<bos> what is red <eos>] -> [what is red <eos>]: the first kept token is no target.
        assert_eq!(d.examples[1].ids, [3, 4, 5, 1]);
        assert_eq!(d.examples[1].trained, [false, true, true, true]);
        assert_eq!(d.targets(), 2 + 3);
        // A completion longer than max_length: all of it trained, none of it a prompt.
        let d = read(
            "{\"prompt\": \"what\", \"completion\": \" is the sky blue ?\"}\n",
            &o,
        )
        .unwrap();
        assert_eq!(d.examples[0].ids, [8, 6, 9, 1]);
        assert!(d.examples[0].trained.iter().all(|&t| t));
        assert_eq!(Truncation::KeepEnd.kept(3, 4), 0..3);
        assert_eq!(Truncation::KeepStart.kept(9, 4), 0..4);
    }

    #[test]
    fn bad_records_name_the_file_and_line() {
        let cases = [
            ("{\"text\": 3}", "\"text\" must be a string"),
            (
                "{\"prompt\": \"x\"}",
                "needs both \"prompt\" and \"completion\"",
            ),
            (
                "{\"prompt\": \"x\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
                "has \"messages\" too: a conversation is \"messages\" alone",
            ),
            ("{\"body\": \"x\"}", "keys: body"),
            ("not json", "invalid JSON"),
            ("[1]", "must be a JSON object"),
            (
                "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": 3}",
                "\"tools\" must be a list of function schemas",
            ),
            (
                "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": \"[\"}",
                "\"tools\" is not JSON text",
            ),
            (
                "{\"prompt\": \"x\", \"completion\": [{\"role\": \"user\", \"content\": \"y\"}]}",
                "both be strings or both be lists",
            ),
        ];
        for (line, want) in cases {
            let e = read(&format!("{{\"text\": \"red\"}}\n{line}\n"), &opts())
                .unwrap_err()
                .to_string();
            assert!(e.contains("sft.jsonl: line 2: ") && e.contains(want), "{e}");
        }
        let e = read(
            "{\"text\": \"red\"}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n",
            &opts(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2: a prompt-completion record") && e.contains("line 1"));
        let small = SftOptions {
            vocab_size: 8,
            ..opts()
        };
        let e = read("{\"text\": \"the sky\"}\n", &small)
            .unwrap_err()
            .to_string();
        assert!(e.contains("token id 8 at position 2 is past"), "{e}");
        let none = SftOptions {
            eos_token: None,
            ..opts()
        };
        let e = read("{\"text\": \"red\"}\n", &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no end-of-sequence token"), "{e}");
        assert!(read("\n\n", &opts())
            .unwrap_err()
            .to_string()
            .contains("no records"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.jsonl");
        let e = read_sft(&missing, &tokenizer(), &opts()).unwrap_err();
        assert!(e.to_string().contains("nope.jsonl"), "{e}");
        let e = read(
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
            &opts(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 1: a conversational record needs the model's chat template"));
        // assistant_only_loss: conversational records, and a template that marks the turns.
        let plain = ChatTemplate::new(
            "{% for m in messages %}{{ m.content }}{% endfor %}",
            &serde_json::json!({}),
            Path::new("plain.jinja"),
        )
        .unwrap();
        let marked = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}\
             {{ m.content }}{% endgeneration %}{% else %}{{ m.content }} {% endif %}{% endfor %}",
            &serde_json::json!({}),
            Path::new("marked.jinja"),
        )
        .unwrap();
        let only = |t| SftOptions {
            assistant_only_loss: true,
            chat_template: Some(t),
            ..opts()
        };
        let e = read("{\"text\": \"red\"}\n", &only(&marked))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1: data.assistant_only_loss needs conversational"),
            "{e}"
        );
        let chat = "{\"messages\": [{\"role\": \"user\", \"content\": \"what is\"}, \
                    {\"role\": \"assistant\", \"content\": \"the sky\"}]}\n";
        let e = read(chat, &only(&plain)).unwrap_err().to_string();
        assert!(
            e.contains("plain.jinja: data.assistant_only_loss needs a chat template"),
            "{e}"
        );
        let d = read(chat, &only(&marked)).unwrap();
        // "what is the sky" without special tokens: the assistant's two words trained.
        assert_eq!(d.examples[0].ids, [3, 4, 7, 8]);
        assert_eq!(d.examples[0].trained, [false, false, true, true]);
        let user_only = "{\"messages\": [{\"role\": \"user\", \"content\": \"red\"}]}\n";
        let e = read(user_only, &only(&marked)).unwrap_err().to_string();
        assert!(
            e.contains("line 1: data.assistant_only_loss: the chat template marks no"),
            "{e}"
        );
    }
}
