//! Parquet files read as JSON Lines records.
//!
//! The Hub serves every dataset as Parquet (its `refs/convert/parquet` branch, or the files a
//! dataset ships), and `datasets`' `to_parquet` writes it. Each reader of JSON Lines records
//! (classification and token classification, multiple choice, question answering, SFT, DPO,
//! reward and KTO data, `lantern score`'s choices) reads a `.parquet` file through
//! `json_lines`: row r becomes the JSON object that `datasets`' `to_json` writes for it
//! (lists as arrays, structs as objects, a null as `null`), on line r + 1 of one text, so a
//! Parquet file and its JSON Lines export give the same examples. Messages name a Parquet
//! record by its 0-based row, as `datasets` indexes rows ([`place`]).
//!
//! Rows are read with the `parquet` crate's record reader (no Arrow), one row group at a
//! time; like the JSON Lines readers, the text of the whole file is held, which the readers
//! that keep every example in memory need anyway.
//!
//! A split the Hub ships in shards (`data/train-00000-of-00003.parquet`, ...) is named by a
//! pattern, as `datasets`' `data_files` names it: `data/train-*.parquet` ([`files`]). Its
//! shards read as one file, in name order; a message names the shard and its row.
//!
//! A folder `datasets`' `save_to_disk` wrote (or one of its Arrow files) is a table too
//! ([`is_table`]): its Arrow IPC streams read row by row as Parquet's rows do
//! (`arrow_rows`).

use std::path::{Path, PathBuf};

use crate::documents::parquet_call;
use crate::error::{Error, Result};

/// Whether `path` names a Parquet file (by its extension, as every reader here tells formats).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Whether `path` holds a table whose records are rows: a Parquet file, or a folder (or Arrow
/// file) `datasets`' `save_to_disk` wrote. Such records read as JSON Lines (`text`), and
/// messages name them by their 0-based row.
pub fn is_table(path: &Path) -> bool {
    is_parquet(path) || is_saved_dataset(path)
}

/// The format a reader takes `path` for: its extension, or `parquet` for any table
/// ([`is_table`]), whose rows read as JSON Lines.
pub fn format_of(path: &Path) -> String {
    if is_table(path) {
        return "parquet".into();
    }
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_string()
}

/// Where record `line` (1-based, as the readers count lines) of `path` is, for a message:
/// `line 3` in a text file, `row 2` in a Parquet file (0-based, as `datasets` and pyarrow
/// index rows); for a pattern, the shard's name too (`train-00001-of-00003.parquet row 2`).
pub fn place(path: &Path, line: usize) -> String {
    if is_pattern(path) {
        if let Some((file, line)) = locate(path, line) {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            return format!("{name} {}", place(&file, line));
        }
        return format!("record {line}");
    }
    if is_table(path) {
        format!("row {}", line.saturating_sub(1))
    } else {
        format!("line {line}")
    }
}

/// Whether `path` is a pattern: no such file, and `*` or `?` in its file name.
fn is_pattern(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.contains(['*', '?']) && !path.exists()
}

/// The files `path` names: itself, or for a pattern (`*` any run of characters, `?` one, in
/// the file name only; the folder is literal) the files of its folder that match, in name
/// order. Shards are JSON Lines (`.jsonl`) or Parquet files; a pattern that matches nothing
/// is an error naming it.
pub fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if !is_pattern(path) {
        return Ok(vec![path.to_path_buf()]);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !(ext == "jsonl" || is_parquet(path)) {
        return Err(Error::format(
            path,
            "a pattern names shards of JSON Lines (`*.jsonl`) or Parquet (`*.parquet`)",
        ));
    }
    let pattern = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if wildcard(&pattern, &name) && entry.path().is_file() {
            out.push(dir.join(name));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::format(path, "no file matches the pattern"));
    }
    Ok(out)
}

/// Whether `name` matches `pattern`: `*` any run of characters (none included), `?` any one.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The last `*` seen and the name position it was tried at: on a mismatch it takes one
    // more character (the usual linear backtracking, enough for one `*` or several).
    let (mut i, mut j, mut star) = (0, 0, None);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The shard and its own 1-based line that line `line` of a pattern's text falls in.
fn locate(path: &Path, line: usize) -> Option<(PathBuf, usize)> {
    let mut before = 0;
    for file in files(path).ok()? {
        let n = text(&file).ok()?.lines().count();
        if line <= before + n {
            return Some((file, line - before));
        }
        before += n;
    }
    None
}

/// The text of a JSON Lines records file, or the rows of a Parquet file as JSON Lines (one
/// compact object per row, no blank lines); a pattern's shards one after the other, each
/// ending its last line. A missing file, a text file that is not UTF-8 and a Parquet file that
/// cannot be read are errors naming the file.
pub(crate) fn text(path: &Path) -> Result<String> {
    let files = files(path)?;
    if let [file] = &files[..] {
        if file == path {
            return file_text(path);
        }
    }
    let mut out = String::new();
    for file in &files {
        out.push_str(&file_text(file)?);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

fn file_text(path: &Path) -> Result<String> {
    if !path.exists() {
        return Err(Error::MissingInput(path.to_path_buf()));
    }
    if is_saved_dataset(path) {
        return saved_json_lines(path);
    }
    if path.is_dir() {
        return Err(folder_error(path));
    }
    if is_parquet(path) {
        return json_lines(path);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| Error::format(path, format!("not UTF-8 text ({e})")))
}

/// Whether `path` is a folder `datasets`' `save_to_disk` wrote (`state.json`,
/// `dataset_info.json` and Arrow files; or `dataset_dict.json` and a folder per split, which a
/// reader refuses, naming the splits), or an Arrow file of one (`arrow_rows`).
pub fn is_saved_dataset(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("dataset_dict.json").is_file()
            || (path.join("state.json").is_file() && path.join("dataset_info.json").is_file());
    }
    path.extension().is_some_and(|e| e == "arrow")
}

/// Every row of a `save_to_disk` folder's Arrow files (or of one Arrow file), as one JSON
/// object per line.
fn saved_json_lines(path: &Path) -> Result<String> {
    let mut out = String::new();
    for file in crate::arrow_rows::files(path)? {
        crate::arrow_rows::for_each_batch(&file, &mut |batch, limit| {
            for i in 0..batch.num_rows() {
                crate::arrow_rows::write_row(&mut out, batch, i, limit)?;
                out.push('\n');
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// A folder given for a records file (a dataset's `data/` folder, as the Hub ships it): the
/// error names a few of its record files and the pattern that would take a split's shards.
fn folder_error(dir: &Path) -> Error {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet") || n.ends_with(".jsonl"))
        .collect();
    names.sort();
    let Some(first) = names.first() else {
        return Error::format(dir, "a folder, not a records file (.jsonl or .parquet)");
    };
    // `train-00000-of-00003.parquet` → `train-*.parquet`: the split's name before its index.
    let stem = first.split(['-', '.']).next().unwrap_or(first);
    let ext = first.rsplit('.').next().unwrap_or("parquet");
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    let more = match names.len() {
        n if n > 4 => format!(", ... ({n} files)"),
        _ => String::new(),
    };
    Error::format(
        dir,
        format!(
            "a folder, not a records file: name one of its files ({}{more}) or a pattern of a \
             split's shards, such as {}",
            shown.join(", "),
            dir.join(format!("{stem}-*.{ext}")).display()
        ),
    )
}

/// Every row of the Parquet file `path`, as one JSON object per line.
pub(crate) fn json_lines(path: &Path) -> Result<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = parquet_call(path, || SerializedFileReader::new(file))?;
    let meta = reader.metadata().file_metadata();
    if meta.schema_descr().num_columns() == 0 {
        return Err(Error::format(path, "a Parquet file without columns"));
    }
    let rows = usize::try_from(meta.num_rows()).unwrap_or(0);
    let mut out = String::with_capacity(rows.saturating_mul(64));
    let mut iter = parquet_call(path, || reader.get_row_iter(None))?;
    while let Some(row) = parquet_call(path, || iter.next().transpose())? {
        write_row(&mut out, &row);
        out.push('\n');
    }
    Ok(out)
}

/// The class names `datasets` declared for the first of `columns` that has them, in the
/// Parquet file `path` (or the
/// `save_to_disk` folder: its `dataset_info.json`): its features, kept in the file's
/// `huggingface` metadata, give the column a `ClassLabel` (stored as the
/// class index) or a list of them (`Sequence(ClassLabel)`: multi-label classes, or a word's
/// tags as conll2003's `ner_tags`). The names in class-index order; `None` for another file,
/// column or feature, or metadata that does not parse (the indices are then the labels, as in
/// the file's JSON Lines export).
pub fn class_label_names(path: &Path, columns: &[&str]) -> Result<Option<Vec<String>>> {
    let features = if is_saved_dataset(path) && path.is_dir() {
        crate::arrow_rows::features(path)
    } else if is_parquet(path) {
        parquet_features(path)?
    } else {
        None
    };
    let Some(features) = features else {
        return Ok(None);
    };
    let names = |column: &str| {
        let mut feature = &features[column];
        // `List` (datasets 4 on) or `Sequence` (before) of a feature: the feature's names.
        while let Some(inner) = feature.get("feature") {
            feature = inner;
        }
        if feature["_type"] != "ClassLabel" {
            return None;
        }
        feature["names"].as_array().and_then(|names| {
            names
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect()
        })
    };
    Ok(columns.iter().find_map(|c| names(c)))
}

/// The features `datasets` wrote into the `huggingface` metadata of the Parquet file `path`
/// (a pattern's first shard: a split's shards share them).
fn parquet_features(path: &Path) -> Result<Option<serde_json::Value>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let first = files(path)?.swap_remove(0);
    let path = first.as_path();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = parquet_call(path, || SerializedFileReader::new(file))?;
    let meta = reader.metadata().file_metadata().key_value_metadata();
    let Some(json) = meta
        .into_iter()
        .flatten()
        .find(|kv| kv.key == "huggingface")
        .and_then(|kv| kv.value.as_deref())
    else {
        return Ok(None);
    };
    let Ok(info) = serde_json::from_str::<serde_json::Value>(json) else {
        return Ok(None);
    };
    Ok(info["info"].get("features").cloned())
}

/// The first row of the Parquet file `path` as a JSON object; `None` when the file cannot be
/// read or has no rows (the reader that follows says why).
pub(crate) fn first_row(path: &Path) -> Option<serde_json::Value> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    if is_saved_dataset(path) {
        let file = crate::arrow_rows::files(path).ok()?.into_iter().next()?;
        let mut line = String::new();
        // The first row, then an error that only stops the reading of the rest.
        let _ = crate::arrow_rows::for_each_batch(&file, &mut |batch, limit| {
            if batch.num_rows() == 0 {
                return Ok(());
            }
            crate::arrow_rows::write_row(&mut line, batch, 0, limit)?;
            Err(Error::Corpus("first row read".into()))
        });
        return serde_json::from_str(&line).ok();
    }
    let path = &files(path).ok()?.into_iter().next()?;
    let file = std::fs::File::open(path).ok()?;
    let reader = parquet_call(path, || SerializedFileReader::new(file)).ok()?;
    let mut iter = parquet_call(path, || reader.get_row_iter(None)).ok()?;
    let row = parquet_call(path, || iter.next().transpose()).ok()??;
    let mut line = String::new();
    write_row(&mut line, &row);
    serde_json::from_str(&line).ok()
}

/// `row` as a JSON object, its fields in the file's column order. `serde_json`'s objects sort
/// their keys, and the order matters to a chat template that walks a message's keys or prints
/// a tool call's arguments, so objects are written here; leaves are `serde_json`'s.
fn write_row(out: &mut String, row: &parquet::record::Row) {
    out.push('{');
    for (i, (name, field)) in row.get_column_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json(out, &serde_json::Value::String(name.clone()));
        out.push(':');
        write_field(out, field);
    }
    out.push('}');
}

fn write_field(out: &mut String, field: &parquet::record::Field) {
    use parquet::record::Field;
    match field {
        Field::Group(row) => write_row(out, row),
        Field::ListInternal(list) => {
            out.push('[');
            for (i, e) in list.elements().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_field(out, e);
            }
            out.push(']');
        }
        // A map's keys become strings, as in any JSON object.
        Field::MapInternal(map) => {
            out.push('{');
            for (i, (k, v)) in map.entries().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let key = match k {
                    Field::Str(s) => s.clone(),
                    other => other.to_json_value().to_string(),
                };
                write_json(out, &serde_json::Value::String(key));
                out.push(':');
                write_field(out, v);
            }
            out.push('}');
        }
        Field::Float(x) => write_f32(out, *x),
        leaf => write_json(out, &leaf.to_json_value()),
    }
}

/// An f32 as the shortest decimal that reads back as it (0.1, where widening to f64 would
/// write 0.10000000149011612), as JSON of an f32 column should say; not finite, `null`.
pub(crate) fn write_f32(out: &mut String, x: f32) {
    match x.to_string().parse::<f64>().ok().filter(|v| v.is_finite()) {
        Some(v) => write_json(out, &serde_json::json!(v)),
        None => out.push_str("null"),
    }
}

pub(crate) fn write_json(out: &mut String, v: &serde_json::Value) {
    // Writing a `Value` into a `String` cannot fail: it has no I/O and no non-string keys.
    out.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".into()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{read_tokenizer_config, ChatTemplate};
    use crate::labelled::{Columns, LabelValue, ProblemType, RawExample};
    use std::path::PathBuf;
    use tokenizers::Tokenizer;

    fn golden() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
    }

    /// Written by `datasets` (scripts/make_record_parquet_fixtures.py).
    fn fixture(name: &str) -> PathBuf {
        golden().join("parquet/records").join(name)
    }

    /// The message of the error that reading `path` as labelled records gives.
    fn read_error(path: &Path) -> String {
        let read = crate::labelled::read_examples(path);
        read.unwrap_err().to_string()
    }

    #[test]
    fn places_are_lines_of_text_and_rows_of_parquet() {
        assert_eq!(place(Path::new("a/train.jsonl"), 3), "line 3");
        assert_eq!(place(Path::new("a/train.parquet"), 3), "row 2");
        assert_eq!(place(Path::new("a/TRAIN.PARQUET"), 1), "row 0");
        assert_eq!(place(Path::new("a/train.csv"), 1), "line 1");
    }

    #[test]
    fn rows_read_as_the_json_lines_datasets_writes() {
        // Keys in the file's column order, nested lists and structs, an f32 as it was written.
        let text = json_lines(&fixture("qa.parquet")).unwrap();
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with(r#"{"id":"#) && first.contains(r#""answers":{"text":["#),
            "{first}"
        );
        let text = json_lines(&fixture("regression.parquet")).unwrap();
        assert!(
            text.starts_with(r#"{"text":"The sky is blue.","label":0.1}"#),
            "{text}"
        );
        let text = json_lines(&fixture("sft-messages.parquet")).unwrap();
        assert!(text.starts_with(r#"{"messages":[{"role":"#), "{text}");
        assert_eq!(text.lines().count(), 12);
        let first = first_row(&fixture("kto-text.parquet")).unwrap();
        assert_eq!(first["label"], serde_json::Value::Bool(true));
    }

    /// Labels compared as the f32 a regression trains on (`datasets`' JSON writes an f32 with
    /// ten digits, 0.1000000015).
    fn as_f32(mut v: Vec<RawExample>) -> Vec<RawExample> {
        for e in &mut v {
            if let Some(LabelValue::Number(x)) = &mut e.label {
                *x = *x as f32 as f64;
            }
        }
        v
    }

    /// The JSON Lines export's class indices as the names the Parquet file declares (-1: no
    /// label), which is how the Parquet file reads.
    fn named(mut v: Vec<RawExample>, names: &[&str]) -> Vec<RawExample> {
        let name = |l: &LabelValue| match l {
            LabelValue::Index(i) => LabelValue::Name(names[*i].to_string()),
            other => other.clone(),
        };
        for e in &mut v {
            e.label = match e.label.take() {
                Some(LabelValue::Number(-1.0)) => None,
                Some(LabelValue::List(items)) => {
                    Some(LabelValue::List(items.iter().map(name).collect()))
                }
                Some(l) => Some(name(&l)),
                None => None,
            };
        }
        v
    }

    #[test]
    fn labelled_parquet_reads_as_its_json_lines() {
        let classes = ["negative", "neutral", "positive"];
        let tags = ["O", "B-PER", "I-PER"];
        for (name, problem, names) in [
            (
                "classification",
                ProblemType::SingleLabelClassification,
                &classes[..],
            ),
            ("tokens", ProblemType::TokenClassification, &tags[..]),
            ("regression", ProblemType::Regression, &[][..]),
            ("multilabel", ProblemType::MultiLabelClassification, &[][..]),
        ] {
            let cols = Columns::default();
            let read = |ext: &str| {
                let p = fixture(&format!("{name}.{ext}"));
                crate::labelled::read_for_problem(&p, &cols, problem).unwrap()
            };
            let (parquet, jsonl) = (as_f32(read("parquet")), as_f32(read("jsonl")));
            assert_eq!(parquet.len(), 6, "{name}");
            assert_eq!(parquet, named(jsonl, names), "{name}");
            // The names in the metadata's order (not sorted): the model's id2label.
            let p = fixture(&format!("{name}.parquet"));
            let declared = crate::labelled::declared_label_names(&p, &cols, problem).unwrap();
            let want = (!names.is_empty()).then(|| names.iter().map(|n| n.to_string()).collect());
            assert_eq!(declared, want, "{name}");
        }
        // ClassLabel's -1 is an example without a label.
        let ex = crate::labelled::read_examples(&fixture("classification.parquet")).unwrap();
        assert_eq!(ex[4].label, None);
        assert_eq!(ex[5].label, Some(LabelValue::Name("positive".into())));
        // Class names come from Parquet metadata only.
        let jsonl = fixture("classification.jsonl");
        assert_eq!(class_label_names(&jsonl, &["label"]).unwrap(), None);
        assert_eq!(
            class_label_names(&fixture("classification.parquet"), &["text"]).unwrap(),
            None
        );
    }

    #[test]
    fn choices_and_questions_read_as_their_json_lines() {
        use crate::choice::{read_choice_examples, read_lm_choices, HellaSwagText};
        let swag = (
            fixture("lm_choice-swag.parquet"),
            golden().join("lm_choice/swag.jsonl"),
        );
        let cols = Columns::default();
        let a = read_choice_examples(&swag.0, &cols).unwrap();
        assert_eq!(a.len(), 8);
        assert_eq!(a, read_choice_examples(&swag.1, &cols).unwrap());
        for (p, j) in [
            swag,
            (
                fixture("lm_choice-hellaswag.parquet"),
                golden().join("lm_choice/hellaswag.jsonl"),
            ),
        ] {
            let raw = HellaSwagText::Raw;
            assert_eq!(
                read_lm_choices(&p, raw).unwrap(),
                read_lm_choices(&j, raw).unwrap()
            );
        }
        let (p, j) = (fixture("qa.parquet"), golden().join("qa/examples.jsonl"));
        for v2 in [false, true] {
            let q = crate::qa::read_qa_with(&p, v2).unwrap();
            assert_eq!(q.len(), 9);
            assert_eq!(q, crate::qa::read_qa_with(&j, v2).unwrap());
        }
    }

    #[test]
    fn sft_preference_and_unpaired_parquet_read_as_their_json_lines() {
        use crate::dpo::{read_preferences, read_rewards, read_unpaired, PreferenceOptions};
        use crate::sft::{read_sft, SftOptions, Truncation};
        let model = golden().join("sft/model");
        let tok = Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
        let cfg = read_tokenizer_config(&model).unwrap();
        let template = ChatTemplate::from_folder_config(&model, &cfg)
            .unwrap()
            .unwrap();
        let vocab_size = tok.get_vocab_size(true);
        let eos = Some("<|endoftext|>");
        let sft = SftOptions {
            text_field: "text",
            max_length: 1024,
            truncate: true,
            truncation: Truncation::KeepStart,
            completion_only_loss: true,
            eos_token: eos,
            chat_template: Some(&template),
            assistant_only_loss: false,
            vocab_size,
        };
        for name in [
            "text",
            "prompt-completion",
            "messages",
            "messages-assistant",
            "conv-prompt-completion",
        ] {
            let read = |p: &Path| format!("{:?}", read_sft(p, &tok, &sft).unwrap());
            let jsonl = golden().join(format!("sft/{name}/train.jsonl"));
            assert_eq!(
                read(&fixture(&format!("sft-{name}.parquet"))),
                read(&jsonl),
                "sft {name}"
            );
        }
        let pref = PreferenceOptions {
            max_length: 1024,
            truncation: Truncation::KeepStart,
            eos_token: eos,
            chat_template: Some(&template),
            vocab_size,
        };
        for (group, name) in [
            ("dpo", "text"),
            ("dpo", "conversational"),
            ("reward", "text-margin"),
            ("reward", "conversational"),
            ("kto", "text"),
            ("kto", "conversational"),
        ] {
            let read = |p: &Path| match group {
                "dpo" => format!("{:?}", read_preferences(p, &tok, &pref).unwrap()),
                "reward" => format!("{:?}", read_rewards(p, &tok, &pref).unwrap()),
                _ => format!("{:?}", read_unpaired(p, &tok, &pref).unwrap()),
            };
            let parquet = fixture(&format!("{group}-{name}.parquet"));
            let jsonl = golden().join(format!("{group}/{name}/train.jsonl"));
            assert_eq!(read(&parquet), read(&jsonl), "{group} {name}");
            // What decides the trainer, from the first row alone.
            assert_eq!(
                crate::dpo::is_preference_file(&parquet),
                Some(group != "kto"),
                "{group} {name}"
            );
            assert_eq!(
                crate::dpo::is_unpaired_file(&parquet),
                crate::dpo::is_unpaired_file(&jsonl),
                "{group} {name}"
            );
        }
    }

    /// `save_to_disk`'s folders read as the Parquet files they were saved from: the records
    /// (Arrow files one after the other, rows named from 0 across them), the `ClassLabel` names
    /// of `dataset_info.json`, the first row, and `lantern prepare`'s documents.
    #[test]
    fn saved_datasets_read_as_their_parquet() {
        let saved = fixture("saved-classification");
        assert!(is_saved_dataset(&saved) && is_table(&saved));
        let ex = crate::labelled::read_examples(&saved).unwrap();
        let pq = crate::labelled::read_examples(&fixture("classification.parquet")).unwrap();
        assert_eq!(ex, pq);
        let cols = Columns::default();
        let problem = ProblemType::SingleLabelClassification;
        let names = crate::labelled::declared_label_names(&saved, &cols, problem).unwrap();
        assert_eq!(names.unwrap(), ["negative", "neutral", "positive"]);
        assert_eq!(place(&saved, 3), "row 2");
        let a = text(&fixture("saved-sft-messages")).unwrap();
        assert_eq!(a, json_lines(&fixture("sft-messages.parquet")).unwrap());
        assert_eq!(
            crate::arrow_rows::files(&fixture("saved-sft-messages"))
                .unwrap()
                .len(),
            2
        );
        let first = first_row(&fixture("saved-sft-messages")).unwrap();
        assert!(first["messages"].is_array(), "{first}");
        assert_eq!(
            crate::dpo::is_preference_file(&fixture("saved-sft-messages")),
            Some(false)
        );
        // One Arrow file alone reads too.
        let one = fixture("saved-classification/data-00000-of-00001.arrow");
        assert_eq!(crate::labelled::read_examples(&one).unwrap().len(), 6);
        // Documents: those of the JSON Lines the Parquet fixtures hold, from three files.
        let docs = |p: &Path, field: &str| {
            let mut v = Vec::new();
            crate::documents::for_each_document(p, field, &mut |d| {
                v.push(d);
                Ok(())
            })
            .unwrap();
            v
        };
        let saved_docs = fixture("saved-docs");
        let want = docs(&golden().join("parquet/docs.jsonl"), "text");
        assert_eq!(want.len(), 2204);
        assert!(docs(&saved_docs, "text") == want);
        let m = crate::documents::for_each_document(&saved_docs, "body", &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(m.contains("no column \"body\" (columns: text)"), "{m}");
    }

    /// A DatasetDict's folder names its splits; a damaged Arrow file or state is an error
    /// naming the file, never a panic.
    #[test]
    fn saved_dataset_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dict = tmp.path().join("dict");
        std::fs::create_dir(&dict).unwrap();
        std::fs::write(
            dict.join("dataset_dict.json"),
            "{\"splits\": [\"train\", \"test\"]}",
        )
        .unwrap();
        let m = read_error(&dict);
        assert!(
            m.contains("a DatasetDict saved by `datasets` (splits: train, test)"),
            "{m}"
        );
        let saved = tmp.path().join("saved");
        std::fs::create_dir(&saved).unwrap();
        std::fs::copy(
            fixture("saved-classification/dataset_info.json"),
            saved.join("dataset_info.json"),
        )
        .unwrap();
        std::fs::write(
            saved.join("state.json"),
            "{\"_data_files\": [{\"filename\": \"d.arrow\"}]}",
        )
        .unwrap();
        let m = read_error(&saved);
        assert!(m.contains("d.arrow") && m.contains("does not exist"), "{m}");
        let bytes =
            std::fs::read(fixture("saved-classification/data-00000-of-00001.arrow")).unwrap();
        for (what, data) in [
            ("cut", &bytes[..bytes.len() / 2]),
            ("junk", &b"\xff\xff\xff\xff\x08\x00\x00\x00junkjunk"[..]),
        ] {
            std::fs::write(saved.join("d.arrow"), data).unwrap();
            let m = read_error(&saved);
            assert!(
                m.contains("d.arrow: cannot read as an Arrow stream"),
                "{what}: {m}"
            );
        }
        std::fs::write(
            saved.join("state.json"),
            "{\"_data_files\": [{\"filename\": \"../x.arrow\"}]}",
        )
        .unwrap();
        let m = read_error(&saved);
        assert!(
            m.contains("state.json: data file \"../x.arrow\" is not a file name"),
            "{m}"
        );
        // Rows that hold no data are counted from the batch's header: refused, not written out
        // (the fuzzer's no-columns stream claimed 2^64 - 250 rows; null-rows.arrow claims 10^9).
        let m = read_error(&fixture("no-columns.arrow"));
        assert!(
            m.contains("no-columns.arrow: an Arrow stream without columns"),
            "{m}"
        );
        let m = read_error(&fixture("null-rows.arrow"));
        let want = "null-rows.arrow: a record batch claims 1000000000 rows, more than a file of \
                    224 bytes";
        assert!(m.contains(want), "{m}");
        let m = read_error(&fixture("null-list.arrow"));
        let want = "null-list.arrow: a list of 1000000000 items, more than the file holds";
        assert!(m.contains(want), "{m}");
    }

    #[test]
    fn errors_name_the_parquet_file_and_the_row() {
        let message = |r: Result<Vec<RawExample>>| r.unwrap_err().to_string();
        let cols = Columns {
            text: "sentence".into(),
            ..Columns::default()
        };
        let m = message(crate::labelled::read_examples_with(
            &fixture("classification.parquet"),
            &cols,
        ));
        assert!(
            m.contains("classification.parquet: row 0: missing \"sentence\""),
            "{m}"
        );
        // A null text (row 3 of the documents fixture) is a missing one.
        let null = golden().join("parquet/null.parquet");
        let m = message(crate::labelled::read_examples(&null));
        assert!(m.contains("null.parquet: row 3: missing \"text\""), "{m}");
        // A label past the label set names the row, as the trainer reports it later.
        let ex = crate::labelled::read_examples(&fixture("classification.parquet")).unwrap();
        let names = ["negative".to_string(), "neutral".to_string()];
        let e = crate::labelled::label_index(
            ex[2].label.as_ref().unwrap(),
            &names,
            &fixture("classification.parquet"),
            ex[2].line,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("row 2: label \"positive\" is not one of the labels"),
            "{e}"
        );
        // A class index past the names the file declares.
        let m = message(crate::labelled::read_examples(&fixture(
            "classification-past-names.parquet",
        )));
        assert!(
            m.contains("classification-past-names.parquet: row 1: label 5 is past the 3 names"),
            "{m}"
        );
        // A cut file, and a file that is not Parquet at all.
        let tmp = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture("sft-messages.parquet")).unwrap();
        let cut = tmp.path().join("cut.parquet");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let not = tmp.path().join("not.parquet");
        std::fs::write(&not, "{\"text\": \"a\"}\n").unwrap();
        for p in [&cut, &not] {
            let m = message(crate::labelled::read_examples(p));
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(
                m.contains(name) && m.contains("cannot read as Parquet"),
                "{m}"
            );
            assert!(first_row(p).is_none());
        }
        let missing = tmp.path().join("missing.parquet");
        let m = message(crate::labelled::read_examples(&missing));
        assert!(
            m.contains("missing.parquet") && m.contains("does not exist"),
            "{m}"
        );
    }

    #[test]
    fn wildcards_match_as_data_files_patterns_do() {
        for (p, n, want) in [
            ("train-*.parquet", "train-00000-of-00003.parquet", true),
            ("train-*.parquet", "train.parquet", false),
            ("train*.parquet", "train.parquet", true),
            ("train-*.parquet", "test-00000-of-00001.parquet", false),
            ("*", "anything", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-of-*.jsonl", "x-00001-of-00002.jsonl", true),
            ("*-of-*.jsonl", "x-00001-of-00002.jsonl.gz", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(wildcard(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn a_pattern_reads_its_shards_as_one_file_and_names_the_shard() {
        let tmp = tempfile::tempdir().unwrap();
        let shard = |i: usize, from: &str| {
            let to = tmp.path().join(format!("train-{i:05}-of-00002.parquet"));
            std::fs::copy(fixture(from), to).unwrap();
        };
        shard(0, "classification.parquet");
        shard(1, "classification.parquet");
        // Not a shard of the split.
        std::fs::copy(
            fixture("tokens.parquet"),
            tmp.path().join("test-00000.parquet"),
        )
        .unwrap();
        let pattern = tmp.path().join("train-*.parquet");
        assert_eq!(files(&pattern).unwrap().len(), 2);
        let one = crate::labelled::read_examples(&fixture("classification.parquet")).unwrap();
        let both = crate::labelled::read_examples(&pattern).unwrap();
        assert_eq!(both.len(), 12);
        assert_eq!(both[..6], one[..]);
        assert_eq!(both[6].text, one[0].text);
        assert_eq!(both[6].line, 7);
        assert_eq!(place(&pattern, 7), "train-00001-of-00002.parquet row 0");
        let cols = Columns::default();
        let problem = ProblemType::SingleLabelClassification;
        let names = crate::labelled::declared_label_names(&pattern, &cols, problem).unwrap();
        assert_eq!(names.unwrap().len(), 3);
        // An error in the second shard names it and its own row.
        shard(1, "classification-past-names.parquet");
        let m = read_error(&pattern);
        assert!(
            m.contains("train-*.parquet: train-00001-of-00002.parquet row 1: label 5 is past"),
            "{m}"
        );
        // JSON Lines shards, the first without a last newline.
        std::fs::write(
            tmp.path().join("a-1.jsonl"),
            "{\"text\": \"x\", \"label\": \"p\"}",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("a-2.jsonl"),
            "{\"text\": \"y\", \"label\": \"q\"}\n{\"text\": 3}\n",
        )
        .unwrap();
        let error = |name: &str| read_error(&tmp.path().join(name));
        // A pattern that matches nothing, and one over files that are not records shards.
        for (name, want) in [
            (
                "a-*.jsonl",
                "a-*.jsonl: a-2.jsonl line 2: \"text\" must be a string",
            ),
            (
                "valid-*.parquet",
                "valid-*.parquet: no file matches the pattern",
            ),
            ("*.csv", "*.csv: a pattern names shards of JSON Lines"),
        ] {
            let m = error(name);
            assert!(m.contains(want), "{m}");
        }
        // Question answering: an id seen in an earlier shard.
        for i in 0..2 {
            let to = tmp.path().join(format!("qa-{i}.parquet"));
            std::fs::copy(fixture("qa.parquet"), to).unwrap();
        }
        let m = crate::qa::read_qa(&tmp.path().join("qa-*.parquet"))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("qa-*.parquet: qa-1.parquet row 0 (id ")
                && m.contains("the id is already at qa-0.parquet row 0"),
            "{m}"
        );
        // The first shard's first row picks the trainer.
        std::fs::copy(fixture("dpo-text.parquet"), tmp.path().join("p-0.parquet")).unwrap();
        let pref = tmp.path().join("p-*.parquet");
        assert_eq!(crate::dpo::is_preference_file(&pref), Some(true));
        // The folder itself, given for a file: what it holds and a pattern that would do.
        let m = read_error(tmp.path());
        assert!(
            m.contains("a folder, not a records file: name one of its files (a-1.jsonl, a-2.jsonl, p-0.parquet, qa-0.parquet, ... (8 files)) or a pattern")
                && m.contains("a-*.jsonl"),
            "{m}"
        );
    }
}
