//! A Parquet file of records (`lantern_data::records`: rows read as JSON Lines, through the
//! `parquet` crate's record reader, which `lantern prepare`'s column reader does not use), or
//! an Arrow IPC stream (a `save_to_disk` data file), as the first byte picks: the labelled
//! reader, the first row that picks a trainer, the `ClassLabel` names of the metadata, and
//! (Arrow) `lantern prepare`'s documents. Any input gives records or an error naming the file,
//! never a panic.
#![no_main]

use lantern_data::labelled::{read_examples, Columns, ProblemType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libFuzzer's hook aborts on any panic, caught or not; the parquet crate's panics on
        // damaged files are caught and reported as errors naming the file, not crashes.
        lantern_data::documents::quiet_parquet_panics();
    },
    |data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("lantern-fuzz-records-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = if pick % 2 == 0 { "r.parquet" } else { "r.arrow" };
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    if name == "r.arrow" {
        let docs = lantern_data::documents::for_each_document(&path, "text", &mut |_| Ok(()));
        if let Err(e) = docs {
            assert!(e.to_string().contains(name), "{e}");
        }
    }
    if let Err(e) = read_examples(&path) {
        assert!(e.to_string().contains(name), "{e}");
    }
    let _ = lantern_data::dpo::is_preference_file(&path);
    let cols = Columns::default();
    let problem = ProblemType::TokenClassification;
    if let Err(e) = lantern_data::labelled::declared_label_names(&path, &cols, problem) {
        assert!(e.to_string().contains(name), "{e}");
    }
    }
);
