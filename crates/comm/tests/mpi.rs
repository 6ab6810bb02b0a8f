//! Two real Open MPI processes: every collective against values each rank computes itself, a
//! rank that never joins, and a world launched without mpirun.

#![cfg(feature = "mpi")]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CHECK: &str = env!("CARGO_BIN_EXE_lantern-comm-check");

/// `mpirun` as root on a 2-core machine (see docs/distributed.md). A job still running after
/// 90 s is stopped (SIGTERM, which mpirun passes to its ranks), so a broken timeout fails the
/// test instead of hanging it.
fn mpirun(np: usize, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ]);
    for (k, v) in envs {
        cmd.env(k, v).args(["-x", k]);
    }
    cmd.arg(CHECK)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("mpirun runs (scripts/test.sh installs openmpi-bin)");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let out = child.wait_with_output().unwrap();
            panic!(
                "mpirun {args:?} still running after 90 s\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn collectives_on_two_processes() {
    let out = mpirun(2, &[], &["collectives"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for r in 0..2 {
        assert!(
            stdout.contains(&format!("rank {r}/2: 11 collective checks passed")),
            "rank {r} did not pass:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn a_rank_that_never_joins_times_out_the_job() {
    let t0 = Instant::now();
    let out = mpirun(2, &[("LANTERN_COMM_TIMEOUT", "2")], &["timeout"]);
    let elapsed = t0.elapsed();
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("rank 0: timed out after 2s in all_reduce(sum) at step 7"),
        "stderr:\n{stderr}"
    );
    // Rank 1 sleeps 120 s: the job ending well before means the abort took it down too.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn ranks_started_without_mpirun_are_refused() {
    let out = Command::new(CHECK)
        .arg("collectives")
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("rank 0 of 2, but MPI's world is rank 0 of 1") && stderr.contains("mpirun"),
        "stderr:\n{stderr}"
    );
}
