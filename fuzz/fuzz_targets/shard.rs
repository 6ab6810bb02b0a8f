//! Token shards: header, length and every id are checked; nothing is sized from the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lantern_data::shard::{check_bytes, HEADER_LEN};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = check_bytes(data, Path::new("fuzz.bin")) {
        // Accepted means the length adds up exactly.
        let size = match info.dtype {
            lantern_data::shard::Dtype::U16 => 2,
            lantern_data::shard::Dtype::U32 => 4,
        };
        assert_eq!(data.len() as u64, HEADER_LEN as u64 + info.count * size);
    }
});
