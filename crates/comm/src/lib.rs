//! Collectives for data-parallel training.
//!
//! A [`Communicator`] knows this process's rank, the world size and the local rank, and runs
//! in-place all-reduce (sum, average) and broadcast of flat f32/bf16 buffers and a barrier. The
//! collectives themselves are always an existing engine's, never ours:
//! - `Single`: a world of one, every collective a no-op (a plain `lantern train`);
//! - `Mpi` (feature `mpi`, default): Open MPI, for CPU processes started by `mpirun` or `srun`;
//! - `Nccl` (feature `cuda`): NCCL through cudarc on candle's CUDA stream, with the NCCL id handed
//!   out by a small TCP rendezvous at `MASTER_ADDR:MASTER_PORT` ([`rendezvous`]).
//!
//! Every collective runs under a watchdog ([`CommOptions::timeout`]): a rank stuck in one for
//! longer prints `rank R: timed out after Ns in <op> at step S` and ends the process (the whole
//! job with MPI) instead of hanging silently. [`bucket`] packs many gradients into a few fp32
//! buckets so that each step makes a few large collectives instead of hundreds of small ones.

// Built with neither engine, only `Single` exists and the collective machinery is unused.
#![cfg_attr(not(any(feature = "mpi", feature = "cuda")), allow(dead_code))]

pub mod bucket;
pub mod env;
#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "cuda")]
mod nccl;
pub mod rendezvous;
mod watchdog;

pub use bucket::{all_reduce_bucketed, BucketPlan, DEFAULT_BUCKET_BYTES};
pub use env::{detect, Launcher, WorldInfo};
pub use watchdog::TIMEOUT_EXIT_CODE;

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};
use half::bf16;
use std::cell::RefCell;
use std::time::Duration;
use watchdog::Watchdog;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("launcher environment: {0}")]
    Env(String),
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    #[error("MPI: {0}")]
    Mpi(String),
    #[error("NCCL: {0}")]
    Nccl(String),
    #[error("{op}: {msg}")]
    Buffer { op: &'static str, msg: String },
    #[error("{0} backend: not compiled in (build with --features {1})")]
    NotCompiled(&'static str, &'static str),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// Sum divided by the world size: data-parallel gradients of a mean loss.
    Avg,
}

impl ReduceOp {
    fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "all_reduce(sum)",
            ReduceOp::Avg => "all_reduce(avg)",
        }
    }
}

/// Which collective engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Single,
    Mpi,
    Nccl,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "single" => Ok(Self::Single),
            "mpi" => Ok(Self::Mpi),
            "nccl" => Ok(Self::Nccl),
            other => Err(Error::Env(format!(
                "unknown backend {other:?}: expected single, mpi or nccl"
            ))),
        }
    }
}

/// Environment variable naming the backend (`lantern launch` sets it): `mpi`, `nccl`, `single`.
pub const BACKEND_ENV: &str = "LANTERN_COMM_BACKEND";

impl BackendKind {
    /// The backend named by `LANTERN_COMM_BACKEND`; `Single` when it is not set.
    pub fn from_env(env: &std::collections::BTreeMap<String, String>) -> Result<Self> {
        match env.get(BACKEND_ENV) {
            None => Ok(Self::Single),
            Some(v) => v.trim().parse().map_err(|_| {
                Error::Env(format!("{BACKEND_ENV}={v:?}: expected single, mpi or nccl"))
            }),
        }
    }
}

/// Environment variable that sets [`CommOptions::timeout`], in seconds.
pub const TIMEOUT_ENV: &str = "LANTERN_COMM_TIMEOUT";

#[derive(Debug, Clone)]
pub struct CommOptions {
    /// Longest time one collective (or the NCCL set-up) may take before the process gives up.
    /// 300 s leaves room for a slow checkpoint write or evaluation on another rank.
    pub timeout: Duration,
}

impl Default for CommOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
        }
    }
}

impl CommOptions {
    /// Defaults, with the timeout from `LANTERN_COMM_TIMEOUT` (seconds) when it is set.
    pub fn from_env(env: &std::collections::BTreeMap<String, String>) -> Result<Self> {
        let mut o = Self::default();
        if let Some(v) = env.get(TIMEOUT_ENV) {
            let secs: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .ok_or_else(|| {
                    Error::Env(format!(
                        "{TIMEOUT_ENV}={v:?}: expected a positive number of seconds"
                    ))
                })?;
            o.timeout = Duration::from_secs_f64(secs);
        }
        Ok(o)
    }
}

enum Backend {
    Single,
    #[cfg(feature = "mpi")]
    Mpi(mpi_backend::Mpi),
    #[cfg(feature = "cuda")]
    Nccl(nccl::Nccl),
}

/// One process's handle on the world. Not `Send` with MPI or NCCL (their handles are tied to
/// the thread that made them): create and use it on the training thread.
pub struct Communicator {
    info: WorldInfo,
    // Declared before `backend` so that it stops (drops) before MPI is finalized.
    watchdog: Option<Watchdog>,
    backend: Backend,
}

impl Communicator {
    /// A world of one: every collective returns at once.
    pub fn single() -> Self {
        Self {
            info: WorldInfo::single(),
            watchdog: None,
            backend: Backend::Single,
        }
    }

    /// Joins the world described by the environment with the given engine. `device` is where
    /// the buffers live: CPU for `Single` and `Mpi`, the CUDA device of `local_rank` for `Nccl`.
    pub fn from_env(kind: BackendKind, device: &Device, opts: &CommOptions) -> Result<Self> {
        let env = env::process_env();
        let info = detect(&env)?;
        match kind {
            BackendKind::Single => {
                if info.world_size > 1 {
                    return Err(Error::Env(format!(
                        "the launcher started {} ranks, but the backend is `single` (set \
                         {BACKEND_ENV}=mpi or nccl)",
                        info.world_size
                    )));
                }
                Ok(Self::single())
            }
            BackendKind::Mpi => Self::mpi(info, opts),
            BackendKind::Nccl => Self::nccl(info, device, opts),
        }
    }

    #[cfg(feature = "mpi")]
    fn mpi(info: WorldInfo, opts: &CommOptions) -> Result<Self> {
        let (backend, info) = mpi_backend::Mpi::init(info)?;
        let watchdog = Watchdog::new(info.rank, opts.timeout, Box::new(mpi_backend::abort));
        Ok(Self {
            info,
            watchdog: Some(watchdog),
            backend: Backend::Mpi(backend),
        })
    }

    #[cfg(not(feature = "mpi"))]
    fn mpi(_: WorldInfo, _: &CommOptions) -> Result<Self> {
        Err(Error::NotCompiled("mpi", "mpi"))
    }

    #[cfg(feature = "cuda")]
    fn nccl(info: WorldInfo, device: &Device, opts: &CommOptions) -> Result<Self> {
        let watchdog = Watchdog::new(
            info.rank,
            opts.timeout,
            Box::new(|code| std::process::exit(code)),
        );
        // The id exchange has its own deadline (and a better error: which ranks are missing);
        // the watchdog covers ncclCommInitRank, which blocks until every rank has joined.
        let backend = nccl::Nccl::init(&info, device, opts.timeout, || {
            watchdog.arm("NCCL set-up (ncclCommInitRank)")
        })?;
        Ok(Self {
            info,
            watchdog: Some(watchdog),
            backend: Backend::Nccl(backend),
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn nccl(_: WorldInfo, _: &Device, _: &CommOptions) -> Result<Self> {
        Err(Error::NotCompiled("nccl", "cuda"))
    }

    pub fn info(&self) -> &WorldInfo {
        &self.info
    }
    pub fn rank(&self) -> usize {
        self.info.rank
    }
    pub fn world_size(&self) -> usize {
        self.info.world_size
    }
    pub fn local_rank(&self) -> usize {
        self.info.local_rank
    }

    /// The training step named in timeout messages from now on.
    pub fn set_step(&self, step: u64) {
        if let Some(w) = &self.watchdog {
            w.set_step(step);
        }
    }

    fn arm(&self, op: impl Into<String>) -> Option<watchdog::ArmGuard<'_>> {
        self.watchdog.as_ref().map(|w| w.arm(op))
    }

    /// All-reduces a contiguous f32 or bf16 tensor in place: after the call every rank holds
    /// the sum (or mean) over ranks. The storage under `t` is overwritten, so every view of it
    /// changes too; use a tensor that owns its storage (a fresh bucket, a gradient).
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        self.all_reduce_labeled(t, op, op.name())
    }

    pub(crate) fn all_reduce_labeled(&self, t: &Tensor, op: ReduceOp, label: &str) -> Result<()> {
        check_tensor(t, op.name())?;
        if matches!(self.backend, Backend::Single) {
            return Ok(());
        }
        let _armed = self.arm(label);
        self.run_inplace(t, Collective::AllReduce(op))
    }

    /// Overwrites `t` on every rank with rank `root`'s values (initial weights, a seed).
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        check_tensor(t, "broadcast")?;
        self.check_root(root)?;
        if matches!(self.backend, Backend::Single) {
            return Ok(());
        }
        let _armed = self.arm(format!("broadcast(root {root})"));
        self.run_inplace(t, Collective::Broadcast(root))
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        let _armed = self.arm("barrier");
        match &self.backend {
            Backend::Single => Ok(()),
            #[cfg(feature = "mpi")]
            Backend::Mpi(m) => {
                m.barrier();
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Nccl(n) => n.barrier(),
        }
    }

    /// [`Communicator::all_reduce`] of a host buffer.
    pub fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        self.host_inplace(buf, Collective::AllReduce(op))
    }

    /// [`Communicator::all_reduce`] of a host bf16 buffer (reduced in f32, rounded once).
    pub fn all_reduce_bf16(&self, buf: &mut [bf16], op: ReduceOp) -> Result<()> {
        self.host_inplace(buf, Collective::AllReduce(op))
    }

    /// [`Communicator::broadcast`] of a host buffer.
    pub fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.check_root(root)?;
        self.host_inplace(buf, Collective::Broadcast(root))
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.info.world_size {
            return Err(Error::Buffer {
                op: "broadcast",
                msg: format!(
                    "root {root} is not a rank of a world of {}",
                    self.info.world_size
                ),
            });
        }
        Ok(())
    }

    /// Host buffers go through a tensor on the backend's device (a copy to the GPU for NCCL).
    fn host_inplace<T: candle_core::WithDType>(&self, buf: &mut [T], c: Collective) -> Result<()> {
        if matches!(self.backend, Backend::Single) || buf.is_empty() {
            return Ok(());
        }
        let t = Tensor::from_slice(buf, buf.len(), &self.device())?;
        match c {
            Collective::AllReduce(op) => self.all_reduce(&t, op)?,
            Collective::Broadcast(root) => self.broadcast(&t, root)?,
        }
        buf.copy_from_slice(&t.to_vec1::<T>()?);
        Ok(())
    }

    /// Where this backend's buffers live.
    pub fn device(&self) -> Device {
        match &self.backend {
            Backend::Single => Device::Cpu,
            #[cfg(feature = "mpi")]
            Backend::Mpi(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Backend::Nccl(n) => n.device().clone(),
        }
    }

    fn run_inplace(&self, t: &Tensor, c: Collective) -> Result<()> {
        let op = InPlace {
            backend: &self.backend,
            what: c,
            err: RefCell::new(None),
        };
        let r = t.inplace_op1(&op);
        // Our own error (kept aside because candle's op signature carries only candle errors)
        // explains better than the placeholder candle error it caused.
        if let Some(e) = op.err.into_inner() {
            return Err(e);
        }
        r.map_err(Error::from)
    }
}

fn check_tensor(t: &Tensor, op: &'static str) -> Result<()> {
    if !matches!(t.dtype(), DType::F32 | DType::BF16) {
        return Err(Error::Buffer {
            op,
            msg: format!(
                "dtype {:?}: only f32 and bf16 buffers are reduced",
                t.dtype()
            ),
        });
    }
    if !t.is_contiguous() {
        return Err(Error::Buffer {
            op,
            msg: format!("tensor of shape {:?} is not contiguous", t.dims()),
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Collective {
    AllReduce(ReduceOp),
    Broadcast(usize),
}

/// Candle's public way to write into a tensor's storage.
struct InPlace<'a> {
    backend: &'a Backend,
    what: Collective,
    err: RefCell<Option<Error>>,
}

impl InPlace<'_> {
    fn fail(&self, e: Error) -> candle_core::Error {
        let msg = e.to_string();
        *self.err.borrow_mut() = Some(e);
        candle_core::Error::Msg(msg)
    }
}

fn offsets(layout: &Layout) -> Option<(usize, usize)> {
    layout.contiguous_offsets()
}

impl InplaceOp1 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "lantern-comm-collective"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((start, end)) = offsets(layout) else {
            return Err(self.fail(Error::Buffer {
                op: "collective",
                msg: "buffer is not contiguous".into(),
            }));
        };
        let r = match self.backend {
            #[cfg(feature = "mpi")]
            Backend::Mpi(m) => match storage {
                CpuStorage::F32(v) => m.run_f32(&mut v[start..end], self.what),
                CpuStorage::BF16(v) => m.run_bf16(&mut v[start..end], self.what),
                _ => Err(Error::Buffer {
                    op: "collective",
                    msg: "only f32 and bf16 buffers are reduced".into(),
                }),
            },
            _ => {
                let _ = (storage, start, end);
                Err(Error::Buffer {
                    op: "collective",
                    msg: "a CPU tensor needs the mpi backend (NCCL reduces CUDA tensors)".into(),
                })
            }
        };
        r.map_err(|e| self.fail(e))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &mut candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<()> {
        let Some((start, end)) = offsets(layout) else {
            return Err(self.fail(Error::Buffer {
                op: "collective",
                msg: "buffer is not contiguous".into(),
            }));
        };
        let r = match self.backend {
            Backend::Nccl(n) => n.run(storage, start..end, self.what),
            _ => Err(Error::Buffer {
                op: "collective",
                msg: "a CUDA tensor needs the nccl backend".into(),
            }),
        };
        r.map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_and_backend_from_env() {
        assert_eq!(
            CommOptions::from_env(&env(&[])).unwrap().timeout,
            Duration::from_secs(300)
        );
        assert_eq!(
            CommOptions::from_env(&env(&[(TIMEOUT_ENV, "2.5")]))
                .unwrap()
                .timeout,
            Duration::from_millis(2500)
        );
        for bad in ["0", "-1", "soon", "inf"] {
            let e = CommOptions::from_env(&env(&[(TIMEOUT_ENV, bad)])).unwrap_err();
            assert!(e.to_string().contains(TIMEOUT_ENV), "{e}");
        }
        assert_eq!(
            BackendKind::from_env(&env(&[])).unwrap(),
            BackendKind::Single
        );
        assert_eq!(
            BackendKind::from_env(&env(&[(BACKEND_ENV, "nccl")])).unwrap(),
            BackendKind::Nccl
        );
        let e = BackendKind::from_env(&env(&[(BACKEND_ENV, "gloo")])).unwrap_err();
        assert!(e.to_string().contains("gloo"), "{e}");
    }

    #[test]
    fn single_world_checks_buffers_and_roots() {
        let c = Communicator::single();
        let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        c.all_reduce(&x, ReduceOp::Avg).unwrap();
        assert_eq!(x.to_vec1::<f32>().unwrap(), vec![1., 2., 3.]);
        let ints = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        assert!(c
            .all_reduce(&ints, ReduceOp::Sum)
            .unwrap_err()
            .to_string()
            .contains("only f32 and bf16"));
        let strided = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        assert!(c
            .all_reduce(&strided, ReduceOp::Sum)
            .unwrap_err()
            .to_string()
            .contains("not contiguous"));
        assert!(c
            .broadcast(&x, 1)
            .unwrap_err()
            .to_string()
            .contains("root 1"));
        c.barrier().unwrap();
    }
}
