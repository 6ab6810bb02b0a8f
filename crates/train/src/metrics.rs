//! `metrics.jsonl`: one JSON object per line — a `"train"` record per optimizer step and a
//! `"val"` record per evaluation — readable with `jq` or pandas (`read_json(lines=True)`).

use crate::{error::io, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens the log for appending. On resume, records past `resume_step` (written by the run
    /// that was interrupted after its last checkpoint) are dropped, so the log describes exactly
    /// the run that continues.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        match resume_step {
            Some(step) if path.exists() => {
                let kept: Vec<String> = read_records(path)?
                    .into_iter()
                    .filter(|r| {
                        r.get("step")
                            .and_then(Value::as_u64)
                            .is_some_and(|s| s <= step)
                    })
                    .map(|r| r.to_string())
                    .collect();
                let mut text = kept.join("\n");
                if !text.is_empty() {
                    text.push('\n');
                }
                std::fs::write(path, text).map_err(io(path))?;
            }
            Some(_) => {}
            None => {
                // A fresh run starts a fresh log.
                File::create(path).map_err(io(path))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(io(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every record of a metrics file; lines that do not parse (a torn last line) are skipped.
pub fn read_records(path: &Path) -> Result<Vec<Value>> {
    let f = File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io(path))?;
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            out.push(v);
        }
    }
    Ok(out)
}

/// (step, value) pairs of records of `kind` holding `key`.
pub fn series(records: &[Value], kind: &str, key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some(kind))
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
        .collect()
}
