//! Labelled examples for sequence classification: reading them (JSONL or CSV with a header),
//! the label set, tokenising with truncation, a seeded train/validation split, and batches
//! padded to the longest example of the batch (dynamic padding).
//!
//! Fields: `text` (required, non-empty), `text_pair` (optional second segment), `label`
//! (optional only for prediction): by [`ProblemType`], a name or an index into the label set
//! (single-label), a list of them (multi-label; in CSV, names separated by `;`), or a number
//! (regression). Every error names the file and the line.

use crate::error::{Error, Result};
use lantern_kernels::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// What a label is: transformers' `problem_type` of `BertForSequenceClassification`, with
/// its names.
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
}

impl ProblemType {
    /// The name in transformers' `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleLabelClassification => "single_label_classification",
            Self::MultiLabelClassification => "multi_label_classification",
            Self::Regression => "regression",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::SingleLabelClassification,
            Self::MultiLabelClassification,
            Self::Regression,
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
    /// A JSON list (multi-label).
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
}

/// One example as read, before its label is resolved. `line` is 1-based (the first line of
/// the record for CSV).
#[derive(Debug, Clone, PartialEq)]
pub struct RawExample {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: Option<LabelValue>,
    pub line: usize,
}

fn bad(path: &Path, line: usize, problem: impl std::fmt::Display) -> Error {
    Error::format(path, format!("line {line}: {problem}"))
}

/// Reads `.jsonl`/`.json` (one object per line) or `.csv` (header row naming the columns).
/// Blank lines are skipped; an empty or whitespace-only `text` is an error.
pub fn read_examples(path: &Path) -> Result<Vec<RawExample>> {
    if !path.exists() {
        return Err(Error::MissingInput(path.to_path_buf()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let out = match ext {
        "jsonl" | "json" => read_jsonl(path, &text)?,
        "csv" => read_csv(path, &text)?,
        other => {
            return Err(Error::format(
                path,
                format!("unknown extension {other:?}: expected .jsonl or .csv"),
            ))
        }
    };
    if out.is_empty() {
        return Err(Error::format(path, "no examples"));
    }
    for ex in &out {
        if ex.text.trim().is_empty() {
            return Err(bad(path, ex.line, "empty text"));
        }
    }
    Ok(out)
}

fn read_jsonl(path: &Path, text: &str) -> Result<Vec<RawExample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(path, n, format!("invalid JSON: {e}")))?;
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
        let text = s("text")?.ok_or_else(|| bad(path, n, "missing \"text\""))?;
        let label = match v.get("label") {
            None | Some(serde_json::Value::Null) => None,
            Some(x) => Some(json_label(x, true).ok_or_else(|| {
                bad(
                    path,
                    n,
                    format!(
                        "\"label\" must be a name, an index, a number or a list of names, got {x}"
                    ),
                )
            })?),
        };
        out.push(RawExample {
            text,
            text_pair: s("text_pair")?,
            label,
            line: n,
        });
    }
    Ok(out)
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
fn csv_records(path: &Path, text: &str) -> Result<Vec<(usize, Vec<String>)>> {
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

fn read_csv(path: &Path, text: &str) -> Result<Vec<RawExample>> {
    let mut records = csv_records(path, text)?.into_iter();
    let (_, header) = records
        .next()
        .ok_or_else(|| Error::format(path, "empty CSV file"))?;
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let text_col = col("text").ok_or_else(|| {
        bad(
            path,
            1,
            format!("the header {header:?} has no \"text\" column"),
        )
    })?;
    let (pair_col, label_col) = (col("text_pair"), col("label"));
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
            // A CSV cell is text: a bare integer is an index, anything else a name.
            label: label.map(|s| match s.parse::<usize>() {
                Ok(i) => LabelValue::Index(i),
                Err(_) => LabelValue::Name(s.to_string()),
            }),
            line: n,
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
/// Regression has one output, which transformers names "LABEL_0". `path` names the file in
/// the error for an index of [`MAX_CLASSES`] or more.
pub fn label_names(
    examples: &[RawExample],
    problem: ProblemType,
    path: &Path,
) -> Result<Vec<String>> {
    if problem == ProblemType::Regression {
        return Ok(vec!["LABEL_0".to_string()]);
    }
    let items: Vec<LabelValue> = examples
        .iter()
        .filter_map(|e| e.label.as_ref())
        .flat_map(|l| match problem {
            ProblemType::MultiLabelClassification => label_items(l),
            _ => vec![l.clone()],
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

/// `label` resolved for `problem` against `names`.
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

/// Tokenises examples, resolving labels for `problem` against `names` (examples without a
/// label keep `None`). `path` names the data file in errors.
pub fn encode(
    tokenizer: &Tokenizer,
    examples: &[RawExample],
    (problem, names): (ProblemType, &[String]),
    path: &Path,
) -> Result<Vec<Encoded>> {
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
    examples
        .iter()
        .zip(labels)
        .map(|(ex, label)| {
            let enc = match &ex.text_pair {
                Some(p) => tokenizer.encode((ex.text.as_str(), p.as_str()), true),
                None => tokenizer.encode(ex.text.as_str(), true),
            }
            .map_err(|e| bad(path, ex.line, format!("cannot tokenise: {e}")))?;
            Ok(Encoded {
                ids: enc.get_ids().to_vec(),
                type_ids: enc.get_type_ids().to_vec(),
                label,
                line: ex.line,
            })
        })
        .collect()
}

/// A batch padded to its longest row; every field B·T row-major except the targets.
#[derive(Debug, Clone, PartialEq)]
pub struct ClsBatch {
    pub rows: usize,
    pub cols: usize,
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// (B) class indices (single-label; 0 for other examples).
    pub labels: Vec<u32>,
    /// (B, L) 0/1 flags (multi-label) or (B) values (regression); empty for single-label.
    pub targets: Vec<f32>,
}

/// Pads `items` to the longest of them with `pad_id` (type 0, mask 0). Unlabelled examples get
/// label 0 and no targets (callers that need labels check them first).
pub fn pad_batch(items: &[&Encoded], pad_id: u32) -> ClsBatch {
    let t = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut b = ClsBatch {
        rows: items.len(),
        cols: t,
        ids: Vec::with_capacity(items.len() * t),
        type_ids: Vec::with_capacity(items.len() * t),
        attention_mask: Vec::with_capacity(items.len() * t),
        labels: Vec::with_capacity(items.len()),
        targets: Vec::new(),
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
        match &e.label {
            Some(Target::Class(c)) => b.labels.push(*c as u32),
            Some(Target::Classes(flags)) => {
                b.labels.push(0);
                b.targets
                    .extend(flags.iter().map(|&f| if f { 1.0 } else { 0.0 }));
            }
            Some(Target::Score(x)) => {
                b.labels.push(0);
                b.targets.push(*x);
            }
            None => b.labels.push(0),
        }
    }
    b
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
            .contains(".jsonl or .csv"));
    }

    #[test]
    fn labels_split_and_padding() {
        let ex = |l: LabelValue| RawExample {
            text: "t".into(),
            text_pair: None,
            label: Some(l),
            line: 1,
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
        };
        let b = Encoded {
            ids: vec![1, 2],
            type_ids: vec![0, 0],
            label: Some(Target::Class(0)),
            line: 2,
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
        // Pieces of valid JSONL and CSV, cut and spliced at random: whatever comes out of the
        // reader must resolve, for every problem type, to a label or an error naming the file.
        let pieces: [&[u8]; 14] = [
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
        ];
        let d = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(11);
        for case in 0..600 {
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
            let name = if case % 2 == 0 { "m.jsonl" } else { "m.csv" };
            let path = d.path().join(name);
            std::fs::write(&path, &body).unwrap();
            let Ok(examples) = read_examples(&path) else {
                continue;
            };
            for problem in [
                ProblemType::SingleLabelClassification,
                ProblemType::MultiLabelClassification,
                ProblemType::Regression,
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
                            assert!(err.to_string().contains(name), "{err}");
                        }
                    }
                }
            }
        }
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
}
