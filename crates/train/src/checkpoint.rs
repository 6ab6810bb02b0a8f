//! Checkpoint folders: `<run>/checkpoints/step-00000020/{model.safetensors,
//! optimizer.safetensors, trainer_state.json}`.
//!
//! A checkpoint is written into a hidden temporary folder beside the others, every file is
//! fsynced, and the folder is renamed into place; a crash at any moment leaves either the old
//! set of checkpoints or the new one, never a half-written folder under a checkpoint's name.
//! Which checkpoints to delete is a pure function ([`to_delete`]), tested without I/O.

use crate::config::RunConfig;
use crate::{error::io, Error, Result};
use lantern_kernels::RngState;
use lantern_models::gpt::GptConfig;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
pub const STATE_VERSION: u32 = 1;
const TMP_PREFIX: &str = ".tmp-";

/// Everything besides tensors needed to continue a run exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    pub format_version: u32,
    /// Optimizer steps completed.
    pub step: u64,
    /// The data position: global index of the next training sample.
    pub samples_seen: u64,
    pub tokens_seen: u64,
    /// Generator for step-level randomness (dropout); its stream for step s is derived from
    /// `(seed, s)`, and `counter` records the step it was saved at.
    pub rng: RngState,
    pub optimizer: OptimizerState,
    pub model: GptConfig,
    pub config: RunConfig,
    pub last_val_loss: Option<f64>,
    /// fp16 runs: the dynamic loss scaler.
    #[serde(default)]
    pub scaler: Option<crate::precision::LossScaler>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerState {
    /// `train.optimizer` of the run that wrote it: adamw, sgd, adagrad or rmsprop.
    pub kind: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// Parameters that were updated fewer than `step` times (they had no gradient at some
    /// step), with their own count; empty in the usual case where every parameter is updated.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub param_steps: std::collections::BTreeMap<String, u64>,
}

pub fn dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn parse_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

/// The steps to delete so that only the newest `keep` remain (pure; order of input free).
pub fn to_delete(steps: &[u64], keep: usize) -> Vec<u64> {
    let mut s = steps.to_vec();
    s.sort_unstable();
    s.dedup();
    let n = s.len().saturating_sub(keep);
    s.truncate(n);
    s
}

/// Complete checkpoints under `root` (folders named `step-N` holding a state file), by step.
pub fn list_complete(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = parse_step(&name) {
            let p = entry.path();
            if p.join(STATE_FILE).is_file() && p.join(MODEL_FILE).is_file() {
                out.push((step, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes folders left by interrupted writes; returns what it removed.
pub fn clean_incomplete(root: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if !root.exists() {
        return Ok(removed);
    }
    for entry in fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let p = entry.path();
            fs::remove_dir_all(&p).map_err(io(&p))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directory fsync makes the rename durable; not supported on every platform/filesystem.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `files` (name, bytes) as checkpoint `step` under `root`, atomically. The state file
/// should be last in `files`. Returns the checkpoint folder.
pub fn save(root: &Path, step: u64, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(io(root))?;
    let final_dir = root.join(dir_name(step));
    let tmp = root.join(format!(
        "{TMP_PREFIX}{}-{}",
        dir_name(step),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        for (name, bytes) in files {
            write_synced(&tmp.join(name), bytes)?;
        }
        sync_dir(&tmp)?;
        if final_dir.exists() {
            // Re-saving a step (a resumed run that stops at the same step): move the old one
            // aside first so that a crash in between still leaves one complete copy.
            let old = root.join(format!("{TMP_PREFIX}old-{}", dir_name(step)));
            fs::rename(&final_dir, &old).map_err(io(&final_dir))?;
            fs::rename(&tmp, &final_dir).map_err(io(&tmp))?;
            fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            fs::rename(&tmp, &final_dir).map_err(io(&tmp))?;
        }
        sync_dir(root)
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(final_dir)
}

/// Deletes all but the newest `keep` complete checkpoints.
pub fn prune(root: &Path, keep: usize) -> Result<()> {
    let all = list_complete(root)?;
    let steps: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    for s in to_delete(&steps, keep) {
        let p = root.join(dir_name(s));
        fs::remove_dir_all(&p).map_err(io(&p))?;
    }
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        msg: format!("invalid JSON: {e}"),
    })?;
    let version = v.get("format_version").and_then(|x| x.as_u64());
    if version != Some(STATE_VERSION as u64) {
        return Err(Error::Checkpoint {
            path,
            msg: format!(
                "trainer-state format_version {version:?}, this build reads {STATE_VERSION}"
            ),
        });
    }
    serde_json::from_value(v).map_err(|e| Error::Checkpoint {
        path,
        msg: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        assert_eq!(to_delete(&[30, 10, 20, 40], 2), vec![10, 20]);
        assert_eq!(to_delete(&[10], 3), Vec::<u64>::new());
        assert_eq!(to_delete(&[], 1), Vec::<u64>::new());
        assert_eq!(to_delete(&[5, 5, 6], 1), vec![5]);
    }

    #[test]
    fn save_is_atomic_and_listing_skips_incomplete() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        save(
            root,
            10,
            &[(MODEL_FILE, b"m".to_vec()), (STATE_FILE, b"{}".to_vec())],
        )
        .unwrap();
        // A leftover of a killed writer and a folder without a state file are not checkpoints.
        fs::create_dir_all(root.join(".tmp-step-00000020-1")).unwrap();
        fs::create_dir_all(root.join("step-00000030")).unwrap();
        let steps: Vec<u64> = list_complete(root)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![10]);
        assert_eq!(clean_incomplete(root).unwrap().len(), 1);
        // Re-saving the same step replaces it.
        save(
            root,
            10,
            &[(MODEL_FILE, b"n".to_vec()), (STATE_FILE, b"{}".to_vec())],
        )
        .unwrap();
        assert_eq!(
            fs::read(root.join("step-00000010").join(MODEL_FILE)).unwrap(),
            b"n"
        );
        save(
            root,
            20,
            &[(MODEL_FILE, b"m".to_vec()), (STATE_FILE, b"{}".to_vec())],
        )
        .unwrap();
        prune(root, 1).unwrap();
        let steps: Vec<u64> = list_complete(root)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![20]);
    }
}
