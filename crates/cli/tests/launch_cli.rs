//! `lantern launch` through the binary: the variables each rank gets (both backends), a failing
//! rank stopping the job and being named, `--max-restarts`, SIGTERM reaching the ranks, and bad
//! arguments.
//! The ranks run the hidden `launch-probe` command, which prints what it sees.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `probe k=v k=v ...` lines, keyed by rank.
fn probes(stdout: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("probe "))
        .map(|l| {
            let kv: BTreeMap<String, String> = l
                .split(' ')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (kv["rank"].clone(), kv)
        })
        .collect()
}

#[test]
fn nccl_backend_ranks_get_torchrun_variables() {
    let out = lantern_ok(&[
        "launch",
        "--nproc-per-node",
        "2",
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--master-addr",
        "node0.example",
        "--master-port",
        "29611",
        "--backend",
        "nccl",
        "--comm-timeout",
        "42",
        "--",
        "launch-probe",
    ]);
    let p = probes(&out);
    assert_eq!(p.len(), 2, "{out}");
    for (rank, local) in [("2", "0"), ("3", "1")] {
        let v = &p[rank];
        assert_eq!(v["world"], "4");
        assert_eq!(v["local"], local);
        assert_eq!(v["local_world"], "2");
        assert_eq!(v["master"], "node0.example:29611");
        assert_eq!(v["backend"], "nccl");
        assert_eq!(v["timeout"], "42");
        // Started directly, not by mpirun.
        assert_eq!(v["mpi_rank"], "-");
    }
}

#[test]
fn mpi_backend_starts_ranks_through_mpirun_with_matching_ranks() {
    let out = lantern_ok(&["launch", "--nproc-per-node", "3", "--", "launch-probe"]);
    let p = probes(&out);
    assert_eq!(p.len(), 3, "{out}");
    for r in 0..3 {
        let v = &p[&r.to_string()];
        assert_eq!(v["world"], "3");
        assert_eq!(v["local"], r.to_string());
        assert_eq!(v["backend"], "mpi");
        assert_eq!(v["mpi_rank"], r.to_string(), "MPI's rank must equal RANK");
    }
}

fn failing_rank_is_named(backend: &str, expect: &str) {
    let t0 = Instant::now();
    let out = lantern(&[
        "launch",
        "--nproc-per-node",
        "3",
        "--backend",
        backend,
        "--",
        "launch-probe",
        "--fail-rank",
        "1",
        "--sleep",
        "120",
    ]);
    let elapsed = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(expect), "{stderr}");
    // The healthy ranks sleep 120 s: finishing well before means they were stopped.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

#[test]
fn a_failing_rank_stops_the_others_nccl() {
    failing_rank_is_named(
        "nccl",
        "error: rank 1 failed (exit status 3); stopped the other ranks",
    );
}

#[test]
fn a_failing_rank_stops_the_others_mpi() {
    failing_rank_is_named(
        "mpi",
        "error: rank 1 failed (exit status 3); mpirun stopped the other ranks",
    );
}

/// `signal` is a name for kill(1) (`TERM`, `INT`) and `number` what the launcher reports.
fn signal_is_forwarded(backend: &str, signal: &str, number: i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args([
            "launch",
            "--nproc-per-node",
            "2",
            "--backend",
            backend,
            "--",
            "launch-probe",
            "--sleep",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both ranks are up and have printed their pids.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    while pids.len() < 2 {
        let line = lines.next().expect("two probe lines").unwrap();
        let pid = line.rsplit("pid=").next().unwrap().trim().to_string();
        pids.push(pid);
    }
    let t0 = Instant::now();
    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("interrupted by signal {number}")),
        "{stderr}"
    );
    // Under mpirun the ranks are reaped by their launch-rank supervisors (or by init once
    // those are gone): allow a moment for that.
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        let proc_dir = format!("/proc/{pid}");
        while std::path::Path::new(&proc_dir).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !std::path::Path::new(&proc_dir).exists(),
            "rank process {pid} survived"
        );
    }
}

#[test]
fn sigterm_is_forwarded_to_the_ranks_nccl() {
    signal_is_forwarded("nccl", "TERM", 15);
}

#[test]
fn sigint_is_forwarded_to_the_ranks_nccl() {
    signal_is_forwarded("nccl", "INT", 2);
}

#[test]
fn sigterm_is_forwarded_to_the_ranks_mpi() {
    signal_is_forwarded("mpi", "TERM", 15);
}

/// `launch --nproc-per-node 2 --backend B --max-restarts N -- launch-probe --fail-rank 1 ...`.
fn restarts(backend: &str, max_restarts: &str, probe: &[&str]) -> std::process::Output {
    let mut args = vec![
        "launch",
        "--nproc-per-node",
        "2",
        "--backend",
        backend,
        "--max-restarts",
        max_restarts,
        "--",
        "launch-probe",
        "--fail-rank",
        "1",
    ];
    args.extend(probe);
    lantern(&args)
}

fn a_failed_start_is_restarted(backend: &str) {
    // Rank 1 fails in the first start only: the second start runs to the end.
    let out = restarts(backend, "3", &["--fail-starts", "1"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1 failed (exit status 3)")
            && stderr.contains("restarting every rank (restart 1 of 3)"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("restarting every rank").count(),
        1,
        "{stderr}"
    );
    // Both ranks of the second start saw the restart count.
    let mut seen: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("probe "))
        .map(|l| {
            let kv: BTreeMap<&str, &str> = l.split(' ').filter_map(|p| p.split_once('=')).collect();
            (kv["rank"].to_string(), kv["restart"].to_string())
        })
        .filter(|(_, restart)| restart == "1")
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("0".into(), "1".into()), ("1".into(), "1".into())],
        "{stdout}"
    );

    // A rank that fails every time: one restart, then the error says none is left.
    let out = restarts(backend, "1", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("restarting every rank").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("(no restart left of --max-restarts 1)"),
        "{stderr}"
    );

    // Status 75 is a stop that was asked for: not restarted, and the launcher exits 75 too.
    let out = restarts(backend, "2", &["--fail-code", "75"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(!stderr.contains("restarting every rank"), "{stderr}");
    assert!(stderr.contains("continue with --resume"), "{stderr}");
}

#[test]
fn a_failed_start_is_restarted_nccl() {
    a_failed_start_is_restarted("nccl");
}

#[test]
fn a_failed_start_is_restarted_mpi() {
    a_failed_start_is_restarted("mpi");
}

#[test]
fn bad_launch_arguments_are_refused() {
    let err = lantern_err(&[
        "launch",
        "--nproc-per-node",
        "2",
        "--nnodes",
        "2",
        "--node-rank",
        "2",
        "--",
        "launch-probe",
    ]);
    assert!(
        err.contains("--node-rank 2 is not below --nnodes 2"),
        "{err}"
    );
    let err = lantern_err(&[
        "launch",
        "--nproc-per-node",
        "2",
        "--nnodes",
        "2",
        "--backend",
        "mpi",
        "--",
        "launch-probe",
    ]);
    assert!(err.contains("srun"), "{err}");
    let err = lantern_err(&["launch", "--nproc-per-node", "0", "--", "launch-probe"]);
    assert!(err.contains("at least 1"), "{err}");
}
