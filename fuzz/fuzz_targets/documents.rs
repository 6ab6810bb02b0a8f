//! A corpus file's documents (`lantern prepare`'s reader): the first byte picks the file's
//! name, and so its format (Parquet, JSON Lines, a JSON array, fortune text, gzipped or
//! zstd-compressed JSON Lines); the rest is the file. Any input gives documents or an error
//! naming the file, never a panic; reading is bounded by the file (no size taken on trust).
#![no_main]

use lantern_data::documents::for_each_document;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = [
    "c.parquet",
    "c.jsonl",
    "c.json",
    "c.txt",
    "c.jsonl.gz",
    "c.jsonl.zst",
];

fuzz_target!(
    init: {
        // libFuzzer's hook aborts on any panic, caught or not; the parquet crate's panics on
        // damaged files are caught and reported as errors naming the file, not crashes.
        lantern_data::documents::quiet_parquet_panics();
    },
    |data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let name = NAMES[pick as usize % NAMES.len()];
    // One folder per process: libFuzzer runs inputs one at a time.
    let dir = std::env::temp_dir().join(format!("lantern-fuzz-documents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, file).unwrap();
    let mut bytes = 0usize;
    let read = for_each_document(&path, "text", &mut |doc| {
        bytes += doc.len();
        Ok(())
    });
    if let Err(e) = read {
        assert!(e.to_string().contains(name), "{e}");
    }
    }
);
