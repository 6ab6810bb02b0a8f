//! Preference examples for Direct Preference Optimization, in the dataset layouts of TRL's
//! `DPOTrainer` (one JSON object per line):
//!
//! - `{"prompt": "...", "chosen": "...", "rejected": "..."}`: plain text;
//! - `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`: conversational,
//!   rendered by the model's chat template ([`crate::chat::ChatTemplate`]), with TRL's `tools`
//!   column;
//! - without `"prompt"`, the prompt is implicit: the longest common start of `chosen` and
//!   `rejected` (messages, or characters; TRL's `extract_prompt`).
//!
//! Tokenization is TRL 1.x's: plain text gets the end-of-sequence token appended to both
//! completions (unless they already end with it), and prompt and prompt + completion are
//! tokenized with the tokenizer's special tokens; conversations are rendered (the prompt alone
//! with the generation prompt) and tokenized without (the template writes them). The
//! completions start where the prompt's tokens and prompt + chosen's, or prompt + rejected's,
//! first differ, whichever is earlier (`common_prefix_length`). Examples whose prompt alone
//! fills `max_length` are dropped when sequences keep their start (nothing of their
//! completions would be left); with [`Truncation::KeepEnd`] none are.

use std::path::Path;

use minijinja::value::ValueKind;
use minijinja::Value as JValue;
use tokenizers::Tokenizer;

use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::labelled::bad;
use crate::sft::{
    check_vocab, common_prefix, encode, record_field, record_messages, record_object, record_tools,
    Truncation,
};

/// One tokenized preference: the prompt's tokens and each completion's after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceExample {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    /// The record's line in its file (1-based).
    pub line: usize,
}

/// How records become examples.
#[derive(Debug, Clone)]
pub struct PreferenceOptions<'a> {
    /// Prompt + completion is cut to this many tokens when batched (TRL's `max_length`); a
    /// prompt of this many tokens or more drops its example when the start is kept.
    pub max_length: usize,
    /// Which end of a long prompt + completion is kept (TRL's `truncation_mode`).
    pub truncation: Truncation,
    /// The end-of-sequence token appended to plain-text completions.
    pub eos_token: Option<&'a str>,
    /// The chat template conversational records are rendered with.
    pub chat_template: Option<&'a ChatTemplate>,
    /// Rows of the model's embedding table: a token id at or past it is refused.
    pub vocab_size: usize,
}

/// A file's examples.
#[derive(Debug, Clone)]
pub struct PreferenceData {
    pub examples: Vec<PreferenceExample>,
    /// Whether the records are conversations.
    pub conversational: bool,
    /// Records dropped for a prompt that fills `max_length`.
    pub dropped: usize,
}

/// Whether a JSONL file's first record is a preference (`chosen` and `rejected`), which makes
/// the file DPO data rather than SFT data. `None` when the file cannot be read or has no
/// record (the reader that follows says why).
pub fn is_preference_file(path: &Path) -> Option<bool> {
    let v = first_record(path)?;
    Some(v.get("chosen").is_some() && v.get("rejected").is_some())
}

/// A JSONL (or Parquet) file's first record (a pattern's: its first shard's), `None` when the file cannot be read or has none.
/// The first only: the reader that follows reads the whole file.
fn first_record(path: &Path) -> Option<serde_json::Value> {
    // A pattern's first shard.
    let path = &crate::records::files(path).ok()?.into_iter().next()?;
    if crate::records::is_table(path) {
        return crate::records::first_row(path);
    }
    use std::io::BufRead;
    let file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let line = file
        .lines()
        .map_while(|l| l.ok())
        .find(|l| !l.trim().is_empty())?;
    serde_json::from_str(&line).ok()
}

/// A record before tokenization: the prompt and its completions (chosen then rejected, or an
/// unpaired record's one).
enum Record {
    Text(String, Vec<String>),
    Messages(Vec<Message>, Vec<Vec<Message>>, Option<JValue>),
}

/// TRL's `extract_prompt`: the longest common start of `chosen` and `rejected`, where the
/// first difference is at index i, and the rest of each. A space just before a difference
/// stays with the completions. When neither differs within the shorter one, TRL's loop ends
/// at its last index, which is where the split falls.
fn extract<T: PartialEq + Clone>(
    chosen: &[T],
    rejected: &[T],
    space: impl Fn(&T) -> bool,
) -> usize {
    let n = chosen.len().min(rejected.len());
    let mut idx = n.saturating_sub(1);
    for i in 0..n {
        if chosen[i] != rejected[i] {
            // (At i = 0 Python's `chosen[i - 1]` reads the last element and a space there
            // splits off all but it; no prompt is taken here instead.)
            idx = if i > 0 && space(&chosen[i - 1]) {
                i - 1
            } else {
                i
            };
            break;
        }
    }
    idx
}

fn parse_record(path: &Path, n: usize, line: &str) -> Result<Record> {
    parse_value(path, n, &record_object(path, n, line)?)
}

fn parse_value(path: &Path, n: usize, v: &JValue) -> Result<Record> {
    let v = v.clone();
    let get = |k: &str| {
        record_field(&v, k).ok_or_else(|| {
            bad(
                path,
                n,
                format!(
                    "a preference record needs \"chosen\" and \"rejected\"; \"{k}\" is missing"
                ),
            )
        })
    };
    let (chosen, rejected) = (get("chosen")?, get("rejected")?);
    // TRL's `maybe_extract_prompt`: a prompt that is not of the completions' kind (a string
    // beside whole conversations, as UltraFeedback's binarized records carry one) is left
    // aside, and the prompt is the completions' common start.
    let conversational = |x: &JValue| x.kind() == ValueKind::Seq;
    let prompt =
        record_field(&v, "prompt").filter(|p| conversational(p) == conversational(&chosen));
    let kinds = (
        prompt.as_ref().map(JValue::kind),
        chosen.kind(),
        rejected.kind(),
    );
    match kinds {
        (None | Some(ValueKind::String), ValueKind::String, ValueKind::String) => {
            let (c, r) = (
                chosen.as_str().unwrap_or_default().to_string(),
                rejected.as_str().unwrap_or_default().to_string(),
            );
            Ok(match prompt {
                Some(p) => Record::Text(p.as_str().unwrap_or_default().to_string(), vec![c, r]),
                None => {
                    let (cc, rc): (Vec<char>, Vec<char>) =
                        (c.chars().collect(), r.chars().collect());
                    if cc.is_empty() || rc.is_empty() {
                        return Err(bad(
                            path,
                            n,
                            "\"chosen\" and \"rejected\" must not be empty",
                        ));
                    }
                    let i = extract(&cc, &rc, |ch| *ch == ' ');
                    let s = |v: &[char]| v.iter().collect::<String>();
                    Record::Text(s(&cc[..i]), vec![s(&cc[i..]), s(&rc[i..])])
                }
            })
        }
        (None | Some(ValueKind::Seq), ValueKind::Seq, ValueKind::Seq) => {
            let c = record_messages(path, n, "chosen", &chosen)?;
            let r = record_messages(path, n, "rejected", &rejected)?;
            let tools = record_tools(path, n, &v)?;
            Ok(match prompt {
                Some(p) => {
                    Record::Messages(record_messages(path, n, "prompt", &p)?, vec![c, r], tools)
                }
                None => {
                    if c.is_empty() || r.is_empty() {
                        return Err(bad(
                            path,
                            n,
                            "\"chosen\" and \"rejected\" must not be empty",
                        ));
                    }
                    let i = extract(&c, &r, |_| false);
                    Record::Messages(
                        c[..i].to_vec(),
                        vec![c[i..].to_vec(), r[i..].to_vec()],
                        tools,
                    )
                }
            })
        }
        _ => Err(bad(
            path,
            n,
            "\"prompt\" (if any), \"chosen\" and \"rejected\" must all be strings or all be \
             lists of messages",
        )),
    }
}

/// Reads and tokenizes a JSONL file of preference records.
pub fn read_preferences(
    path: &Path,
    tokenizer: &Tokenizer,
    opts: &PreferenceOptions<'_>,
) -> Result<PreferenceData> {
    let text = crate::records::text(path)?;
    let mut data = PreferenceData {
        examples: Vec::new(),
        conversational: false,
        dropped: 0,
    };
    let mut kind = None;
    for (n, line) in numbered_lines(&text) {
        let record = parse_record(path, n, line)?;
        let conv = matches!(record, Record::Messages(..));
        one_layout(path, n, &mut kind, (conv, false), "")?;
        let (prompt, completions) = tokenize(path, n, record, tokenizer, (opts, true))?;
        let [pc, pr] = <[Vec<u32>; 2]>::try_from(completions).expect("a pair has two");
        let at = common_prefix(&prompt, &pc).min(common_prefix(&prompt, &pr));
        if at >= opts.max_length && opts.truncation == Truncation::KeepStart {
            data.dropped += 1;
            continue;
        }
        data.examples.push(PreferenceExample {
            prompt: prompt[..at].to_vec(),
            chosen: pc[at..].to_vec(),
            rejected: pr[at..].to_vec(),
            line: n,
        });
    }
    let (conv, _) = first_layout(path, kind)?;
    data.conversational = conv;
    if data.examples.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "all {} records were dropped: every prompt fills data.max_length {}",
                data.dropped, opts.max_length
            ),
        ));
    }
    Ok(data)
}

/// One preference for a reward model (TRL's `RewardTrainer`): each completion's whole
/// sequence, prompt included, and the margin by which the chosen one should win.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardExample {
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    /// The record's `margin` (TRL's optional column).
    pub margin: Option<f32>,
    /// The record's line in its file (1-based).
    pub line: usize,
}

/// A file's reward-modeling examples.
#[derive(Debug, Clone)]
pub struct RewardData {
    pub examples: Vec<RewardExample>,
    pub conversational: bool,
    /// Records dropped for a sequence longer than `max_length`.
    pub dropped: usize,
}

/// Reads and tokenizes a JSONL file of preference records for a reward model, as TRL's
/// `RewardTrainer` prepares them: text records get the end-of-sequence token appended to
/// `chosen` and `rejected` (unless they end with it) and are tokenized, prompt first, with the
/// tokenizer's special tokens; conversations are rendered whole by the chat template (no
/// generation prompt) and tokenized without. No prompt is split off (an implicit one is part of
/// both sequences anyway). A record either of whose sequences is longer than `max_length` is
/// dropped (TRL filters them; nothing is truncated). A `margin` column, if the first record
/// has one, is read from every record.
pub fn read_rewards(
    path: &Path,
    tokenizer: &Tokenizer,
    opts: &PreferenceOptions<'_>,
) -> Result<RewardData> {
    let text = crate::records::text(path)?;
    let mut data = RewardData {
        examples: Vec::new(),
        conversational: false,
        dropped: 0,
    };
    let mut kind: Option<(bool, bool)> = None;
    for (n, line) in numbered_lines(&text) {
        let v = record_object(path, n, line)?;
        let record = parse_value(path, n, &v)?;
        let margin = match record_field(&v, "margin") {
            None => None,
            Some(m) => Some(
                f32::try_from(m.clone())
                    .map_err(|_| bad(path, n, format!("\"margin\" must be a number, not {m}")))?,
            ),
        };
        let conv = matches!(record, Record::Messages(..));
        one_layout(
            path,
            n,
            &mut kind,
            (conv, margin.is_some()),
            "\"margin\" is in some records only: give every record one, or none",
        )?;
        // The whole sequences: no prompt is split off.
        let (_, completions) = tokenize(path, n, record, tokenizer, (opts, false))?;
        let [chosen, rejected] = <[Vec<u32>; 2]>::try_from(completions).expect("a pair has two");
        if chosen.len().max(rejected.len()) > opts.max_length {
            data.dropped += 1;
            continue;
        }
        data.examples.push(RewardExample {
            chosen,
            rejected,
            margin,
            line: n,
        });
    }
    let (conv, _) = first_layout(path, kind)?;
    data.conversational = conv;
    if data.examples.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "all {} records were dropped: every one has a sequence longer than \
                 data.max_length {}",
                data.dropped, opts.max_length
            ),
        ));
    }
    Ok(data)
}

/// Records unpaired at a time, as `datasets`' `map` batches TRL's `unpair_preference_dataset`:
/// each chunk's chosen completions, then its rejected ones.
pub const UNPAIR_CHUNK: usize = 1000;

/// One completion of a prompt, desirable or not (TRL's `KTOTrainer`'s unpaired preference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpairedExample {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
    /// Desirable (`true`) or undesirable.
    pub label: bool,
    /// The record's line in its file (1-based).
    pub line: usize,
}

/// A file's unpaired examples.
#[derive(Debug, Clone)]
pub struct UnpairedData {
    pub examples: Vec<UnpairedExample>,
    pub conversational: bool,
    /// Whether the records were pairs (`chosen`, `rejected`), unpaired here.
    pub paired: bool,
    /// Examples dropped for a prompt that fills `max_length`.
    pub dropped: usize,
}

/// Whether a JSONL file's first record is an unpaired preference (`completion` and a boolean
/// `label`). `None` when the file cannot be read or has no record.
pub fn is_unpaired_file(path: &Path) -> Option<bool> {
    let v = first_record(path)?;
    Some(v.get("completion").is_some() && v.get("label").is_some_and(|l| l.is_boolean()))
}

/// Reads and tokenizes a JSONL file for KTO, as TRL's `KTOTrainer` prepares it: unpaired
/// records (`prompt`, `completion`, `label`; text or messages), or preference records
/// (`chosen`, `rejected`, an explicit or implicit prompt as DPO reads them) unpaired, each
/// chunk of [`UNPAIR_CHUNK`] records' chosen completions (desirable) then their rejected
/// ones. Text completions get the end-of-sequence token appended (unless they end with it);
/// the completion starts where the tokens of the prompt alone and of prompt + completion first
/// differ. An example whose prompt alone fills `max_length` is dropped.
pub fn read_unpaired(
    path: &Path,
    tokenizer: &Tokenizer,
    opts: &PreferenceOptions<'_>,
) -> Result<UnpairedData> {
    let text = crate::records::text(path)?;
    let mut data = UnpairedData {
        examples: Vec::new(),
        conversational: false,
        paired: false,
        dropped: 0,
    };
    // (conversational, paired) of the first record; a chunk of pairs' rejected completions.
    let mut kind: Option<(bool, bool)> = None;
    let mut rejected: Vec<UnpairedExample> = Vec::new();
    let mut in_chunk = 0;
    for (n, line) in numbered_lines(&text) {
        let v = record_object(path, n, line)?;
        let paired = record_field(&v, "chosen").is_some() || record_field(&v, "rejected").is_some();
        let (record, label) = match paired {
            true => (parse_value(path, n, &v)?, None),
            false => unpaired_record(path, n, &v)?,
        };
        let conv = matches!(record, Record::Messages(..));
        one_layout(
            path,
            n,
            &mut kind,
            (conv, paired),
            "records mix pairs (chosen, rejected) and unpaired completions with a label (one \
             layout per file)",
        )?;
        let (prompt, completions) = tokenize(path, n, record, tokenizer, (opts, true))?;
        let example = |ids: &[u32], label: bool| {
            let at = common_prefix(&prompt, ids);
            UnpairedExample {
                prompt: ids[..at].to_vec(),
                completion: ids[at..].to_vec(),
                label,
                line: n,
            }
        };
        match label {
            Some(label) => data
                .examples
                .extend(completions.iter().map(|c| example(c, label))),
            None => {
                let [c, r] = <&[Vec<u32>; 2]>::try_from(&completions[..]).expect("a pair");
                data.examples.push(example(c, true));
                rejected.push(example(r, false));
                in_chunk += 1;
                if in_chunk == UNPAIR_CHUNK {
                    data.examples.append(&mut rejected);
                    in_chunk = 0;
                }
            }
        }
    }
    data.examples.append(&mut rejected);
    let (conv, paired) = first_layout(path, kind)?;
    (data.conversational, data.paired) = (conv, paired);
    let before = data.examples.len();
    data.examples.retain(|e| e.prompt.len() < opts.max_length);
    data.dropped = before - data.examples.len();
    if data.examples.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "all {} examples were dropped: every prompt fills data.max_length {}",
                data.dropped, opts.max_length
            ),
        ));
    }
    Ok(data)
}

/// An unpaired record: its prompt and completion, and its label.
fn unpaired_record(path: &Path, n: usize, v: &JValue) -> Result<(Record, Option<bool>)> {
    let label = match record_field(v, "label") {
        Some(l) if l.kind() == ValueKind::Bool => l.is_true(),
        _ => {
            return Err(bad(
                path,
                n,
                "an unpaired record needs \"prompt\", \"completion\" and a boolean \"label\" \
                 (true: desirable)",
            ))
        }
    };
    let get = |k: &str| {
        record_field(v, k).ok_or_else(|| {
            bad(
                path,
                n,
                format!(
                    "an unpaired record needs \"prompt\", \"completion\" and \"label\"; \
                     \"{k}\" is missing"
                ),
            )
        })
    };
    let (prompt, completion) = (get("prompt")?, get("completion")?);
    let record = match (prompt.kind(), completion.kind()) {
        (ValueKind::String, ValueKind::String) => Record::Text(
            prompt.as_str().unwrap_or_default().to_string(),
            vec![completion.as_str().unwrap_or_default().to_string()],
        ),
        (ValueKind::Seq, ValueKind::Seq) => Record::Messages(
            record_messages(path, n, "prompt", &prompt)?,
            vec![record_messages(path, n, "completion", &completion)?],
            record_tools(path, n, v)?,
        ),
        _ => {
            return Err(bad(
                path,
                n,
                "\"prompt\" and \"completion\" must both be strings or both be lists of \
                 messages",
            ))
        }
    };
    Ok((record, Some(label)))
}

/// The tokens of the prompt alone (with `prompt`; readers that split no prompt off skip it)
/// and of prompt + each completion, each checked against the vocabulary.
fn tokenize(
    path: &Path,
    n: usize,
    record: Record,
    tokenizer: &Tokenizer,
    (opts, prompt): (&PreferenceOptions<'_>, bool),
) -> Result<(Vec<u32>, Vec<Vec<u32>>)> {
    let (prompt_ids, completions) = match record {
        Record::Text(p, completions) => {
            let eos = opts.eos_token.ok_or_else(|| {
                bad(
                    path,
                    n,
                    "the tokenizer has no end-of-sequence token to end the completions with \
                     (set data.eos_token)",
                )
            })?;
            let with_eos = |s: String| if s.ends_with(eos) { s } else { s + eos };
            let prompt_ids = match prompt {
                true => encode(path, n, tokenizer, &p, true)?,
                false => Vec::new(),
            };
            let completions = completions
                .into_iter()
                .map(|c| encode(path, n, tokenizer, &format!("{p}{}", with_eos(c)), true))
                .collect::<Result<Vec<_>>>()?;
            (prompt_ids, completions)
        }
        Record::Messages(p, completions, tools) => {
            let t = opts.chat_template.ok_or_else(|| {
                bad(
                    path,
                    n,
                    "a conversational record needs the model's chat template, and the \
                     tokenizer has none (tokenizer_config.json's \"chat_template\", \
                     chat_template.jinja, or data.chat_template)",
                )
            })?;
            let render = |msgs: &[Message], gen: bool| -> Result<Vec<u32>> {
                let text = t
                    .render_with_spans(msgs, tools.as_ref(), gen)
                    .map_err(|e| bad(path, n, format!("chat template: {e}")))?
                    .0;
                encode(path, n, tokenizer, &text, false)
            };
            let prompt_ids = match prompt {
                true => render(&p, true)?,
                false => Vec::new(),
            };
            let completions = completions
                .iter()
                .map(|c| render(&[&p[..], c].concat(), false))
                .collect::<Result<Vec<_>>>()?;
            (prompt_ids, completions)
        }
    };
    for ids in std::iter::once(&prompt_ids).chain(&completions) {
        check_vocab(path, n, ids, opts.vocab_size)?;
    }
    Ok((prompt_ids, completions))
}

/// The non-blank lines of a JSONL text with their line numbers (from 1).
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(_, line)| !line.trim().is_empty())
}

/// The layout [`one_layout`] found in the first record; an error for a file without one.
fn first_layout(path: &Path, kind: Option<(bool, bool)>) -> Result<(bool, bool)> {
    kind.ok_or_else(|| Error::format(path, "no records (one JSON object per line)"))
}

/// Keeps the first record's layout in `first` (conversational or not, and a second trait of the
/// reader's) and fails at line `n` when a later record's differs: `second` says how, when it
/// is the second trait.
fn one_layout(
    path: &Path,
    n: usize,
    first: &mut Option<(bool, bool)>,
    now: (bool, bool),
    second: &str,
) -> Result<()> {
    match *first {
        None => *first = Some(now),
        Some((conv, _)) if conv != now.0 => {
            return Err(bad(
                path,
                n,
                "records mix plain text and conversations (one layout per file)",
            ))
        }
        Some((_, other)) if other != now.1 => return Err(bad(path, n, second.to_string())),
        Some(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TRL's `extract_prompt`: up to the first difference, a space before it left to the
    /// completions; whole messages for conversations.
    #[test]
    fn implicit_prompts_are_trls() {
        let split = |c: &str, r: &str| {
            let (c, r): (Vec<char>, Vec<char>) = (c.chars().collect(), r.chars().collect());
            extract(&c, &r, |ch| *ch == ' ')
        };
        assert_eq!(split("The sky is blue.", "The sky is green."), 10);
        assert_eq!(split("Q: a? Yes", "Q: a? No"), 5);
        assert_eq!(split("abc", "xbc"), 0);
        // One is the start of the other: the last index of the shorter.
        assert_eq!(split("abc", "abcd"), 2);
        assert_eq!(extract(&[1, 2, 3], &[1, 2, 4], |_| false), 2);
    }

    /// TRL's `maybe_extract_prompt`: UltraFeedback's binarized records (a string prompt beside
    /// whole conversations) read as their implicit-prompt form; so does the reverse.
    #[test]
    fn a_prompt_of_another_kind_than_the_completions_is_left_aside() {
        let p = Path::new("u.jsonl");
        let turn = |role: &str, text: &str| format!(r#"{{"role": "{role}", "content": "{text}"}}"#);
        let conv =
            |answer: &str| format!("[{}, {}]", turn("user", "Sky?"), turn("assistant", answer));
        let uf = format!(
            r#"{{"prompt": "Sky?", "chosen": {}, "rejected": {}, "score_chosen": 8.0}}"#,
            conv("Blue."),
            conv("Green.")
        );
        let implicit = format!(
            r#"{{"chosen": {}, "rejected": {}}}"#,
            conv("Blue."),
            conv("Green.")
        );
        let contents = |r: Record| match r {
            Record::Messages(prompt, completions, _) => {
                let text =
                    |m: &[Message]| -> Vec<String> { m.iter().map(|m| m.0.to_string()).collect() };
                (
                    text(&prompt),
                    completions.iter().map(|c| text(c)).collect::<Vec<_>>(),
                )
            }
            Record::Text(..) => panic!("a conversation read as text"),
        };
        let (prompt, completions) = contents(parse_record(p, 1, &uf).unwrap());
        assert_eq!(prompt.len(), 1, "{prompt:?}");
        assert_eq!(completions[0].len(), 1);
        assert_eq!(
            (prompt, completions),
            contents(parse_record(p, 1, &implicit).unwrap())
        );
        let text = format!(
            r#"{{"prompt": [{}], "chosen": "The sky is blue.", "rejected": "The sky is green."}}"#,
            turn("user", "Sky?")
        );
        match parse_record(p, 1, &text).unwrap() {
            Record::Text(prompt, completions) => {
                assert_eq!(prompt, "The sky is");
                assert_eq!(completions, [" blue.", " green."]);
            }
            Record::Messages(..) => panic!("text read as a conversation"),
        }
        // A prompt of the completions' kind is still the prompt.
        let explicit = r#"{"prompt": "Q", "chosen": "a", "rejected": "b"}"#;
        assert!(matches!(parse_record(p, 1, explicit).unwrap(), Record::Text(q, _) if q == "Q"));
    }
}
