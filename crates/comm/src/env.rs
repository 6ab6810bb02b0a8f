//! Where this process sits in the world, read from the variables a launcher sets.
//!
//! Three launchers are understood, in this order of precedence (the first whose variables are
//! present wins, so `lantern launch --backend mpi`, which sets both the torchrun variables and,
//! through `mpirun`, Open MPI's, gives one answer):
//! - torchrun and `lantern launch`: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
//!   `MASTER_ADDR`, `MASTER_PORT`;
//! - Open MPI's `mpirun`: `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
//!   `OMPI_COMM_WORLD_LOCAL_RANK`, `OMPI_COMM_WORLD_LOCAL_SIZE`;
//! - Slurm's `srun`: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_NTASKS_PER_NODE`.
//!
//! None of them: a world of one. [`detect`] is a pure function of the variables so that every
//! case is tested with made-up maps.

use crate::Error;
use std::collections::BTreeMap;

/// Which launcher's variables described the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher variables: a single process.
    None,
    Torchrun,
    OpenMpi,
    Slurm,
}

/// Rank and size of this process in the world and on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldInfo {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this node: the GPU ordinal to use.
    pub local_rank: usize,
    /// Processes on this node, where the launcher says.
    pub local_world_size: Option<usize>,
    /// `MASTER_ADDR` and `MASTER_PORT`: where rank 0 serves the NCCL id.
    pub master: Option<(String, u16)>,
    pub launcher: Launcher,
}

impl WorldInfo {
    /// A world of one process.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: Some(1),
            master: None,
            launcher: Launcher::None,
        }
    }
}

/// The variables of the running process.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Reads the world from launcher variables (see the module header for the precedence).
pub fn detect(env: &BTreeMap<String, String>) -> Result<WorldInfo, Error> {
    let has = |k: &str| env.contains_key(k);
    let (launcher, names) = if has("RANK") || has("WORLD_SIZE") {
        (
            Launcher::Torchrun,
            ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"],
        )
    } else if has("OMPI_COMM_WORLD_RANK") || has("OMPI_COMM_WORLD_SIZE") {
        (
            Launcher::OpenMpi,
            [
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE",
            ],
        )
    } else if has("SLURM_PROCID") || has("SLURM_NTASKS") {
        (
            Launcher::Slurm,
            [
                "SLURM_PROCID",
                "SLURM_NTASKS",
                "SLURM_LOCALID",
                "SLURM_NTASKS_PER_NODE",
            ],
        )
    } else {
        return Ok(WorldInfo::single());
    };
    let [rank_k, size_k, local_k, local_size_k] = names;
    let rank = required(env, rank_k, size_k)?;
    let world_size = required(env, size_k, rank_k)?;
    if world_size == 0 {
        return Err(Error::Env(format!(
            "{size_k}=0: the world needs one process"
        )));
    }
    if rank >= world_size {
        return Err(Error::Env(format!(
            "{rank_k}={rank} is not below {size_k}={world_size}"
        )));
    }
    let local_rank = optional(env, local_k)?.unwrap_or(0);
    let local_world_size = match launcher {
        // "4" or, with uneven nodes, "4(x2),3": this node's count is not knowable from it.
        Launcher::Slurm => env
            .get(local_size_k)
            .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
            .map(|_| optional(env, local_size_k))
            .transpose()?
            .flatten(),
        _ => optional(env, local_size_k)?,
    };
    if let Some(n) = local_world_size {
        if local_rank >= n {
            return Err(Error::Env(format!(
                "{local_k}={local_rank} is not below {local_size_k}={n}"
            )));
        }
    }
    let master = match (env.get("MASTER_ADDR"), env.get("MASTER_PORT")) {
        (Some(a), Some(p)) => {
            let port = p.trim().parse::<u16>().map_err(|_| {
                Error::Env(format!("MASTER_PORT={p:?} is not a port number (1-65535)"))
            })?;
            if a.trim().is_empty() || port == 0 {
                return Err(Error::Env(format!(
                    "MASTER_ADDR={a:?} MASTER_PORT={p}: need a host and a non-zero port"
                )));
            }
            Some((a.trim().to_string(), port))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::Env(
                "MASTER_ADDR is set but MASTER_PORT is not".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Env(
                "MASTER_PORT is set but MASTER_ADDR is not".into(),
            ))
        }
    };
    Ok(WorldInfo {
        rank,
        world_size,
        local_rank,
        local_world_size,
        master,
        launcher,
    })
}

fn optional(env: &BTreeMap<String, String>, key: &str) -> Result<Option<usize>, Error> {
    env.get(key)
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| Error::Env(format!("{key}={v:?} is not a non-negative integer")))
        })
        .transpose()
}

fn required(env: &BTreeMap<String, String>, key: &str, partner: &str) -> Result<usize, Error> {
    optional(env, key)?.ok_or_else(|| Error::Env(format!("{partner} is set but {key} is not")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_launcher_is_a_world_of_one() {
        let w = detect(&env(&[("PATH", "/usr/bin")])).unwrap();
        assert_eq!(w, WorldInfo::single());
    }

    #[test]
    fn torchrun_variables() {
        let w = detect(&env(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap();
        assert_eq!(
            w,
            WorldInfo {
                rank: 5,
                world_size: 8,
                local_rank: 1,
                local_world_size: Some(4),
                master: Some(("node7".into(), 29500)),
                launcher: Launcher::Torchrun,
            }
        );
    }

    #[test]
    fn open_mpi_variables() {
        let w = detect(&env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]))
        .unwrap();
        assert_eq!(
            (w.rank, w.world_size, w.local_rank, w.local_world_size),
            (3, 4, 1, Some(2))
        );
        assert_eq!(w.launcher, Launcher::OpenMpi);
        assert_eq!(w.master, None);
    }

    #[test]
    fn slurm_variables_and_uneven_tasks_per_node() {
        let w = detect(&env(&[
            ("SLURM_PROCID", "6"),
            ("SLURM_NTASKS", "7"),
            ("SLURM_LOCALID", "2"),
            ("SLURM_NTASKS_PER_NODE", "4(x1),3"),
        ]))
        .unwrap();
        assert_eq!(
            (w.rank, w.world_size, w.local_rank, w.local_world_size),
            (6, 7, 2, None)
        );
        assert_eq!(w.launcher, Launcher::Slurm);
        let w = detect(&env(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "2"),
        ]))
        .unwrap();
        assert_eq!(w.local_world_size, Some(2));
    }

    #[test]
    fn torchrun_wins_over_mpi_and_slurm() {
        let w = detect(&env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "1"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ]))
        .unwrap();
        assert_eq!((w.rank, w.world_size), (1, 2));
        assert_eq!(w.launcher, Launcher::Torchrun);
        let w = detect(&env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ]))
        .unwrap();
        assert_eq!(w.launcher, Launcher::OpenMpi);
    }

    #[test]
    fn bad_values_are_named() {
        let err = |pairs: &[(&str, &str)]| detect(&env(pairs)).unwrap_err().to_string();
        assert!(err(&[("RANK", "0")]).contains("WORLD_SIZE"));
        assert!(err(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK=\"x\""));
        assert!(err(&[("RANK", "2"), ("WORLD_SIZE", "2")]).contains("not below"));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "0")]).contains("WORLD_SIZE=0"));
        assert!(err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "2"),
            ("LOCAL_WORLD_SIZE", "2")
        ])
        .contains("LOCAL_RANK=2"));
        assert!(err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "99999")
        ])
        .contains("MASTER_PORT"));
        assert!(
            err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")])
                .contains("MASTER_PORT is not")
        );
        assert!(err(&[("SLURM_PROCID", "-1"), ("SLURM_NTASKS", "2")]).contains("SLURM_PROCID"));
    }
}
