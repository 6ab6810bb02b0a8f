//! Checkpoint folders: `<run>/checkpoints/step-00000020/{model.safetensors,
//! optimizer.safetensors, tokenizer.json, tokenizer_config.json, config.json,
//! trainer_state.json}` (`config.json` and `tokenizer_config.json` are transformers', so a
//! checkpoint is also a model folder).
//!
//! Write protocol ([`save`], then [`prune`]; [`commit`] does both):
//! 1. every file is written into a hidden temporary folder `.tmp-step-N-<pid>` beside the others;
//! 2. every file, then the folder, is fsynced;
//! 3. the folder is renamed to `step-N` (one atomic rename) and the parent folder fsynced;
//! 4. only then are checkpoints beyond `checkpoint.keep` deleted, oldest first, never the new one.
//!
//! A crash at any moment leaves the older checkpoints intact and at worst a `.tmp-` folder,
//! which listing ignores and [`clean_incomplete`] removes on `--resume`. The hidden env var
//! [`PAUSE_ENV`] stops the writer at each of these points so tests can kill it there.
//! Which checkpoints to delete is a pure function ([`to_delete`]), tested without I/O.

use crate::config::RunConfig;
use crate::{error::io, Error, Result};
use lantern_kernels::RngState;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
/// DPO with `data.sync_ref_model`: the moved reference's weights (HF names, f32), which a
/// resume continues from.
pub const REFERENCE_FILE: &str = "reference.safetensors";
pub const STATE_VERSION: u32 = 1;
const TMP_PREFIX: &str = ".tmp-";
/// A checkpoint moved aside while the same step is written again (see [`save`]).
const OLD_PREFIX: &str = ".tmp-old-";
/// The folder under the checkpoints root that holds the checkpoint of the lowest validation
/// loss (`checkpoint.save_best`; [`save_best`]). Listing and pruning skip it: it is not a
/// `step-N` folder.
pub const BEST_DIR: &str = "best";

/// Test hook: `LANTERN_TEST_PAUSE_IN_SAVE=<point>[@<step>]` makes the writer print
/// `LANTERN_PAUSED <point> step <N>` on stderr and sleep at that point of the protocol (of every
/// save, or only of step N), so a test can kill the process there. Points, in order:
/// [`PAUSE_POINTS`].
pub const PAUSE_ENV: &str = "LANTERN_TEST_PAUSE_IN_SAVE";
pub const PAUSE_POINTS: [&str; 4] = [
    "after-first-file",
    "before-fsync",
    "before-rename",
    "before-prune",
];

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
    /// The model trained: a GPT-2 or a BERT config (see [`crate::task::ModelConfig`]).
    pub model: crate::task::ModelConfig,
    pub config: RunConfig,
    pub last_val_loss: Option<f64>,
    /// fp16 runs: the dynamic loss scaler.
    #[serde(default)]
    pub scaler: Option<crate::precision::LossScaler>,
    /// Steps whose update was skipped for a non-finite loss or gradient (NaN guard and fp16
    /// loss scaler together), since the start of the run.
    #[serde(default)]
    pub skipped_steps: u64,
    /// NaN-guard skips in a row when the checkpoint was written, so that the
    /// `train.max_consecutive_skips` limit counts across a resume as in one process.
    #[serde(default)]
    pub consecutive_skips: u64,
    /// Ranks that trained the run (data parallel); 1 in checkpoints of single-process runs
    /// written before data-parallel training existed.
    #[serde(default = "one")]
    pub world_size: u64,
    /// Sequences per optimizer step over all ranks: batch_size × grad_accum × world_size.
    /// Absent in older checkpoints (see [`TrainerState::global_batch`]).
    #[serde(default)]
    pub global_batch: Option<u64>,
    /// The best value of `early_stopping.metric` (the lowest validation loss by default; the
    /// key keeps its first name) of the run's evaluations after a training step, and the
    /// step it was measured after: what `checkpoint.save_best` and early stopping compare
    /// each evaluation with.
    #[serde(default)]
    pub best_val_loss: Option<f64>,
    #[serde(default)]
    pub best_step: Option<u64>,
    /// Evaluations in a row that did not improve on it (early stopping's count), so that a
    /// resumed run stops where the uninterrupted one would.
    #[serde(default)]
    pub evals_without_improvement: u64,
    /// LoRA: [`crate::lora::Lora::base_fingerprint`] of the frozen pretrained model, which a
    /// resume must find again in `model.init_from` (the checkpoint holds the merged model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_base: Option<[f64; 2]>,
}

fn one() -> u64 {
    1
}

impl TrainerState {
    /// Sequences per optimizer step over all ranks; for checkpoints that predate the field,
    /// the single process's batch_size × grad_accum.
    pub fn global_batch(&self) -> u64 {
        self.global_batch.unwrap_or(
            (self.config.train.batch_size * self.config.train.grad_accum) as u64 * self.world_size,
        )
    }
}

/// Whether a checkpoint may be continued by `world_size` ranks with per-rank `batch_size` and
/// `grad_accum` (pure; the error says what to set). Another world size is fine as long as the
/// global batch is the same: the samples of a step are then the same global range (the data
/// position `samples_seen` is global), and the loss is normalised over the same token count.
pub fn check_world_change(
    st: &TrainerState,
    batch_size: usize,
    grad_accum: usize,
    world_size: usize,
) -> std::result::Result<(), String> {
    let (was, now) = (
        st.global_batch(),
        (batch_size * grad_accum * world_size) as u64,
    );
    if st.world_size == world_size as u64 || was == now {
        return Ok(());
    }
    let per_rank = was / world_size as u64;
    let hint = if was.is_multiple_of(world_size as u64) && per_rank > 0 {
        let mut options = Vec::new();
        for accum in 1..=per_rank {
            if per_rank.is_multiple_of(accum) {
                options.push(format!(
                    "train.batch_size={} with train.grad_accum={accum}",
                    per_rank / accum
                ));
            }
            if options.len() == 2 {
                break;
            }
        }
        format!("set {}", options.join(", or "))
    } else {
        format!(
            "{was} sequences do not split evenly over {world_size} ranks: resume with a world \
             size that divides {was}"
        )
    };
    Err(format!(
        "checkpoint was trained by {} rank(s) with a global batch of {was} sequences per step \
         (batch_size {} x grad_accum {} x world {}); this run has {now} (batch_size \
         {batch_size} x grad_accum {grad_accum} x world {world_size}). Resuming with another \
         world size needs the same global batch: {hint}",
        st.world_size, st.config.train.batch_size, st.config.train.grad_accum, st.world_size
    ))
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

/// Removes folders left by interrupted writes; returns what it removed. A complete checkpoint
/// that was moved aside to be rewritten (`.tmp-old-step-N`) is put back if the rewrite never
/// reached its rename, so no step is lost to a crash in between.
pub fn clean_incomplete(root: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if !root.exists() {
        return Ok(removed);
    }
    for entry in fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let p = entry.path();
        if let Some(orig) = name.strip_prefix(OLD_PREFIX) {
            let back = root.join(orig);
            if (parse_step(orig).is_some() || orig == BEST_DIR) && !back.exists() {
                fs::rename(&p, &back).map_err(io(&p))?;
                continue;
            }
        }
        if name.starts_with(TMP_PREFIX) {
            fs::remove_dir_all(&p).map_err(io(&p))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Sleeps forever at `point` if [`PAUSE_ENV`] asks for it (tests kill the process there).
fn pause_point(point: &str, step: u64) {
    let Ok(spec) = std::env::var(PAUSE_ENV) else {
        return;
    };
    let (want, at) = match spec.split_once('@') {
        Some((p, s)) => (p, s.parse::<u64>().ok()),
        None => (spec.as_str(), None),
    };
    if want == point && at.is_none_or(|s| s == step) {
        eprintln!("LANTERN_PAUSED {point} step {step}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directory fsync makes the rename durable; not supported on every platform/filesystem.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `files` (name, bytes) as checkpoint `step` under `root`, atomically (steps 1-3 of the
/// protocol in the module header). Returns the checkpoint folder. On failure the temporary
/// folder is removed, the error names the step and the file, and older checkpoints are intact.
pub fn save(root: &Path, step: u64, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    save_named(root, &dir_name(step), step, files)
}

/// Writes `files` of step `step` as the best checkpoint, `root/best`, with the same protocol
/// as [`save`]: the previous best stays whole until the new one replaces it in one rename.
pub fn save_best(root: &Path, step: u64, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    save_named(root, BEST_DIR, step, files)
}

fn save_named(root: &Path, name: &str, step: u64, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    save_inner(root, name, step, files).map_err(|e| Error::SaveFailed {
        step,
        root: root.to_path_buf(),
        source: Box::new(e),
    })
}

fn save_inner(root: &Path, name: &str, step: u64, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(io(root))?;
    let final_dir = root.join(name);
    let tmp = root.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        let mut handles = Vec::with_capacity(files.len());
        let mut dirs = vec![tmp.clone()];
        for (i, (name, bytes)) in files.iter().enumerate() {
            let path = tmp.join(name);
            // A file in a subfolder (`adapter/adapter_model.safetensors`): the folder too is
            // created inside the temporary folder, and synced with it.
            if let Some(parent) = path.parent().filter(|p| !dirs.iter().any(|d| d == p)) {
                fs::create_dir_all(parent).map_err(io(parent))?;
                dirs.push(parent.to_path_buf());
            }
            let mut f = fs::File::create(&path).map_err(io(&path))?;
            f.write_all(bytes).map_err(io(&path))?;
            handles.push((path, f));
            if i == 0 {
                pause_point(PAUSE_POINTS[0], step);
            }
        }
        pause_point(PAUSE_POINTS[1], step);
        for (path, f) in &handles {
            f.sync_all().map_err(io(path))?;
        }
        for d in dirs.iter().rev() {
            sync_dir(d)?;
        }
        pause_point(PAUSE_POINTS[2], step);
        if final_dir.exists() {
            // Re-saving a step (a resumed run saving the step it started from): move the old
            // one aside first; `clean_incomplete` puts it back if we crash before the rename.
            let old = root.join(format!("{OLD_PREFIX}{name}"));
            if old.exists() {
                fs::remove_dir_all(&old).map_err(io(&old))?;
            }
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

/// Deletes all but the newest `keep` complete checkpoints; `protect` (the one just written) is
/// never deleted, whatever else the folder holds.
pub fn prune(root: &Path, keep: usize, protect: u64) -> Result<()> {
    let all = list_complete(root)?;
    let steps: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    for s in to_delete(&steps, keep.max(1)) {
        if s == protect {
            continue;
        }
        let p = root.join(dir_name(s));
        fs::remove_dir_all(&p).map_err(io(&p))?;
    }
    Ok(())
}

/// The whole write protocol: [`save`], then [`prune`] once the new checkpoint is in place.
pub fn commit(root: &Path, step: u64, files: &[(&str, Vec<u8>)], keep: usize) -> Result<PathBuf> {
    let dir = save(root, step, files)?;
    pause_point(PAUSE_POINTS[3], step);
    prune(root, keep, step)?;
    Ok(dir)
}

pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(io(&path))?;
    parse_state(&bytes, &path)
}

/// Parses and validates trainer-state bytes (`path` is for messages): UTF-8 JSON, a supported
/// `format_version`, every field present with the right type, no unknown field.
pub fn parse_state(bytes: &[u8], path: &Path) -> Result<TrainerState> {
    let err = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| err(format!("not UTF-8 text ({e})")))?;
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let version = v.get("format_version").and_then(|x| x.as_u64());
    match version {
        Some(x) if x == STATE_VERSION as u64 => {}
        Some(x) if x > STATE_VERSION as u64 => {
            return Err(err(format!(
                "trainer-state format_version {x} was written by a newer lantern; this build \
                 reads version {STATE_VERSION}"
            )))
        }
        other => {
            return Err(err(format!(
                "trainer-state format_version {other:?}, this build reads {STATE_VERSION}"
            )))
        }
    }
    let st: TrainerState = serde_json::from_value(v).map_err(|e| err(e.to_string()))?;
    st.model.check(path)?;
    Ok(st)
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
        prune(root, 1, 20).unwrap();
        let steps: Vec<u64> = list_complete(root)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![20]);
    }

    #[test]
    fn a_checkpoint_moved_aside_is_restored_and_prune_spares_the_new_one() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let files = [(MODEL_FILE, b"m".to_vec()), (STATE_FILE, b"{}".to_vec())];
        save(root, 10, &files).unwrap();
        // A crash between moving step 10 aside and renaming its rewrite into place.
        fs::rename(
            root.join("step-00000010"),
            root.join(".tmp-old-step-00000010"),
        )
        .unwrap();
        fs::create_dir_all(root.join(".tmp-step-00000010-7")).unwrap();
        let removed = clean_incomplete(root).unwrap();
        assert_eq!(removed, vec![root.join(".tmp-step-00000010-7")]);
        assert_eq!(list_complete(root).unwrap().len(), 1);
        // A newer step already on disk does not make prune delete the one just written.
        save(root, 30, &files).unwrap();
        save(root, 20, &files).unwrap();
        prune(root, 1, 20).unwrap();
        let steps: Vec<u64> = list_complete(root).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![20, 30]);
    }

    #[test]
    fn a_failed_save_names_the_step_and_leaves_no_folder() {
        let d = tempfile::tempdir().unwrap();
        // A file that cannot be created: its name is the subfolder of the file before it.
        let files = [("sub/x", b"m".to_vec()), ("sub", b"m".to_vec())];
        let e = save(d.path(), 5, &files).unwrap_err().to_string();
        assert!(e.contains("step 5") && e.contains("sub"), "{e}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn files_in_a_subfolder_are_saved_with_the_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let files = [
            (MODEL_FILE, b"m".to_vec()),
            ("adapter/a.json", b"{}".to_vec()),
            ("adapter/b", b"b".to_vec()),
            (STATE_FILE, b"{}".to_vec()),
        ];
        let dir = save(d.path(), 7, &files).unwrap();
        assert_eq!(fs::read(dir.join("adapter/b")).unwrap(), b"b");
        assert_eq!(fs::read(dir.join("adapter/a.json")).unwrap(), b"{}");
        assert_eq!(list_complete(d.path()).unwrap().len(), 1);
    }

    #[test]
    fn the_best_checkpoint_is_replaced_whole_and_never_listed_or_pruned() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let files = |m: &[u8]| vec![(MODEL_FILE, m.to_vec()), (STATE_FILE, b"{}".to_vec())];
        save(root, 10, &files(b"a")).unwrap();
        let best = save_best(root, 10, &files(b"a")).unwrap();
        assert_eq!(best, root.join(BEST_DIR));
        save(root, 20, &files(b"b")).unwrap();
        save_best(root, 20, &files(b"b")).unwrap();
        assert_eq!(fs::read(best.join(MODEL_FILE)).unwrap(), b"b");
        let steps: Vec<u64> = list_complete(root).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(steps, vec![10, 20]);
        prune(root, 1, 20).unwrap();
        assert!(
            best.join(MODEL_FILE).is_file(),
            "pruning removed the best checkpoint"
        );
        // A writer killed between moving the old best aside and renaming the new one in:
        // the old best comes back, the half-written new one goes.
        fs::rename(&best, root.join(format!("{OLD_PREFIX}{BEST_DIR}"))).unwrap();
        fs::create_dir_all(root.join(format!("{TMP_PREFIX}{BEST_DIR}-7"))).unwrap();
        assert_eq!(clean_incomplete(root).unwrap().len(), 1);
        assert_eq!(fs::read(best.join(MODEL_FILE)).unwrap(), b"b");
    }

    #[test]
    fn state_parsing_rejects_future_versions_and_non_utf8() {
        let p = Path::new("ck/trainer_state.json");
        let e = parse_state(br#"{"format_version": 9}"#, p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trainer_state.json") && e.contains("newer"),
            "{e}"
        );
        let e = parse_state(b"\xff\xfe{}", p).unwrap_err().to_string();
        assert!(
            e.contains("trainer_state.json") && e.contains("UTF-8"),
            "{e}"
        );
        let e = parse_state(br#"{"format_version": 1}"#, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field"), "{e}");
    }

    fn state(batch_size: usize, grad_accum: usize, world_size: u64) -> TrainerState {
        let mut config = RunConfig::parse("[data]\ndir = \"d\"", "test", &[]).unwrap();
        config.train.batch_size = batch_size;
        config.train.grad_accum = grad_accum;
        TrainerState {
            format_version: STATE_VERSION,
            step: 10,
            samples_seen: 80,
            tokens_seen: 2560,
            rng: RngState {
                seed: 0,
                counter: 10,
            },
            optimizer: OptimizerState {
                kind: "adamw".into(),
                step: 10,
                param_steps: Default::default(),
            },
            model: crate::task::ModelConfig::Gpt(
                lantern_models::gpt::GptConfig::preset("gpt-tiny", 64).unwrap(),
            ),
            config,
            last_val_loss: None,
            scaler: None,
            skipped_steps: 0,
            consecutive_skips: 0,
            world_size,
            global_batch: Some(batch_size as u64 * grad_accum as u64 * world_size),
            best_val_loss: None,
            best_step: None,
            evals_without_improvement: 0,
            lora_base: None,
        }
    }

    #[test]
    fn another_world_size_needs_the_same_global_batch() {
        let st = state(4, 2, 2); // 16 sequences per step
        assert_eq!(check_world_change(&st, 8, 2, 1), Ok(()));
        assert_eq!(check_world_change(&st, 2, 2, 4), Ok(()));
        // The same world may change its batch (as a single process always could).
        assert_eq!(check_world_change(&st, 1, 1, 2), Ok(()));
        let e = check_world_change(&st, 4, 2, 1).unwrap_err();
        assert!(
            e.contains("global batch of 16") && e.contains("this run has 8"),
            "{e}"
        );
        assert!(
            e.contains("train.batch_size=16 with train.grad_accum=1")
                && e.contains("train.batch_size=8 with train.grad_accum=2"),
            "{e}"
        );
        let e = check_world_change(&st, 4, 1, 3).unwrap_err();
        assert!(e.contains("do not split evenly over 3 ranks"), "{e}");
        // Checkpoints from before the field: the config's batch of one process.
        let mut old = state(4, 2, 1);
        old.global_batch = None;
        assert_eq!(old.global_batch(), 8);
        assert_eq!(check_world_change(&old, 2, 2, 2), Ok(()));
    }
}
