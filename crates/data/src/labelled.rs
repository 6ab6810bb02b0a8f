//! Labelled examples for sequence and token classification: reading them (JSONL, CSV with a
//! header, or CoNLL columns), the label set, tokenising with truncation, a seeded
//! train/validation split, and batches padded to the longest example of the batch (dynamic
//! padding).
//!
//! Sequence records: `text` (required, non-empty), `text_pair` (optional second segment),
//! `label` (optional only for prediction): by [`ProblemType`], a name or an index into the label
//! set (single-label), a list of them (multi-label; in CSV, names separated by `;`), or a number
//! (regression).
//!
//! Word-level records (token classification, as transformers' `run_ner.py`): `tokens` (the
//! words) and one tag per word under `tags` or `ner_tags` (optional only for prediction); or a
//! `.conll` file, one word and its tag per line. Only the first sub-token of each word is
//! labelled ([`first_subwords`]).
//!
//! Every error names the file and the line.

use crate::error::{Error, Result};
use lantern_kernels::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// What a label is: transformers' `problem_type` of `BertForSequenceClassification`, with
/// its names, and a tag per word (`BertForTokenClassification`, which has no `problem_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// One class per example; cross-entropy over the classes.
    #[default]
    SingleLabelClassification,
    /// Any set of the classes per example; binary cross-entropy of each class.
    MultiLabelClassification,
    /// One number per example; mean squared error.
    Regression,
    /// One class per word (a tag, as NER's `B-PER`); cross-entropy over the classes at the first
    /// sub-token of each word, the other tokens ignored.
    TokenClassification,
    /// Extractive question answering (SQuAD, `BertForQuestionAnswering`): the answer is a span
    /// of the context, found by a start and an end logit per token (crates/data/src/qa.rs reads
    /// its data; it has no label set).
    QuestionAnswering,
    /// Multiple choice (SWAG, `BertForMultipleChoice`): one of an example's C choices is right;
    /// cross-entropy over the C scores (crates/data/src/choice.rs reads its data; it has no
    /// label set).
    MultipleChoice,
    /// A reward model (TRL's `RewardTrainer`): a sequence classifier with one output, the
    /// reward, trained on preference records (`chosen`, `rejected`) so that the chosen
    /// sequence's reward beats the rejected one's, `−log σ(r_c − r_r − margin)`
    /// (crates/data/src/dpo.rs reads its data; it has no label set).
    RewardModeling,
}

impl ProblemType {
    /// The name in transformers' `config.json` for the sequence problems. Token classification
    /// is ours only (`"token_classification"`, as serde writes it): transformers refuses a
    /// `problem_type` outside its three, so a token classifier's `config.json` must not carry
    /// it (its architecture, `BertForTokenClassification`, says what it is).
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleLabelClassification => "single_label_classification",
            Self::MultiLabelClassification => "multi_label_classification",
            Self::Regression => "regression",
            Self::TokenClassification => "token_classification",
            Self::QuestionAnswering => "question_answering",
            Self::MultipleChoice => "multiple_choice",
            Self::RewardModeling => "reward_modeling",
        }
    }

    /// The problem type [`ProblemType::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::SingleLabelClassification,
            Self::MultiLabelClassification,
            Self::Regression,
            Self::TokenClassification,
            Self::QuestionAnswering,
            Self::MultipleChoice,
            Self::RewardModeling,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

impl std::fmt::Display for ProblemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A label as written in the file, before the problem type gives it a meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    Name(String),
    Index(usize),
    /// A number that is not a whole one (regression).
    Number(f64),
    /// A JSON list (multi-label), or the tags of a word-level record (one per word).
    List(Vec<LabelValue>),
}

impl std::fmt::Display for LabelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelValue::Name(n) => write!(f, "{n:?}"),
            LabelValue::Index(i) => write!(f, "{i}"),
            LabelValue::Number(x) => write!(f, "{x}"),
            LabelValue::List(v) => {
                let items: Vec<String> = v.iter().map(|l| l.to_string()).collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

/// A label resolved against the label set.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Single-label: the class index.
    Class(usize),
    /// Multi-label: one flag per class of the label set.
    Classes(Vec<bool>),
    /// Regression: the value.
    Score(f32),
    /// Token classification: the class index of each word's tag, one per word.
    Tags(Vec<usize>),
    /// Question answering: the token positions (start, end) of the answer in one window
    /// ((0, 0), the `[CLS]` position, when the answer is not wholly inside it).
    Span(usize, usize),
    /// Reward modeling: the first of the example's two sequences is preferred, by at least
    /// this margin (0 without TRL's `margin` column).
    Preference(f32),
}

/// One example as read, before its label is resolved. `line` is 1-based (the first line of
/// the record for CSV, of the sentence for CoNLL).
///
/// A word-level record has `words`; its `text` is then the words joined by single spaces (for
/// messages and predictions; the words themselves are what is tokenised), `text_pair` is
/// `None`, and `label` is a [`LabelValue::List`] of one tag per word.
#[derive(Debug, Clone, PartialEq)]
pub struct RawExample {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: Option<LabelValue>,
    pub line: usize,
    /// The words of a word-level record (token classification); `None` for a text record.
    pub words: Option<Vec<String>>,
    /// A multiple-choice record's second segments, one per choice (`text` is the first
    /// segment, shared by them; crates/data/src/choice.rs); `None` otherwise.
    pub choices: Option<Vec<String>>,
}

pub(crate) fn bad(path: &Path, line: usize, problem: impl std::fmt::Display) -> Error {
    Error::format(
        path,
        format!("{}: {problem}", crate::records::place(path, line)),
    )
}

/// Which fields of a text record hold the text, the optional second text and the label:
/// JSON keys, or CSV/TSV header names (transformers' run_classification
/// `--text_column_names` and `--label_column_name`; GLUE's files say `sentence1`,
/// `sentence2`, `label`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    pub text: String,
    pub text_pair: String,
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            text: "text".into(),
            text_pair: "text_pair".into(),
            label: "label".into(),
        }
    }
}

/// The examples of a data file for `problem`: multiple-choice records
/// ([`crate::choice::read_choice_examples`]) for multiple choice, else
/// [`read_examples_with`]'s text or word-level records. (Question answering reads its own
/// layout, crates/data/src/qa.rs.)
pub fn read_for_problem(
    path: &Path,
    cols: &Columns,
    problem: ProblemType,
) -> Result<Vec<RawExample>> {
    match problem {
        ProblemType::MultipleChoice => crate::choice::read_choice_examples(path, cols),
        _ => read_examples_with(path, cols),
    }
}

/// [`read_examples_with`] the default columns (`text`, `text_pair`, `label`).
pub fn read_examples(path: &Path) -> Result<Vec<RawExample>> {
    read_examples_with(path, &Columns::default())
}

/// Reads `.jsonl`/`.json` (one object per line, text or word-level records), `.parquet` (a
/// row a record, as its JSON Lines export: [`crate::records`]), `.csv` (header
/// row naming the columns), `.tsv` (the same with tabs and no quoting, as GLUE's files) or
/// `.conll` (one word and its tag per line); `cols` names a text record's fields. Blank lines
/// are skipped; an empty or whitespace-only text (or words) is an error, and so is a file
/// mixing text and word-level records, which no problem type could use whole.
pub fn read_examples_with(path: &Path, cols: &Columns) -> Result<Vec<RawExample>> {
    let text = crate::records::text(path)?;
    let out = match crate::records::format_of(path).as_str() {
        "jsonl" | "json" | "parquet" => read_jsonl(path, &text, cols)?,
        "csv" => read_table(path, csv_records(path, &text)?, cols)?,
        "tsv" => read_table(path, tsv_records(&text), cols)?,
        "conll" => read_conll(path, &text)?,
        other => {
            return Err(Error::format(
                path,
                format!(
                    "unknown extension {other:?}: expected .jsonl, .parquet, .csv, .tsv or .conll"
                ),
            ))
        }
    };
    if out.is_empty() {
        return Err(Error::format(path, "no examples"));
    }
    let out = if crate::records::is_table(path) {
        class_labels_named(path, cols, out)?
    } else {
        out
    };
    let first = &out[0];
    let kind = |e: &RawExample| {
        if e.words.is_some() {
            "a word-level record (\"tokens\")"
        } else {
            "a text record (\"text\")"
        }
    };
    for ex in &out {
        if ex.text.trim().is_empty() {
            let what = if ex.words.is_some() { "words" } else { "text" };
            return Err(bad(path, ex.line, format!("empty {what}")));
        }
        if ex.words.is_some() != first.words.is_some() {
            return Err(bad(
                path,
                ex.line,
                format!(
                    "{}, but {} is {}: a file holds one kind",
                    kind(ex),
                    crate::records::place(path, first.line),
                    kind(first)
                ),
            ));
        }
    }
    Ok(out)
}

fn read_jsonl(path: &Path, text: &str, cols: &Columns) -> Result<Vec<RawExample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(path, n, format!("invalid JSON: {e}")))?;
        let has = |k: &str| v.get(k).is_some_and(|x| !x.is_null());
        if has("tokens") {
            out.push(json_words(path, n, &v)?);
            continue;
        }
        // Tags without words would be read as a text record whose tags are lost.
        if let Some(k) = ["tags", "ner_tags"].into_iter().find(|k| has(k)) {
            return Err(bad(
                path,
                n,
                format!("\"{k}\" needs \"tokens\", the words it tags"),
            ));
        }
        let s = |k: &str| -> Result<Option<String>> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(
                    path,
                    n,
                    format!("\"{k}\" must be a string, got {other}"),
                )),
            }
        };
        let text =
            s(&cols.text)?.ok_or_else(|| bad(path, n, format!("missing \"{}\"", cols.text)))?;
        let label = match v.get(&cols.label) {
            None | Some(serde_json::Value::Null) => None,
            Some(x) => Some(json_label(x, true).ok_or_else(|| {
                bad(
                    path,
                    n,
                    format!(
                        "\"{}\" must be a name, an index, a number or a list of names, got {x}",
                        cols.label
                    ),
                )
            })?),
        };
        out.push(RawExample {
            text,
            text_pair: s(&cols.text_pair)?,
            label,
            line: n,
            words: None,
            choices: None,
        });
    }
    Ok(out)
}

/// A word-level JSONL record (HF datasets' conll2003 layout): `"tokens"`, a non-empty list of
/// strings, and optionally one tag per word (names or indices) under `"tags"` or `"ner_tags"`.
/// `"text"`, `"text_pair"` and `"label"` are refused beside them: which would be meant?
fn json_words(path: &Path, n: usize, v: &serde_json::Value) -> Result<RawExample> {
    use serde_json::Value;
    let get = |k: &str| v.get(k).filter(|x| !x.is_null());
    if let Some(k) = ["text", "text_pair"].into_iter().find(|k| get(k).is_some()) {
        return Err(bad(
            path,
            n,
            format!("a record has \"{k}\" or \"tokens\", not both"),
        ));
    }
    if get("label").is_some() {
        return Err(bad(
            path,
            n,
            "the tags of \"tokens\" go under \"tags\" or \"ner_tags\", not \"label\"",
        ));
    }
    let tokens = get("tokens").unwrap_or(&Value::Null);
    let words: Vec<String> = match tokens {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>(),
        _ => None,
    }
    .ok_or_else(|| {
        bad(
            path,
            n,
            format!("\"tokens\" must be a non-empty list of strings, got {tokens}"),
        )
    })?;
    let tags = match (get("tags"), get("ner_tags")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                path,
                n,
                "both \"tags\" and \"ner_tags\": give one of them",
            ))
        }
        (Some(t), None) => Some(("tags", t)),
        (None, Some(t)) => Some(("ner_tags", t)),
        (None, None) => None,
    };
    let label = match tags {
        None => None,
        Some((k, x)) => {
            let items: Vec<LabelValue> = match x {
                Value::Array(items) => items
                    .iter()
                    .map(|i| json_label(i, false).filter(|l| !matches!(l, LabelValue::Number(_))))
                    .collect::<Option<_>>(),
                _ => None,
            }
            .ok_or_else(|| {
                bad(
                    path,
                    n,
                    format!("\"{k}\" must be a list of names or indices, got {x}"),
                )
            })?;
            if items.len() != words.len() {
                return Err(bad(
                    path,
                    n,
                    format!(
                        "{} tags in \"{k}\" for {} words in \"tokens\": one tag per word",
                        items.len(),
                        words.len()
                    ),
                ));
            }
            Some(LabelValue::List(items))
        }
    };
    Ok(RawExample {
        text: words.join(" "),
        text_pair: None,
        label,
        line: n,
        words: Some(words),
        choices: None,
    })
}

/// CoNLL columns (CoNLL-2003's `word POS chunk NER`): one word per line, columns separated by
/// whitespace, the first the word and the last its tag; a line of one column is a word without
/// a tag (for prediction), and a sentence is all tagged or all untagged, as a sentence with a
/// few tags missing is a broken file, not a sentence to predict. Blank lines end a sentence
/// (runs of them are one break), and `-DOCSTART-` lines (document separators) are skipped. An
/// example's line is its sentence's first.
fn read_conll(path: &Path, text: &str) -> Result<Vec<RawExample>> {
    // The sentence being read: its first line and whether its words are tagged.
    struct Sentence {
        line: usize,
        tagged: bool,
        words: Vec<String>,
        tags: Vec<LabelValue>,
    }
    let finish = |s: Sentence| RawExample {
        text: s.words.join(" "),
        text_pair: None,
        label: s.tagged.then_some(LabelValue::List(s.tags)),
        line: s.line,
        words: Some(s.words),
        choices: None,
    };
    let mut out = Vec::new();
    let mut current: Option<Sentence> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (word, tag) = match cols[..] {
            [] | ["-DOCSTART-", ..] => {
                out.extend(current.take().map(finish));
                continue;
            }
            [word] => (word, None),
            [word, .., tag] => (word, Some(tag)),
        };
        let s = current.get_or_insert_with(|| Sentence {
            line: n,
            tagged: tag.is_some(),
            words: Vec::new(),
            tags: Vec::new(),
        });
        if tag.is_some() != s.tagged {
            let (this, first) = if s.tagged {
                ("no tag", "has one")
            } else {
                ("a tag", "has none")
            };
            return Err(bad(
                path,
                n,
                format!(
                    "a word with {this}, but the first word of its sentence (line {}) {first}",
                    s.line
                ),
            ));
        }
        s.words.push(word.to_string());
        s.tags.extend(tag.map(cell_label));
    }
    out.extend(current.map(finish));
    Ok(out)
}

/// A label written as text (a CSV cell, a CoNLL column): a bare integer is an index, anything
/// else a name.
fn cell_label(s: &str) -> LabelValue {
    match s.parse::<usize>() {
        Ok(i) => LabelValue::Index(i),
        Err(_) => LabelValue::Name(s.to_string()),
    }
}

/// A JSON label: a string, a whole number (an index), another number, or (at the top level) a
/// list of strings and indices.
fn json_label(x: &serde_json::Value, top: bool) -> Option<LabelValue> {
    use serde_json::Value;
    Some(match x {
        Value::String(s) => LabelValue::Name(s.clone()),
        Value::Number(n) => match n.as_u64() {
            Some(i) => LabelValue::Index(i as usize),
            None => LabelValue::Number(n.as_f64()?),
        },
        Value::Array(items) if top => LabelValue::List(
            items
                .iter()
                .map(|i| json_label(i, false).filter(|l| !matches!(l, LabelValue::Number(_))))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// RFC 4180 records: fields separated by commas, optionally quoted with `"` (a quote inside a
/// quoted field is doubled; quoted fields may hold commas and newlines). Returns (first line of
/// the record, fields).
pub(crate) fn csv_records(path: &Path, text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut line, mut start_line) = (1usize, 1usize);
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    records.push((start_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start_line = line;
            }
            (false, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err(bad(path, start_line, "unterminated quoted field"));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((start_line, fields));
    }
    Ok(records)
}

/// Tab-separated records without quoting (GLUE's `.tsv` files, read by its processors with
/// `quotechar=None`): one per line, blank lines skipped. Returns (line, fields).
pub(crate) fn tsv_records(text: &str) -> Vec<(usize, Vec<String>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_end_matches('\r').is_empty())
        .map(|(i, l)| {
            let fields = l.trim_end_matches('\r').split('\t').map(str::to_string);
            (i + 1, fields.collect())
        })
        .collect()
}

/// Text records of a table whose first record is the header naming the columns (CSV, TSV).
fn read_table(
    path: &Path,
    records: Vec<(usize, Vec<String>)>,
    cols: &Columns,
) -> Result<Vec<RawExample>> {
    let mut records = records.into_iter();
    let (_, header) = records
        .next()
        .ok_or_else(|| Error::format(path, "empty file: no header row"))?;
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let text_col = col(&cols.text).ok_or_else(|| {
        bad(
            path,
            1,
            format!(
                "the header {header:?} has no \"{}\" column (data.text_column)",
                cols.text
            ),
        )
    })?;
    let (pair_col, label_col) = (col(&cols.text_pair), col(&cols.label));
    let mut out = Vec::new();
    for (n, rec) in records {
        if rec.len() != header.len() {
            return Err(bad(
                path,
                n,
                format!("{} fields, the header has {}", rec.len(), header.len()),
            ));
        }
        let label = label_col.map(|c| rec[c].trim()).filter(|s| !s.is_empty());
        out.push(RawExample {
            text: rec[text_col].clone(),
            text_pair: pair_col.map(|c| rec[c].clone()).filter(|s| !s.is_empty()),
            label: label.map(cell_label),
            line: n,
            words: None,
            choices: None,
        });
    }
    Ok(out)
}

/// The labels of one example as a list of single labels (multi-label): a JSON list, or a CSV
/// cell of names separated by `;`, or one label.
fn label_items(label: &LabelValue) -> Vec<LabelValue> {
    match label {
        LabelValue::List(v) => v.clone(),
        LabelValue::Name(n) if n.contains(';') => n
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| LabelValue::Name(s.to_string()))
            .collect(),
        l => vec![l.clone()],
    }
}

/// Class indices must stay below this (a larger index is a mistake, and would make as many
/// classes).
pub const MAX_CLASSES: usize = 65_536;

/// The label names of a training set in sorted order; all-index labels give "0".."max".
/// Multi-label and token classification take every item of every list (every word's tag).
/// Regression has one output, which transformers names "LABEL_0". `path` names the file in
/// the error for an index of [`MAX_CLASSES`] or more.
pub fn label_names(
    examples: &[RawExample],
    problem: ProblemType,
    path: &Path,
) -> Result<Vec<String>> {
    match problem {
        // One output: the value, or the reward.
        ProblemType::Regression | ProblemType::RewardModeling => {
            return Ok(vec!["LABEL_0".to_string()])
        }
        // Answers are spans of the context, and right choices indices into an example's own
        // choices, not classes.
        ProblemType::QuestionAnswering | ProblemType::MultipleChoice => return Ok(Vec::new()),
        _ => {}
    }
    let items: Vec<LabelValue> = examples
        .iter()
        .filter_map(|e| e.label.as_ref())
        .flat_map(|l| match problem {
            ProblemType::MultiLabelClassification | ProblemType::TokenClassification => {
                label_items(l)
            }
            ProblemType::SingleLabelClassification
            | ProblemType::Regression
            | ProblemType::QuestionAnswering
            | ProblemType::MultipleChoice
            | ProblemType::RewardModeling => vec![l.clone()],
        })
        .collect();
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|l| match l {
            LabelValue::Name(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        let max = items
            .iter()
            .filter_map(|l| match l {
                LabelValue::Index(i) => Some(*i),
                _ => None,
            })
            .max();
        if let Some(m) = max.filter(|&m| m >= MAX_CLASSES) {
            let line = examples
                .iter()
                .find(|e| {
                    e.label
                        .as_ref()
                        .is_some_and(|l| label_items(l).contains(&LabelValue::Index(m)))
                })
                .map_or(0, |e| e.line);
            return Err(bad(
                path,
                line,
                format!("label index {m} is too large: class indices must be below {MAX_CLASSES}"),
            ));
        }
        return Ok(max.map_or(Vec::new(), |m| (0..=m).map(|i| i.to_string()).collect()));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// A Parquet file's `ClassLabel` indices as their names ([`declared_label_names`]), so that
/// a class index of the file is never taken for a name that is a number (`"1"` of names `"1"`
/// … `"5"`), and every later file and message sees the names; -1, `datasets`' "no label", is
/// an unlabelled example. An index past the names is an error naming the row.
fn class_labels_named(
    path: &Path,
    cols: &Columns,
    mut out: Vec<RawExample>,
) -> Result<Vec<RawExample>> {
    let words = out.first().is_some_and(|e| e.words.is_some());
    let problem = match words {
        true => ProblemType::TokenClassification,
        false => ProblemType::SingleLabelClassification,
    };
    let Some(names) = declared_label_names(path, cols, problem)? else {
        return Ok(out);
    };
    let name = |i: usize, line: usize| match names.get(i) {
        Some(n) => Ok(LabelValue::Name(n.clone())),
        None => Err(bad(
            path,
            line,
            format!(
                "label {i} is past the {} names of the file's ClassLabel {names:?}",
                names.len()
            ),
        )),
    };
    for e in &mut out {
        let line = e.line;
        e.label = match e.label.take() {
            Some(LabelValue::Index(i)) => Some(name(i, line)?),
            // `ClassLabel`'s -1: no label (GLUE's test splits), as a record without one.
            Some(LabelValue::Number(-1.0)) => None,
            Some(LabelValue::List(items)) => Some(LabelValue::List(
                items
                    .into_iter()
                    .map(|l| match l {
                        LabelValue::Index(i) => name(i, line),
                        other => Ok(other),
                    })
                    .collect::<Result<_>>()?,
            )),
            other => other,
        };
    }
    Ok(out)
}

/// The label names the training file declares, in class-index order, where it is a Parquet
/// file `datasets` wrote with a `ClassLabel` label column (`cols.label`; a list of them for
/// multi-label classification; `ner_tags` or `tags` for token classification):
/// [`crate::records::class_label_names`]. transformers' run_classification and run_ner take
/// these names as the model's `id2label`, and a tag's name (`B-PER`) is what entity-level
/// scores read. `None` otherwise: [`label_names`] then takes the labels found in the file.
pub fn declared_label_names(
    path: &Path,
    cols: &Columns,
    problem: ProblemType,
) -> Result<Option<Vec<String>>> {
    let columns = match problem {
        ProblemType::SingleLabelClassification | ProblemType::MultiLabelClassification => {
            vec![cols.label.as_str()]
        }
        ProblemType::TokenClassification => vec!["ner_tags", "tags"],
        ProblemType::Regression
        | ProblemType::QuestionAnswering
        | ProblemType::MultipleChoice
        | ProblemType::RewardModeling => return Ok(None),
    };
    crate::records::class_label_names(path, &columns)
}

/// The class index of `label` in `names`: a name must be one of them; an index must be below
/// their number (a name that is itself a number, as in all-index sets, also matches).
pub fn label_index(
    label: &LabelValue,
    names: &[String],
    path: &Path,
    line: usize,
) -> Result<usize> {
    let found = match label {
        LabelValue::Name(n) => names.iter().position(|x| x == n),
        LabelValue::Index(i) => names
            .iter()
            .position(|x| *x == i.to_string())
            .or((*i < names.len()).then_some(*i)),
        LabelValue::Number(_) | LabelValue::List(_) => None,
    };
    found.ok_or_else(|| {
        bad(
            path,
            line,
            format!("label {label} is not one of the labels {names:?}"),
        )
    })
}

/// `label` resolved for `problem` against `names`. Token classification takes a list of tags
/// (one per word; [`encode`] checks their number against the words).
pub fn resolve_label(
    label: &LabelValue,
    problem: ProblemType,
    names: &[String],
    path: &Path,
    line: usize,
) -> Result<Target> {
    match problem {
        ProblemType::SingleLabelClassification => {
            Ok(Target::Class(label_index(label, names, path, line)?))
        }
        ProblemType::MultiLabelClassification => {
            let mut flags = vec![false; names.len()];
            for item in label_items(label) {
                flags[label_index(&item, names, path, line)?] = true;
            }
            Ok(Target::Classes(flags))
        }
        ProblemType::Regression => {
            let x = match label {
                LabelValue::Number(x) => Some(*x),
                LabelValue::Index(i) => Some(*i as f64),
                // A CSV cell such as "0.25" or "-1".
                LabelValue::Name(s) => s.trim().parse::<f64>().ok(),
                LabelValue::List(_) => None,
            };
            // Finite in f32, the dtype the loss is computed in.
            match x.map(|x| x as f32) {
                Some(x) if x.is_finite() => Ok(Target::Score(x)),
                _ => Err(bad(
                    path,
                    line,
                    format!("label {label} is not a number (data.problem_type is regression)"),
                )),
            }
        }
        ProblemType::TokenClassification => match label {
            LabelValue::List(tags) => tags
                .iter()
                .enumerate()
                .map(|(i, tag)| {
                    label_index(tag, names, path, line).map_err(|_| {
                        bad(
                            path,
                            line,
                            format!(
                                "tag {tag} of word {} is not one of the labels {names:?}",
                                i + 1
                            ),
                        )
                    })
                })
                .collect::<Result<_>>()
                .map(Target::Tags),
            _ => Err(bad(
                path,
                line,
                format!(
                    "label {label} is not a list of tags, one per word (data.problem_type is \
                     token_classification)"
                ),
            )),
        },
        ProblemType::QuestionAnswering => Err(bad(
            path,
            line,
            "question_answering takes question/context records with answers (SQuAD \
             layout), not a \"label\"",
        )),
        ProblemType::RewardModeling => Err(bad(
            path,
            line,
            "reward_modeling takes preference records (chosen, rejected), not a \"label\"",
        )),
        ProblemType::MultipleChoice => match label {
            LabelValue::Index(i) => Ok(Target::Class(*i)),
            _ => Err(bad(
                path,
                line,
                format!(
                    "label {label} is not the index of a choice (data.problem_type is \
                     multiple_choice)"
                ),
            )),
        },
    }
}

/// A tokenised example: ids and token types with the tokenizer's special tokens (BERT's
/// `[CLS] a [SEP] b [SEP]`), truncated to `max_length`.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub label: Option<Target>,
    pub line: usize,
    /// Word-level examples: the index of the input word each token comes from (`None` for
    /// special tokens), which places each word's tag on its first sub-token
    /// ([`first_subwords`]). Empty for text examples.
    pub word_ids: Vec<Option<u32>>,
    /// Multiple choice: the length of each choice's encoding, which `ids` and `type_ids` hold
    /// one after the other (C sequences of `[CLS] first [SEP] choice [SEP]`). Empty for every
    /// other example.
    pub choice_lens: Vec<usize>,
}

/// A copy of `tokenizer` that truncates to `max_length` (longest-first over a pair, as
/// transformers' `truncation=True`) and does not pad (batches are padded to their longest).
pub fn for_classification(
    tokenizer: &Tokenizer,
    max_length: usize,
    path: &Path,
) -> Result<Tokenizer> {
    let mut t = tokenizer.clone();
    t.with_truncation(Some(TruncationParams {
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| Error::Tokenizer {
        path: path.to_path_buf(),
        problem: format!("cannot truncate to {max_length}: {e}"),
    })?;
    t.with_padding(None);
    Ok(t)
}

/// The tokenizer to encode words given already split (transformers' `is_split_into_words`):
/// a byte-level pre-tokenizer (RoBERTa's, GPT-2's) gets `add_prefix_space`, so that every word
/// is tokenised as it is after a space in running text (`Ġword`). transformers refuses split
/// words without it, and run_ner loads such tokenizers with `add_prefix_space=True`; this is
/// the same change. Other tokenizers (BERT's WordPiece, a Metaspace pre-tokenizer) are
/// returned as they are. `path` is for messages.
pub fn for_split_words(tokenizer: &Tokenizer, path: &Path) -> Result<Tokenizer> {
    let Some(pre) = tokenizer.get_pre_tokenizer() else {
        return Ok(tokenizer.clone());
    };
    // Through JSON, to reach a ByteLevel inside a Sequence as well.
    fn set_prefix_space(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                let mut changed = false;
                if m.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")
                    && m.get("add_prefix_space") != Some(&serde_json::Value::Bool(true))
                {
                    m.insert("add_prefix_space".into(), serde_json::Value::Bool(true));
                    changed = true;
                }
                for x in m.values_mut() {
                    changed |= set_prefix_space(x);
                }
                changed
            }
            serde_json::Value::Array(a) => a.iter_mut().fold(false, |c, x| set_prefix_space(x) | c),
            _ => false,
        }
    }
    let problem = |e: String| Error::Tokenizer {
        path: path.to_path_buf(),
        problem: format!("cannot set add_prefix_space for split words: {e}"),
    };
    let mut v = serde_json::to_value(pre).map_err(|e| problem(e.to_string()))?;
    if !set_prefix_space(&mut v) {
        return Ok(tokenizer.clone());
    }
    let pre: tokenizers::PreTokenizerWrapper =
        serde_json::from_value(v).map_err(|e| problem(e.to_string()))?;
    let mut t = tokenizer.clone();
    t.with_pre_tokenizer(Some(pre));
    Ok(t)
}

/// Tokenises examples, resolving labels for `problem` against `names` (examples without a
/// label keep `None`). `path` names the data file in errors.
///
/// Token classification takes word-level records only, and the other problems text records
/// only. The words are encoded as already split (transformers' `is_split_into_words=True`,
/// through [`for_split_words`]): the pre-tokenizer still splits inside a word ("don't" is
/// three tokens), and every token keeps the index of the word it came from.
pub fn encode(
    tokenizer: &Tokenizer,
    examples: &[RawExample],
    (problem, names): (ProblemType, &[String]),
    path: &Path,
) -> Result<Vec<Encoded>> {
    let tokens = problem == ProblemType::TokenClassification;
    let choice = problem == ProblemType::MultipleChoice;
    for ex in examples {
        if ex.choices.is_some() != choice {
            return Err(bad(
                path,
                ex.line,
                match choice {
                    true => "multiple_choice needs records with choices (SWAG's sent1, sent2, \
                             ending0, ...; or text and choices)"
                        .to_string(),
                    false => format!(
                        "a multiple-choice record needs data.problem_type multiple_choice, \
                         not {problem}"
                    ),
                },
            ));
        }
        match (&ex.words, tokens) {
            (None, true) => {
                return Err(bad(
                    path,
                    ex.line,
                    "token_classification needs word-level records (\"tokens\" and their \
                     tags, or a .conll file), not \"text\"",
                ))
            }
            (Some(_), false) => {
                return Err(bad(
                    path,
                    ex.line,
                    format!(
                        "a word-level record (\"tokens\") needs data.problem_type \
                         token_classification, not {problem}"
                    ),
                ))
            }
            (Some(words), true) => {
                if let Some(LabelValue::List(tags)) = &ex.label {
                    if tags.len() != words.len() {
                        return Err(bad(
                            path,
                            ex.line,
                            format!(
                                "{} tags for {} words: one tag per word",
                                tags.len(),
                                words.len()
                            ),
                        ));
                    }
                }
            }
            (None, false) => {}
        }
    }
    // Labels first: a bad label is reported even if tokenising would also fail.
    let labels = examples
        .iter()
        .map(|ex| {
            ex.label
                .as_ref()
                .map(|l| resolve_label(l, problem, names, path, ex.line))
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    let split_words = match tokens {
        true => Some(for_split_words(tokenizer, path)?),
        false => None,
    };
    examples
        .iter()
        .zip(labels)
        .map(|(ex, label)| {
            if let Some(choices) = &ex.choices {
                return encode_choices(tokenizer, ex, choices, label, path);
            }
            let enc = match (&ex.words, &ex.text_pair) {
                (Some(words), _) => split_words
                    .as_ref()
                    .unwrap_or(tokenizer)
                    .encode(words.as_slice(), true),
                (None, Some(p)) => tokenizer.encode((ex.text.as_str(), p.as_str()), true),
                (None, None) => tokenizer.encode(ex.text.as_str(), true),
            }
            .map_err(|e| bad(path, ex.line, format!("cannot tokenise: {e}")))?;
            Ok(Encoded {
                ids: enc.get_ids().to_vec(),
                type_ids: enc.get_type_ids().to_vec(),
                label,
                line: ex.line,
                word_ids: if ex.words.is_some() {
                    enc.get_word_ids().to_vec()
                } else {
                    Vec::new()
                },
                choice_lens: Vec::new(),
            })
        })
        .collect()
}

/// A multiple-choice example as C pairs `(first, choice)`, each encoded (and truncated) on its
/// own, as run_swag's tokenizer call on its flattened lists, one after the other.
fn encode_choices(
    tokenizer: &Tokenizer,
    ex: &RawExample,
    choices: &[String],
    label: Option<Target>,
    path: &Path,
) -> Result<Encoded> {
    let mut e = Encoded {
        ids: Vec::new(),
        type_ids: Vec::new(),
        label,
        line: ex.line,
        word_ids: Vec::new(),
        choice_lens: Vec::with_capacity(choices.len()),
    };
    for (i, c) in choices.iter().enumerate() {
        let enc = tokenizer
            .encode((ex.text.as_str(), c.as_str()), true)
            .map_err(|err| bad(path, ex.line, format!("cannot tokenise choice {i}: {err}")))?;
        e.ids.extend_from_slice(enc.get_ids());
        e.type_ids.extend_from_slice(enc.get_type_ids());
        e.choice_lens.push(enc.get_ids().len());
    }
    Ok(e)
}

/// The first token of each word that has one, as (token position, word index), in order:
/// where a word's tag goes (transformers' `run_ner.py` labels these and ignores the other
/// tokens with -100). A word whose tokens were all truncated away, or that gave no token (only
/// characters the normaliser drops), is absent. `word_ids` is [`Encoded::word_ids`], whose
/// word indices only grow along one sequence: a token of an earlier word is skipped.
pub fn first_subwords(word_ids: &[Option<u32>]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut last: Option<u32> = None;
    for (pos, w) in word_ids.iter().enumerate() {
        if let Some(w) = *w {
            if last.is_none_or(|l| w > l) {
                out.push((pos, w as usize));
                last = Some(w);
            }
        }
    }
    out
}

/// A batch padded to its longest row (B rows of T tokens); `ids`, `type_ids` and
/// `attention_mask` are B·T row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ClsBatch {
    pub rows: usize,
    pub cols: usize,
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// (B) class indices (single-label; 0 for other examples). Token classification: (B·T)
    /// row-major, each word's tag at its first sub-token and 0 at every other position.
    /// Question answering: (B·2) row-major, each window's start and end positions (a batch
    /// whose rows all have a [`Target::Span`]; the loss needs every row labelled).
    pub labels: Vec<u32>,
    /// (B, L) 0/1 flags (multi-label) or (B) values (regression); empty for single-label.
    /// Token classification: (B·T) loss weights, 1.0 where `labels` holds a word's tag and
    /// 0.0 elsewhere (special tokens, later sub-tokens, padding, unlabelled rows), so the loss
    /// is the weighted mean over words, as transformers' -100 labels give.
    pub targets: Vec<f32>,
}

/// Pads `items` to the longest of them with `pad_id` (type 0, mask 0). Unlabelled examples get
/// label 0 and no targets (callers that need labels check them first); in a word-level batch
/// (a row with word ids or tags) every row has T labels and weights, all 0 for an unlabelled
/// row.
pub fn pad_batch(items: &[&Encoded], pad_id: u32) -> ClsBatch {
    if items.iter().any(|e| !e.choice_lens.is_empty()) {
        return pad_choices(items, pad_id);
    }
    let t = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let words = items
        .iter()
        .any(|e| !e.word_ids.is_empty() || matches!(e.label, Some(Target::Tags(_))));
    let mut b = ClsBatch {
        rows: items.len(),
        cols: t,
        ids: Vec::with_capacity(items.len() * t),
        type_ids: Vec::with_capacity(items.len() * t),
        attention_mask: Vec::with_capacity(items.len() * t),
        labels: Vec::with_capacity(if words { items.len() * t } else { items.len() }),
        targets: Vec::with_capacity(if words { items.len() * t } else { 0 }),
    };
    for e in items {
        let pad = t - e.ids.len();
        b.ids.extend(
            e.ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_id, pad)),
        );
        b.type_ids.extend(
            e.type_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, pad)),
        );
        b.attention_mask
            .extend(std::iter::repeat_n(1, e.ids.len()).chain(std::iter::repeat_n(0, pad)));
        if words {
            let (mut labels, mut weights) = (vec![0u32; t], vec![0f32; t]);
            if let Some(Target::Tags(tags)) = &e.label {
                for (pos, w) in first_subwords(&e.word_ids) {
                    // Word ids past the tokens or tags (an inconsistent example) are skipped.
                    if let (true, Some(&tag)) = (pos < e.ids.len(), tags.get(w)) {
                        labels[pos] = tag as u32;
                        weights[pos] = 1.0;
                    }
                }
            }
            b.labels.extend(labels);
            b.targets.extend(weights);
            continue;
        }
        match &e.label {
            Some(Target::Class(c)) => b.labels.push(*c as u32),
            Some(Target::Classes(flags)) => {
                b.labels.push(0);
                b.targets
                    .extend(flags.iter().map(|&f| if f { 1.0 } else { 0.0 }));
            }
            Some(Target::Score(x) | Target::Preference(x)) => {
                b.labels.push(0);
                b.targets.push(*x);
            }
            // Tags make the batch word-level, handled above.
            // Start and end: (B·2) row-major.
            Some(Target::Span(start, end)) => {
                b.labels.push(*start as u32);
                b.labels.push(*end as u32);
            }
            Some(Target::Tags(_)) | None => b.labels.push(0),
        }
    }
    b
}

/// A multiple-choice batch: every choice of every example is a row (B·C rows, example b's
/// choices at rows b·C .. b·C + C), padded to the longest choice of the batch; `labels` are
/// the B right choices (0 for an unlabelled example).
fn pad_choices(items: &[&Encoded], pad_id: u32) -> ClsBatch {
    let t = items
        .iter()
        .flat_map(|e| e.choice_lens.iter().copied())
        .max()
        .unwrap_or(0);
    let rows: usize = items.iter().map(|e| e.choice_lens.len()).sum();
    let mut b = ClsBatch {
        rows,
        cols: t,
        ids: Vec::with_capacity(rows * t),
        type_ids: Vec::with_capacity(rows * t),
        attention_mask: Vec::with_capacity(rows * t),
        labels: Vec::with_capacity(items.len()),
        targets: Vec::new(),
    };
    for e in items {
        let mut at = 0;
        for &len in &e.choice_lens {
            let pad = t - len;
            let (ids, types) = (&e.ids[at..at + len], &e.type_ids[at..at + len]);
            b.ids
                .extend(ids.iter().copied().chain(std::iter::repeat_n(pad_id, pad)));
            b.type_ids
                .extend(types.iter().copied().chain(std::iter::repeat_n(0, pad)));
            b.attention_mask
                .extend(std::iter::repeat_n(1, len).chain(std::iter::repeat_n(0, pad)));
            at += len;
        }
        b.labels.push(match e.label {
            Some(Target::Class(c)) => c as u32,
            _ => 0,
        });
        // Reward modeling: the chosen sequence (the first) is right, by this margin.
        if let Some(Target::Preference(m)) = e.label {
            b.targets.push(m);
        }
    }
    b
}

/// Every sub-token of a labelled word, not only its first, gets a tag and weight 1 in a
/// word-level batch made by [`pad_batch`] from `items` (transformers' run_ner with
/// `--label_all_tokens`): the first sub-token keeps the word's tag `c`, the later ones get
/// `continuation[c]` (run_ner maps `B-X` to `I-X` there). Special tokens and padding stay at
/// weight 0. Returns the number of labelled positions.
pub fn label_all_subtokens(b: &mut ClsBatch, items: &[&Encoded], continuation: &[u32]) -> usize {
    let mut labelled = 0;
    for (row, e) in items.iter().enumerate() {
        let Some(Target::Tags(tags)) = &e.label else {
            continue;
        };
        let mut prev: Option<u32> = None;
        for (pos, w) in e.word_ids.iter().enumerate().take(b.cols) {
            let Some(w) = *w else {
                prev = None;
                continue;
            };
            let Some(&tag) = tags.get(w as usize) else {
                continue;
            };
            let at = row * b.cols + pos;
            let first = prev != Some(w);
            let tag = tag as u32;
            b.labels[at] = if first {
                tag
            } else {
                continuation.get(tag as usize).copied().unwrap_or(tag)
            };
            b.targets[at] = 1.0;
            labelled += 1;
            prev = Some(w);
        }
    }
    labelled
}

/// For [`label_all_subtokens`]: the class of a later sub-token of a word tagged with each
/// class of `names`: `I-X` for `B-X` when the set has `I-X` (run_ner's `b_to_i_label`), the
/// class itself otherwise.
pub fn continuation_classes(names: &[String]) -> Vec<u32> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            n.strip_prefix("B-")
                .and_then(|x| names.iter().position(|m| *m == format!("I-{x}")))
                .unwrap_or(i) as u32
        })
        .collect()
}

/// A seeded permutation of 0..n (Fisher-Yates with our generator).
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    idx
}

/// transformers' `group_by_length` order (`LengthGroupedSampler`,
/// `get_length_grouped_indices`): a seeded permutation of 0..lengths.len(), cut into
/// "megabatches" of `mult · batch` indices (`mult` = min(n / (4 · batch), 50), at least 1),
/// each sorted by length, longest first (a stable sort: ties keep the shuffled order); then the
/// first index of the megabatch holding the longest example trades places with the very first
/// index, so that the first batch is the largest (running out of memory shows at once). Taken
/// `batch` at a time, batches hold examples of similar lengths, so padding them to their
/// longest costs little, while the megabatches keep the order random.
pub fn length_grouped(lengths: &[usize], batch: usize, rng: &mut Rng) -> Vec<usize> {
    let n = lengths.len();
    let batch = batch.max(1);
    let mult = (n / (batch * 4)).clamp(1, 50);
    let mut order = permutation(n, rng);
    let mut maxima = Vec::new();
    for mega in order.chunks_mut(mult * batch) {
        mega.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
        maxima.push(lengths[mega[0]]);
    }
    // torch.argmax: the first of equal maxima.
    if let Some(longest) = maxima
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
    {
        order.swap(0, longest * mult * batch);
    }
    order
}

/// Splits 0..n into (train, validation) indices: a seeded shuffle, the first
/// round(n·fraction) (at least 1) held out. Both lists come back sorted.
pub fn split_indices(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::InvalidArgument(format!(
            "validation fraction {fraction} must be in (0, 1)"
        )));
    }
    let n_val = ((n as f64 * fraction).round() as usize).max(1);
    if n_val >= n {
        return Err(Error::Corpus(format!(
            "{n} examples are too few to hold out {fraction} for validation"
        )));
    }
    let perm = permutation(n, &mut Rng::derive(seed, 0x5_711));
    let mut val = perm[..n_val].to_vec();
    let mut train = perm[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    #[test]
    fn length_grouped_order_is_transformers_megabatches() {
        // With equal lengths nothing moves: the plain permutation.
        let same = vec![7usize; 50];
        assert_eq!(
            length_grouped(&same, 4, &mut Rng::new(5)),
            permutation(50, &mut Rng::new(5))
        );
        // 100 examples, batch 5: megabatches of min(100 / 20, 50) = 5 batches, each sorted
        // longest first, the longest of all at the front; a permutation of 0..100.
        let lengths: Vec<usize> = (0..100).map(|i| (i * 37) % 61 + 1).collect();
        let order = length_grouped(&lengths, 5, &mut Rng::new(9));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(lengths[order[0]], *lengths.iter().max().unwrap());
        let shuffled = permutation(100, &mut Rng::new(9));
        for (k, (mega, plain)) in order.chunks(25).zip(shuffled.chunks(25)).enumerate() {
            // The same members as the shuffle's k-th megabatch (up to the one swap)...
            let (mut a, mut b) = (mega.to_vec(), plain.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            let moved = a.iter().filter(|x| !b.contains(x)).count();
            assert!(moved <= 1, "megabatch {k}");
            // ...in descending length (the swapped-in first element aside).
            let lens: Vec<usize> = mega[1..].iter().map(|&i| lengths[i]).collect();
            assert!(
                lens.windows(2).all(|w| w[0] >= w[1]),
                "megabatch {k}: {lens:?}"
            );
        }
        // Padding each batch of 5 to its longest costs far less than in the plain order.
        let padded = |o: &[usize]| -> usize {
            o.chunks(5)
                .map(|c| c.len() * c.iter().map(|&i| lengths[i]).max().unwrap())
                .sum()
        };
        assert!(padded(&order) * 10 < padded(&shuffled) * 8);
    }

    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn jsonl_and_csv_read_the_same_examples() {
        let d = tempfile::tempdir().unwrap();
        let j = write(
            d.path(),
            "a.jsonl",
            "{\"text\": \"hello, world\", \"label\": \"pos\"}\n\n{\"text\": \"a\", \"text_pair\": \"b\", \"label\": 1}\n",
        );
        let c = write(
            d.path(),
            "a.csv",
            "text,text_pair,label\r\n\"hello, world\",,pos\r\na,b,1\r\n",
        );
        let a = read_examples(&j).unwrap();
        let mut b = read_examples(&c).unwrap();
        assert_eq!(a[1].line, 3);
        assert_eq!(b[1].line, 3, "CSV line numbers count the header");
        b[0].line = 1;
        assert_eq!(a, b);
        assert_eq!(a[0].label, Some(LabelValue::Name("pos".into())));
        assert_eq!(a[1].text_pair.as_deref(), Some("b"));
        // Quoted newlines and doubled quotes; the line is the record's first.
        let q = write(
            d.path(),
            "q.csv",
            "label,text\nx,\"line1\nsaid \"\"hi\"\"\"\ny,z\n",
        );
        let r = read_examples(&q).unwrap();
        assert_eq!(r[0].text, "line1\nsaid \"hi\"");
        assert_eq!((r[0].line, r[1].line), (2, 4));
    }

    /// GLUE's layout: a `.tsv` with its own column names, quotes taken literally; the same
    /// names in JSONL and CSV through [`Columns`].
    #[test]
    fn tsv_files_and_named_columns_read_as_glue_writes_them() {
        let d = tempfile::tempdir().unwrap();
        let cols = Columns {
            text: "sentence1".into(),
            text_pair: "sentence2".into(),
            label: "label".into(),
        };
        let tsv = write(
            d.path(),
            "mrpc.tsv",
            "idx\tsentence1\tsentence2\tlabel\r\n0\t\"Quoted,\" he said.\tA, b\t1\r\n\n1\tx\ty\t0\n",
        );
        let ex = read_examples_with(&tsv, &cols).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].text, "\"Quoted,\" he said.");
        assert_eq!(ex[0].text_pair.as_deref(), Some("A, b"));
        assert_eq!((ex[0].line, ex[1].line), (2, 4));
        assert_eq!(ex[1].label, Some(LabelValue::Index(0)));
        let jsonl = write(
            d.path(),
            "mrpc.jsonl",
            "{\"sentence1\": \"x\", \"sentence2\": \"y\", \"label\": 0}\n",
        );
        let j = read_examples_with(&jsonl, &cols).unwrap();
        assert_eq!(
            (j[0].text.as_str(), j[0].text_pair.as_deref()),
            ("x", Some("y"))
        );
        let csv = write(d.path(), "c.csv", "sentence1,label\n\"a, b\",pos\n");
        assert_eq!(read_examples_with(&csv, &cols).unwrap()[0].text, "a, b");
        // A missing column is named, with the key that names it.
        let e = read_examples(&tsv).unwrap_err().to_string();
        assert!(
            e.contains("mrpc.tsv") && e.contains("\"text\"") && e.contains("data.text_column"),
            "{e}"
        );
        let e = read_examples(&jsonl).unwrap_err().to_string();
        assert!(e.contains("missing \"text\""), "{e}");
        let mut wrong = tsv.clone();
        wrong.set_extension("tsv");
        std::fs::write(&wrong, "sentence1\tlabel\na\tb\tc\n").unwrap();
        let e = read_examples_with(&wrong, &cols).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("3 fields"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_label() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "t.jsonl",
            "{\"text\": \"ok\", \"label\": \"a\"}\n{\"text\": \"  \", \"label\": \"a\"}\n",
        );
        let msg = read_examples(&p).unwrap_err().to_string();
        assert!(
            msg.contains("t.jsonl") && msg.contains("line 2") && msg.contains("empty text"),
            "{msg}"
        );

        let p = write(
            d.path(),
            "u.jsonl",
            "{\"text\": \"ok\", \"label\": \"a\"}\n{\"text\": \"x\", \"label\": \"zebra\"}\n",
        );
        let ex = read_examples(&p).unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        let tok = Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default());
        let single = ProblemType::SingleLabelClassification;
        let msg = encode(&tok, &ex, (single, &names), &p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("u.jsonl") && msg.contains("line 2") && msg.contains("\"zebra\""),
            "{msg}"
        );
        assert!(label_index(&LabelValue::Index(2), &names, &p, 1).is_err());
        assert_eq!(
            label_index(&LabelValue::Index(1), &names, &p, 1).unwrap(),
            1
        );

        let p = write(d.path(), "v.csv", "text,label\na,b,c\n");
        let msg = read_examples(&p).unwrap_err().to_string();
        assert!(msg.contains("v.csv") && msg.contains("line 2"), "{msg}");
        let p = write(d.path(), "w.txt", "x");
        assert!(read_examples(&p)
            .unwrap_err()
            .to_string()
            .contains(".jsonl, .parquet, .csv, .tsv or .conll"));
    }

    #[test]
    fn labels_split_and_padding() {
        let ex = |l: LabelValue| RawExample {
            text: "t".into(),
            text_pair: None,
            label: Some(l),
            line: 1,
            words: None,
            choices: None,
        };
        let single = ProblemType::SingleLabelClassification;
        let p = Path::new("l.jsonl");
        let names = label_names(
            &[
                ex(LabelValue::Name("zeta".into())),
                ex(LabelValue::Name("alpha".into())),
                ex(LabelValue::Name("zeta".into())),
            ],
            single,
            p,
        )
        .unwrap();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(
            label_names(&[ex(LabelValue::Index(2))], single, p).unwrap(),
            ["0", "1", "2"]
        );
        let msg = label_names(&[ex(LabelValue::Index(1 << 40))], single, p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("l.jsonl") && msg.contains("line 1") && msg.contains("too large"),
            "{msg}"
        );

        let (tr, va) = split_indices(100, 0.2, 7).unwrap();
        assert_eq!((tr.len(), va.len()), (80, 20));
        assert_eq!(
            split_indices(100, 0.2, 7).unwrap(),
            (tr.clone(), va.clone())
        );
        assert_ne!(split_indices(100, 0.2, 8).unwrap().1, va);
        let mut all: Vec<usize> = tr.iter().chain(&va).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(split_indices(1, 0.5, 0).is_err());

        let a = Encoded {
            ids: vec![1, 2, 3],
            type_ids: vec![0, 0, 1],
            label: Some(Target::Class(1)),
            line: 1,
            word_ids: vec![],
            choice_lens: vec![],
        };
        let b = Encoded {
            ids: vec![1, 2],
            type_ids: vec![0, 0],
            label: Some(Target::Class(0)),
            line: 2,
            word_ids: vec![],
            choice_lens: vec![],
        };
        let p = pad_batch(&[&a, &b], 9);
        assert_eq!((p.rows, p.cols), (2, 3));
        assert_eq!(p.ids, [1, 2, 3, 1, 2, 9]);
        assert_eq!(p.type_ids, [0, 0, 1, 0, 0, 0]);
        assert_eq!(p.attention_mask, [1, 1, 1, 1, 1, 0]);
        assert_eq!(p.labels, [1, 0]);
        assert!(p.targets.is_empty());
    }

    #[test]
    fn mangled_files_are_errors_or_examples_never_panics() {
        // Pieces of valid JSONL, CSV and CoNLL, cut and spliced at random: whatever comes out of
        // the reader must resolve and encode, for every problem type, to labels and a batch of
        // the promised shape or an error naming the file and the line.
        let pieces: [&[u8]; 23] = [
            b"{\"text\": \"a b\", \"label\": [\"x\", 2]}\n",
            b"{\"text\": \"c\", \"label\": -0.5e3}\n",
            b"{\"text\": \"d\", \"text_pair\": \"e\", \"label\": \"y;z\"}\n",
            b"{\"label\": [[1]], \"text\": \"f\"}\n",
            b"{\"text\": \"g\", \"label\": 18446744073709551615}\n",
            b"{\"text\": \"h\", \"label\": 1e400}\n",
            b"text,label\n",
            b"\"q,\"\"t\"\"\",;;\n",
            b"\xff\xfe\x00",
            b"[",
            b"\"",
            b"\r\n",
            b",",
            b"{}",
            b"{\"tokens\": [\"EU\", \"don't\"], \"ner_tags\": [3, 0]}\n",
            b"{\"tokens\": [\"a\", \"\", \"\\u200b\"], \"tags\": [\"B-X\", \"O\", \"O\"]}\n",
            b"{\"tokens\": [\"x\"], \"tags\": [\"O\", 70000]}\n",
            b"{\"ner_tags\": [\"O\"], \"tokens\": [\"Catdog\"]}\n",
            b"-DOCSTART- -X- O\n\n",
            b"EU NNP B-ORG\n",
            b"rejects VBZ 1\n",
            b"word\n",
            b" \t\n",
        ];
        let d = tempfile::tempdir().unwrap();
        let tok = for_classification(&wordpiece(), 6, Path::new("t.json")).unwrap();
        let mut rng = Rng::new(11);
        let mut tagged_batches = 0;
        for case in 0..900 {
            let mut body = Vec::new();
            for _ in 0..1 + rng.below(6) {
                let piece = pieces[rng.below(pieces.len() as u64) as usize];
                let cut = rng.below(piece.len() as u64 + 1) as usize;
                body.extend_from_slice(if rng.below(3) == 0 {
                    &piece[..cut]
                } else {
                    piece
                });
            }
            let name = ["m.jsonl", "m.csv", "m.conll"][case % 3];
            let path = d.path().join(name);
            std::fs::write(&path, &body).unwrap();
            let Ok(examples) = read_examples(&path) else {
                continue;
            };
            let named = |err: Error| {
                let msg = err.to_string();
                assert!(msg.contains(name) && msg.contains("line "), "{msg}");
            };
            for problem in [
                ProblemType::SingleLabelClassification,
                ProblemType::MultiLabelClassification,
                ProblemType::Regression,
                ProblemType::TokenClassification,
            ] {
                let names = match label_names(&examples, problem, &path) {
                    Ok(n) => n,
                    Err(err) => {
                        assert!(err.to_string().contains(name), "{err}");
                        continue;
                    }
                };
                for e in &examples {
                    if let Some(l) = &e.label {
                        if let Err(err) = resolve_label(l, problem, &names, &path, e.line) {
                            named(err);
                        }
                    }
                }
                let enc = match encode(&tok, &examples, (problem, &names), &path) {
                    Ok(enc) => enc,
                    Err(err) => {
                        named(err);
                        continue;
                    }
                };
                let refs: Vec<&Encoded> = enc.iter().collect();
                let b = pad_batch(&refs, 0);
                assert_eq!(b.ids.len(), b.rows * b.cols);
                assert!(b.cols <= 6, "truncated to 6 tokens");
                if problem == ProblemType::TokenClassification {
                    assert_eq!(
                        (b.labels.len(), b.targets.len()),
                        (b.ids.len(), b.ids.len())
                    );
                    // One weight per labelled word at most, never on padding.
                    let words: usize = examples
                        .iter()
                        .filter(|e| e.label.is_some())
                        .map(|e| e.words.as_ref().map_or(0, Vec::len))
                        .sum();
                    assert!(b.targets.iter().sum::<f32>() <= words as f32);
                    for (w, m) in b.targets.iter().zip(&b.attention_mask) {
                        assert!(*w == 0.0 || *m == 1, "a weight on padding");
                    }
                    if b.targets.iter().any(|&w| w > 0.0) {
                        tagged_batches += 1;
                    }
                } else {
                    assert_eq!(b.labels.len(), b.rows);
                }
            }
        }
        assert!(tagged_batches > 20, "{tagged_batches} tagged batches");
    }

    #[test]
    fn multi_label_and_regression_labels() {
        let d = tempfile::tempdir().unwrap();
        // JSON lists, or names separated by ';' in a CSV cell; one name is a set of one.
        let j = write(
            d.path(),
            "m.jsonl",
            "{\"text\": \"a\", \"label\": [\"sci\", \"art\"]}\n{\"text\": \"b\", \"label\": []}\n{\"text\": \"c\", \"label\": \"law\"}\n",
        );
        let c = write(d.path(), "m.csv", "text,label\na,sci;art\nb,\nc,law\n");
        let multi = ProblemType::MultiLabelClassification;
        for p in [&j, &c] {
            let ex = read_examples(p).unwrap();
            let names = label_names(&ex, multi, p).unwrap();
            assert_eq!(names, ["art", "law", "sci"], "{}", p.display());
            let want = [
                Some(Target::Classes(vec![true, false, true])),
                // An empty JSON list is the empty set; an empty CSV cell is no label.
                (p == &j).then(|| Target::Classes(vec![false; 3])),
                Some(Target::Classes(vec![false, true, false])),
            ];
            for (e, w) in ex.iter().zip(&want) {
                let got = e
                    .label
                    .as_ref()
                    .map(|l| resolve_label(l, multi, &names, p, e.line).unwrap());
                assert_eq!(&got, w, "{}", p.display());
            }
            let bad_set = LabelValue::List(vec![LabelValue::Name("zebra".into())]);
            let msg = resolve_label(&bad_set, multi, &names, p, 7)
                .unwrap_err()
                .to_string();
            assert!(msg.contains("line 7") && msg.contains("zebra"), "{msg}");
        }
        let e = |label: Option<Target>| Encoded {
            ids: vec![1],
            type_ids: vec![0],
            label,
            line: 1,
            word_ids: vec![],
            choice_lens: vec![],
        };
        let (a, b) = (
            e(Some(Target::Classes(vec![true, false]))),
            e(Some(Target::Classes(vec![false, true]))),
        );
        assert_eq!(pad_batch(&[&a, &b], 0).targets, [1.0, 0.0, 0.0, 1.0]);

        // Regression: numbers, whole numbers and numeric CSV cells; anything else is refused.
        let r = write(
            d.path(),
            "r.jsonl",
            "{\"text\": \"a\", \"label\": 0.25}\n{\"text\": \"b\", \"label\": 3}\n",
        );
        let reg = ProblemType::Regression;
        let ex = read_examples(&r).unwrap();
        assert_eq!(label_names(&ex, reg, &r).unwrap(), ["LABEL_0"]);
        let got: Vec<Target> = ex
            .iter()
            .map(|e| resolve_label(e.label.as_ref().unwrap(), reg, &[], &r, e.line).unwrap())
            .collect();
        assert_eq!(got, [Target::Score(0.25), Target::Score(3.0)]);
        let cell = LabelValue::Name("-1.5".into());
        assert_eq!(
            resolve_label(&cell, reg, &[], &r, 1).unwrap(),
            Target::Score(-1.5)
        );
        assert!(resolve_label(&LabelValue::Number(1e300), reg, &[], &r, 1).is_err());
        let msg = resolve_label(&LabelValue::Name("high".into()), reg, &[], &r, 2)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("r.jsonl") && msg.contains("line 2") && msg.contains("not a number"),
            "{msg}"
        );
        let (x, y) = (e(Some(Target::Score(0.5))), e(Some(Target::Score(-2.0))));
        assert_eq!(pad_batch(&[&x, &y], 0).targets, [0.5, -2.0]);
        assert_eq!(ProblemType::from_name("regression"), Some(reg));
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn tags(v: &[&str]) -> Option<LabelValue> {
        Some(LabelValue::List(
            v.iter().map(|s| LabelValue::Name(s.to_string())).collect(),
        ))
    }

    #[test]
    fn word_level_jsonl_and_conll_read_the_same_examples() {
        let d = tempfile::tempdir().unwrap();
        let j = write(
            d.path(),
            "w.jsonl",
            "{\"tokens\": [\"EU\", \"rejects\", \"German\", \"call\"], \"ner_tags\": [\"B-ORG\", \"O\", \"B-MISC\", \"O\"]}\n\n\
             {\"tokens\": [\"Peter\", \"Blackburn\"], \"tags\": [\"B-PER\", \"I-PER\"], \"id\": \"1\"}\n",
        );
        // CoNLL-2003's columns, a document separator, a run of blank lines, CRLF line ends.
        let c = write(
            d.path(),
            "w.conll",
            "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman\tJJ\tB-NP\tB-MISC\n\
             call NN I-NP O\n\n \n\r\nPeter NNP B-NP B-PER\r\nBlackburn NNP I-NP I-PER\r\n",
        );
        let a = read_examples(&j).unwrap();
        let b = read_examples(&c).unwrap();
        assert_eq!((a[0].line, a[1].line), (1, 3));
        assert_eq!((b[0].line, b[1].line), (3, 10), "a sentence's first line");
        let words = ["EU", "rejects", "German", "call"];
        assert_eq!(a[0].words.as_deref(), Some(&names(&words)[..]));
        assert_eq!(a[0].text, "EU rejects German call");
        assert_eq!(a[0].text_pair, None);
        assert_eq!(a[0].label, tags(&["B-ORG", "O", "B-MISC", "O"]));
        assert_eq!(a[1].label, tags(&["B-PER", "I-PER"]));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.text, &x.words, &x.label), (&y.text, &y.words, &y.label));
        }

        // The sorted set of every word's tag; each word resolves to its own.
        let tok = ProblemType::TokenClassification;
        let labels = label_names(&a, tok, &j).unwrap();
        assert_eq!(labels, ["B-MISC", "B-ORG", "B-PER", "I-PER", "O"]);
        let t = resolve_label(a[0].label.as_ref().unwrap(), tok, &labels, &j, 1).unwrap();
        assert_eq!(t, Target::Tags(vec![1, 4, 0, 4]));

        // Untagged (prediction): one-column lines, a `-DOCSTART-` ending a sentence without a
        // blank line; JSONL without tags.
        let c = write(
            d.path(),
            "u.conll",
            "\n\nPeter\nBlackburn\n-DOCSTART-\nEU\n\n",
        );
        let u = read_examples(&c).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].line, u[1].line), (3, 6));
        assert_eq!(
            u[0].words.as_deref(),
            Some(&names(&["Peter", "Blackburn"])[..])
        );
        assert!(u.iter().all(|e| e.label.is_none()));
        let j = write(
            d.path(),
            "u.jsonl",
            "{\"tokens\": [\"a\", \"b\"], \"tags\": null}\n",
        );
        let u = read_examples(&j).unwrap();
        assert_eq!((u[0].label.as_ref(), u[0].text.as_str()), (None, "a b"));

        assert_eq!(tok.name(), "token_classification");
        assert_eq!(ProblemType::from_name("token_classification"), Some(tok));
        assert_eq!(
            serde_json::to_string(&tok).unwrap(),
            "\"token_classification\""
        );
    }

    #[test]
    fn word_level_errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let ok = "{\"tokens\": [\"a\"], \"tags\": [\"O\"]}\n";
        let cases: [(&str, String, &[&str]); 14] = [
            (
                "count.jsonl",
                format!("{ok}{{\"tokens\": [\"a\", \"b\"], \"ner_tags\": [\"O\"]}}\n"),
                &["line 2", "1 tags", "2 words"],
            ),
            (
                "both.jsonl",
                format!("{ok}{{\"text\": \"a b\", \"tokens\": [\"a\", \"b\"]}}\n"),
                &["line 2", "\"text\" or \"tokens\", not both"],
            ),
            (
                "pair.jsonl",
                format!("{ok}{{\"tokens\": [\"a\"], \"text_pair\": \"b\"}}\n"),
                &["line 2", "\"text_pair\" or \"tokens\""],
            ),
            (
                "label.jsonl",
                format!("{ok}{{\"tokens\": [\"a\"], \"label\": \"O\"}}\n"),
                &["line 2", "not \"label\""],
            ),
            (
                "empty.jsonl",
                format!("{ok}{{\"tokens\": []}}\n"),
                &["line 2", "non-empty list of strings"],
            ),
            (
                "nums.jsonl",
                format!("{ok}{{\"tokens\": [\"a\", 1]}}\n"),
                &["line 2", "non-empty list of strings"],
            ),
            (
                "twice.jsonl",
                format!("{ok}{{\"tokens\": [\"a\"], \"tags\": [\"O\"], \"ner_tags\": [0]}}\n"),
                &["line 2", "both \"tags\" and \"ner_tags\""],
            ),
            (
                "scalar.jsonl",
                format!("{ok}{{\"tokens\": [\"a\"], \"tags\": \"O\"}}\n"),
                &["line 2", "\"tags\" must be a list"],
            ),
            (
                "float.jsonl",
                format!("{ok}{{\"tokens\": [\"a\"], \"ner_tags\": [0.5]}}\n"),
                &["line 2", "\"ner_tags\" must be a list"],
            ),
            (
                "orphan.jsonl",
                "{\"text\": \"a\"}\n{\"text\": \"b\", \"ner_tags\": [\"O\"]}\n".to_string(),
                &["line 2", "\"ner_tags\" needs \"tokens\""],
            ),
            (
                "mixed.jsonl",
                format!("{{\"text\": \"a\", \"label\": 0}}\n\n{ok}"),
                &["line 3", "word-level", "line 1", "one kind"],
            ),
            (
                "blank.jsonl",
                format!("{ok}{{\"tokens\": [\" \", \"\"]}}\n"),
                &["line 2", "empty words"],
            ),
            (
                "mixed.conll",
                "a X O\nb\n".to_string(),
                &["line 2", "no tag", "(line 1)"],
            ),
            (
                "mixed2.conll",
                "\n\na\nb X O\n".to_string(),
                &["line 4", "a tag", "(line 3)"],
            ),
        ];
        for (name, body, want) in cases {
            let p = write(d.path(), name, &body);
            let msg = read_examples(&p).unwrap_err().to_string();
            assert!(msg.contains(name), "{msg}");
            for w in want {
                assert!(msg.contains(w), "{name}: {msg}");
            }
        }
        let p = write(d.path(), "none.conll", "-DOCSTART- O\n\n\n");
        let msg = read_examples(&p).unwrap_err().to_string();
        assert!(
            msg.contains("none.conll") && msg.contains("no examples"),
            "{msg}"
        );
        let p = write(
            d.path(),
            "big.jsonl",
            "{\"tokens\": [\"a\"], \"ner_tags\": [0]}\n{\"tokens\": [\"a\", \"b\"], \"ner_tags\": [0, 70000]}\n",
        );
        let tc = ProblemType::TokenClassification;
        let ex = read_examples(&p).unwrap();
        let msg = label_names(&ex, tc, &p).unwrap_err().to_string();
        assert!(
            msg.contains("big.jsonl") && msg.contains("line 2") && msg.contains("too large"),
            "{msg}"
        );

        // Resolving and encoding: the problem type and the records must agree.
        let tok = Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default());
        let labels = names(&["B-X", "O"]);
        let p = write(
            d.path(),
            "enc.jsonl",
            "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\", \"B-Y\"]}\n",
        );
        let words = read_examples(&p).unwrap();
        let msg = encode(&tok, &words, (tc, &labels), &p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("enc.jsonl")
                && msg.contains("line 1")
                && msg.contains("\"B-Y\" of word 2"),
            "{msg}"
        );
        let single = ProblemType::SingleLabelClassification;
        let msg = encode(&tok, &words, (single, &labels), &p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("enc.jsonl")
                && msg.contains("line 1")
                && msg.contains("needs data.problem_type token_classification"),
            "{msg}"
        );
        let text = vec![RawExample {
            text: "a b".into(),
            text_pair: None,
            label: None,
            line: 4,
            words: None,
            choices: None,
        }];
        let msg = encode(&tok, &text, (tc, &labels), &p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("enc.jsonl")
                && msg.contains("line 4")
                && msg.contains("token_classification needs"),
            "{msg}"
        );
        // Built by hand, past the reader's check: the count is checked again.
        let mut short = words.clone();
        short[0].label = tags(&["O"]);
        short[0].line = 5;
        let msg = encode(&tok, &short, (tc, &labels), &p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 5") && msg.contains("1 tags for 2 words"),
            "{msg}"
        );
        let msg = resolve_label(&LabelValue::Name("O".into()), tc, &labels, &p, 6)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("enc.jsonl")
                && msg.contains("line 6")
                && msg.contains("not a list of tags"),
            "{msg}"
        );
    }

    #[test]
    fn integer_ner_tags_resolve_against_given_names() {
        // HF datasets' conll2003 stores tags as indices into its ClassLabel names, which a
        // run gives as data.labels.
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "c.jsonl",
            "{\"id\": \"0\", \"tokens\": [\"EU\", \"rejects\", \"German\", \"call\"], \"pos_tags\": [22, 42, 16, 21], \"ner_tags\": [3, 0, 7, 0]}\n",
        );
        let ex = read_examples(&p).unwrap();
        let tc = ProblemType::TokenClassification;
        let conll = names(&[
            "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
        ]);
        let l = ex[0].label.as_ref().unwrap();
        assert_eq!(
            resolve_label(l, tc, &conll, &p, 1).unwrap(),
            Target::Tags(vec![3, 0, 7, 0])
        );
        // Without names, indices name themselves up to the largest.
        let own = label_names(&ex, tc, &p).unwrap();
        assert_eq!(own, ["0", "1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(
            resolve_label(l, tc, &own, &p, 1).unwrap(),
            Target::Tags(vec![3, 0, 7, 0])
        );
        let msg = resolve_label(l, tc, &conll[..5], &p, 1)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 1") && msg.contains("tag 7 of word 3"),
            "{msg}"
        );
    }

    /// A BERT WordPiece tokenizer trained on a small corpus: frequent words are one token,
    /// rarer ones several.
    fn wordpiece() -> Tokenizer {
        let texts = vec![
            "the cat sat on the mat and the dog ran to the park. Peter saw the cat! I don't know.";
            20
        ];
        crate::tokenizer::train_wordpiece_from_texts(&texts, 80).unwrap()
    }

    #[test]
    fn tags_go_on_the_first_sub_token_of_each_word() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "a.jsonl",
            "{\"tokens\": [\"the\", \"Catdog\", \"don't\", \"\u{200b}\", \"cat\"], \"tags\": [\"O\", \"B-PER\", \"O\", \"O\", \"B-ANIMAL\"]}\n",
        );
        let tc = ProblemType::TokenClassification;
        let ex = read_examples(&p).unwrap();
        let labels = label_names(&ex, tc, &p).unwrap();
        assert_eq!(labels, ["B-ANIMAL", "B-PER", "O"]);
        let base = wordpiece();
        // Each word on its own, without special tokens: what the alignment must reproduce.
        let lens: Vec<usize> = ex[0]
            .words
            .as_ref()
            .unwrap()
            .iter()
            .map(|w| base.encode(w.as_str(), false).unwrap().len())
            .collect();
        assert_eq!(lens[0], 1, "\"the\" is in the vocabulary");
        assert!(lens[1] >= 2, "\"Catdog\" is several sub-tokens: {lens:?}");
        let dont = base.encode("don't", false).unwrap();
        assert!(
            lens[2] >= 3 && dont.get_tokens()[lens[2] - 2] == "'",
            "the pre-tokenizer splits \"don't\" at the apostrophe: {:?}",
            dont.get_tokens()
        );
        assert_eq!(lens[3], 0, "a zero-width space gives no token");

        let tok = for_classification(&base, 128, &p).unwrap();
        let enc = encode(&tok, &ex, (tc, &labels), &p).unwrap();
        let e = &enc[0];
        let mut want_ids = vec![None];
        for (w, &n) in lens.iter().enumerate() {
            want_ids.extend(std::iter::repeat_n(Some(w as u32), n));
        }
        want_ids.push(None);
        assert_eq!(e.word_ids, want_ids);
        assert_eq!(e.ids.len(), want_ids.len());
        assert_eq!(e.label, Some(Target::Tags(vec![2, 1, 2, 2, 0])));
        let (dont, cat) = (1 + lens[0] + lens[1], 1 + lens[0] + lens[1] + lens[2]);
        // The zero-width word has no token and so no label.
        assert_eq!(
            first_subwords(&e.word_ids),
            [(1, 0), (2, 1), (dont, 2), (cat, 4)]
        );

        // A text example in the same batch is not possible (one problem type); a shorter
        // word-level one is, and is padded with weight 0.
        let short = RawExample {
            text: "cat".into(),
            text_pair: None,
            label: tags(&["B-ANIMAL"]),
            line: 2,
            words: Some(names(&["cat"])),
            choices: None,
        };
        let enc2 = encode(&tok, &[short], (tc, &labels), &p).unwrap();
        let batch = pad_batch(&[e, &enc2[0]], 0);
        let t = e.ids.len();
        assert_eq!((batch.rows, batch.cols), (2, t));
        let mut want_labels = vec![0u32; 2 * t];
        let mut want_weights = vec![0f32; 2 * t];
        for (pos, tag) in [(1, 2), (2, 1), (dont, 2), (cat, 0), (t + 1, 0)] {
            want_labels[pos] = tag;
            want_weights[pos] = 1.0;
        }
        assert_eq!(batch.labels, want_labels);
        assert_eq!(batch.targets, want_weights);
        assert_eq!(
            batch.targets.iter().sum::<f32>(),
            5.0,
            "one weight per word with a token"
        );

        // Truncation to [CLS] the <first sub-token of Catdog> [SEP]: Catdog keeps its tag,
        // the words cut away lose theirs.
        let short_tok = for_classification(&base, 4, &p).unwrap();
        let cut = encode(&short_tok, &ex, (tc, &labels), &p).unwrap();
        assert_eq!(cut[0].ids.len(), 4);
        assert_eq!(cut[0].word_ids, [None, Some(0), Some(1), None]);
        assert_eq!(first_subwords(&cut[0].word_ids), [(1, 0), (2, 1)]);
        let batch = pad_batch(&[&cut[0]], 0);
        assert_eq!(batch.labels, [0, 2, 1, 0]);
        assert_eq!(batch.targets, [0.0, 1.0, 1.0, 0.0]);
        // The same text, but by word: the sequence problem types refuse it.
        let single = ProblemType::SingleLabelClassification;
        assert!(encode(&tok, &ex, (single, &labels), &p).is_err());
    }

    #[test]
    fn word_batches_lay_tags_out_per_token() {
        assert_eq!(
            first_subwords(&[None, Some(0), Some(0), Some(2), Some(2), None]),
            [(1, 0), (3, 2)]
        );
        assert_eq!(first_subwords(&[Some(1), Some(0), Some(1)]), [(0, 1)]);
        assert!(first_subwords(&[None, None]).is_empty());
        let row = |ids: Vec<u32>, word_ids: Vec<Option<u32>>, label: Option<Target>| Encoded {
            type_ids: vec![0; ids.len()],
            ids,
            label,
            line: 1,
            word_ids,
            choice_lens: vec![],
        };
        let a = row(
            vec![2, 10, 11, 12, 3],
            vec![None, Some(0), Some(0), Some(1), None],
            Some(Target::Tags(vec![4, 1])),
        );
        let b = row(
            vec![2, 13, 3],
            vec![None, Some(0), None],
            Some(Target::Tags(vec![2])),
        );
        let unlabelled = row(vec![2, 14, 3], vec![None, Some(0), None], None);
        let p = pad_batch(&[&a, &b, &unlabelled], 0);
        assert_eq!((p.rows, p.cols), (3, 5));
        assert_eq!(p.ids, [2, 10, 11, 12, 3, 2, 13, 3, 0, 0, 2, 14, 3, 0, 0]);
        assert_eq!(
            p.attention_mask,
            [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0]
        );
        assert_eq!(p.labels, [0, 4, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            p.targets,
            [0., 1., 0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 0., 0.]
        );
        // Unlabelled rows alone still get one label and weight per token.
        let p = pad_batch(&[&unlabelled], 0);
        assert_eq!((p.labels.len(), p.targets.len()), (3, 3));
        assert!(p.targets.iter().all(|&w| w == 0.0));
        // Word ids past the tags (an example built by hand) are skipped, not a panic.
        let odd = row(
            vec![2, 10, 3],
            vec![None, Some(5), Some(9)],
            Some(Target::Tags(vec![1])),
        );
        assert_eq!(pad_batch(&[&odd], 0).targets, [0.0; 3]);
    }

    /// run_ner's `--label_all_tokens`: later sub-tokens of a `B-X` word get `I-X`, of any other
    /// word its own tag; special tokens, padding and unlabelled rows stay out.
    #[test]
    fn label_all_subtokens_tags_every_piece_of_a_word() {
        let names: Vec<String> = ["B-PER", "I-PER", "O", "B-LOC"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cont = continuation_classes(&names);
        assert_eq!(cont, [1, 1, 2, 3], "B-LOC has no I-LOC to become");
        let row = |ids: Vec<u32>, word_ids: Vec<Option<u32>>, label: Option<Target>| Encoded {
            type_ids: vec![0; ids.len()],
            ids,
            label,
            line: 1,
            word_ids,
            choice_lens: vec![],
        };
        // Words: 0 in tokens 1-2 (B-PER), 1 in token 3 (O), 2 in tokens 4-5 (B-LOC).
        let a = row(
            vec![2, 10, 11, 12, 13, 14, 3],
            vec![None, Some(0), Some(0), Some(1), Some(2), Some(2), None],
            Some(Target::Tags(vec![0, 2, 3])),
        );
        let short = row(
            vec![2, 15, 3],
            vec![None, Some(0), None],
            Some(Target::Tags(vec![2])),
        );
        let unlabelled = row(vec![2, 16, 3], vec![None, Some(0), None], None);
        let items = [&a, &short, &unlabelled];
        let mut b = pad_batch(&items, 0);
        let first_only = b.clone();
        assert_eq!(label_all_subtokens(&mut b, &items, &cont), 6);
        assert_eq!(
            &b.labels[..7],
            [0, 0, 1, 2, 3, 3, 0],
            "B-PER then I-PER; B-LOC twice"
        );
        assert_eq!(&b.targets[..7], [0., 1., 1., 1., 1., 1., 0.]);
        assert_eq!(
            &b.targets[7..],
            [0., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0.]
        );
        // The first sub-tokens keep what pad_batch gave them.
        for (i, w) in first_only.targets.iter().enumerate() {
            if *w > 0.0 {
                assert_eq!(b.labels[i], first_only.labels[i]);
            }
        }
    }
}
