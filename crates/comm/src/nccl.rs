//! NCCL through cudarc 0.19 (CUDA tensors), on candle's own stream.
//!
//! Running the collectives on the stream candle launches its kernels on orders them after the
//! backward that wrote the gradients and before the optimizer that reads them, with no events.
//! Each collective is waited for (stream synchronize) while the watchdog is armed: an NCCL call
//! only enqueues work, so a missing rank would otherwise surface as a hang somewhere later.

use crate::{env::WorldInfo, rendezvous, Collective, Error, ReduceOp, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, DType, Device};
use cudarc::nccl::{Comm, Id};
use std::ops::Range;
use std::os::raw::c_char;
use std::time::{Duration, Instant};

pub(crate) struct Nccl {
    comm: Comm,
    device: Device,
}

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Nccl(format!("{what}: {e:?}"))
}

impl Nccl {
    /// Rank 0 makes the unique id and serves it at MASTER_ADDR:MASTER_PORT; every rank then
    /// joins the communicator (`ncclCommInitRank` blocks until all have).
    /// `arm` starts the watchdog for the blocking communicator set-up.
    pub(crate) fn init<'w>(
        info: &WorldInfo,
        device: &Device,
        timeout: Duration,
        arm: impl FnOnce() -> crate::watchdog::ArmGuard<'w>,
    ) -> Result<Self> {
        let stream = device
            .as_cuda_device()
            .map_err(|_| {
                Error::Nccl(format!(
                    "rank {}: the nccl backend needs a CUDA device, got {device:?}",
                    info.rank
                ))
            })?
            .cuda_stream();
        let id = if info.world_size == 1 {
            Id::new().map_err(|e| nccl_err("ncclGetUniqueId", e))?
        } else {
            let (host, port) = info.master.as_ref().ok_or_else(|| {
                Error::Env(format!(
                    "{} ranks with NCCL need MASTER_ADDR and MASTER_PORT for the id exchange",
                    info.world_size
                ))
            })?;
            let deadline = Instant::now() + timeout;
            if info.rank == 0 {
                let id = Id::new().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                rendezvous::serve(host, *port, info.world_size, &bytes, deadline)?;
                id
            } else {
                let bytes = rendezvous::fetch(host, *port, info.rank, info.world_size, deadline)?;
                let raw: [c_char; 128] = bytes
                    .iter()
                    .map(|&b| b as c_char)
                    .collect::<Vec<_>>()
                    .try_into()
                    .map_err(|v: Vec<c_char>| {
                        Error::Rendezvous(format!(
                            "rank 0 sent {} bytes, an NCCL id has 128",
                            v.len()
                        ))
                    })?;
                Id::uninit(raw)
            }
        };
        let comm = {
            let _armed = arm();
            Comm::from_rank(stream, info.rank, info.world_size, id)
                .map_err(|e| nccl_err("ncclCommInitRank", e))?
        };
        Ok(Self {
            comm,
            device: device.clone(),
        })
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn run(
        &self,
        storage: &mut CudaStorage,
        range: Range<usize>,
        what: Collective,
    ) -> Result<()> {
        match storage.dtype() {
            DType::F32 => {
                let mut view = storage.as_cuda_slice_mut::<f32>()?.slice_mut(range);
                self.enqueue(&mut view, what)?;
            }
            DType::BF16 => {
                let mut view = storage.as_cuda_slice_mut::<half::bf16>()?.slice_mut(range);
                self.enqueue(&mut view, what)?;
            }
            other => {
                return Err(Error::Buffer {
                    op: "collective",
                    msg: format!("dtype {other:?}: only f32 and bf16 buffers are reduced"),
                })
            }
        }
        self.wait()
    }

    fn enqueue<T: cudarc::nccl::NcclType>(
        &self,
        view: &mut cudarc::driver::CudaViewMut<'_, T>,
        what: Collective,
    ) -> Result<()> {
        match what {
            Collective::AllReduce(op) => {
                let op = match op {
                    ReduceOp::Sum => cudarc::nccl::ReduceOp::Sum,
                    ReduceOp::Avg => cudarc::nccl::ReduceOp::Avg,
                };
                self.comm
                    .all_reduce_in_place(view, &op)
                    .map_err(|e| nccl_err("ncclAllReduce", e))?;
            }
            Collective::Broadcast(root) => {
                self.comm
                    .broadcast_in_place(view, root as i32)
                    .map_err(|e| nccl_err("ncclBroadcast", e))?;
            }
        }
        Ok(())
    }

    fn wait(&self) -> Result<()> {
        self.comm
            .stream()
            .synchronize()
            .map_err(|e| nccl_err("stream synchronize after a collective", e))
    }

    /// NCCL has no barrier: an all-reduce of one float that every rank must join.
    pub(crate) fn barrier(&self) -> Result<()> {
        let mut one = self
            .comm
            .stream()
            .alloc_zeros::<f32>(1)
            .map_err(|e| nccl_err("barrier buffer", e))?;
        self.comm
            .all_reduce_in_place(&mut one, &cudarc::nccl::ReduceOp::Sum)
            .map_err(|e| nccl_err("ncclAllReduce (barrier)", e))?;
        self.wait()
    }
}
