//! TensorBoard event files (`run.tensorboard = true`; transformers' `report_to="tensorboard"`):
//! every number of every metrics record, as a scalar tagged `<kind>/<key>` (`train/loss`,
//! `eval/accuracy`, ...) at the record's step, so that `tensorboard --logdir <run.dir>` plots a
//! run while it trains.
//!
//! The format is TensorFlow's: a file of records, each `u64` length, the masked CRC-32C of the
//! length, the data, the masked CRC-32C of the data; every record's data is an `Event` protocol
//! buffer (tensorflow/core/util/event.proto). The few fields written are encoded here by hand
//! rather than through a protobuf dependency:
//! `Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//! SessionLog session_log = 7; }`, `Summary { repeated Value value = 1; }`,
//! `Summary.Value { string tag = 1; float simple_value = 2; }`,
//! `SessionLog { SessionStatus status = 1; }` with `START = 1`.
//!
//! A resumed run writes a new file that starts with a `SessionLog` START at the step after the
//! one it resumes from: TensorBoard drops what earlier files logged from that step on (the steps
//! the interrupted run did after its last checkpoint), as `metrics.jsonl` drops them.

use crate::{error::io, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The folder of a run's event files.
pub const DIR: &str = "tensorboard";

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord framing.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// TFRecord's masked CRC: rotated and offset, so that a CRC of data holding CRCs stays strong.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Protocol-buffer encoding of the few field types an `Event` needs.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }
    pub fn int(out: &mut Vec<u8>, field: u32, v: u64) {
        key(out, field, 0);
        varint(out, v);
    }
    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(out, field, 1);
        out.extend(v.to_le_bytes());
    }
    pub fn float(out: &mut Vec<u8>, field: u32, v: f32) {
        key(out, field, 5);
        out.extend(v.to_le_bytes());
    }
    pub fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
        key(out, field, 2);
        varint(out, v.len() as u64);
        out.extend(v);
    }
}

/// One record of TFRecord framing around `data`.
fn framed(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend(len);
    out.extend(masked_crc(&len).to_le_bytes());
    out.extend(data);
    out.extend(masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An `Event` at `step`, with `body` (its other fields, already encoded) after the time.
fn event(step: u64, body: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(body.len() + 16);
    pb::double(&mut e, 1, now());
    pb::int(&mut e, 2, step);
    e.extend(body);
    e
}

/// One event file, written record by record and flushed after each write, so that a killed
/// run loses nothing it logged.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` (created if needed), named as TensorFlow names them. A
    /// resumed run passes the step it resumes from.
    pub fn create(dir: &Path, resume_step: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "localhost".into());
        let name = format!(
            "events.out.tfevents.{}.{host}.{}.lantern",
            now() as u64,
            std::process::id()
        );
        let path = dir.join(name);
        let file = BufWriter::new(File::create(&path).map_err(io(&path))?);
        let mut w = Self { path, file };
        let mut body = Vec::new();
        pb::bytes(&mut body, 3, b"brain.Event:2");
        w.write_event(&event(0, &body))?;
        if let Some(step) = resume_step {
            let mut log = Vec::new();
            pb::int(&mut log, 1, 1); // SessionLog.START
            let mut body = Vec::new();
            pb::bytes(&mut body, 7, &log);
            // TensorBoard purges the steps at and after a START's: those after the checkpoint.
            w.write_event(&event(step + 1, &body))?;
        }
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(&framed(data))
            .and_then(|()| self.file.flush())
            .map_err(io(&self.path))
    }

    /// Scalars `(tag, value)` at `step`, in one event.
    pub fn scalars(&mut self, step: u64, values: &[(String, f32)]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            pb::bytes(&mut value, 1, tag.as_bytes());
            pb::float(&mut value, 2, *v);
            pb::bytes(&mut summary, 1, &value);
        }
        let mut body = Vec::new();
        pb::bytes(&mut body, 5, &summary);
        self.write_event(&event(step, &body))
    }

    /// The scalars of one metrics record: every top-level number but `step` and `epoch`,
    /// tagged `<kind>/<key>`, and one level into objects (`eval/per_type/PER/f1`); records
    /// without a step (the end-of-run test) are logged at `fallback_step`.
    pub fn record(&mut self, record: &serde_json::Value, fallback_step: u64) -> Result<()> {
        let Some(obj) = record.as_object() else {
            return Ok(());
        };
        let kind = obj
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("metrics");
        let step = obj
            .get("step")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(fallback_step);
        let mut values = Vec::new();
        for (key, v) in obj {
            if key == "step" || key == "epoch" {
                continue;
            }
            match v {
                serde_json::Value::Number(n) => {
                    values.extend(n.as_f64().map(|x| (format!("{kind}/{key}"), x as f32)));
                }
                serde_json::Value::Object(inner) => {
                    for (k2, v2) in inner {
                        if let Some(x) = v2.as_f64() {
                            values.push((format!("{kind}/{key}/{k2}"), x as f32));
                        }
                        for (k3, v3) in v2.as_object().into_iter().flatten() {
                            if let Some(x) = v3.as_f64() {
                                values.push((format!("{kind}/{key}/{k2}/{k3}"), x as f32));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        self.scalars(step, &values)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Reads back the records of an event file, checking both CRCs of each.
    pub(crate) fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(len_bytes), "length CRC");
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data), "data CRC");
            out.push(data.to_vec());
            at += 16 + len;
        }
        out
    }

    /// A minimal protobuf reader: (field, wire type, value bytes or varint) in order.
    fn fields(mut b: &[u8]) -> Vec<(u32, u8, Vec<u8>, u64)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let k = varint(&mut b);
            let (field, wire) = ((k >> 3) as u32, (k & 7) as u8);
            let (bytes, v) = match wire {
                0 => (Vec::new(), varint(&mut b)),
                1 => {
                    let x = b[..8].to_vec();
                    b = &b[8..];
                    (x, 0)
                }
                5 => {
                    let x = b[..4].to_vec();
                    b = &b[4..];
                    (x, 0)
                }
                2 => {
                    let n = varint(&mut b) as usize;
                    let x = b[..n].to_vec();
                    b = &b[n..];
                    (x, 0)
                }
                w => panic!("wire type {w}"),
            };
            out.push((field, wire, bytes, v));
        }
        out
    }

    #[test]
    fn crc32c_is_castagnolis() {
        // The check value of CRC-32C (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn events_hold_the_version_a_resume_mark_and_tagged_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), Some(40)).unwrap();
        w.record(
            &json!({"kind": "eval", "step": 50, "epoch": 2, "f1": 0.75, "labels": ["a"],
                    "per_type": {"PER": {"f1": 0.5, "support": 3}}}),
            0,
        )
        .unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out.tfevents."));
        let recs = records(&std::fs::read(&path).unwrap());
        assert_eq!(recs.len(), 3);
        let version = fields(&recs[0]);
        assert_eq!(version[2].0, 3);
        assert_eq!(version[2].2, b"brain.Event:2");
        let resume = fields(&recs[1]);
        assert_eq!(
            (resume[1].0, resume[1].3),
            (2, 41),
            "after the resumed step"
        );
        assert_eq!(resume[2].0, 7, "Event.session_log");
        assert_eq!(fields(&resume[2].2)[0].3, 1, "SessionLog START");
        let scalars = fields(&recs[2]);
        assert_eq!(scalars[1].3, 50);
        let values: Vec<(String, f32)> = fields(&scalars[2].2)
            .iter()
            .map(|(_, _, v, _)| {
                let f = fields(v);
                (
                    String::from_utf8(f[0].2.clone()).unwrap(),
                    f32::from_le_bytes(f[1].2.clone().try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(
            values,
            [
                ("eval/f1".to_string(), 0.75),
                ("eval/per_type/PER/f1".to_string(), 0.5),
                ("eval/per_type/PER/support".to_string(), 3.0),
            ]
        );
    }
}
