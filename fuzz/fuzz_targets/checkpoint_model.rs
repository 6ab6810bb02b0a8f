//! Checkpoint weights: safetensors parsing, the float-dtype check and matching every tensor's
//! name and shape against a (tiny) model config, as `hf::load_params` does.
#![no_main]

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use lantern_models::gpt::{hf, GptConfig};
use lantern_models::safetensors_io;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz/model.safetensors");
    let Ok(tensors) = safetensors_io::parse(data, path, &Device::Cpu) else {
        return;
    };
    if safetensors_io::check_float(&tensors, path).is_err() {
        return;
    }
    // The config of fuzz/seeds/checkpoint_model/tiny.safetensors.
    let cfg = GptConfig {
        vocab_size: 4,
        n_positions: 2,
        n_embd: 4,
        n_layer: 1,
        n_head: 1,
        dropout: 0.0,
        layer_norm_epsilon: 1e-5,
    };
    let _ = hf::params_from_tensors(tensors, &cfg, path, DType::F32);
});
