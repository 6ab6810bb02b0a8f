//! `train.device` strings: `cpu`, `cuda`, `cuda:N`.

use crate::{Error, Result};
use candle_core::Device;

pub fn parse_device(s: &str) -> Result<Device> {
    let ordinal = match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(Error::Config(format!(
                    "train.device = {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\""
                )))
            }
        },
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::Device(format!(
            "train.device = {s:?} but this build has no CUDA support: rebuild with `--features cuda`"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::Device(format!("cannot open {s}: {e}")))
}
