//! Joining the data-parallel world a launcher set up (`lantern launch`, torchrun, `mpirun`,
//! `srun`; a world of one without one): this rank's device and its communicator. Shared by
//! pretraining and fine-tuning.

use crate::device::{parse_device, resolve_auto};
use crate::{Error, Result};
use candle_core::Device;
use lantern_comm::{BackendKind, CommOptions, Communicator, WorldInfo};

/// This process's place in the run.
pub struct World {
    pub comm: Communicator,
    pub device: Device,
    /// The device actually used (`auto` resolved, `cuda` made `cuda:LOCAL_RANK`).
    pub device_name: String,
}

/// Reads the launcher's variables, opens this rank's device for the `train.device` setting
/// `device` and joins the world. A backend that reduces buffers on another device than the
/// one training uses (MPI with a GPU, NCCL with the CPU) is an error naming both.
pub fn join_world(device: &str) -> Result<World> {
    let env = lantern_comm::env::process_env();
    let world_info = lantern_comm::detect(&env)?;
    // `auto` is decided here, once: the run's line and the errors below name the device used.
    let device_name = rank_device(&resolve_auto(device), &world_info)?;
    let dev = parse_device(&device_name)?;
    let comm = Communicator::from_env(
        BackendKind::from_env(&env)?,
        &dev,
        &CommOptions::from_env(&env)?,
    )?;
    if comm.world_size() > 1 && !comm.device().same_device(&dev) {
        return Err(Error::Device(format!(
            "rank {}: training on {device_name} (train.device = {device:?}), but the {} backend \
             reduces buffers on {:?}: use --backend nccl with cuda and --backend mpi with cpu",
            comm.rank(),
            env.get(lantern_comm::BACKEND_ENV)
                .map_or("single", String::as_str),
            comm.device().location()
        )));
    }
    Ok(World {
        comm,
        device: dev,
        device_name,
    })
}

/// The device string of this rank: with several ranks, `cuda` means the GPU of the local rank
/// (torchrun's convention); naming one GPU would put every rank of the node on it.
fn rank_device(device: &str, world: &WorldInfo) -> Result<String> {
    if world.world_size == 1 {
        return Ok(device.to_string());
    }
    match device {
        "cuda" => Ok(format!("cuda:{}", world.local_rank)),
        d if d.starts_with("cuda:") => Err(Error::Config(format!(
            "train.device = {d:?} names one GPU, but the launcher started {} ranks: use \
             \"cuda\" (each rank takes cuda:LOCAL_RANK)",
            world.world_size
        ))),
        d => Ok(d.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_takes_the_gpu_of_its_local_rank() {
        let world = |world_size, local_rank| WorldInfo {
            rank: local_rank,
            world_size,
            local_rank,
            local_world_size: Some(world_size),
            master: None,
            launcher: lantern_comm::Launcher::Torchrun,
        };
        // A plain run keeps whatever it asked for.
        assert_eq!(
            rank_device("cuda:3", &WorldInfo::single()).unwrap(),
            "cuda:3"
        );
        assert_eq!(rank_device("cuda", &world(4, 2)).unwrap(), "cuda:2");
        assert_eq!(rank_device("cpu", &world(4, 2)).unwrap(), "cpu");
        let e = rank_device("cuda:1", &world(2, 0)).unwrap_err().to_string();
        assert!(e.contains("cuda:1") && e.contains("2 ranks"), "{e}");
    }
}
