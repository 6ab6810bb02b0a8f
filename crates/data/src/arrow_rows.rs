//! `datasets`' `save_to_disk` folders: a `state.json` that lists the split's Arrow files in
//! order (`_data_files`), a `dataset_info.json` with its features, and the Arrow files, each an
//! Arrow IPC stream of record batches. `load_from_disk` reads them as one table; so do the
//! records readers ([`crate::records`], row r as the JSON object `to_json` writes for it) and
//! `lantern prepare` (one column's strings). A `DatasetDict` folder holds one such folder per
//! split, named in its `dataset_dict.json`; a reader takes one split's folder.
//!
//! Read with the `arrow-ipc` crate a record batch at a time; like the Parquet readers, a call
//! into it that panics on a damaged file is caught and reported as an error naming the file.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::error::{Error, Result};
use crate::records::{write_f32, write_json};

/// The Arrow files of a `save_to_disk` folder in the order its `state.json` lists them, or an
/// `.arrow` file itself. A `DatasetDict` folder is an error that names its splits.
pub(crate) fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let dict = path.join("dataset_dict.json");
    if dict.is_file() {
        let splits = read_json(&dict)?["splits"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(Error::format(
            path,
            format!(
                "a DatasetDict saved by `datasets` (splits: {splits}): name one split's folder, \
                 such as {}",
                path.join(splits.split(", ").next().unwrap_or("train"))
                    .display()
            ),
        ));
    }
    let state_path = path.join("state.json");
    let state = read_json(&state_path)?;
    let listed = state["_data_files"].as_array().ok_or_else(|| {
        Error::format(
            &state_path,
            "no \"_data_files\" list (not a save_to_disk state)",
        )
    })?;
    let mut out = Vec::with_capacity(listed.len());
    for f in listed {
        let name = f["filename"].as_str().ok_or_else(|| {
            Error::format(
                &state_path,
                format!("a data file without a \"filename\": {f}"),
            )
        })?;
        // The files sit beside state.json; a name that leaves the folder is not one of them.
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::format(
                &state_path,
                format!("data file {name:?} is not a file name in the folder"),
            ));
        }
        let file = path.join(name);
        if !file.is_file() {
            return Err(Error::MissingInput(file));
        }
        out.push(file);
    }
    if out.is_empty() {
        return Err(Error::format(&state_path, "\"_data_files\" lists no file"));
    }
    Ok(out)
}

/// The features of a `save_to_disk` folder (its `dataset_info.json`'s `features`), as
/// `datasets` also writes them into Parquet metadata; `None` for an `.arrow` file alone or an
/// info file without them.
pub(crate) fn features(path: &Path) -> Option<serde_json::Value> {
    let info = read_json(&path.join("dataset_info.json")).ok()?;
    Some(info.get("features")?.clone())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingInput(path.to_path_buf()),
        _ => Error::io(path, e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

/// Calls `f` with each record batch of the Arrow IPC stream `file`, in order. A stream
/// without columns, or a batch that claims more rows than the file could hold, is an error:
/// a batch's row count is taken from its header, and rows of no data (no columns, or only
/// null-typed ones) would otherwise cost nothing in the file and unbounded memory here.
pub(crate) fn for_each_batch(
    file: &Path,
    f: &mut dyn FnMut(&RecordBatch, Limit) -> Result<()>,
) -> Result<()> {
    let reader = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let size = reader.metadata().map_err(|e| Error::io(file, e))?.len();
    let reader = std::io::BufReader::new(reader);
    let mut stream = arrow_call(file, || {
        arrow_ipc::reader::StreamReader::try_new(reader, None)
    })?;
    if stream.schema().fields().is_empty() {
        return Err(Error::format(file, "an Arrow stream without columns"));
    }
    // Any column but a null-typed one spends at least a bit a row (a boolean without nulls).
    let most = size.saturating_mul(8).saturating_add(64);
    let limit = Limit { file, most };
    while let Some(batch) = arrow_call(file, || stream.next().transpose())? {
        if batch.num_rows() as u64 > most {
            return Err(Error::format(
                file,
                format!(
                    "a record batch claims {} rows, more than a file of {size} bytes holds",
                    batch.num_rows()
                ),
            ));
        }
        f(&batch, limit)?;
    }
    Ok(())
}

/// The most rows a batch, or items a list, of an Arrow file can hold: every value but a
/// null-typed one spends at least a bit of the file. A list of null-typed items longer than
/// that is refused (it would cost nothing in the file and unbounded text here).
#[derive(Clone, Copy)]
pub(crate) struct Limit<'a> {
    file: &'a Path,
    most: u64,
}

impl Limit<'_> {
    fn check_list(&self, len: usize) -> Result<()> {
        match len as u64 > self.most {
            true => Err(Error::format(
                self.file,
                format!("a list of {len} items, more than the file holds"),
            )),
            false => Ok(()),
        }
    }
}

/// A call into the arrow crates, its error or panic made an error naming `path` (as
/// [`crate::documents::parquet_call`] does for the parquet crate).
fn arrow_call<T>(
    path: &Path,
    f: impl FnOnce() -> std::result::Result<T, arrow_schema::ArrowError>,
) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::format(
            path,
            format!("cannot read as an Arrow stream: {e}"),
        )),
        Err(_) => Err(Error::format(
            path,
            "cannot read as an Arrow stream: the file is damaged",
        )),
    }
}

/// Row `i` of `batch` as a JSON object, its fields in column order (as `to_json` writes it).
pub(crate) fn write_row(
    out: &mut String,
    batch: &RecordBatch,
    i: usize,
    limit: Limit,
) -> Result<()> {
    out.push('{');
    for (k, field) in batch.schema().fields().iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        write_str(out, field.name());
        out.push(':');
        write_value(out, batch.column(k).as_ref(), i, limit)?;
    }
    out.push('}');
    Ok(())
}

/// Element `i` of `a` as JSON: strings, numbers (an f32 as its shortest decimal), booleans,
/// lists and structs; a null, and a type `datasets` does not write for text (binary, dates),
/// as `null`.
fn write_value(out: &mut String, a: &dyn Array, i: usize, limit: Limit) -> Result<()> {
    if a.is_null(i) {
        out.push_str("null");
        return Ok(());
    }
    let number = |out: &mut String, x: f64| match serde_json::Number::from_f64(x) {
        Some(n) => out.push_str(&n.to_string()),
        None => out.push_str("null"),
    };
    match a.data_type() {
        DataType::Boolean => out.push_str(if a.as_boolean().value(i) {
            "true"
        } else {
            "false"
        }),
        DataType::Int8 => out.push_str(&a.as_primitive::<Int8Type>().value(i).to_string()),
        DataType::Int16 => out.push_str(&a.as_primitive::<Int16Type>().value(i).to_string()),
        DataType::Int32 => out.push_str(&a.as_primitive::<Int32Type>().value(i).to_string()),
        DataType::Int64 => out.push_str(&a.as_primitive::<Int64Type>().value(i).to_string()),
        DataType::UInt8 => out.push_str(&a.as_primitive::<UInt8Type>().value(i).to_string()),
        DataType::UInt16 => out.push_str(&a.as_primitive::<UInt16Type>().value(i).to_string()),
        DataType::UInt32 => out.push_str(&a.as_primitive::<UInt32Type>().value(i).to_string()),
        DataType::UInt64 => out.push_str(&a.as_primitive::<UInt64Type>().value(i).to_string()),
        DataType::Float16 => number(out, a.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => write_f32(out, a.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => number(out, a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => write_str(out, a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => write_str(out, a.as_string::<i64>().value(i)),
        DataType::Utf8View => write_str(out, a.as_string_view().value(i)),
        DataType::List(_) => return write_list(out, a.as_list::<i32>().value(i).as_ref(), limit),
        DataType::LargeList(_) => {
            return write_list(out, a.as_list::<i64>().value(i).as_ref(), limit)
        }
        DataType::FixedSizeList(..) => {
            return write_list(out, a.as_fixed_size_list().value(i).as_ref(), limit)
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            out.push('{');
            for (k, field) in fields.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write_str(out, field.name());
                out.push(':');
                write_value(out, s.column(k).as_ref(), i, limit)?;
            }
            out.push('}');
        }
        _ => out.push_str("null"),
    }
    Ok(())
}

fn write_list(out: &mut String, items: &dyn Array, limit: Limit) -> Result<()> {
    limit.check_list(items.len())?;
    out.push('[');
    for j in 0..items.len() {
        if j > 0 {
            out.push(',');
        }
        write_value(out, items, j, limit)?;
    }
    out.push(']');
    Ok(())
}

fn write_str(out: &mut String, s: &str) {
    write_json(out, &serde_json::Value::String(s.to_string()));
}

/// The strings of column `field` of `batch` (a dotted path names a field inside a struct
/// column), for `lantern prepare`; `rows` is the index of the batch's first row in the
/// dataset, for messages. A missing column (the message lists the columns), another type and
/// a null are errors naming `file`.
pub(crate) fn strings(
    file: &Path,
    batch: &RecordBatch,
    field: &str,
    rows: usize,
    f: &mut dyn FnMut(String) -> Result<()>,
) -> Result<()> {
    let names = || {
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut column = batch.column_by_name(field).cloned();
    if column.is_none() {
        // `meta.source`: field `source` of struct column `meta`.
        let mut parts = field.split('.');
        column = parts
            .next()
            .and_then(|first| batch.column_by_name(first).cloned());
        for part in parts {
            column = column.and_then(|c| {
                let s = c.as_struct_opt()?;
                s.column_by_name(part).cloned()
            });
        }
    }
    let Some(column) = column else {
        return Err(Error::format(
            file,
            format!("no column \"{field}\" (columns: {})", names()),
        ));
    };
    let text = |i: usize| -> Option<&str> {
        match column.data_type() {
            DataType::Utf8 => Some(column.as_string::<i32>().value(i)),
            DataType::LargeUtf8 => Some(column.as_string::<i64>().value(i)),
            DataType::Utf8View => Some(column.as_string_view().value(i)),
            _ => None,
        }
    };
    for i in 0..column.len() {
        if column.is_null(i) {
            return Err(Error::format(
                file,
                format!("row {}: column \"{field}\" is null, not a string", rows + i),
            ));
        }
        let Some(s) = text(i) else {
            return Err(Error::format(
                file,
                format!(
                    "column \"{field}\" holds {}, not strings",
                    column.data_type()
                ),
            ));
        };
        f(s.to_string())?;
    }
    Ok(())
}
