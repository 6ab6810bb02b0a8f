//! Multiple-choice examples, read two ways.
//!
//! An encoder (transformers' `run_swag.py`, `BertForMultipleChoice`) reads a first segment
//! shared by every choice, C second segments (one per choice), and the index of the right
//! choice. Each choice is encoded as its own pair `[CLS] first [SEP] choice [SEP]`; the model
//! scores each pair and the scores of an example's C pairs are its logits
//! ([`read_choice_examples`]).
//!
//! A causal language model scores each choice as the continuation of a context, zero-shot
//! (lm-evaluation-harness's `multiple_choice` tasks, llm.c's HellaSwag evaluation): the
//! choice it finds most likely is its answer ([`read_lm_choices`]).
//!
//! Three record layouts, in JSONL (one object per line), Parquet (a row a record, read as
//! JSONL: [`crate::records`]), CSV or TSV (a header row):
//! - SWAG's (`sent1`, `sent2`, `ending0` … `ending{C-1}`, `label`). run_swag's first segment
//!   is `sent1` and its choice i is `sent2 + " " + ending{i}`; a language model's context is
//!   `sent1 + " " + sent2` (lm-evaluation-harness's `startphrase`) and its choices the endings;
//! - HellaSwag's (`ctx`, a JSON list `endings`, `label`): `ctx` is the first segment and the
//!   context, the endings the choices (as llm.c reads HellaSwag: no other preprocessing; or,
//!   for a language model, as lm-evaluation-harness's `hellaswag` task reads it,
//!   [`HellaSwagText::LmEval`]);
//! - a generic one: the first segment under `data.text_column` (`text` by default), the
//!   choices as a JSON list under `choices` (in a table: columns `choice0` … `choice{C-1}`),
//!   the right choice's index under `data.label_column` (`label`).
//!
//! Every example of a file has the same number of choices (two or more), as a batch of them is
//! one (B, C) block; the label is an index below it. Errors name the file and the line.

use crate::error::{Error, Result};
use crate::labelled::{bad, csv_records, tsv_records, Columns, LabelValue, RawExample};
use serde_json::{Map, Value};
use std::path::Path;

/// The most choices an example may have (more is a mistake in the file).
pub const MAX_CHOICES: usize = 1024;

/// Reads a multiple-choice file (`.jsonl`/`.json`, `.parquet`, `.csv` or `.tsv`) for an encoder. Each
/// example is a [`RawExample`] whose `text` is the first segment and whose `choices` are the
/// second segments; `label` is the right choice's index (absent: an unlabelled example, for
/// prediction).
pub fn read_choice_examples(path: &Path, cols: &Columns) -> Result<Vec<RawExample>> {
    Ok(read_records(path, cols)?
        .into_iter()
        .map(|r| RawExample {
            choices: Some(match &r.header {
                // run_swag: `[f"{header} {ending}" for ending in endings]`, header = sent2.
                Some(h) => r.endings.iter().map(|e| format!("{h} {e}")).collect(),
                None => r.endings,
            }),
            text: r.first,
            text_pair: None,
            label: r.label.map(LabelValue::Index),
            line: r.line,
            words: None,
        })
        .collect())
}

/// A multiple-choice example as a causal language model reads it: each choice continues the
/// context (after the one space lm-evaluation-harness puts between them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmChoice {
    /// The line (or table row) of the file it came from, counting from 1.
    pub line: usize,
    pub context: String,
    pub choices: Vec<String>,
    /// The right choice's index; `None` in an unlabelled file.
    pub label: Option<usize>,
}

/// How a language model reads HellaSwag's records (`"raw"` or `"lm-eval"` in a config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HellaSwagText {
    /// `ctx` and the endings as they are (llm.c's HellaSwag evaluation).
    #[default]
    Raw,
    /// lm-evaluation-harness's `hellaswag` task: the context is
    /// `activity_label + ": " + ctx_a + " " + ctx_b.capitalize()` and it and every ending are
    /// [`lm_eval_hellaswag_text`]'s, so that the accuracies are the harness's.
    LmEval,
}

/// lm-evaluation-harness's `hellaswag` `preprocess`: trimmed, `" [title]"` made `". "`, every
/// bracketed span (WikiHow's markup, up to the first `]` on its line) taken out, then each
/// double space made one.
pub fn lm_eval_hellaswag_text(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    // Python's `re.sub("\\[.*?\\]", "", text)`: the shortest `[...]` from each `[`, whose `.`
    // does not cross a line break; a `[` with no such `]` stays.
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find([']', '\n']) {
            Some(close) if after.as_bytes()[close] == b']' => rest = &after[close + 1..],
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// Reads a multiple-choice file (the layouts of [`read_choice_examples`], with the default
/// `text` and `label` columns) for a causal language model's zero-shot scoring; HellaSwag's
/// records as `hellaswag` says (which then accepts no other layout).
pub fn read_lm_choices(path: &Path, hellaswag: HellaSwagText) -> Result<Vec<LmChoice>> {
    read_records(path, &Columns::default())?
        .into_iter()
        .map(|r| {
            if hellaswag == HellaSwagText::LmEval {
                let [label, a, b] = r.hellaswag.ok_or_else(|| {
                    bad(
                        path,
                        r.line,
                        "lm-evaluation-harness's HellaSwag text needs HellaSwag's record:                          \"activity_label\", \"ctx_a\", \"ctx_b\" and \"endings\""
                            .to_string(),
                    )
                })?;
                let context = format!("{label}: {a} {}", capitalize(&b));
                return Ok(LmChoice {
                    line: r.line,
                    context: lm_eval_hellaswag_text(&context),
                    choices: r.endings.iter().map(|e| lm_eval_hellaswag_text(e)).collect(),
                    label: r.label,
                });
            }
            Ok(LmChoice {
                line: r.line,
                context: match r.header {
                    // lm-evaluation-harness's SWAG: `startphrase` = sent1 + " " + sent2.
                    Some(h) => format!("{} {h}", r.first),
                    None => r.first,
                },
                choices: r.endings,
                label: r.label,
            })
        })
        .collect()
}

/// One record's parts before either reader joins them: SWAG's `sent2` (the header of every
/// choice) is kept apart, as the two readers put it on different sides.
struct Record {
    line: usize,
    first: String,
    header: Option<String>,
    endings: Vec<String>,
    label: Option<usize>,
    /// HellaSwag's `activity_label`, `ctx_a` and `ctx_b`, when the record has all three.
    hellaswag: Option<[String; 3]>,
}

/// Every record of the file, each checked; every example with the same number of choices.
fn read_records(path: &Path, cols: &Columns) -> Result<Vec<Record>> {
    let text = crate::records::text(path)?;
    let records: Vec<(usize, Map<String, Value>)> = match crate::records::format_of(path).as_str() {
        "jsonl" | "json" | "parquet" => json_records(path, &text)?,
        "csv" => table_records(path, csv_records(path, &text)?)?,
        "tsv" => table_records(path, tsv_records(&text))?,
        other => {
            return Err(Error::format(
                path,
                format!(
                    "unknown extension {other:?} for multiple-choice data: expected .jsonl, \
                     .parquet, .csv or .tsv"
                ),
            ))
        }
    };
    let out = records
        .iter()
        .map(|(n, r)| choice_record(path, *n, r, cols))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = out.first() else {
        return Err(Error::format(path, "no examples"));
    };
    let c = first.endings.len();
    for ex in &out {
        let n = ex.endings.len();
        if n != c {
            return Err(bad(
                path,
                ex.line,
                format!(
                    "{n} choices, but {} has {c}: every example of a file has the same \
                     number",
                    crate::records::place(path, first.line)
                ),
            ));
        }
    }
    Ok(out)
}

/// One JSON object per non-blank line.
fn json_records(path: &Path, text: &str) -> Result<Vec<(usize, Map<String, Value>)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => out.push((n, m)),
            Ok(other) => return Err(bad(path, n, format!("expected a JSON object, got {other}"))),
            Err(e) => return Err(bad(path, n, format!("invalid JSON: {e}"))),
        }
    }
    Ok(out)
}

/// A table's rows as objects of strings keyed by the header; `choice0`, `choice1`, ...
/// columns become a `choices` list, so both layouts read as JSON does. Empty cells are absent.
fn table_records(
    path: &Path,
    records: Vec<(usize, Vec<String>)>,
) -> Result<Vec<(usize, Map<String, Value>)>> {
    let mut records = records.into_iter();
    let (_, header) = records
        .next()
        .ok_or_else(|| Error::format(path, "empty file: no header row"))?;
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let n_choices = (0..)
        .take_while(|i| header.contains(&format!("choice{i}")))
        .count();
    let mut out = Vec::new();
    for (n, rec) in records {
        if rec.len() != header.len() {
            return Err(bad(
                path,
                n,
                format!("{} fields, the header has {}", rec.len(), header.len()),
            ));
        }
        let mut m: Map<String, Value> = header
            .iter()
            .zip(rec)
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.clone(), Value::String(v)))
            .collect();
        if n_choices > 0 {
            let choices = (0..n_choices)
                .map(|i| m.remove(&format!("choice{i}")).unwrap_or(Value::Null))
                .collect();
            m.insert("choices".into(), Value::Array(choices));
        }
        out.push((n, m));
    }
    Ok(out)
}

/// One record: SWAG's layout when it has `sent1`, HellaSwag's when it has `ctx` and
/// `endings`, else the generic one.
fn choice_record(path: &Path, n: usize, r: &Map<String, Value>, cols: &Columns) -> Result<Record> {
    let string = |k: &str| -> Result<Option<String>> {
        match r.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(
                path,
                n,
                format!("\"{k}\" must be a string, got {other}"),
            )),
        }
    };
    let need = |k: &str| -> Result<String> {
        string(k)?.ok_or_else(|| bad(path, n, format!("missing \"{k}\"")))
    };
    let mut hellaswag_parts = None;
    let (first, header, choices) = if r.contains_key("sent1") {
        let endings = (0..)
            .map_while(|i| r.get(&format!("ending{i}")).map(|_| format!("ending{i}")))
            .map(|k| need(&k))
            .collect::<Result<Vec<_>>>()?;
        (need("sent1")?, Some(need("sent2")?), endings)
    } else {
        let hellaswag = r.contains_key("ctx") && r.contains_key("endings");
        if hellaswag {
            if let (Some(l), Some(a), Some(b)) = (
                string("activity_label")?,
                string("ctx_a")?,
                string("ctx_b")?,
            ) {
                hellaswag_parts = Some([l, a, b]);
            }
        }
        let (text_key, list_key) = match hellaswag {
            true => ("ctx", "endings"),
            false => (cols.text.as_str(), "choices"),
        };
        let first = string(text_key)?.ok_or_else(|| {
            bad(
                path,
                n,
                format!(
                    "missing \"{}\" (data.text_column), or SWAG's \"sent1\", or HellaSwag's \
                     \"ctx\"",
                    cols.text
                ),
            )
        })?;
        let choices =
            match r.get(list_key) {
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(bad(
                            path,
                            n,
                            format!("choice {i} must be a non-empty string, got {other}"),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?,
                Some(other) => {
                    return Err(bad(
                        path,
                        n,
                        format!("\"{list_key}\" must be a list of strings, got {other}"),
                    ))
                }
                None => return Err(bad(
                    path,
                    n,
                    "missing \"choices\" (a list; in a table, columns choice0, choice1, ...), or \
                     SWAG's \"ending0\", \"ending1\", ...",
                )),
            };
        (first, None, choices)
    };
    if first.trim().is_empty() {
        return Err(bad(path, n, "empty first segment"));
    }
    if let Some(i) = choices.iter().position(|c| c.trim().is_empty()) {
        return Err(bad(path, n, format!("choice {i} is empty")));
    }
    if !(2..=MAX_CHOICES).contains(&choices.len()) {
        return Err(bad(
            path,
            n,
            format!(
                "{} choices: an example needs 2 to {MAX_CHOICES}",
                choices.len()
            ),
        ));
    }
    let label = match r.get(&cols.label) {
        None | Some(Value::Null) => None,
        Some(Value::Number(x)) if x.as_u64().is_some() => {
            Some(x.as_u64().expect("checked") as usize)
        }
        Some(Value::String(s)) if s.trim().parse::<usize>().is_ok() => {
            Some(s.trim().parse().expect("checked"))
        }
        Some(other) => {
            return Err(bad(
                path,
                n,
                format!(
                    "\"{}\" must be the index of the right choice, got {other}",
                    cols.label
                ),
            ))
        }
    };
    if let Some(l) = label.filter(|&l| l >= choices.len()) {
        return Err(bad(
            path,
            n,
            format!(
                "label {l} is not a choice: there are {} (0 to {})",
                choices.len(),
                choices.len() - 1
            ),
        ));
    }
    Ok(Record {
        line: n,
        first,
        header,
        endings: choices,
        label,
        hellaswag: hellaswag_parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labelled::{encode, pad_batch, ProblemType, Target};

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn choices(e: &RawExample) -> Vec<&str> {
        e.choices
            .as_ref()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn swag_and_generic_records_read_as_run_swag_builds_them() {
        let dir = tempfile::tempdir().unwrap();
        let cols = Columns::default();
        // SWAG's CSV (swagaf's columns, extra ones ignored), then the same as JSONL.
        let csv = write(
            dir.path(),
            "swag.csv",
            "video-id,sent1,sent2,gold-source,ending0,ending1,ending2,label\n\
             v1,Someone opens a door.,He,gold,walks in.,flies off.,\"sings, loudly.\",0\n",
        );
        let jsonl = write(
            dir.path(),
            "swag.jsonl",
            "{\"sent1\": \"Someone opens a door.\", \"sent2\": \"He\", \"ending0\": \"walks in.\", \
             \"ending1\": \"flies off.\", \"ending2\": \"sings, loudly.\", \"label\": 0}\n",
        );
        for p in [&csv, &jsonl] {
            let ex = read_choice_examples(p, &cols).unwrap();
            assert_eq!(ex.len(), 1);
            assert_eq!(ex[0].text, "Someone opens a door.");
            assert_eq!(
                choices(&ex[0]),
                ["He walks in.", "He flies off.", "He sings, loudly."]
            );
            assert_eq!(ex[0].label, Some(LabelValue::Index(0)));
        }
        // The generic layout, with the run's own text and label columns; blank lines skipped,
        // an unlabelled example kept for prediction.
        let cols = Columns {
            text: "question".into(),
            text_pair: "unused".into(),
            label: "answer".into(),
        };
        let jsonl = write(
            dir.path(),
            "q.jsonl",
            "{\"question\": \"2 + 2?\", \"choices\": [\"3\", \"4\"], \"answer\": 1}\n\n\
             {\"question\": \"1 + 1?\", \"choices\": [\"2\", \"5\"]}\n",
        );
        let tsv = write(
            dir.path(),
            "q.tsv",
            "question\tchoice0\tchoice1\tanswer\n2 + 2?\t3\t4\t1\n1 + 1?\t2\t5\t\n",
        );
        for p in [&jsonl, &tsv] {
            let ex = read_choice_examples(p, &cols).unwrap();
            assert_eq!(ex.len(), 2, "{}", p.display());
            assert_eq!(
                (ex[0].text.as_str(), choices(&ex[0])),
                ("2 + 2?", vec!["3", "4"])
            );
            assert_eq!(ex[0].label, Some(LabelValue::Index(1)));
            assert_eq!(ex[1].label, None);
            assert_eq!(ex[1].line, 3);
        }
    }

    #[test]
    fn lm_eval_hellaswag_text_is_the_harness_s() {
        // Each expected string is what the harness's `preprocess` (Python's `re`) returned.
        for (raw, want) in [
            (
                "  Making a cake [title] Mix the flour. [step] Stir it well.  ",
                "Making a cake. Mix the flour. Stir it well.",
            ),
            ("a [b] c [d", "a c [d"),
            ("x [unclosed\n] y [ok] z", "x [unclosed\n] y z"),
            (
                "three   spaces [header] and [substeps]]",
                "three  spaces and ]",
            ),
            (
                "\u{c9}mile [title]\u{c9}t\u{e9}",
                "\u{c9}mile. \u{c9}t\u{e9}",
            ),
        ] {
            assert_eq!(lm_eval_hellaswag_text(raw), want, "{raw:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let hs = write(
            dir.path(),
            "hs.jsonl",
            "{\"activity_label\": \"Baking cookies\", \"ctx_a\": \"A woman stands in a kitchen.\", \
             \"ctx_b\": \"she SHOWS a Bowl [step]\", \"ctx\": \"A woman stands in a kitchen. she \
             SHOWS a Bowl [step]\", \"endings\": [\" [title] It rises.\", \"It [x]sings.\"], \
             \"label\": 1}\n",
        );
        let ex = read_lm_choices(&hs, HellaSwagText::LmEval).unwrap();
        assert_eq!(
            ex,
            [LmChoice {
                line: 1,
                // `ctx_b.capitalize()` lowers the rest of it.
                context: "Baking cookies: A woman stands in a kitchen. She shows a bowl ".into(),
                // Trimmed first: the leading " [title]" loses its space and goes as markup.
                choices: vec![" It rises.".into(), "It sings.".into()],
                label: Some(1),
            }]
        );
        // Raw, the same record is llm.c's `ctx` and endings.
        let raw = read_lm_choices(&hs, HellaSwagText::Raw).unwrap();
        assert_eq!(
            raw[0].context,
            "A woman stands in a kitchen. she SHOWS a Bowl [step]"
        );
        // Another layout, or HellaSwag's without its parts, is refused by line.
        let swag = write(
            dir.path(),
            "swag.jsonl",
            "{\"ctx\": \"A man.\", \"endings\": [\"a\", \"b\"], \"label\": 0}\n",
        );
        let e = read_lm_choices(&swag, HellaSwagText::LmEval)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("swag.jsonl") && e.contains("line 1") && e.contains("ctx_a"),
            "{e}"
        );
    }

    #[test]
    fn a_language_model_reads_each_layout_as_context_and_continuations() {
        let dir = tempfile::tempdir().unwrap();
        let swag = write(
            dir.path(),
            "swag.jsonl",
            "{\"sent1\": \"Someone opens a door.\", \"sent2\": \"He\", \"ending0\": \"walks in.\", \
             \"ending1\": \"flies off.\", \"label\": 1}\n",
        );
        let ex = read_lm_choices(&swag, HellaSwagText::Raw).unwrap();
        assert_eq!(
            ex,
            [LmChoice {
                line: 1,
                context: "Someone opens a door. He".into(),
                choices: vec!["walks in.".into(), "flies off.".into()],
                label: Some(1),
            }]
        );
        // HellaSwag's records (other fields ignored), for an encoder and a language model;
        // the test split has no label.
        let hs = write(
            dir.path(),
            "hs.jsonl",
            "{\"ind\": 4, \"activity_label\": \"Removing ice\", \"ctx\": \"A man scrapes.\", \
             \"endings\": [\"It melts.\", \"It sings.\"], \"label\": 0}\n\
             {\"ctx\": \"Then he stops.\", \"endings\": [\"a\", \"b\"]}\n",
        );
        let ex = read_lm_choices(&hs, HellaSwagText::Raw).unwrap();
        assert_eq!(
            (ex[0].context.as_str(), &ex[0].choices[..], ex[0].label),
            (
                "A man scrapes.",
                &["It melts.".to_string(), "It sings.".into()][..],
                Some(0)
            )
        );
        assert_eq!((ex[1].line, ex[1].label), (2, None));
        let enc = read_choice_examples(&hs, &Columns::default()).unwrap();
        assert_eq!(
            (enc[0].text.as_str(), choices(&enc[0])),
            ("A man scrapes.", vec!["It melts.", "It sings."])
        );
        let generic = write(
            dir.path(),
            "g.tsv",
            "text\tchoice0\tchoice1\tlabel\n2 + 2 =\t3\t4\t1\n",
        );
        let ex = read_lm_choices(&generic, HellaSwagText::Raw).unwrap();
        assert_eq!(
            (ex[0].context.as_str(), &ex[0].choices[..], ex[0].label),
            ("2 + 2 =", &["3".to_string(), "4".into()][..], Some(1))
        );
        let bad = write(
            dir.path(),
            "bad.jsonl",
            "{\"ctx\": \"x\", \"endings\": \"a\"}\n",
        );
        let e = read_lm_choices(&bad, HellaSwagText::Raw)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.jsonl") && e.contains("\"endings\" must be a list"),
            "{e}"
        );
    }

    #[test]
    fn bad_records_name_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let cols = Columns::default();
        for (name, text, want) in [
            (
                "a.jsonl",
                "{\"text\": \"x\", \"choices\": [\"a\", \"b\"], \"label\": 2}\n",
                "label 2 is not a choice",
            ),
            (
                "b.jsonl",
                "{\"text\": \"x\", \"choices\": [\"a\", \"b\"]}\n\
                 {\"text\": \"y\", \"choices\": [\"a\", \"b\", \"c\"]}\n",
                "line 2: 3 choices, but line 1 has 2",
            ),
            (
                "c.jsonl",
                "{\"text\": \"x\", \"choices\": [\"a\"]}\n",
                "1 choices",
            ),
            ("d.jsonl", "{\"text\": \"x\"}\n", "missing \"choices\""),
            (
                "e.jsonl",
                "{\"choices\": [\"a\", \"b\"]}\n",
                "missing \"text\"",
            ),
            (
                "f.jsonl",
                "{\"text\": \"x\", \"choices\": [\"a\", 3]}\n",
                "choice 1 must be",
            ),
            (
                "g.jsonl",
                "{\"text\": \"x\", \"choices\": [\"a\", \"b\"], \"label\": \"b\"}\n",
                "index of the right choice",
            ),
            (
                "h.jsonl",
                "{\"sent1\": \"x\", \"ending0\": \"a\", \"ending1\": \"b\"}\n",
                "missing \"sent2\"",
            ),
            (
                "i.csv",
                "text,choice0,choice1\nx,a\n",
                "2 fields, the header has 3",
            ),
            ("j.txt", "x", "unknown extension"),
        ] {
            let p = write(dir.path(), name, text);
            let e = read_choice_examples(&p, &cols).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        }
        let e = read_choice_examples(&dir.path().join("none.jsonl"), &cols)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.jsonl"), "{e}");
    }

    #[test]
    fn choices_encode_as_pairs_and_batch_as_rows() {
        // A WordPiece tokenizer trained here: the test needs only pairs and their specials.
        let text = ["the cat sat on the mat and a dog ran off"; 4];
        let tok = crate::tokenizer::train_wordpiece_from_texts(&text, 120).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "{\"text\": \"the cat\", \"choices\": [\"sat\", \"sat on the mat\"], \"label\": 1}\n\
             {\"text\": \"a dog ran off\", \"choices\": [\"the\", \"cat\"], \"label\": 0}\n",
        );
        let raw = read_choice_examples(&p, &Columns::default()).unwrap();
        let tok = crate::labelled::for_classification(&tok, 16, &p).unwrap();
        let enc = encode(&tok, &raw, (ProblemType::MultipleChoice, &[]), &p).unwrap();
        let pair = |a: &str, b: &str| tok.encode((a, b), true).unwrap().get_ids().to_vec();
        let (a0, a1) = (pair("the cat", "sat"), pair("the cat", "sat on the mat"));
        assert_eq!(enc[0].choice_lens, [a0.len(), a1.len()]);
        assert_eq!(enc[0].ids, [a0.clone(), a1.clone()].concat());
        assert_eq!(enc[0].label, Some(Target::Class(1)));
        // Two examples of two choices: four rows, padded to the longest choice.
        let b = pad_batch(&[&enc[0], &enc[1]], 0);
        let t = a1
            .len()
            .max(enc[1].choice_lens.iter().copied().max().unwrap());
        assert_eq!((b.rows, b.cols), (4, t));
        assert_eq!(b.labels, [1, 0]);
        assert_eq!(&b.ids[..a0.len()], &a0[..]);
        assert!(b.ids[a0.len()..t].iter().all(|&x| x == 0));
        assert_eq!(b.attention_mask[..t].iter().sum::<u32>() as usize, a0.len());
        assert_eq!(&b.ids[t..t + a1.len()], &a1[..]);
        // Second segment types survive; a plain text record is refused for multiple choice.
        assert!(b.type_ids[..a0.len()].contains(&1));
        let text = crate::labelled::RawExample {
            choices: None,
            ..raw[0].clone()
        };
        let e = encode(&tok, &[text], (ProblemType::MultipleChoice, &[]), &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("multiple_choice needs records with choices"),
            "{e}"
        );
        let e = encode(
            &tok,
            &raw,
            (ProblemType::SingleLabelClassification, &[]),
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs data.problem_type multiple_choice"), "{e}");
    }
}
