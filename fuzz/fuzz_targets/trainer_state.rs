//! trainer_state.json: UTF-8, JSON, format version, every field typed, a plausible model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = lantern_train::checkpoint::parse_state(data, Path::new("fuzz/trainer_state.json"));
});
