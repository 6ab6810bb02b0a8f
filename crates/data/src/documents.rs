//! The documents of a corpus file, read as a stream: text in the fortune format, JSON Lines,
//! either compressed (gzip, zstd). [`crate::prepare`] reads every file twice through here (counting, then
//! encoding), so a corpus never has to fit in memory as text.
//!
//! The file's name decides its format. A name ending in `.gz` or `.zst` is decompressed (gzip
//! or zstd, any number of members or frames) and the rest of the name decides:
//! - `.jsonl`, `.ndjson`: JSON Lines, one record per line, each record one document (its
//!   string field `text_field`); blank lines are skipped.
//! - `.json`: JSON Lines, or one array of such records (`datasets`' `to_json` writes either,
//!   with and without `lines`); read whole.
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
    let mut emit = |doc: String| match doc.trim().is_empty() {
        true => Ok(()),
        false => f(doc),
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
    match map.remove(field) {
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
