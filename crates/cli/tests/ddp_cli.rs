//! Data-parallel `lantern train` through the binary, on two real MPI processes (started by
//! `lantern launch --backend mpi` or by `mpirun` itself): the same weights as one process with
//! the whole batch, exact resume, resume with another world size, a stop asked of one rank or
//! of the launcher, a killed rank ending the job, and a killed rank restarted by
//! `--max-restarts` with the run ending exactly as an uninterrupted one.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The config and `--set` overrides of one run; steps are short so the tests stay small.
fn train_args(cfg: &Path, sets: &[&str], extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["train".into(), "--config".into(), s(cfg), "--quiet".into()];
    for kv in sets {
        a.push("--set".into());
        a.push(kv.to_string());
    }
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// `lantern launch --nproc-per-node 2 --backend mpi -- <args>`, which must succeed.
fn launch2(args: &[String]) -> String {
    let mut all: Vec<&str> = vec!["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"];
    all.extend(args.iter().map(String::as_str));
    lantern_ok(&all)
}

/// Two ranks started by `mpirun` directly (each reads Open MPI's variables), as on a cluster.
fn mpirun2(args: &[String]) -> Output {
    let mut cmd = Command::new("mpirun");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--allow-run-as-root");
    }
    cmd.args(["--oversubscribe", "--bind-to", "none", "-np", "2"])
        .args(["-x", "LANTERN_COMM_BACKEND=mpi"])
        .arg(env!("CARGO_BIN_EXE_lantern"))
        .args(args);
    cmd.output()
        .expect("mpirun runs (scripts/test.sh installs openmpi-bin)")
}

fn final_weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    read_f32_tensors(&newest_checkpoint(run).join("model.safetensors"))
}

/// Every tensor within `tol` relative L2 distance. The key part of `attn.c_attn.bias` is left
/// out: its true gradient is exactly zero (softmax ignores a constant added to all of a query's
/// scores), so it holds only rounding noise, which depends on the summation order and which
/// Adam scales up to steps of ~lr (as in train_cli's accumulation test).
fn assert_close(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: different tensors");
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb, "{what}");
        let c = va.len() / 3;
        let parts = if na.ends_with("attn.c_attn.bias") {
            [0..c, 2 * c..va.len()]
        } else {
            [0..va.len(), 0..0]
        };
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            let r = rel_l2(&va[p.clone()], &vb[p]);
            assert!(r <= tol, "{what}: {na}: relative difference {r}");
        }
    }
}

fn equivalence(accum: usize, two_ranks: fn(&[String]) -> String) {
    let tmp = tempfile::tempdir().unwrap();
    let acc = format!("train.grad_accum={accum}");
    // The multiple-choice evaluation too: each rank scores its share of the examples.
    let choices = format!("data.eval_choices={}", s(&short_choices(tmp.path())));
    let common_sets = [
        "train.max_steps=10",
        "model.dropout=0.0",
        acc.as_str(),
        choices.as_str(),
    ];
    let two = tmp.path().join("two");
    let cfg = tiny_config(tmp.path(), &two, "");
    let mut sets = common_sets.to_vec();
    sets.push("train.batch_size=2");
    let out = two_ranks(&train_args(&cfg, &sets, &[]));
    // Rank 0 alone reports.
    assert_eq!(out.matches("trained 10 steps").count(), 1, "{out}");

    let one = tmp.path().join("one");
    let cfg = tiny_config(tmp.path(), &one, "");
    let mut sets = common_sets.to_vec();
    sets.push("train.batch_size=4");
    lantern_ok(
        &train_args(&cfg, &sets, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );

    assert_close(
        &final_weights(&two),
        &final_weights(&one),
        1e-5,
        &format!("2 ranks x batch 2 vs 1 x batch 4, grad_accum {accum}"),
    );
    // One record per step (only rank 0 logs), the global loss and batch.
    let (r2, r1) = (metrics_of(&two, "train"), metrics_of(&one, "train"));
    assert_eq!(r2.len(), 10);
    for (a, b) in r2.iter().zip(&r1) {
        let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((la - lb).abs() <= 1e-5 * lb.abs(), "loss {la} vs {lb}");
        assert_eq!(a["global_batch"], 4 * accum);
        assert_eq!(a["world_size"], 2);
        assert_eq!(a["tokens_seen"], b["tokens_seen"]);
    }
    let (v2, v1) = (metrics_of(&two, "val"), metrics_of(&one, "val"));
    assert_eq!(v2.len(), v1.len());
    for (a, b) in v2.iter().zip(&v1) {
        for key in ["choice_acc", "choice_acc_norm", "choice_acc_per_token"] {
            assert!(a[key].is_number(), "{key}: {a}");
            assert_eq!(a[key], b[key], "{key} of 2 ranks vs 1");
        }
    }
}

#[test]
fn two_ranks_match_one_process_with_twice_the_batch() {
    equivalence(1, launch2);
}

#[test]
fn two_ranks_match_one_process_with_accumulation_under_plain_mpirun() {
    equivalence(2, |args| {
        let out = mpirun2(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "mpirun failed\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    });
}

#[test]
fn two_rank_resume_is_byte_identical() {
    // Dropout on: the masks of each rank must be reproduced after the restart too.
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "train.max_steps=10",
        "train.batch_size=2",
        "train.grad_accum=2",
        "checkpoint.every=5",
    ];
    let straight = tmp.path().join("straight");
    let cfg = tiny_config(tmp.path(), &straight, "");
    launch2(&train_args(&cfg, &sets, &[]));

    let split = tmp.path().join("split");
    let cfg = tiny_config(tmp.path(), &split, "");
    launch2(&train_args(&cfg, &sets, &["--stop-after", "5"]));
    assert!(newest_checkpoint(&split).ends_with("step-00000005"));
    launch2(&train_args(&cfg, &sets, &["--resume"]));

    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(newest_checkpoint(&straight).join(file)).unwrap();
        let b = std::fs::read(newest_checkpoint(&split).join(file)).unwrap();
        assert!(newest_checkpoint(&split).ends_with("step-00000010"));
        assert!(a == b, "{file} of the resumed 2-rank run differs");
    }
}

#[test]
fn a_two_rank_checkpoint_continues_on_one_process_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let base = [
        "train.max_steps=10",
        "model.dropout=0.0",
        "checkpoint.every=5",
    ];
    let with = |b: &'static str| {
        let mut v = base.to_vec();
        v.push(b);
        v
    };
    let straight = tmp.path().join("straight");
    let cfg = tiny_config(tmp.path(), &straight, "");
    launch2(&train_args(&cfg, &with("train.batch_size=2"), &[]));

    let split = tmp.path().join("split");
    let cfg = tiny_config(tmp.path(), &split, "");
    launch2(&train_args(
        &cfg,
        &with("train.batch_size=2"),
        &["--stop-after", "5"],
    ));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(newest_checkpoint(&split).join("trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["world_size"], 2);
    assert_eq!(state["global_batch"], 4);
    assert_eq!(state["samples_seen"], 20);

    // One process with the per-rank batch would halve the global batch: refused, saying what
    // to set.
    let args = train_args(&cfg, &with("train.batch_size=2"), &["--resume"]);
    let err = lantern_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("trainer_state.json")
            && err.contains("global batch of 4")
            && err.contains("train.batch_size=4 with train.grad_accum=1"),
        "{err}"
    );

    let args = train_args(&cfg, &with("train.batch_size=4"), &["--resume"]);
    lantern_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(newest_checkpoint(&split).ends_with("step-00000010"));
    assert_close(
        &final_weights(&split),
        &final_weights(&straight),
        1e-5,
        "2 ranks then 1 process vs 2 ranks throughout",
    );
}

/// A launcher that is stopped (SIGTERM, which it forwards to its ranks) if a test fails
/// before it ended, so no training job outlives the test.
struct Job(Option<std::process::Child>);

impl Job {
    fn wait(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            send_signal(&c, libc::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// Starts a long 2-rank run under the launcher (`launch_extra`: more launcher flags) and waits
/// until it has logged step 2. Returns the job, its run folder and its config (which names the
/// ranks' processes).
fn start_long_run(tmp: &Path, name: &str, launch_extra: &[&str]) -> (Job, PathBuf, PathBuf) {
    let run = tmp.join(name);
    let cfg = tiny_config(tmp, &run, "");
    let args = train_args(
        &cfg,
        &[
            "train.max_steps=100000",
            "train.batch_size=2",
            "checkpoint.every=100000",
        ],
        &[],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args([
            "launch",
            "--nproc-per-node",
            "2",
            "--backend",
            "mpi",
            "--comm-timeout",
            "5",
        ])
        .args(launch_extra)
        .arg("--")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&mut child, &run, 2, Duration::from_secs(60));
    (Job(Some(child)), run, cfg)
}

#[test]
fn killing_one_rank_ends_the_job_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (job, _run, cfg) = start_long_run(tmp.path(), "killed", &[]);
    let pid = rank_pid("train", &cfg, 1).expect("rank 1's trainer is running");
    let t0 = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; `pid` is a live trainer of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = job.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1 failed (killed by signal 9)"),
        "{stderr}"
    );
    // Within the collective timeout (5 s) and mpirun's clean-up, far from the 100000 steps.
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    // Rank 0 was stopped with the job (allow its supervisor a moment to reap it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while rank_pid("train", &cfg, 0).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rank_pid("train", &cfg, 0).is_none(), "rank 0 survived");
}

#[test]
fn a_stop_asked_of_one_rank_stops_both_after_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    // Restarts allowed, yet a requested stop is not a failure to restart from.
    let (job, run, cfg) = start_long_run(tmp.path(), "stopped", &["--max-restarts", "2"]);
    let pid = rank_pid("train", &cfg, 1).expect("rank 1's trainer is running");
    // SAFETY: kill has no memory-safety preconditions; `pid` is a live trainer of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = job.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Both ranks exit with the preemption status, and so does the launcher, saying why.
    assert!(stderr.contains("exit status 75"), "{stderr}");
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(!stderr.contains("restarting every rank"), "{stderr}");
    // Rank 0 was not signalled, yet it wrote the checkpoint of the last logged step: the ranks
    // agreed on where to stop.
    let last = last_train_step(&run);
    assert!(last >= 2);
    assert!(
        newest_checkpoint(&run).ends_with(format!("step-{last:08}")),
        "{:?} vs step {last}",
        newest_checkpoint(&run)
    );
}

#[test]
fn a_stop_asked_of_the_launcher_reaches_the_trainers_through_mpirun() {
    // mpirun, signalled itself, kills its processes at once; the launcher signals the ranks'
    // supervisors instead, so every trainer finishes its step and the checkpoint is written.
    let tmp = tempfile::tempdir().unwrap();
    let (mut job, run, _cfg) = start_long_run(tmp.path(), "launcher-stopped", &[]);
    send_signal(job.0.as_ref().unwrap(), libc::SIGTERM);
    let out = job.0.take().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("every rank stopped after writing a checkpoint"),
        "{stderr}"
    );
    let last = last_train_step(&run);
    assert!(
        newest_checkpoint(&run).ends_with(format!("step-{last:08}")),
        "{:?} vs step {last}",
        newest_checkpoint(&run)
    );
}

#[test]
fn a_killed_rank_is_restarted_and_the_run_ends_as_if_never_interrupted() {
    // Dropout on, so that the restarted ranks must also redraw the same masks.
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "train.max_steps=300",
        "train.batch_size=2",
        "train.log_every=1",
        "checkpoint.every=10",
    ];
    let straight = tmp.path().join("straight");
    let cfg = tiny_config(tmp.path(), &straight, "");
    launch2(&train_args(&cfg, &sets, &[]));

    let run = tmp.path().join("restarted");
    let cfg = tiny_config(tmp.path(), &run, "");
    // `--resume` from the first start on: with no checkpoint yet it begins a new run.
    let child = Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(["launch", "--nproc-per-node", "2", "--backend", "mpi"])
        .args(["--comm-timeout", "5", "--max-restarts", "1", "--"])
        .args(train_args(&cfg, &sets, &["--resume"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut job = Job(Some(child));
    wait_for_step(job.0.as_mut().unwrap(), &run, 25, Duration::from_secs(60));
    let pid = rank_pid("train", &cfg, 1).expect("rank 1's trainer is running");
    // SAFETY: kill has no memory-safety preconditions; `pid` is a live trainer of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = job.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "rank 1 failed (killed by signal 9); mpirun stopped the other ranks; \
             restarting every rank (restart 1 of 1)"
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("restarting every rank").count(),
        1,
        "{stderr}"
    );

    // One record per step in the log: the steps the killed start ran past its last checkpoint
    // were dropped when the restart resumed.
    let steps: Vec<u64> = metrics_of(&run, "train")
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=300).collect::<Vec<u64>>());
    for file in ["model.safetensors", "optimizer.safetensors"] {
        assert!(newest_checkpoint(&run).ends_with("step-00000300"));
        let a = std::fs::read(newest_checkpoint(&straight).join(file)).unwrap();
        let b = std::fs::read(newest_checkpoint(&run).join(file)).unwrap();
        assert!(a == b, "{file} of the restarted run differs");
    }
}
