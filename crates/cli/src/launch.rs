//! `lantern launch`: start the ranks of a data-parallel run on this node, torchrun-style.
//!
//! Every rank is this same binary running the given subcommand with `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` and `LANTERN_COMM_BACKEND` set.
//! - `--backend nccl`: the launcher starts the ranks itself; NCCL's id goes through the TCP
//!   rendezvous of lantern-comm at MASTER_ADDR:MASTER_PORT.
//! - `--backend mpi`: processes join one MPI world only when `mpirun` starts them, so the
//!   launcher runs `mpirun` with one app context per rank (`-np 1 -x RANK=r ... : ...`, which
//!   keeps MPI's rank equal to ours). Each context runs `lantern launch-rank`, a small
//!   supervisor that starts the real command and records how it ended, because `mpirun` only
//!   reports its own status and this launcher must name the rank that failed.
//!
//! When a rank fails the others are stopped (SIGTERM, then SIGKILL after a grace period) and the
//! launcher exits non-zero naming the rank and its status, or, with `--max-restarts N`, starts
//! every rank again, up to N times (torchrun's restarts; `train --resume` then continues from the
//! newest checkpoint). A rank that exits with the preemption status (75: stopped on request
//! after writing a checkpoint) is never restarted: the launcher stops and exits 75 too, as it
//! does when a SIGTERM or SIGINT it forwarded made every rank stop that way. Children die with
//! their parent (PR_SET_PDEATHSIG), so a launcher killed outright leaves no training process
//! behind.

use anyhow::{bail, Context, Result};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// NCCL on GPUs: one rank per GPU, started by the launcher.
    Nccl,
    /// Open MPI on CPUs: ranks started through mpirun.
    Mpi,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Nccl => "nccl",
            Backend::Mpi => "mpi",
        }
    }
}

#[derive(clap::Args)]
pub struct LaunchArgs {
    /// Ranks to start on this node (with nccl: one per GPU).
    #[arg(long)]
    nproc_per_node: usize,
    /// Nodes in the job; run the same launch command on each with its --node-rank.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Address of node 0 as the other nodes reach it (rank 0 serves the NCCL id there).
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    #[arg(long, default_value_t = 29500)]
    master_port: u16,
    #[arg(long, value_enum, default_value_t = Backend::Mpi)]
    backend: Backend,
    /// Longest a collective may wait for the other ranks, in seconds (the ranks'
    /// LANTERN_COMM_TIMEOUT; default 300).
    #[arg(long)]
    comm_timeout: Option<f64>,
    /// When a rank fails, stop the others and start every rank again, up to N times (as
    /// torchrun's --max-restarts). Give `train` `--resume`, so that each new start continues
    /// from the newest checkpoint (a first start with no checkpoint begins from scratch).
    #[arg(long, default_value_t = 0)]
    max_restarts: u32,
    /// The lantern subcommand each rank runs, after `--`: `-- train --config run.toml`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct RankArgs {
    /// The lantern subcommand to run and supervise.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The rank that exits with `--fail-code` at once.
    #[arg(long)]
    fail_rank: Option<usize>,
    #[arg(long, default_value_t = 3)]
    fail_code: i32,
    /// Fail only in the first N starts of the group (LANTERN_RESTART_COUNT below N).
    #[arg(long)]
    fail_starts: Option<u32>,
    /// Seconds the other ranks then wait before exiting 0.
    #[arg(long, default_value_t = 0.0)]
    sleep: f64,
}

/// Where `launch-rank` supervisors record how their rank ended (set by the launcher).
const STATUS_DIR_ENV: &str = "LANTERN_LAUNCH_STATUS_DIR";
/// How many times the launcher has restarted the ranks: 0 in the first start (torchrun's
/// TORCHELASTIC_RESTART_COUNT).
const RESTART_COUNT_ENV: &str = "LANTERN_RESTART_COUNT";
/// Pause between stopping a failed group and starting the next, so that ports and devices
/// the old ranks held are free again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// Time a rank gets between SIGTERM and SIGKILL once the job is being stopped.
const GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Runs the job; `Ok(true)` when it stopped on request after writing a checkpoint (the caller
/// exits with the preemption status).
pub fn launch(a: LaunchArgs) -> Result<bool> {
    if a.nproc_per_node == 0 || a.nnodes == 0 {
        bail!("--nproc-per-node and --nnodes must be at least 1");
    }
    if a.node_rank >= a.nnodes {
        bail!(
            "--node-rank {} is not below --nnodes {}",
            a.node_rank,
            a.nnodes
        );
    }
    if a.master_port == 0 {
        bail!("--master-port must not be 0");
    }
    if let Some(t) = a.comm_timeout {
        if !(t.is_finite() && t > 0.0) {
            bail!("--comm-timeout {t}: expected a positive number of seconds");
        }
    }
    if a.command.first().is_some_and(|c| c == "launch") {
        bail!("the command to launch is itself `launch`");
    }
    let exe = std::env::current_exe().context("locating the lantern binary")?;
    install_forwarding();
    if a.backend == Backend::Mpi && !cfg!(feature = "mpi") {
        // Each rank would fail alone after mpirun started them all; say it once, up front.
        bail!(
            "--backend mpi: this lantern was built without Open MPI (the quick start leaves \
             it out where Open MPI is not installed); install Open MPI (libopenmpi-dev) and \
             build with the default features: cargo build --release -p lantern-cli"
        );
    }
    let mut restart = 0;
    loop {
        let end = match a.backend {
            Backend::Nccl => launch_direct(&a, &exe, restart)?,
            Backend::Mpi => launch_mpirun(&a, &exe, restart)?,
        };
        let after = match a.max_restarts {
            0 => String::new(),
            n => format!(" (no restart left of --max-restarts {n})"),
        };
        match end {
            GroupEnd::Done => return Ok(false),
            GroupEnd::Interrupted { sig, preempted } => {
                if preempted {
                    eprintln!(
                        "launch: interrupted by signal {sig}; every rank stopped after writing \
                         a checkpoint; continue with --resume"
                    );
                    return Ok(true);
                }
                bail!("interrupted by signal {sig}; stopped every rank");
            }
            GroupEnd::Failed {
                what,
                preempted: true,
            } => {
                // A stop asked of a rank (a scheduler's SIGTERM): honour it, never restart.
                eprintln!(
                    "launch: {what}; status {} means a stop was asked of the ranks and they \
                     wrote a checkpoint: not restarting; continue with --resume",
                    crate::EXIT_PREEMPTED
                );
                return Ok(true);
            }
            GroupEnd::Failed { what, .. } if restart < a.max_restarts => {
                restart += 1;
                eprintln!(
                    "launch: {what}; restarting every rank (restart {restart} of {})",
                    a.max_restarts
                );
                std::thread::sleep(RESTART_PAUSE);
                // A SIGTERM/SIGINT that came while the ranks were being stopped ends the job.
                let sig = RECEIVED.swap(0, Ordering::SeqCst);
                if sig != 0 {
                    bail!("interrupted by signal {sig}; stopped every rank");
                }
            }
            GroupEnd::Failed { what, .. } => bail!("{what}{after}"),
        }
    }
}

/// How one start of the ranks ended.
enum GroupEnd {
    Done,
    /// A forwarded SIGTERM/SIGINT; `preempted` when every rank then exited with the
    /// preemption status (stopped after writing a checkpoint).
    Interrupted {
        sig: i32,
        preempted: bool,
    },
    /// A rank failed: `what` names it and how; `preempted` when its status was the
    /// preemption status.
    Failed {
        what: String,
        preempted: bool,
    },
}

fn is_preempted(status: ExitStatus) -> bool {
    status.code() == Some(crate::EXIT_PREEMPTED)
}

/// The launcher variables of one rank.
fn rank_env(a: &LaunchArgs, local_rank: usize, restart: u32) -> Vec<(String, String)> {
    let world = a.nnodes * a.nproc_per_node;
    let rank = a.node_rank * a.nproc_per_node + local_rank;
    let mut env = vec![
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", a.nproc_per_node.to_string()),
        ("MASTER_ADDR", a.master_addr.clone()),
        ("MASTER_PORT", a.master_port.to_string()),
        ("LANTERN_COMM_BACKEND", a.backend.name().to_string()),
        (RESTART_COUNT_ENV, restart.to_string()),
    ];
    if let Some(t) = a.comm_timeout {
        env.push(("LANTERN_COMM_TIMEOUT", t.to_string()));
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        env.push((
            "RAYON_NUM_THREADS",
            threads_per_rank(cores, a.nproc_per_node).to_string(),
        ));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// CPU threads for each rank when the user has not chosen (`RAYON_NUM_THREADS` unset): the
/// node's cores shared out between its ranks, at least one each. Left to itself every rank
/// would start one thread per core, and N ranks would oversubscribe the cores N times over
/// with threads that spin between parallel ops (2 ranks on 2 cores: 4300–4600 tokens/s with 2
/// threads each, 6000–7200 with 1). torchrun sets `OMP_NUM_THREADS=1` for the same reason; a
/// share of the cores keeps each rank's parallel ops parallel.
fn threads_per_rank(cores: usize, nproc_per_node: usize) -> usize {
    (cores / nproc_per_node.max(1)).max(1)
}

fn launch_direct(a: &LaunchArgs, exe: &Path, restart: u32) -> Result<GroupEnd> {
    let mut procs = Vec::new();
    for local in 0..a.nproc_per_node {
        let env = rank_env(a, local, restart);
        let rank = a.node_rank * a.nproc_per_node + local;
        let mut cmd = Command::new(exe);
        cmd.args(&a.command).envs(env);
        match spawn_tied(cmd) {
            Ok(child) => procs.push(Proc { rank, child }),
            Err(e) => {
                stop_all(&mut procs, libc::SIGTERM);
                return Err(e).with_context(|| format!("starting rank {rank}"));
            }
        }
    }
    Ok(match supervise(procs, signal_each) {
        Outcome::Done => GroupEnd::Done,
        Outcome::Failed { rank, status } => GroupEnd::Failed {
            what: format!(
                "rank {rank} failed ({}); stopped the other ranks",
                describe(status)
            ),
            preempted: is_preempted(status),
        },
        Outcome::Interrupted { sig, preempted } => GroupEnd::Interrupted { sig, preempted },
    })
}

fn launch_mpirun(a: &LaunchArgs, exe: &Path, restart: u32) -> Result<GroupEnd> {
    if a.nnodes > 1 {
        bail!(
            "--backend mpi starts one mpirun on this node only; for several nodes start every \
             rank from one `mpirun --hostfile ...` or from `srun` (docs/distributed.md)"
        );
    }
    // A fresh folder for each start: only this start's failures count.
    let status_dir =
        std::env::temp_dir().join(format!("lantern-launch-{}-{restart}", std::process::id()));
    std::fs::create_dir_all(&status_dir)
        .with_context(|| format!("creating {}", status_dir.display()))?;
    let mut cmd = Command::new("mpirun");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // Open MPI refuses to run as root unless told; containers and CI run as root.
        cmd.arg("--allow-run-as-root");
    }
    // More ranks than cores is fine for CPU training (each rank's threads share them), and
    // binding each rank to one core (Open MPI's default for 2 ranks) would serialize its
    // threads: let the kernel place them.
    cmd.args(["--oversubscribe", "--bind-to", "none"]);
    for local in 0..a.nproc_per_node {
        if local > 0 {
            cmd.arg(":");
        }
        // -x applies to its own app context only: every context gets all variables.
        cmd.args(["-np", "1"]);
        let mut env = rank_env(a, local, restart);
        env.push((STATUS_DIR_ENV.into(), status_dir.display().to_string()));
        for (k, v) in env {
            cmd.args(["-x".to_string(), format!("{k}={v}")]);
        }
        cmd.arg(exe).arg("launch-rank").arg("--").args(&a.command);
    }
    let child = spawn_tied(cmd).context(
        "starting mpirun (install Open MPI: apt-get install openmpi-bin; scripts/test.sh does)",
    )?;
    // A SIGTERM/SIGINT goes straight to the ranks' supervisors, not to mpirun: mpirun answers
    // one by killing its processes within a second or so, before a trainer could finish its
    // step and write the checkpoint it owes. The ranks then exit by themselves, and mpirun
    // with them.
    let forward = |procs: &[Proc], sig: i32| {
        let pids = rank_supervisors(&status_dir);
        if pids.len() == a.nproc_per_node {
            for pid in pids {
                // SAFETY: kill(2) takes plain integers; `rank_supervisors` checked that the
                // pid is a live `launch-rank` of this job.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
        } else {
            // Not every rank is up yet: let mpirun stop them.
            signal_each(procs, sig);
        }
    };
    let outcome = supervise(vec![Proc { rank: 0, child }], forward);
    let failure = first_failure(&status_dir);
    let _ = std::fs::remove_dir_all(&status_dir);
    Ok(match outcome {
        Outcome::Done => GroupEnd::Done,
        Outcome::Interrupted { sig, preempted } => GroupEnd::Interrupted { sig, preempted },
        Outcome::Failed { status, .. } => match failure {
            Some(f) => GroupEnd::Failed {
                what: format!(
                    "rank {} failed ({}); mpirun stopped the other ranks",
                    f.rank, f.what
                ),
                preempted: f.code == Some(crate::EXIT_PREEMPTED),
            },
            None => GroupEnd::Failed {
                what: format!(
                    "mpirun failed ({}) before any rank ended; see its output above",
                    describe(status)
                ),
                preempted: false,
            },
        },
    })
}

/// `lantern launch-rank -- CMD`: runs CMD as this rank, forwards signals, records a failure
/// in the launcher's status folder, and exits as CMD did.
pub fn launch_rank(a: RankArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("locating the lantern binary")?;
    let rank: usize = std::env::var("RANK")
        .ok()
        .and_then(|r| r.parse().ok())
        .context("launch-rank runs under `lantern launch`, which sets RANK")?;
    install_forwarding();
    let mut cmd = Command::new(exe);
    cmd.args(&a.command);
    let child = spawn_tied(cmd).with_context(|| format!("rank {rank}: starting the command"))?;
    if let Ok(dir) = std::env::var(STATUS_DIR_ENV) {
        // Best effort: without it the launcher signals mpirun instead.
        let path = PathBuf::from(dir).join(format!("pid-{rank}"));
        let _ = std::fs::write(path, std::process::id().to_string());
    }
    let status = match supervise(vec![Proc { rank, child }], signal_each) {
        Outcome::Done => return Ok(0),
        Outcome::Failed { status, .. } => status,
        // The command stopped on the forwarded signal after its checkpoint: say so to mpirun.
        Outcome::Interrupted {
            preempted: true, ..
        } => return Ok(crate::EXIT_PREEMPTED),
        Outcome::Interrupted { sig, .. } => return Ok(128 + sig),
    };
    if let Ok(dir) = std::env::var(STATUS_DIR_ENV) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = PathBuf::from(dir).join(format!("rank-{rank}"));
        // Best effort: the launcher falls back to mpirun's own status without it.
        let code = status.code().map_or("-".to_string(), |c| c.to_string());
        let _ = std::fs::write(&path, format!("{nanos}\n{}\n{code}\n", describe(status)));
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The pids of the `launch-rank` supervisors that recorded themselves in `dir` and are still
/// running as such (a pid whose command line is not a `launch-rank` is left out, so that a
/// reused pid is never signalled).
fn rank_supervisors(dir: &Path) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pid-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .filter(|pid: &libc::pid_t| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"launch-rank"))
        })
        .collect()
}

/// A failure a `launch-rank` supervisor recorded.
struct RankFailure {
    rank: usize,
    /// How it ended, in words.
    what: String,
    /// Its exit status, when it exited rather than being killed.
    code: Option<i32>,
}

/// The rank whose failure was recorded first (the others were most likely stopped because
/// of it), with its status.
fn first_failure(dir: &Path) -> Option<RankFailure> {
    let mut found: Vec<(u128, usize, String, Option<i32>)> = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rank) = name.strip_prefix("rank-").and_then(|r| r.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines();
        let (Some(t), Some(what)) = (lines.next(), lines.next()) else {
            continue;
        };
        let code = lines.next().and_then(|c| c.parse().ok());
        if let Ok(t) = t.parse() {
            found.push((t, rank, what.to_string(), code));
        }
    }
    found.sort();
    found
        .into_iter()
        .next()
        .map(|(_, rank, what, code)| RankFailure { rank, what, code })
}

/// Hidden test command: prints the launcher variables it sees; `--fail-rank` exits with
/// `--fail-code` (in the first `--fail-starts` starts only, when given).
pub fn probe(a: ProbeArgs) -> Result<()> {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "-".into());
    println!(
        "probe rank={} world={} local={} local_world={} master={}:{} backend={} mpi_rank={} timeout={} restart={} pid={}",
        var("RANK"),
        var("WORLD_SIZE"),
        var("LOCAL_RANK"),
        var("LOCAL_WORLD_SIZE"),
        var("MASTER_ADDR"),
        var("MASTER_PORT"),
        var("LANTERN_COMM_BACKEND"),
        var("OMPI_COMM_WORLD_RANK"),
        var("LANTERN_COMM_TIMEOUT"),
        var(RESTART_COUNT_ENV),
        std::process::id()
    );
    let rank: Option<usize> = std::env::var("RANK").ok().and_then(|r| r.parse().ok());
    let restart: u32 = var(RESTART_COUNT_ENV).parse().unwrap_or(0);
    if a.fail_rank.is_some() && rank == a.fail_rank && a.fail_starts.is_none_or(|n| restart < n) {
        eprintln!("probe: rank {} fails on purpose", var("RANK"));
        std::process::exit(a.fail_code);
    }
    std::thread::sleep(Duration::from_secs_f64(a.sleep.max(0.0)));
    Ok(())
}

struct Proc {
    rank: usize,
    child: Child,
}

enum Outcome {
    Done,
    Failed {
        rank: usize,
        status: ExitStatus,
    },
    /// `preempted`: every process then exited with the preemption status.
    Interrupted {
        sig: i32,
        preempted: bool,
    },
}

/// Waits for every process. The first non-zero exit stops the others; a SIGTERM/SIGINT received
/// goes to `forward` (which passes it on) and makes the outcome `Interrupted` once they are
/// gone.
fn supervise(mut procs: Vec<Proc>, forward: impl Fn(&[Proc], i32)) -> Outcome {
    let mut failed: Option<(usize, ExitStatus)> = None;
    let mut interrupted: Option<i32> = None;
    let mut all_preempted = true;
    let mut kill_at: Option<Instant> = None;
    while !procs.is_empty() {
        let sig = RECEIVED.swap(0, Ordering::SeqCst);
        if sig != 0 {
            interrupted.get_or_insert(sig);
            forward(&procs, sig);
            kill_at.get_or_insert(Instant::now() + GRACE);
        }
        let mut i = 0;
        while i < procs.len() {
            match procs[i].child.try_wait() {
                Ok(Some(status)) => {
                    let p = procs.swap_remove(i);
                    all_preempted &= is_preempted(status);
                    if !status.success() && failed.is_none() && interrupted.is_none() {
                        failed = Some((p.rank, status));
                        for q in &procs {
                            send(&q.child, libc::SIGTERM);
                        }
                        kill_at = Some(Instant::now() + GRACE);
                    }
                }
                Ok(None) => i += 1,
                // The child cannot be waited for (should not happen): count it as gone.
                Err(_) => {
                    procs.swap_remove(i);
                    all_preempted = false;
                }
            }
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            for p in &mut procs {
                let _ = p.child.kill();
            }
        }
        std::thread::sleep(POLL);
    }
    match (interrupted, failed) {
        (Some(sig), _) => Outcome::Interrupted {
            sig,
            preempted: all_preempted,
        },
        (None, Some((rank, status))) => Outcome::Failed { rank, status },
        (None, None) => Outcome::Done,
    }
}

/// The plain forwarder: the signal to every process.
fn signal_each(procs: &[Proc], sig: i32) {
    for p in procs {
        send(&p.child, sig);
    }
}

fn stop_all(procs: &mut [Proc], sig: i32) {
    for p in procs.iter_mut() {
        send(&p.child, sig);
        let _ = p.child.wait();
    }
}

fn send(child: &Child, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers; the pid is our own child, not yet reaped (reaped
    // children are removed from the list before signals are sent), so it names no other process.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => status.to_string(),
    }
}

/// Spawns with SIGKILL on the parent's death, so no rank outlives its launcher.
fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The last SIGTERM/SIGINT received, 0 when none is pending.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Turns SIGTERM/SIGINT into a flag the supervision loop forwards to the children.
fn install_forwarding() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores to an atomic, which
        // is async-signal-safe; installing it replaces the default action for these two signals
        // in this process only.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::threads_per_rank;

    #[test]
    fn ranks_share_the_cores_with_at_least_one_thread_each() {
        assert_eq!(threads_per_rank(16, 1), 16);
        assert_eq!(threads_per_rank(16, 8), 2);
        assert_eq!(threads_per_rank(16, 3), 5);
        assert_eq!(threads_per_rank(2, 2), 1);
        assert_eq!(threads_per_rank(2, 4), 1);
        assert_eq!(threads_per_rank(1, 0), 1);
    }
}
