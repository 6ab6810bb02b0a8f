//! Extractive question answering (SQuAD): reading question/context/answer examples, and cutting
//! each question + context pair into windows of token ids with their answer span, as
//! transformers' `examples/pytorch/question-answering/run_qa.py` prepares them for
//! `BertForQuestionAnswering`.
//!
//! Two layouts are read, told apart by the extension:
//! - `.jsonl`: one record per line in Hugging Face datasets' `squad` layout, `{"id", "title"?,
//!   "context", "question", "answers": {"text": [..], "answer_start": [..]}}`; `"answers"` may be
//!   absent or null (an unlabelled example, for prediction).
//! - `.json`: an official SQuAD v1.1 or v2.0 file, `{"version"?, "data": [{"title", "paragraphs":
//!   [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}],
//!   "is_impossible"?}]}]}]}`.
//!
//! SQuAD 2.0's unanswerable questions (run_qa's `--version_2_with_negative`) are read by
//! [`read_qa_with`] with `version_2_with_negative`: an empty answer list (`{"text": [],
//! "answer_start": []}` in JSONL, `[]` in SQuAD JSON), or `"is_impossible": true`, marks a
//! labelled question whose answer is the empty string ([`QaExample::unanswerable`]); without
//! the flag an empty list reads as no answer at all, as SQuAD v1.1 readers take it.
//!
//! Answer starts count characters (Unicode scalar values, Python `str` indices), not bytes;
//! every answer is checked to be at its start. Every error names the file and the line (JSONL)
//! or the question's number in the file (SQuAD JSON) and its id.

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// One answer: its text and where it starts in the context, in characters (Unicode scalar
/// values, i.e. Python `str` indices, as SQuAD's `answer_start`).
#[derive(Debug, Clone, PartialEq)]
pub struct QaAnswer {
    pub text: String,
    pub start: usize,
}

/// One question on one context, with its answers (none for an unlabelled example).
#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    pub id: String,
    pub question: String,
    pub context: String,
    /// SQuAD's training set has one answer per question, its dev set several (all count for
    /// the metrics); the first is the training target.
    pub answers: Vec<QaAnswer>,
    /// SQuAD 2.0: the file says that the context does not answer the question (an empty
    /// answer list, or `"is_impossible": true`), so `answers` is empty but the example is
    /// labelled: its answer is the empty string, its windows' target the `[CLS]` position.
    /// Only [`read_qa_with`] with `version_2_with_negative` sets it; false for an unlabelled
    /// example (answers absent or null).
    pub unanswerable: bool,
    /// 1-based line (JSONL) or the 1-based index of the question in a SQuAD `.json` file.
    pub line: usize,
}

/// One window of one example, as run_qa's `prepare_train_features` and
/// `prepare_validation_features` make it.
#[derive(Debug, Clone, PartialEq)]
pub struct QaFeature {
    /// `[CLS] question [SEP] context window [SEP]`: at most `max_length` tokens, not padded.
    pub ids: Vec<u32>,
    /// 0 for `[CLS]`, the question and its `[SEP]`; 1 for the context and the last `[SEP]`.
    pub type_ids: Vec<u32>,
    /// Index of the example (in the slice given to [`qa_features`]) this window comes from.
    pub example: usize,
    /// Training target: token positions (start, end), both inclusive, of the example's FIRST
    /// answer when it lies wholly inside this window, else (0, 0) (the `[CLS]` position, as
    /// run_qa labels it); (0, 0) too in every window of an unanswerable question
    /// ([`QaExample::unanswerable`]). `None` when the example has no answer (unlabelled).
    pub span: Option<(usize, usize)>,
    /// For each token: its (start, end) character offsets in the CONTEXT when the token
    /// belongs to the context (sequence id 1), else `None` (question tokens, special tokens):
    /// run_qa's validation `offset_mapping`, which turns predicted positions back into text.
    pub offsets: Vec<Option<(usize, usize)>>,
}

/// How a file lays its examples out; it decides how a message places an example.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// JSONL: an example is a line.
    Lines,
    /// Parquet, read as JSONL ([`crate::records`]): an example is a row, counted from 0.
    Rows,
    /// SQuAD JSON: an example is the n-th question of the file.
    Squad,
}

impl Layout {
    /// The layout of a file, by its extension (`.json` is SQuAD, anything else lines).
    fn of(path: &Path) -> Self {
        match crate::records::format_of(path).as_str() {
            "json" => Layout::Squad,
            "parquet" => Layout::Rows,
            _ => Layout::Lines,
        }
    }

    /// "line 3", "row 2" (record 3 of a Parquet file) or "question 3", with the id when
    /// known: `question 3 (id "5733be28")`.
    fn place(self, path: &Path, n: usize, id: Option<&str>) -> String {
        let at = match self {
            Layout::Lines | Layout::Rows => crate::records::place(path, n),
            Layout::Squad => format!("question {n}"),
        };
        match id {
            Some(id) => format!("{at} (id {id:?})"),
            None => at,
        }
    }
}

/// Where an example is in its file, for messages: `line 3 (id "a")` in JSONL, `question 3 (id
/// "a")` in a SQuAD `.json` file (told apart by `path`'s extension).
pub fn example_place(path: &Path, ex: &QaExample) -> String {
    Layout::of(path).place(path, ex.line, Some(&ex.id))
}

/// Where an example of a JSON Lines or Parquet file is, for a message: made into text only when
/// a message is (the place of a pattern's record reads its shards to find the shard).
#[derive(Clone, Copy)]
struct At<'a> {
    layout: Layout,
    path: &'a Path,
    n: usize,
    id: Option<&'a str>,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.layout.place(self.path, self.n, self.id))
    }
}

fn bad(path: &Path, place: &dyn std::fmt::Display, problem: impl std::fmt::Display) -> Error {
    Error::format(path, format!("{place}: {problem}"))
}

/// Reads `path` as SQuAD v1.1: [`read_qa_with`] without `version_2_with_negative`.
pub fn read_qa(path: &Path) -> Result<Vec<QaExample>> {
    read_qa_with(path, false)
}

/// Reads `path`: `.jsonl` = one record per line in Hugging Face datasets' `squad` (or
/// `squad_v2`) layout (`"answers"` absent or null = unlabelled, for prediction); `.json` = an
/// official SQuAD v1.1 or v2.0 file. Blank lines of a JSONL file are skipped; unknown fields
/// are ignored (SQuAD v2's `plausible_answers`).
///
/// Without `version_2_with_negative` (SQuAD v1.1) `is_impossible` is ignored too and an empty
/// answer list reads as no answer (an unlabelled example). With it (run_qa's
/// `--version_2_with_negative`), an empty answer list or `"is_impossible": true` marks an
/// unanswerable question ([`QaExample::unanswerable`]), as Hugging Face's `squad_v2` reader
/// takes an empty list; `is_impossible` must then be a boolean that agrees with the answers
/// (true with answers, or false with an empty list, is refused).
///
/// Refused, each with the file and the line or question: a missing file, invalid JSON, a
/// missing or ill-typed field, an empty (or whitespace-only) question or context, `text` and
/// `answer_start` of different lengths, an empty answer text, an answer whose text is not at
/// its `answer_start` in the context (compared by characters; the message says what is there,
/// and whether the text is at that BYTE offset instead), an id seen before, and a file without
/// examples.
pub fn read_qa_with(path: &Path, version_2_with_negative: bool) -> Result<Vec<QaExample>> {
    let format = crate::records::format_of(path);
    let layout = match format.as_str() {
        "jsonl" => Layout::Lines,
        "parquet" => Layout::Rows,
        "json" => Layout::Squad,
        other => {
            if !path.exists() {
                return Err(Error::MissingInput(path.to_path_buf()));
            }
            return Err(Error::format(
                path,
                format!(
                    "unknown extension {:?}: expected .jsonl (one record per line), .parquet \
                     (one per row) or .json (SQuAD)",
                    other
                ),
            ));
        }
    };
    let text = crate::records::text(path)?;
    // A byte-order mark (editors on Windows write one) is not part of the first record.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let examples = match layout {
        Layout::Lines | Layout::Rows => read_jsonl(path, text, version_2_with_negative, layout)?,
        Layout::Squad => read_squad(path, text, version_2_with_negative)?,
    };
    if examples.is_empty() {
        return Err(Error::format(path, "no examples"));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(examples.len());
    for ex in &examples {
        check_example(ex, path, layout)?;
        if let Some(first) = seen.insert(&ex.id, ex.line) {
            return Err(bad(
                path,
                &layout.place(path, ex.line, Some(&ex.id)),
                format!(
                    "the id is already at {}: ids must be unique (the windows of an example \
                     are grouped by it)",
                    layout.place(path, first, None)
                ),
            ));
        }
    }
    Ok(examples)
}

fn read_jsonl(path: &Path, text: &str, v2: bool, layout: Layout) -> Result<Vec<QaExample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let place = At {
            layout,
            path,
            n,
            id: None,
        };
        let v: Value = serde_json::from_str(line)
            .map_err(|e| bad(path, &place, format!("invalid JSON: {e}")))?;
        if !v.is_object() {
            return Err(bad(
                path,
                &place,
                format!("a record must be a JSON object, got {}", brief(&v)),
            ));
        }
        let id = string(&v, "id", path, &place)?;
        let place = At {
            id: Some(&id),
            ..place
        };
        optional_string(&v, "title", path, &place)?;
        let answers = match v.get("answers") {
            None | Some(Value::Null) => None,
            Some(a) => Some(hf_answers(a, path, &place)?),
        };
        let (answers, unanswerable) = labels(&v, answers, v2, path, &place)?;
        out.push(QaExample {
            question: string(&v, "question", path, &place)?,
            context: string(&v, "context", path, &place)?,
            id,
            answers,
            unanswerable,
            line: n,
        });
    }
    Ok(out)
}

/// A question's answers and whether it is unanswerable, from its `answers` (`None` when absent
/// or null) and, with SQuAD 2.0 (`v2`), its `is_impossible`. `place` names the question.
fn labels(
    qa: &Value,
    answers: Option<Vec<QaAnswer>>,
    v2: bool,
    path: &Path,
    place: &dyn std::fmt::Display,
) -> Result<(Vec<QaAnswer>, bool)> {
    if !v2 {
        // SQuAD v1.1, as before SQuAD 2.0 was read: an empty list is no answer.
        return Ok((answers.unwrap_or_default(), false));
    }
    let impossible = match qa.get("is_impossible") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(bad(
                path,
                place,
                format!(
                    "\"is_impossible\" must be true or false, got {}",
                    brief(other)
                ),
            ))
        }
    };
    match (answers, impossible) {
        // Neither says anything: an unlabelled question (for prediction).
        (None, None | Some(false)) => Ok((Vec::new(), false)),
        (None, Some(true)) => Ok((Vec::new(), true)),
        (Some(a), Some(true)) if !a.is_empty() => Err(bad(
            path,
            place,
            format!(
                "\"is_impossible\" is true but the question has {} answer(s): an unanswerable \
                 question has an empty answer list",
                a.len()
            ),
        )),
        (Some(a), Some(false)) if a.is_empty() => Err(bad(
            path,
            place,
            "\"is_impossible\" is false but the answer list is empty: give the answers, or \
             mark the question unanswerable with \"is_impossible\": true",
        )),
        // An empty list is SQuAD 2.0's (and HF datasets' `squad_v2`) unanswerable question.
        (Some(a), _) => {
            let unanswerable = a.is_empty();
            Ok((a, unanswerable))
        }
    }
}

/// HF datasets' answers: `{"text": [strings], "answer_start": [integers]}`, one start per text.
fn hf_answers(a: &Value, path: &Path, place: &dyn std::fmt::Display) -> Result<Vec<QaAnswer>> {
    let layout = "\"answers\" must be {\"text\": [strings], \"answer_start\": [integers]}";
    if !a.is_object() {
        return Err(bad(path, place, format!("{layout}, got {}", brief(a))));
    }
    let list = |k: &str| match a.get(k) {
        Some(Value::Array(items)) => Ok(items),
        None => Err(bad(path, place, format!("{layout}: \"{k}\" is missing"))),
        Some(other) => Err(bad(
            path,
            place,
            format!("{layout}: \"{k}\" is {}", brief(other)),
        )),
    };
    let (texts, starts) = (list("text")?, list("answer_start")?);
    if texts.len() != starts.len() {
        return Err(bad(
            path,
            place,
            format!(
                "{} answer texts but {} answer_start values: one start per text",
                texts.len(),
                starts.len()
            ),
        ));
    }
    texts
        .iter()
        .zip(starts)
        .enumerate()
        .map(|(k, (t, s))| {
            let text = t.as_str().ok_or_else(|| {
                bad(
                    path,
                    place,
                    format!(
                        "answer {}: \"text\" must be a string, got {}",
                        k + 1,
                        brief(t)
                    ),
                )
            })?;
            Ok(QaAnswer {
                text: text.to_string(),
                start: answer_start(s, k, path, place)?,
            })
        })
        .collect()
}

/// An `answer_start`: a non-negative integer (a float with a fraction, a string or a negative
/// number is refused, not rounded).
fn answer_start(s: &Value, k: usize, path: &Path, place: &dyn std::fmt::Display) -> Result<usize> {
    s.as_u64()
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| {
            bad(
                path,
                place,
                format!(
                    "answer {}: \"answer_start\" must be a non-negative integer, got {}",
                    k + 1,
                    brief(s)
                ),
            )
        })
}

fn read_squad(path: &Path, text: &str, v2: bool) -> Result<Vec<QaExample>> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        // HF datasets' `to_json` writes JSON Lines whatever the extension: say so rather than
        // only "trailing characters".
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let lines = serde_json::from_str::<Value>(first)
            .is_ok_and(|v| v.get("question").is_some() || v.get("context").is_some());
        let hint = if lines {
            " (this looks like one record per line: name the file .jsonl)"
        } else {
            ""
        };
        Error::format(path, format!("invalid JSON: {e}{hint}"))
    })?;
    let data = match root.get("data") {
        Some(Value::Array(d)) => d,
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "a SQuAD file is {{\"data\": [articles]}}, got {}",
                    brief(&root)
                ),
            ))
        }
    };
    let mut out = Vec::new();
    for (a, article) in data.iter().enumerate() {
        let at = format!("data[{a}]");
        if !article.is_object() {
            return Err(Error::format(
                path,
                format!("{at}: an article must be an object, got {}", brief(article)),
            ));
        }
        optional_string(article, "title", path, &at)?;
        for (p, paragraph) in list(article, "paragraphs", path, &at)?.iter().enumerate() {
            let at = format!("data[{a}].paragraphs[{p}]");
            let context = string(paragraph, "context", path, &at)?;
            for (q, qa) in list(paragraph, "qas", path, &at)?.iter().enumerate() {
                let n = out.len() + 1;
                let at = format!("data[{a}].paragraphs[{p}].qas[{q}]");
                let place = format!("{} ({at})", Layout::Squad.place(path, n, None));
                let id = string(qa, "id", path, &place)?;
                let place = format!("{} ({at})", Layout::Squad.place(path, n, Some(&id)));
                let answers = match qa.get("answers") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(list)) => Some(
                        list.iter()
                            .enumerate()
                            .map(|(k, ans)| squad_answer(ans, k, path, &place))
                            .collect::<Result<_>>()?,
                    ),
                    Some(other) => {
                        return Err(bad(
                            path,
                            &place,
                            format!(
                            "\"answers\" must be a list of {{\"text\", \"answer_start\"}}, got {}",
                            brief(other)
                        ),
                        ))
                    }
                };
                let (answers, unanswerable) = labels(qa, answers, v2, path, &place)?;
                out.push(QaExample {
                    question: string(qa, "question", path, &place)?,
                    context: context.clone(),
                    id,
                    answers,
                    unanswerable,
                    line: n,
                });
            }
        }
    }
    Ok(out)
}

/// The items of a required list field; `at` places `v` in the file.
fn list<'a>(v: &'a Value, k: &str, path: &Path, at: &str) -> Result<&'a [Value]> {
    match v.get(k) {
        Some(Value::Array(x)) => Ok(x),
        None => Err(Error::format(path, format!("{at}: missing \"{k}\""))),
        Some(other) => Err(Error::format(
            path,
            format!("{at}: \"{k}\" must be a list, got {}", brief(other)),
        )),
    }
}

/// One SQuAD answer: `{"text": string, "answer_start": integer}`.
fn squad_answer(
    a: &Value,
    k: usize,
    path: &Path,
    place: &dyn std::fmt::Display,
) -> Result<QaAnswer> {
    let text = match a.get("text") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err(bad(
                path,
                place,
                format!(
                    "answer {} must be {{\"text\": string, \"answer_start\": integer}}, got {}",
                    k + 1,
                    brief(a)
                ),
            ))
        }
    };
    let start = a.get("answer_start").ok_or_else(|| {
        bad(
            path,
            place,
            format!("answer {}: missing \"answer_start\"", k + 1),
        )
    })?;
    Ok(QaAnswer {
        text,
        start: answer_start(start, k, path, place)?,
    })
}

/// A required string field.
fn string(v: &Value, k: &str, path: &Path, place: &dyn std::fmt::Display) -> Result<String> {
    match v.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(bad(path, place, format!("missing \"{k}\""))),
        Some(other) => Err(bad(
            path,
            place,
            format!("\"{k}\" must be a string, got {}", brief(other)),
        )),
    }
}

/// An optional string field: absent, null or a string.
fn optional_string(v: &Value, k: &str, path: &Path, place: &dyn std::fmt::Display) -> Result<()> {
    match v.get(k) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(bad(
            path,
            place,
            format!("\"{k}\" must be a string, got {}", brief(other)),
        )),
    }
}

/// A JSON value for a message, cut short: a whole article pasted into a message helps nobody.
fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 60 {
        s
    } else {
        let head: String = s.chars().take(57).collect();
        format!("{head}...")
    }
}

/// The characters `start..start + len` of `s` (character, not byte, positions), or `None`
/// when they run past its end.
fn char_slice(s: &str, start: usize, len: usize) -> Option<&str> {
    // Byte offset of every character, then of the end: char k is bytes[k]..bytes[k + 1].
    let mut bounds = s
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(s.len()));
    let from = bounds.nth(start)?;
    let to = if len == 0 { from } else { bounds.nth(len - 1)? };
    Some(&s[from..to])
}

/// Whitespace as Python's `str.isspace` sees it (run_qa `lstrip`s questions): Unicode
/// White_Space plus the information separators U+001C..U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The checks of one example that do not need a tokenizer.
fn check_example(ex: &QaExample, path: &Path, layout: Layout) -> Result<()> {
    let place = At {
        layout,
        path,
        n: ex.line,
        id: Some(&ex.id),
    };
    if ex.question.trim_start_matches(python_space).is_empty() {
        return Err(bad(path, &place, "empty question"));
    }
    if ex.context.trim().is_empty() {
        return Err(bad(path, &place, "empty context"));
    }
    let n_chars = ex.context.chars().count();
    for (k, a) in ex.answers.iter().enumerate() {
        let k = k + 1;
        let len = a.text.chars().count();
        if len == 0 {
            return Err(bad(path, &place, format!("answer {k}: empty text")));
        }
        match char_slice(&ex.context, a.start, len) {
            Some(found) if found == a.text => {}
            found => {
                let found = match found {
                    Some(f) => format!("found {f:?} there"),
                    None if a.start >= n_chars => {
                        format!("the context has only {n_chars} characters")
                    }
                    None => {
                        let tail: String = ex.context.chars().skip(a.start).collect();
                        format!("found {tail:?} there, the end of the context")
                    }
                };
                // The usual cause: offsets counted in UTF-8 bytes (or UTF-16 units) by a tool
                // other than Python.
                let at_byte = a
                    .start
                    .checked_add(a.text.len())
                    .and_then(|end| ex.context.get(a.start..end));
                let hint = if at_byte == Some(a.text.as_str()) {
                    format!(
                        " (it is at BYTE {}: answer_start counts characters, not bytes)",
                        a.start
                    )
                } else if let Some(b) = ex.context.find(&a.text) {
                    format!(
                        " (the text is at character {})",
                        ex.context[..b].chars().count()
                    )
                } else {
                    " (the text is nowhere in the context)".to_string()
                };
                return Err(bad(
                    path,
                    &place,
                    format!(
                        "answer {k} {:?} is not at character {} of the context: {found}{hint}",
                        a.text, a.start
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Tokenises question + context pairs: question first (whitespace at its start removed, as
/// run_qa's `lstrip`), truncation of the CONTEXT only to `max_length` tokens with `doc_stride`
/// tokens of overlap between consecutive windows (transformers: `truncation="only_second"`,
/// `max_length`, `stride=doc_stride`, `return_overflowing_tokens=True`,
/// `return_offsets_mapping=True`; no padding: the caller pads batches). The windows of an
/// example follow each other, examples in order. `path` names the data file in errors.
///
/// The tokenizer needs a pair post-processor (BERT's `[CLS] $A [SEP] $B:1 [SEP]:1`); its own
/// truncation and padding settings are ignored and left as they are (a clone is configured).
///
/// Errors: `max_length` not above `doc_stride` plus the pair's special tokens (no window could
/// ever move forward: [`Error::InvalidArgument`]); and, for an example whose pair does not fit
/// in `max_length`, a question so long that the context's share of a window (`max_length` -
/// question tokens - special tokens) is not above `doc_stride` (naming the example and the
/// numbers). transformers fails on both (the second only when the example needs cutting, as
/// here).
pub fn qa_features(
    tokenizer: &Tokenizer,
    examples: &[QaExample],
    max_length: usize,
    doc_stride: usize,
    path: &Path,
) -> Result<Vec<QaFeature>> {
    let specials = tokenizer
        .get_post_processor()
        .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, true));
    if max_length <= specials + doc_stride {
        return Err(Error::InvalidArgument(format!(
            "{}: max_length {max_length} leaves {} tokens for question and context after the \
             {specials} special tokens of a pair, not more than doc_stride {doc_stride}: \
             windows could not move forward; lower doc_stride or raise max_length",
            path.display(),
            max_length.saturating_sub(specials)
        )));
    }
    let tokenizer_error = |e: tokenizers::Error| Error::Tokenizer {
        path: path.to_path_buf(),
        problem: format!("cannot window to max_length {max_length}, doc_stride {doc_stride}: {e}"),
    };
    // The windows are cut here rather than by the tokenizer's own truncation: since 0.23.1
    // the tokenizers crate stops tokenising a truncated sequence at max_length tokens, so its
    // overflowing windows miss the rest of the context (huggingface/tokenizers#2091; the
    // Python build that made the golden files has the whole context). The steps are those of
    // its `encode` otherwise: each sequence tokenised alone, then cut by `truncate_encodings`,
    // then the post-processor adds the special tokens to every window.
    let mut plain = tokenizer.clone();
    plain
        .with_truncation(None)
        .map_err(tokenizer_error)?
        .with_padding(None);
    // Without a post-processor, an encoding is the sequence's tokens alone, as the pair
    // encoding starts from.
    let mut bare = plain.clone();
    bare.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
    let truncation = TruncationParams {
        // The post-processor's tokens come on top of the truncated pair.
        max_length: max_length - specials,
        strategy: TruncationStrategy::OnlySecond,
        stride: doc_stride,
        direction: TruncationDirection::Right,
    };

    let layout = Layout::of(path);
    let mut out = Vec::with_capacity(examples.len());
    for (index, ex) in examples.iter().enumerate() {
        let place = At {
            layout,
            path,
            n: ex.line,
            id: Some(&ex.id),
        };
        let cannot = |e: tokenizers::Error| bad(path, &place, format!("cannot tokenise: {e}"));
        let question = ex.question.trim_start_matches(python_space);
        // Character offsets, as Python's tokenizers (and SQuAD's answer_start) count.
        let q = bare.encode_char_offsets(question, false).map_err(cannot)?;
        let mut c = bare
            .encode_char_offsets(ex.context.as_str(), false)
            .map_err(cannot)?;
        // The second sequence's type: the windows cut from it keep it (the post-processor
        // sets the type of the first window only).
        c.set_type_ids(vec![1; c.len()]);
        let (q_len, c_len) = (q.len(), c.len());
        let enc = if q_len + c_len + specials <= max_length {
            plain.post_process(q, Some(c), true).map_err(cannot)?
        } else {
            // The context's share of each window; the tokenizers crate asserts (panics) when
            // it is not above the stride, so that is an error here first.
            let room = max_length.saturating_sub(specials + q_len);
            if room <= doc_stride {
                let problem = if room == 0 {
                    format!(
                        "the question is {q_len} tokens: with the {specials} special tokens it \
                         leaves no room for the context in max_length {max_length}"
                    )
                } else {
                    format!(
                        "the question is {q_len} tokens, which leaves {room} tokens of each \
                         window for the context (max_length {max_length} - {q_len} - \
                         {specials} special tokens), not more than doc_stride {doc_stride}: \
                         the windows over its {c_len} context tokens could not move forward; \
                         lower doc_stride or raise max_length"
                    )
                };
                return Err(bad(path, &place, problem));
            }
            let (q, c) = tokenizers::truncate_encodings(q, Some(c), &truncation).map_err(cannot)?;
            plain.post_process(q, c, true).map_err(cannot)?
        };
        // transformers flattens one level: [encoding] + encoding.overflowing.
        for w in std::iter::once(&enc).chain(enc.get_overflowing()) {
            let seq = w.get_sequence_ids();
            let offsets = w.get_offsets();
            let span = match ex.answers.first() {
                Some(a) => Some(answer_span(&seq, offsets, a)),
                // run_qa's prepare_train_features: a question without answers points at
                // `[CLS]` (its cls_index, 0 for BERT's and RoBERTa's pairs) in every window.
                None if ex.unanswerable => Some((0, 0)),
                None => None,
            };
            out.push(QaFeature {
                ids: w.get_ids().to_vec(),
                type_ids: w.get_type_ids().to_vec(),
                example: index,
                span,
                offsets: seq
                    .iter()
                    .zip(offsets)
                    .map(|(s, &o)| (*s == Some(1)).then_some(o))
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// run_qa's `prepare_train_features` for one window: the first and last tokens of the answer
/// when both ends are inside the window's context, else (0, 0). `seq` and `offsets` are the
/// window's sequence ids and character offsets, one per token.
///
/// Like run_qa, the start is the last context token starting at or before the answer's first
/// character, and the end the first from the left of the trailing context tokens that all end
/// at or after its last; a cut answer is (0, 0) even when part of it is in the window. One
/// difference: run_qa's start search runs on past the context when the answer starts in the
/// window's last context token (the `[SEP]` after it has offsets (0, 0)) and labels the
/// start at the window's last token; here it stops at the context's end, so both ends are that
/// last context token.
fn answer_span(
    seq: &[Option<usize>],
    offsets: &[(usize, usize)],
    answer: &QaAnswer,
) -> (usize, usize) {
    let (Some(first), Some(last)) = (
        seq.iter().position(|s| *s == Some(1)),
        seq.iter().rposition(|s| *s == Some(1)),
    ) else {
        // A context that gave no token: nothing to point at.
        return (0, 0);
    };
    let start_char = answer.start;
    // Saturating: a hand-made example may hold any start.
    let end_char = start_char.saturating_add(answer.text.chars().count());
    if !(offsets[first].0 <= start_char && offsets[last].1 >= end_char) {
        return (0, 0);
    }
    let mut s = first;
    while s <= last && offsets[s].0 <= start_char {
        s += 1;
    }
    // e - 1 walks left from the last context token while tokens still end at or after the
    // answer's end; the answer ends in the token after the first that does not.
    let mut e = last + 1;
    while e > first && offsets[e - 1].1 >= end_char {
        e -= 1;
    }
    // s > first: the check above made the first context token start at or before the answer.
    (s - 1, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lantern_kernels::Rng;
    use serde::Deserialize;
    use std::path::PathBuf;

    fn golden() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/qa")
    }

    fn golden_tokenizer() -> Tokenizer {
        crate::tokenizer::load_tokenizer(&golden().join("tokenizer.json")).unwrap()
    }

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// `features.json` as scripts/make_qa_golden.py writes it.
    #[derive(Deserialize)]
    struct Golden {
        max_length: usize,
        doc_stride: usize,
        features: Vec<GoldenFeature>,
    }

    #[derive(Deserialize)]
    struct GoldenFeature {
        example: usize,
        ids: Vec<u32>,
        type_ids: Vec<u32>,
        span: Option<(usize, usize)>,
        offsets: Vec<Option<(usize, usize)>>,
        /// run_qa's own label where it differs from `span` (its start search overrunning the
        /// context).
        run_qa_span: Option<(usize, usize)>,
    }

    fn read_golden() -> Golden {
        let text = std::fs::read_to_string(golden().join("features.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn jsonl_and_squad_json_read_the_same_examples() {
        let lines = read_qa(&golden().join("examples.jsonl")).unwrap();
        let squad = read_qa(&golden().join("examples.json")).unwrap();
        assert_eq!(lines.len(), 9);
        // Both number the examples 1.. (a line per example, a question per example).
        assert_eq!(lines, squad);
        let cafe = &lines[6];
        assert_eq!(cafe.id, "cafe-1");
        let a = &cafe.answers[0];
        // Character positions: the bytes of "é", "ã", "😀", "東京" before it do not count.
        assert_eq!(char_slice(&cafe.context, a.start, 12), Some("Renée Ørsted"));
        assert_ne!(
            cafe.context.get(a.start..a.start + a.text.len()),
            Some("Renée Ørsted")
        );
        assert_eq!(lines[4].answers.len(), 2, "several answers are kept");
        assert!(lines[8].answers.is_empty(), "unlabelled");
    }

    #[test]
    fn features_match_transformers() {
        let g = read_golden();
        let examples = read_qa(&golden().join("examples.jsonl")).unwrap();
        let tok = golden_tokenizer();
        let path = golden().join("examples.jsonl");
        let got = qa_features(&tok, &examples, g.max_length, g.doc_stride, &path).unwrap();
        assert_eq!(got.len(), g.features.len());
        for (i, (f, want)) in got.iter().zip(&g.features).enumerate() {
            assert_eq!(f.example, want.example, "window {i}");
            assert_eq!(f.ids, want.ids, "window {i}");
            assert_eq!(f.type_ids, want.type_ids, "window {i}");
            assert_eq!(f.offsets, want.offsets, "window {i}");
            assert_eq!(f.span, want.span, "window {i}");
            assert!(f.ids.len() <= g.max_length);
        }
        // The golden holds the cases it is there for: a window where run_qa's start search
        // overruns the context (here confined to it), cut answers, and no answer.
        let overrun: Vec<_> = g
            .features
            .iter()
            .filter_map(|f| Some((f.span?, f.run_qa_span?)))
            .collect();
        assert_eq!(overrun.len(), 1);
        let ((s, e), (rs, re)) = overrun[0];
        assert_eq!(
            (s, e, re),
            (rs - 1, rs - 1, rs - 1),
            "run_qa starts at the [SEP] after"
        );
        assert!(got.iter().filter(|f| f.span == Some((0, 0))).count() > 10);
        assert!(got.iter().any(|f| f.span.is_none()));
        // The same features from the SQuAD file (messages aside, the layout does not matter).
        let squad = read_qa(&golden().join("examples.json")).unwrap();
        let again = qa_features(&tok, &squad, g.max_length, g.doc_stride, &path).unwrap();
        assert_eq!(again, got);
    }

    #[test]
    fn the_callers_tokenizer_is_left_as_it_was() {
        let g = read_golden();
        let examples = read_qa(&golden().join("examples.jsonl")).unwrap();
        let path = Path::new("x.jsonl");
        // Truncation and padding already set (as a tokenizer.json may carry) change nothing.
        let mut tok = golden_tokenizer();
        let trunc = TruncationParams {
            max_length: 8,
            ..Default::default()
        };
        tok.with_truncation(Some(trunc.clone())).unwrap();
        assert_eq!(trunc.strategy, TruncationStrategy::LongestFirst);
        tok.with_padding(Some(tokenizers::PaddingParams::default()));
        let got = qa_features(&tok, &examples, g.max_length, g.doc_stride, path).unwrap();
        let want = qa_features(
            &golden_tokenizer(),
            &examples,
            g.max_length,
            g.doc_stride,
            path,
        )
        .unwrap();
        assert_eq!(got, want);
        let kept = tok.get_truncation().map(|t| (t.max_length, t.stride));
        assert_eq!(kept, Some((trunc.max_length, trunc.stride)));
        assert!(tok.get_padding().is_some());
    }

    #[test]
    fn bert_processing_gives_the_template_windows() {
        // The project's own WordPiece tokenizers carry BertProcessing rather than a template:
        // the windows must not depend on which.
        let g = read_golden();
        let examples = read_qa(&golden().join("examples.jsonl")).unwrap();
        let path = Path::new("x.jsonl");
        let mut tok = golden_tokenizer();
        let id = |t: &str| tok.token_to_id(t).unwrap();
        let bert = tokenizers::processors::bert::BertProcessing::new(
            ("[SEP]".into(), id("[SEP]")),
            ("[CLS]".into(), id("[CLS]")),
        );
        tok.with_post_processor(Some(bert));
        let got = qa_features(&tok, &examples, g.max_length, g.doc_stride, path).unwrap();
        let want = qa_features(
            &golden_tokenizer(),
            &examples,
            g.max_length,
            g.doc_stride,
            path,
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn answer_spans_follow_run_qa() {
        // Hand-made offsets of [CLS] q [SEP] c c c c [SEP]: context tokens 3..=6 covering
        // characters 0-3, 4-7, 8-11, 12-15 ("aaa bbb ccc ddd").
        let seq = [
            None,
            Some(0),
            None,
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            None,
        ];
        let offsets = [
            (0, 0),
            (0, 1),
            (0, 0),
            (0, 3),
            (4, 7),
            (8, 11),
            (12, 15),
            (0, 0),
        ];
        let ans = |text: &str, start| QaAnswer {
            text: text.into(),
            start,
        };
        assert_eq!(answer_span(&seq, &offsets, &ans("bbb ccc", 4)), (4, 5));
        assert_eq!(answer_span(&seq, &offsets, &ans("aaa", 0)), (3, 3));
        // Inside a token: the token holding it.
        assert_eq!(answer_span(&seq, &offsets, &ans("b", 5)), (4, 4));
        // In the last context token: run_qa would say (7, 6).
        assert_eq!(answer_span(&seq, &offsets, &ans("ddd", 12)), (6, 6));
        // Past the window's context (cut): the [CLS] position.
        assert_eq!(answer_span(&seq, &offsets, &ans("ddd eee", 12)), (0, 0));
        // A window whose context starts later (an overflow): an answer before it is cut too.
        let later = [
            (0, 0),
            (0, 1),
            (0, 0),
            (8, 11),
            (12, 15),
            (16, 19),
            (20, 23),
            (0, 0),
        ];
        assert_eq!(answer_span(&seq, &later, &ans("bbb ccc", 4)), (0, 0));
        // No context token at all: no panic.
        let none = [None, Some(0), None];
        assert_eq!(answer_span(&none, &offsets[..3], &ans("a", 0)), (0, 0));
    }

    #[test]
    fn questions_lose_leading_whitespace_as_python_lstrip() {
        let tok = golden_tokenizer();
        let ex = |q: &str| QaExample {
            id: "a".into(),
            question: q.into(),
            context: "The cat sat on the mat.".into(),
            answers: vec![],
            unanswerable: false,
            line: 1,
        };
        let path = Path::new("q.jsonl");
        let plain = qa_features(&tok, &[ex("Where?")], 32, 4, path).unwrap();
        let spaced =
            qa_features(&tok, &[ex(" \t\u{a0}\u{1f}\u{3000}Where?")], 32, 4, path).unwrap();
        assert_eq!(plain, spaced);
        assert_eq!(plain[0].offsets[..4], [None, None, None, None]);
        assert_eq!(
            plain[0].offsets[4],
            Some((0, 3)),
            "\"the\" is the context's first token"
        );
    }

    #[test]
    fn windows_too_small_for_the_stride_are_errors_naming_the_question() {
        let tok = golden_tokenizer();
        let g = read_golden();
        let examples = read_qa(&golden().join("examples.jsonl")).unwrap();
        let path = golden().join("examples.jsonl");

        // No window could move forward whatever the question.
        let err = qa_features(&tok, &examples, 16, 13, &path).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("examples.jsonl")
                && msg.contains("max_length 16")
                && msg.contains("doc_stride 13"),
            "{msg}"
        );
        for max_length in 0..=3 {
            assert!(qa_features(&tok, &examples, max_length, 0, &path).is_err());
        }

        // "When was the new stone bridge built?" is 8 tokens: 40 - 8 - 3 = 29 for the context.
        let river = &examples[2..3];
        let msg = qa_features(&tok, river, 40, 29, &path)
            .unwrap_err()
            .to_string();
        for want in [
            "examples.jsonl",
            "line 3 (id \"river-1\")",
            "question is 8 tokens",
            "leaves 29 tokens",
            "doc_stride 29",
        ] {
            assert!(msg.contains(want), "{want}: {msg}");
        }
        assert!(qa_features(&tok, river, 40, 28, &path).is_ok());
        // The same in a SQuAD file names the question's number.
        let squad = read_qa(&golden().join("examples.json")).unwrap();
        let msg = qa_features(&tok, &squad[2..3], 40, 29, &golden().join("examples.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("question 3 (id \"river-1\")"), "{msg}");

        // A question that alone fills max_length.
        let msg = qa_features(&tok, river, 11, 2, &path)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 3") && msg.contains("no room for the context in max_length 11"),
            "{msg}"
        );

        // A pair that fits needs no window, as in transformers: no error.
        let cat = &examples[0..1];
        let n = qa_features(&tok, cat, 16, 12, &path).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].ids.len(), 16);
        assert_eq!(n[0].ids, g.features[0].ids);
        assert!(qa_features(&tok, cat, 15, 11, &path).is_err());
    }

    #[test]
    fn bad_files_are_errors_naming_the_file_and_the_record() {
        let d = tempfile::tempdir().unwrap();
        let ok = r#"{"id": "a", "question": "Q?", "context": "The cat.", "answers": {"text": ["cat"], "answer_start": [4]}}"#;
        let rec = |s: &str| format!("{ok}\n{s}\n");
        let cases: Vec<(&str, String, &[&str])> = vec![
            ("json.jsonl", rec("{\"id\": \"b\","), &["line 2", "invalid JSON"]),
            ("list.jsonl", rec("[1, 2]"), &["line 2", "must be a JSON object"]),
            (
                "noid.jsonl",
                rec(r#"{"question": "Q?", "context": "c"}"#),
                &["line 2", "missing \"id\""],
            ),
            (
                "intid.jsonl",
                rec(r#"{"id": 7, "question": "Q?", "context": "c"}"#),
                &["line 2", "\"id\" must be a string, got 7"],
            ),
            (
                "noctx.jsonl",
                rec(r#"{"id": "b", "question": "Q?"}"#),
                &["line 2 (id \"b\")", "missing \"context\""],
            ),
            (
                "title.jsonl",
                rec(r#"{"id": "b", "title": 3, "question": "Q?", "context": "c"}"#),
                &["line 2 (id \"b\")", "\"title\" must be a string"],
            ),
            (
                "q.jsonl",
                rec(r#"{"id": "b", "question": " \t", "context": "c"}"#),
                &["line 2 (id \"b\")", "empty question"],
            ),
            (
                "ctx.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": ""}"#),
                &["line 2 (id \"b\")", "empty context"],
            ),
            (
                "ans.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "c", "answers": ["c"]}"#),
                &["line 2 (id \"b\")", "\"answers\" must be {\"text\""],
            ),
            (
                "lens.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "c d", "answers": {"text": ["c", "d"], "answer_start": [0]}}"#),
                &["line 2 (id \"b\")", "2 answer texts but 1 answer_start"],
            ),
            (
                "nostart.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "c", "answers": {"text": ["c"]}}"#),
                &["line 2", "\"answer_start\" is missing"],
            ),
            (
                "neg.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "c", "answers": {"text": ["c"], "answer_start": [-1]}}"#),
                &["line 2", "answer 1: \"answer_start\" must be a non-negative integer, got -1"],
            ),
            (
                "float.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "c", "answers": {"text": ["c"], "answer_start": [0.5]}}"#),
                &["line 2", "non-negative integer, got 0.5"],
            ),
            (
                "text.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "c", "answers": {"text": [1], "answer_start": [0]}}"#),
                &["line 2", "answer 1: \"text\" must be a string"],
            ),
            (
                "emptyans.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "c", "answers": {"text": [""], "answer_start": [0]}}"#),
                &["line 2", "answer 1: empty text"],
            ),
            (
                "where.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "a cat and a dog", "answers": {"text": ["cat", "dog"], "answer_start": [2, 11]}}"#),
                &[
                    "line 2 (id \"b\")",
                    "answer 2 \"dog\" is not at character 11 of the context: found \" do\" there",
                    "(the text is at character 12)",
                ],
            ),
            // Byte offsets (what Rust's str::find gives) instead of character ones.
            (
                "bytes.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "Café Zoë serves tea", "answers": {"text": ["tea"], "answer_start": [18]}}"#),
                &[
                    "line 2",
                    "answer 1 \"tea\" is not at character 18 of the context: found \"a\" there, the end of the context",
                    "it is at BYTE 18: answer_start counts characters, not bytes",
                ],
            ),
            (
                "past.jsonl",
                rec(r#"{"id": "b", "question": "Q?", "context": "abc", "answers": {"text": ["x"], "answer_start": [70]}}"#),
                &["line 2", "the context has only 3 characters", "nowhere in the context"],
            ),
            (
                "dup.jsonl",
                format!("{ok}\n\n{ok}\n"),
                &["line 3 (id \"a\")", "already at line 1", "unique"],
            ),
            ("empty.jsonl", String::new(), &["no examples"]),
            ("blank.jsonl", "\n \n\t\n".into(), &["no examples"]),
            ("what.txt", ok.into(), &["unknown extension \"txt\""]),
            // SQuAD JSON.
            ("syntax.json", "{\"data\": [".into(), &["invalid JSON"]),
            (
                "lines.json",
                format!("{ok}\n{ok}\n"),
                &["invalid JSON", "name the file .jsonl"],
            ),
            ("nodata.json", "{\"version\": \"1.1\"}".into(), &["{\"data\": [articles]}"]),
            ("nodata2.json", "[]".into(), &["{\"data\": [articles]}"]),
            ("nodoc.json", "{\"data\": []}".into(), &["no examples"]),
            ("article.json", "{\"data\": [3]}".into(), &["data[0]", "must be an object"]),
            (
                "paras.json",
                "{\"data\": [{\"title\": \"t\"}]}".into(),
                &["data[0]: missing \"paragraphs\""],
            ),
            (
                "qas.json",
                "{\"data\": [{\"paragraphs\": [{\"context\": \"c\", \"qas\": {}}]}]}".into(),
                &["data[0].paragraphs[0]: \"qas\" must be a list"],
            ),
            (
                "pctx.json",
                "{\"data\": [{\"paragraphs\": [{\"qas\": []}]}]}".into(),
                &["data[0].paragraphs[0]: missing \"context\""],
            ),
            (
                "squadans.json",
                r#"{"data": [{"paragraphs": [{"context": "a cat", "qas": [{"id": "x", "question": "Q?", "answers": [{"text": "cat", "answer_start": 2}]}, {"id": "y", "question": "Q?", "answers": [{"text": "cat"}]}]}]}]}"#.into(),
                &["question 2 (id \"y\") (data[0].paragraphs[0].qas[1])", "answer 1: missing \"answer_start\""],
            ),
            (
                "squadwhere.json",
                r#"{"data": [{"paragraphs": [{"context": "a cat", "qas": [{"id": "x", "question": "Q?", "answers": [{"text": "cat", "answer_start": 1}]}]}]}]}"#.into(),
                &["question 1 (id \"x\")", "answer 1 \"cat\" is not at character 1", "found \" ca\" there"],
            ),
            (
                "squaddup.json",
                r#"{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "Q?"}]}, {"context": "d", "qas": [{"id": "x", "question": "R?"}]}]}]}"#.into(),
                &["question 2 (id \"x\")", "already at question 1"],
            ),
            (
                "squadid.json",
                r#"{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "Q?"}]}]}]}"#.into(),
                &["question 1 (data[0].paragraphs[0].qas[0])", "missing \"id\""],
            ),
        ];
        for (name, body, want) in cases {
            let p = write(d.path(), name, &body);
            let msg = read_qa(&p).unwrap_err().to_string();
            assert!(msg.contains(name), "{msg}");
            for w in want {
                assert!(msg.contains(w), "{name}: {w}: {msg}");
            }
        }
        let missing = d.path().join("nope.jsonl");
        let err = read_qa(&missing).unwrap_err();
        assert!(matches!(err, Error::MissingInput(_)), "{err}");
        assert!(err.to_string().contains("nope.jsonl"));

        // What is accepted: null and absent answers, an empty answer list, a BOM, CRLF,
        // unknown fields (SQuAD v2's), all one example each.
        let body = format!(
            "\u{feff}{ok}\r\n{}\r\n{}\n",
            r#"{"id": "b", "question": "Q?", "context": "c", "answers": null, "extra": 1}"#,
            r#"{"id": "c", "question": "Q?", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
        );
        let ex = read_qa(&write(d.path(), "fine.jsonl", &body)).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(
            ex[0].answers,
            [QaAnswer {
                text: "cat".into(),
                start: 4
            }]
        );
        assert!(ex[1].answers.is_empty() && ex[2].answers.is_empty());
        assert_eq!((ex[0].id.as_str(), ex[2].line), ("a", 3));
        let v2 = r#"{"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "Q?", "answers": [], "is_impossible": true}]}]}]}"#;
        let ex = read_qa(&write(d.path(), "v2.json", v2)).unwrap();
        assert_eq!(ex.len(), 1);
        assert!(ex[0].answers.is_empty());
    }

    #[test]
    fn squad_2_unanswerable_questions_are_read_with_version_2_with_negative() {
        let d = tempfile::tempdir().unwrap();
        // HF datasets' squad_v2 layout: an empty answer list; `is_impossible` may come along.
        let body = [
            r#"{"id": "a", "question": "Q?", "context": "The cat.", "answers": {"text": ["cat"], "answer_start": [4]}}"#,
            r#"{"id": "b", "question": "Q?", "context": "The cat.", "answers": {"text": [], "answer_start": []}}"#,
            r#"{"id": "c", "question": "Q?", "context": "The cat.", "answers": null}"#,
            r#"{"id": "d", "question": "Q?", "context": "The cat.", "is_impossible": true}"#,
            r#"{"id": "e", "question": "Q?", "context": "The cat.", "answers": {"text": [], "answer_start": []}, "is_impossible": true}"#,
            r#"{"id": "f", "question": "Q?", "context": "The cat.", "is_impossible": false}"#,
        ]
        .join("\n");
        let path = write(d.path(), "v2.jsonl", &body);
        let v2 = read_qa_with(&path, true).unwrap();
        let flags: Vec<(bool, bool)> = v2
            .iter()
            .map(|e| (e.answers.is_empty(), e.unanswerable))
            .collect();
        assert_eq!(
            flags,
            [
                (false, false),
                (true, true),
                (true, false),
                (true, true),
                (true, true),
                (true, false)
            ]
        );
        // SQuAD v1.1 (no flag): as before, an empty list is no answer and is_impossible is
        // not read at all.
        let v1 = read_qa(&path).unwrap();
        assert!(v1.iter().all(|e| !e.unanswerable));
        assert_eq!(v1.len(), 6);
        assert_eq!(v1[0].answers, v2[0].answers);
        let odd = r#"{"id": "x", "question": "Q?", "context": "c", "answers": {"text": [], "answer_start": []}, "is_impossible": "yes"}"#;
        assert!(read_qa(&write(d.path(), "odd.jsonl", odd)).is_ok());

        // The official SQuAD 2.0 layout: `"answers": []`, `"is_impossible": true` and the
        // `plausible_answers` an annotator found (ignored).
        let squad = r#"{"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "The cat sat.", "qas": [
            {"id": "x", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}], "is_impossible": false},
            {"id": "y", "question": "Who stood?", "answers": [], "plausible_answers": [{"text": "cat", "answer_start": 4}], "is_impossible": true}]}]}]}"#;
        let path = write(d.path(), "dev-v2.0.json", squad);
        let ex = read_qa_with(&path, true).unwrap();
        assert_eq!((ex[0].unanswerable, ex[0].answers.len()), (false, 1));
        assert_eq!((ex[1].unanswerable, ex[1].answers.len()), (true, 0));
        let ex = read_qa(&path).unwrap();
        assert!(!ex[1].unanswerable && ex[1].answers.is_empty());
        assert_eq!(example_place(&path, &ex[1]), "question 2 (id \"y\")");

        // Contradictions and a mistyped flag are errors naming the file and the question.
        let rec = |extra: &str| {
            format!(r#"{{"id": "b", "question": "Q?", "context": "a cat", {extra}}}"#)
        };
        let cases: Vec<(&str, String, &[&str])> = vec![
            (
                "both.jsonl",
                rec(r#""answers": {"text": ["cat"], "answer_start": [2]}, "is_impossible": true"#),
                &["line 1 (id \"b\")", "\"is_impossible\" is true but the question has 1 answer(s)"],
            ),
            (
                "neither.jsonl",
                rec(r#""answers": {"text": [], "answer_start": []}, "is_impossible": false"#),
                &["line 1 (id \"b\")", "\"is_impossible\" is false but the answer list is empty"],
            ),
            (
                "typed.jsonl",
                rec(r#""is_impossible": "yes""#),
                &["line 1 (id \"b\")", "\"is_impossible\" must be true or false, got \"yes\""],
            ),
            (
                "both.json",
                r#"{"data": [{"paragraphs": [{"context": "a cat", "qas": [{"id": "q", "question": "Q?", "answers": [{"text": "cat", "answer_start": 2}], "is_impossible": true}]}]}]}"#.into(),
                &["question 1 (id \"q\") (data[0].paragraphs[0].qas[0])", "is true but"],
            ),
        ];
        for (name, body, want) in cases {
            let p = write(d.path(), name, &body);
            let msg = read_qa_with(&p, true).unwrap_err().to_string();
            assert!(msg.contains(name), "{msg}");
            for w in want {
                assert!(msg.contains(w), "{name}: {w}: {msg}");
            }
        }
    }

    #[test]
    fn unanswerable_questions_point_at_cls_in_every_window() {
        let tok = golden_tokenizer();
        let path = golden().join("examples.jsonl");
        let mut examples = read_qa(&path).unwrap();
        // The river question is cut into several windows at (40, 12); take away its answer.
        let plain = qa_features(&tok, &examples, 40, 12, &path).unwrap();
        let river = examples.iter().position(|e| e.id == "river-1").unwrap();
        examples[river].answers.clear();
        examples[river].unanswerable = true;
        let got = qa_features(&tok, &examples, 40, 12, &path).unwrap();
        assert_eq!(got.len(), plain.len());
        let windows: Vec<_> = got.iter().filter(|f| f.example == river).collect();
        assert!(windows.len() > 1, "{}", windows.len());
        assert!(windows.iter().all(|f| f.span == Some((0, 0))));
        // The other questions' windows, and the river's tokens, do not change.
        for (a, b) in got.iter().zip(&plain) {
            assert_eq!((&a.ids, &a.offsets), (&b.ids, &b.offsets));
            if a.example != river {
                assert_eq!(a.span, b.span);
            }
        }
        // Unlabelled (no answers, not marked unanswerable): no target.
        examples[river].unanswerable = false;
        let got = qa_features(&tok, &examples, 40, 12, &path).unwrap();
        assert!(got
            .iter()
            .filter(|f| f.example == river)
            .all(|f| f.span.is_none()));
    }

    #[test]
    fn char_slices_count_characters() {
        let s = "aé😀b";
        assert_eq!(char_slice(s, 0, 4), Some(s));
        assert_eq!(char_slice(s, 2, 1), Some("😀"));
        assert_eq!(char_slice(s, 3, 1), Some("b"));
        assert_eq!(char_slice(s, 4, 0), Some(""));
        assert_eq!(char_slice(s, 3, 2), None);
        assert_eq!(char_slice(s, 5, 0), None);
        assert_eq!(char_slice("", 0, 0), Some(""));
    }

    #[test]
    fn mangled_files_are_errors_or_examples_never_panics() {
        // Pieces of valid JSONL and SQuAD JSON, cut, spliced and with bytes flipped at random:
        // the reader gives examples or an error naming the file, and whatever examples it
        // gives window without a panic.
        let jsonl = std::fs::read_to_string(golden().join("examples.jsonl")).unwrap();
        let squad = std::fs::read(golden().join("examples.json")).unwrap();
        // Whole records (a line each, newline kept), the SQuAD file, and odd fragments.
        let mut pieces: Vec<&[u8]> = jsonl.split_inclusive('\n').map(str::as_bytes).collect();
        pieces.extend([
            &squad[..],
            b"{\"id\": \"z\", \"question\": \"\\u00e9?\", \"context\": \"\\ud83d\\ude00 x\", \"answers\": {\"text\": [\"x\"], \"answer_start\": [2]}}\n",
            b"{\"data\": [{\"paragraphs\": [{\"context\": \"a b\", \"qas\": [{\"id\": \"q\", \"question\": \"b?\", \"answers\": [{\"text\": \"b\", \"answer_start\": 2}]}]}]}]}",
            b"\xff\xfe\x00",
            b"[",
            b"\"",
            b"\r\n",
            b"{}",
            b"\"answer_start\": [18446744073709551615]",
            b"{\"id\": \"n\", \"question\": \"x?\", \"context\": \"a b\", \"answers\": {\"text\": [], \"answer_start\": []}, \"is_impossible\": true}\n",
            b"\"is_impossible\": false",
        ]);
        let d = tempfile::tempdir().unwrap();
        let tok = golden_tokenizer();
        let mut rng = Rng::new(17);
        let mut windowed = 0;
        for case in 0..600 {
            let mut body = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let piece = pieces[rng.below(pieces.len() as u64) as usize];
                let (a, b) = (
                    rng.below(piece.len() as u64 + 1) as usize,
                    rng.below(piece.len() as u64 + 1) as usize,
                );
                match rng.below(3) {
                    0 => body.extend_from_slice(&piece[a.min(b)..a.max(b)]),
                    _ => body.extend_from_slice(piece),
                }
            }
            // Half the files keep their bytes; the others get one to three bits flipped.
            let flips = if rng.below(2) == 0 {
                0
            } else {
                1 + rng.below(3)
            };
            for _ in 0..flips {
                if !body.is_empty() {
                    let at = rng.below(body.len() as u64) as usize;
                    body[at] ^= 1 << rng.below(8);
                }
            }
            let name = ["m.jsonl", "m.json"][case % 2];
            let path = d.path().join(name);
            std::fs::write(&path, &body).unwrap();
            // Half the files are read as SQuAD 2.0 (`is_impossible` read and checked).
            let examples = match read_qa_with(&path, case % 4 >= 2) {
                Ok(ex) => ex,
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(name), "{msg}");
                    continue;
                }
            };
            assert!(!examples.is_empty());
            for (max_length, stride) in [(40, 12), (12, 4), (6, 2)] {
                match qa_features(&tok, &examples, max_length, stride, &path) {
                    Ok(f) => {
                        windowed += 1;
                        assert!(f.len() >= examples.len());
                        for w in &f {
                            assert!(w.ids.len() <= max_length);
                            if let Some((s, e)) = w.span {
                                assert!(s < w.ids.len() && e < w.ids.len());
                            }
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(msg.contains(name), "{msg}");
                    }
                }
            }
        }
        assert!(
            windowed > 50,
            "too few readable files to test windowing: {windowed}"
        );
    }
}
