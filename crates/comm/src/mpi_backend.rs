//! Open MPI through the `mpi` crate (CPU buffers).
//!
//! Processes form one MPI world only when `mpirun` (or `srun` with PMIx) starts them; one
//! started alone is a world of one. `init` therefore checks MPI's world against the launcher
//! variables, so children started without `mpirun` fail with an explanation instead of each
//! training alone.

use crate::{env::WorldInfo, Collective, Error, ReduceOp, Result};
use half::bf16;
use half::slice::HalfFloatSliceExt;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use mpi::Threading;

pub(crate) struct Mpi {
    world: SimpleCommunicator,
    // Dropping the universe finalizes MPI: it lives exactly as long as the communicator.
    _universe: Universe,
}

/// The watchdog's way out: `MPI_Abort` tells `mpirun` to end every rank of the job.
pub(crate) fn abort(code: i32) {
    // MPI_Abort is called from the watchdog thread while the training thread is blocked in a
    // collective; `init` asked for MPI_THREAD_MULTIPLE, which allows exactly that. Where the
    // library granted less, leaving the process is the safe choice: mpirun notices a rank that
    // exited without MPI_Finalize and ends the job.
    if mpi::environment::threading_support() == Threading::Multiple {
        SimpleCommunicator::world().abort(code);
    }
    std::process::exit(code);
}

impl Mpi {
    /// Initializes MPI and returns the world, with rank and size taken from MPI itself.
    pub(crate) fn init(env_info: WorldInfo) -> Result<(Self, WorldInfo)> {
        let (universe, _threading) = mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| Error::Mpi("MPI is already initialized in this process".into()))?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        if env_info.world_size != size || (size > 1 && env_info.rank != rank) {
            return Err(Error::Mpi(format!(
                "the launcher variables say rank {} of {}, but MPI's world is rank {rank} of \
                 {size}: CPU ranks must be started through mpirun or srun (lantern launch \
                 --backend mpi does this)",
                env_info.rank, env_info.world_size
            )));
        }
        let info = WorldInfo {
            rank,
            world_size: size,
            ..env_info
        };
        Ok((
            Self {
                world,
                _universe: universe,
            },
            info,
        ))
    }

    pub(crate) fn barrier(&self) {
        self.world.barrier();
    }

    pub(crate) fn run_f32(&self, buf: &mut [f32], what: Collective) -> Result<()> {
        match what {
            Collective::AllReduce(op) => {
                // The `mpi` crate has no MPI_IN_PLACE: reduce from a copy. Buffers are gradient
                // buckets (25 MiB by default), so the copy is small next to the transfer.
                let send = buf.to_vec();
                self.world
                    .all_reduce_into(&send[..], buf, SystemOperation::sum());
                if op == ReduceOp::Avg {
                    let inv = 1.0 / self.world.size() as f32;
                    buf.iter_mut().for_each(|x| *x *= inv);
                }
            }
            Collective::Broadcast(root) => self.broadcast(buf, root),
        }
        Ok(())
    }

    /// MPI has no bf16 type: sum in f32 (more exact than bf16 adds anyway) and round once.
    pub(crate) fn run_bf16(&self, buf: &mut [bf16], what: Collective) -> Result<()> {
        match what {
            Collective::AllReduce(_) => {
                let mut wide = vec![0f32; buf.len()];
                buf.convert_to_f32_slice(&mut wide);
                self.run_f32(&mut wide, what)?;
                buf.convert_from_f32_slice(&wide);
            }
            // Broadcast moves the bits unchanged.
            Collective::Broadcast(root) => self.broadcast(buf.reinterpret_cast_mut(), root),
        }
        Ok(())
    }

    fn broadcast<T: mpi::datatype::Equivalence>(&self, buf: &mut [T], root: usize) {
        self.world
            .process_at_rank(root as mpi::Rank)
            .broadcast_into(buf);
    }
}
