//! The documents of a corpus file, read as a stream: text in the fortune format or JSON Lines,
//! either compressed (gzip, zstd), or a Parquet file's text column. [`crate::prepare`] reads
//! every file twice through here (counting, then encoding), so a corpus never has to fit in
//! memory as text.
//!
//! The file's name decides its format. A name ending in `.gz` or `.zst` is decompressed (gzip
//! or zstd, any number of members or frames) and the rest of the name decides:
//! - `.jsonl`, `.ndjson`: JSON Lines, one record per line, each record one document (its
//!   string field `text_field`; a dotted path `a.b` names field `b` of the object in `a`
//!   unless a key is `a.b` itself); blank lines are skipped.
//! - `.json`: JSON Lines, or one array of such records (`datasets`' `to_json` writes either,
//!   with and without `lines`); read whole.
//! - `.parquet`: a Parquet file (as the Hub's datasets and FineWeb ship, or `datasets`'
//!   `to_parquet` writes), one document per row: the string column `text_field` (a dotted
//!   path names a field inside a struct column), row groups in order. Parquet compresses its
//!   own pages (snappy, zstd, gzip, lz4, brotli), so the file itself is not `.gz` or `.zst`.
//! - anything else: text in the fortune format, documents separated by lines holding only
//!   `%` ([`split_documents`]); a file with a NUL byte is binary and passed over.
//!
//! Empty and whitespace-only documents are dropped in every format. Text is decoded lossily:
//! a stray Latin-1 byte in an old text file costs one character, not the file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Calls `f` with each document of the file at `path`, in order. `Ok(false)` for a binary text
/// file (passed over), which may come after some of its documents were given to `f`.
pub fn for_each_document(
    path: &Path,
    text_field: &str,
    f: &mut dyn FnMut(String) -> Result<()>,
) -> Result<bool> {
    let mut emit = |doc: String| match doc.trim().is_empty() {
        true => Ok(()),
        false => f(doc),
    };
    if crate::records::is_saved_dataset(path) {
        saved_documents(path, text_field, &mut emit)?;
        return Ok(true);
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let (inner, compression) = match (name.strip_suffix(".gz"), name.strip_suffix(".zst")) {
        (Some(inner), _) => (inner, Some("gzip")),
        (_, Some(inner)) => (inner, Some("zstd")),
        _ => (&*name, None),
    };
    let ext = inner.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    if ext.as_deref() == Some("parquet") {
        if let Some(c) = compression {
            return Err(Error::format(
                path,
                format!(
                    "a Parquet file compresses its own pages and is read in place, not through \
                     {c}: decompress it first"
                ),
            ));
        }
        parquet_documents(path, file, text_field, &mut emit)?;
        return Ok(true);
    }
    // An error of the compressed stream says so; any other is the file's.
    let io = |e: std::io::Error| match compression {
        Some(c) => Error::format(path, format!("cannot decompress ({c}): {e}")),
        None => Error::io(path, e),
    };
    let mut reader: Box<dyn BufRead> = match compression {
        Some("gzip") => {
            let decoder = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            Box::new(BufReader::with_capacity(1 << 20, decoder))
        }
        Some(_) => {
            let mut decoder = zstd::stream::read::Decoder::new(file).map_err(io)?;
            // Frames made with `zstd --long` want windows past the default 128 MiB.
            decoder.window_log_max(31).map_err(io)?;
            Box::new(BufReader::with_capacity(1 << 20, decoder))
        }
        None => Box::new(BufReader::with_capacity(1 << 20, file)),
    };
    match ext.as_deref() {
        Some("jsonl" | "ndjson") => {
            json_lines(path, &mut reader, text_field, &io, &mut emit)?;
        }
        Some("json") => {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).map_err(io)?;
            let text = String::from_utf8_lossy(&bytes);
            if text.trim_start().starts_with('[') {
                let records: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
                    Error::format(path, format!("not a JSON array of records: {e}"))
                })?;
                for (i, r) in records.into_iter().enumerate() {
                    emit(record_text(path, &|| format!("record {i}"), r, text_field)?)?;
                }
            } else {
                json_lines(path, &mut text.as_bytes(), text_field, &io, &mut emit)?;
            }
        }
        _ => return fortune_documents(&mut reader, &io, &mut emit),
    }
    Ok(true)
}

/// Fortune-format text split into documents at lines holding only `%`, dropping documents that
/// are empty or whitespace. Each document keeps its lines' endings, so the shards decode back to
/// the original text.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut emit = |doc: String| {
        if !doc.trim().is_empty() {
            docs.push(doc);
        }
        Ok(())
    };
    // Reading from memory cannot fail, nor find a NUL that `text` could not hold anyway.
    let io = |e: std::io::Error| Error::InvalidArgument(e.to_string());
    let _ = fortune_documents(&mut text.as_bytes(), &io, &mut emit);
    docs
}

/// The fortune format, line by line; `Ok(false)` at the first NUL byte.
fn fortune_documents(
    reader: &mut dyn BufRead,
    io: &dyn Fn(std::io::Error) -> Error,
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<bool> {
    let mut current = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        if line.contains(&0) {
            return Ok(false);
        }
        // Lossy per line is lossy per file: no UTF-8 sequence spans a `\n` byte.
        let text = String::from_utf8_lossy(&line);
        if text.trim_end() == "%" {
            emit(std::mem::take(&mut current))?;
        } else {
            current.push_str(&text);
        }
    }
    emit(current)?;
    Ok(true)
}

/// One document per non-blank line; errors name the line (1-based).
fn json_lines(
    path: &Path,
    reader: &mut dyn BufRead,
    field: &str,
    io: &dyn Fn(std::io::Error) -> Error,
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<()> {
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let at = || format!("line {number}");
        let record: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("{}: not JSON: {e}", at())))?;
        emit(record_text(path, &at, record, field)?)?;
    }
    Ok(())
}

/// The rows' strings in the column at `field` (a dotted path for a field in a struct), row
/// group by row group, read a batch of rows at a time; errors name the row (0-based, over the
/// whole file, as `datasets` indexes it).
fn parquet_documents(
    path: &Path,
    file: File,
    field: &str,
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<()> {
    use parquet::basic::Type as Physical;
    use parquet::column::reader::ColumnReader;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let reader = parquet_call(path, || SerializedFileReader::new(file))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let Some(column) =
        (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == field)
    else {
        let names: Vec<String> = (0..schema.num_columns())
            .map(|i| schema.column(i).path().string())
            .collect();
        return Err(Error::format(
            path,
            format!(
                "no column \"{field}\" (the file has: {}); --text-field names the column that \
                 holds the text",
                names.join(", ")
            ),
        ));
    };
    let desc = schema.column(column);
    if desc.physical_type() != Physical::BYTE_ARRAY {
        return Err(Error::format(
            path,
            format!(
                "column \"{field}\" holds {}, not strings",
                desc.physical_type()
            ),
        ));
    }
    if desc.max_rep_level() > 0 {
        return Err(Error::format(
            path,
            format!("column \"{field}\" is a list (a row holds several values), not a string"),
        ));
    }
    // A row's value is present when its definition level is the column's maximum; anything
    // less is a null (the column's, or a struct's above it).
    let max_def = desc.max_def_level();
    const BATCH: usize = 1024;
    let (mut defs, mut values) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    let mut row = 0usize;
    for g in 0..reader.num_row_groups() {
        let col_reader = parquet_call(path, || reader.get_row_group(g)?.get_column_reader(column))?;
        let ColumnReader::ByteArrayColumnReader(mut col) = col_reader else {
            return Err(Error::format(
                path,
                format!("column \"{field}\": no string reader"),
            ));
        };
        loop {
            defs.clear();
            values.clear();
            let (rows, _, _) = parquet_call(path, || {
                col.read_records(BATCH, Some(&mut defs), None, &mut values)
            })?;
            if rows == 0 {
                break;
            }
            let mut values = values.drain(..);
            for i in 0..rows {
                // A required column (maximum 0) has no levels to read.
                if defs.get(i).is_some_and(|&d| d < max_def) {
                    return Err(Error::format(
                        path,
                        format!("row {}: column \"{field}\" is null, not a string", row + i),
                    ));
                }
                let value = values.next().ok_or_else(|| {
                    Error::format(path, format!("row {}: a value is missing", row + i))
                })?;
                emit(String::from_utf8_lossy(value.data()).into_owned())?;
            }
            row += rows;
        }
    }
    Ok(())
}

/// The documents of a `save_to_disk` folder (or one of its Arrow files): the strings of column
/// `text_field`, row by row, a record batch at a time.
fn saved_documents(
    path: &Path,
    text_field: &str,
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<()> {
    let mut rows = 0;
    for file in crate::arrow_rows::files(path)? {
        crate::arrow_rows::for_each_batch(&file, &mut |batch, _| {
            crate::arrow_rows::strings(&file, batch, text_field, rows, emit)?;
            rows += batch.num_rows();
            Ok(())
        })?;
    }
    Ok(())
}

/// A call into the `parquet` crate, its error or panic made an error naming `path`. The crate
/// can panic on a damaged file instead of returning an error (seen: a cut dictionary page
/// fails an assertion in its decoder), so each of its calls is guarded: a damaged file is an
/// error like any other (a panic hook can keep it off stderr: [`panic_in_parquet`]).
pub(crate) fn parquet_call<T>(
    path: &Path,
    f: impl FnOnce() -> parquet::errors::Result<T>,
) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let e = e.to_string();
            let e = e.strip_prefix("Parquet error: ").unwrap_or(&e);
            Err(Error::format(path, format!("cannot read as Parquet: {e}")))
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "its reader failed".into());
            Err(Error::format(
                path,
                format!("cannot read as Parquet: the file is damaged ({what})"),
            ))
        }
    }
}

/// Installs a panic hook that leaves panics raised inside the `parquet` crate's code
/// unprinted and hands every other to the hook before it. The crate can panic on a damaged
/// file instead of returning an error; `parquet_call` catches those panics and reports the
/// file and what failed as an error, which the default report (`thread ... panicked at ...`)
/// would precede as noise. `lantern` installs it at start, and so do the fuzz targets, whose
/// hook before it aborts on any panic.
pub fn quiet_parquet_panics() {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !panic_in_parquet(info) {
            before(info);
        }
    }));
}

/// Whether a panic was raised inside the `parquet` or `arrow-*` crates' code: one
/// `parquet_call` (or `arrow_rows`' guard) catches and reports as an error naming the file. A panic hook can leave such panics unprinted (as
/// `lantern` does) and report every other.
pub fn panic_in_parquet(info: &std::panic::PanicHookInfo<'_>) -> bool {
    info.location().is_some_and(|l| {
        let file = l.file().replace('\\', "/");
        (file.contains("/parquet-") || file.contains("/arrow-")) && file.contains("/src/")
    })
}

/// The string `field` of a JSON record; `at` says where the record is, for the errors.
fn record_text(
    path: &Path,
    at: &dyn Fn() -> String,
    record: serde_json::Value,
    field: &str,
) -> Result<String> {
    let serde_json::Value::Object(mut map) = record else {
        return Err(Error::format(
            path,
            format!(
                "{}: a record is a JSON object, found {}",
                at(),
                json_kind(&record)
            ),
        ));
    };
    // A key holding dots is itself first; else `a.b` is field `b` of the object in field `a`,
    // as Parquet names a struct's field.
    let value = map.remove(field).or_else(|| {
        let (head, rest) = field.split_once('.')?;
        let mut v = map.get_mut(head)?;
        for key in rest.split('.') {
            v = v.as_object_mut()?.get_mut(key)?;
        }
        Some(v.take())
    });
    match value {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(Error::format(
            path,
            format!(
                "{}: field \"{field}\" is {}, not a string",
                at(),
                json_kind(&other)
            ),
        )),
        None => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            Err(Error::format(
                path,
                format!(
                    "{}: no field \"{field}\" (the record has: {}); --text-field names the \
                     field that holds the text",
                    at(),
                    keys.join(", ")
                ),
            ))
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    /// Parquet files written by pyarrow (scripts/make_parquet_fixtures.py).
    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/parquet")
    }

    /// The file's documents, `None` for a binary text file.
    pub(crate) fn read_documents(path: &Path, field: &str) -> Result<Option<Vec<String>>> {
        let mut docs = Vec::new();
        let text = for_each_document(path, field, &mut |d| {
            docs.push(d);
            Ok(())
        })?;
        Ok(text.then_some(docs))
    }

    /// The documents of a file that is not binary text.
    fn read(path: &Path, field: &str) -> Result<Vec<String>> {
        Ok(read_documents(path, field)?.expect("not a binary text file"))
    }

    fn message(path: &Path, field: &str) -> String {
        match read(path, field) {
            Ok(docs) => panic!(
                "{}: read {} documents, expected an error",
                path.display(),
                docs.len()
            ),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parquet_files_hold_the_json_lines_documents() {
        // Every layout pyarrow writes (codecs, page versions, dictionary or not, several row
        // groups and read batches): the documents of the JSON Lines, in order, the empty and
        // the whitespace one dropped by both.
        let dir = fixtures();
        let expected = read(&dir.join("docs.jsonl"), "text").unwrap();
        assert_eq!(expected.len(), 2204);
        assert_eq!(expected[1], "Ünïcödé: αβγ — 日本語 🙂\n");
        for name in ["snappy", "zstd-v2", "gzip", "brotli", "lz4", "plain"] {
            let docs = read(&dir.join(format!("{name}.parquet")), "text").unwrap();
            assert!(docs == expected, "{name}.parquet differs");
        }
        // A field inside a struct column, by its dotted path.
        let sources = read(&dir.join("snappy.parquet"), "meta.source").unwrap();
        assert_eq!(sources.len(), 2206);
        assert!(sources
            .iter()
            .enumerate()
            .all(|(i, s)| *s == format!("src-{}", i % 7)));
    }

    #[test]
    fn json_records_name_a_nested_field_by_its_dotted_path() {
        // As a Parquet struct's field: `meta.text` is field `text` of the object in `meta`,
        // unless a key is literally `meta.text`.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nested.jsonl");
        fs::write(
            &path,
            "{\"meta\": {\"text\": \"inner\", \"n\": 1}}\n\
             {\"meta.text\": \"dotted key\", \"meta\": {\"text\": \"not this\"}}\n\
             {\"meta\": {\"deeper\": {\"text\": \"deep\"}}, \"x\": 2}\n",
        )
        .unwrap();
        let m = message(&path, "meta.text");
        assert!(
            m.contains("line 3: no field \"meta.text\" (the record has: meta, x)"),
            "{m}"
        );
        fs::write(
            &path,
            "{\"meta\": {\"text\": \"inner\", \"n\": 1}}\n\
             {\"meta.text\": \"dotted key\", \"meta\": {\"text\": \"not this\"}}\n",
        )
        .unwrap();
        assert_eq!(read(&path, "meta.text").unwrap(), ["inner", "dotted key"]);
        let m = message(&path, "meta.n");
        assert!(
            m.contains("line 1: field \"meta.n\" is a number, not a string"),
            "{m}"
        );
        let m = message(&path, "meta.text.more");
        assert!(m.contains("line 1: no field \"meta.text.more\""), "{m}");
    }

    #[test]
    fn parquet_errors_name_the_file_and_the_problem() {
        let dir = fixtures();
        let snappy = dir.join("snappy.parquet");
        let m = message(&snappy, "content");
        assert!(m.contains("snappy.parquet"), "{m}");
        assert!(
            m.contains(
                "no column \"content\" (the file has: id, text, meta.source, meta.score, \
                 tags.list.element); --text-field"
            ),
            "{m}"
        );
        let m = message(&snappy, "id");
        assert!(m.contains("column \"id\" holds INT64, not strings"), "{m}");
        let m = message(&snappy, "tags.list.element");
        assert!(m.contains("is a list"), "{m}");
        let m = message(&dir.join("null.parquet"), "text");
        assert!(
            m.contains("null.parquet") && m.contains("row 3: column \"text\" is null"),
            "{m}"
        );

        let tmp = tempfile::tempdir().unwrap();
        let bytes = fs::read(&snappy).unwrap();
        let cut = tmp.path().join("cut.parquet");
        fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let m = message(&cut, "text");
        assert!(
            m.contains("cut.parquet") && m.contains("cannot read as Parquet"),
            "{m}"
        );
        // A file whose footer is whole but whose pages were overwritten (its one column's).
        let mut damaged = fs::read(dir.join("zstd-v2.parquet")).unwrap();
        damaged[4..2004].fill(0xA5);
        let bad = tmp.path().join("damaged.parquet");
        fs::write(&bad, damaged).unwrap();
        let m = message(&bad, "text");
        assert!(
            m.contains("damaged.parquet") && m.contains("cannot read as Parquet"),
            "{m}"
        );
        // Found by fuzzing (fuzz/fuzz_targets/documents.rs): a damaged dictionary page on
        // which the parquet crate's decoder panics; the panic is caught and reported.
        let m = message(&dir.join("damaged-dictionary.parquet"), "text");
        assert!(
            m.contains("damaged-dictionary.parquet: cannot read as Parquet: the file is damaged"),
            "{m}"
        );
        let text = tmp.path().join("text.parquet");
        fs::write(&text, "not parquet at all\n").unwrap();
        let m = message(&text, "text");
        assert!(
            m.contains("text.parquet") && m.contains("cannot read as Parquet"),
            "{m}"
        );
        let gz = tmp.path().join("docs.parquet.gz");
        fs::write(&gz, &bytes).unwrap();
        let m = message(&gz, "text");
        assert!(
            m.contains("docs.parquet.gz") && m.contains("decompress it first"),
            "{m}"
        );
    }
}
