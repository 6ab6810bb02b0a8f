//! `metrics.jsonl`: one JSON object per line — a `"train"` record per optimizer step and a
//! `"val"` record per evaluation — readable with `jq` or pandas (`read_json(lines=True)`).

use crate::tensorboard::EventWriter;
use crate::{error::io, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub struct MetricsLog {
    path: PathBuf,
    file: File,
    /// TensorBoard's copy of every record (`run.tensorboard`).
    tensorboard: Option<EventWriter>,
    /// The step of the last record with one (where a record without a step is plotted).
    last_step: u64,
}

impl MetricsLog {
    /// Opens the log for appending. On resume, records past `resume_step` (written by the run
    /// that was interrupted after its last checkpoint) are dropped, so the log describes exactly
    /// the run that continues.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        match resume_step {
            Some(step) if path.exists() => {
                // The kept lines are copied as they were, not re-serialised, so that a resumed
                // run's log is byte for byte the log of a run never interrupted.
                let text = std::fs::read_to_string(path).map_err(io(path))?;
                let mut kept = String::with_capacity(text.len());
                for line in text.lines() {
                    let at = serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|r| r.get("step").and_then(Value::as_u64));
                    if at.is_some_and(|s| s <= step) {
                        kept.push_str(line);
                        kept.push('\n');
                    }
                }
                std::fs::write(path, kept).map_err(io(path))?;
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
            tensorboard: None,
            last_step: resume_step.unwrap_or(0),
        })
    }

    /// A run folder's `metrics.jsonl` ([`MetricsLog::open`]), with TensorBoard event files in
    /// `<run_dir>/tensorboard` when `tensorboard` (the config's `run.tensorboard`).
    pub fn open_run(run_dir: &Path, resume_step: Option<u64>, tensorboard: bool) -> Result<Self> {
        let log = Self::open(&run_dir.join("metrics.jsonl"), resume_step)?;
        match tensorboard {
            true => log.with_tensorboard(&run_dir.join(crate::tensorboard::DIR), resume_step),
            false => Ok(log),
        }
    }

    /// Also writes every record to a new TensorBoard event file in `dir`
    /// ([`crate::tensorboard`]); `resume_step` as for [`MetricsLog::open`].
    pub fn with_tensorboard(mut self, dir: &Path, resume_step: Option<u64>) -> Result<Self> {
        self.tensorboard = Some(EventWriter::create(dir, resume_step)?);
        Ok(self)
    }

    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(io(&self.path))?;
        if let Some(step) = record.get("step").and_then(Value::as_u64) {
            self.last_step = step;
        }
        match self.tensorboard.as_mut() {
            Some(tb) => tb.record(record, self.last_step),
            None => Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_resumed_log_keeps_the_records_up_to_the_step_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        // 0.18985022456054299 is the shortest text of its f64; parsed without correct
        // rounding and printed again it would come back as 0.189850224560543.
        for step in 1..=3u64 {
            log.write(
                &json!({"kind": "train", "step": step, "grad_norm": 0.189_850_224_560_542_99}),
            )
            .unwrap();
        }
        drop(log);
        let before = std::fs::read_to_string(&path).unwrap();
        let mut log = MetricsLog::open(&path, Some(2)).unwrap();
        log.write(&json!({"kind": "train", "step": 3, "grad_norm": 0.189_850_224_560_542_99}))
            .unwrap();
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        // The values read back are the ones written.
        let v = read_records(&path).unwrap();
        assert_eq!(v[0]["grad_norm"].as_f64(), Some(0.189_850_224_560_542_99));
    }
}
