//! Run configs: any bytes given as a config file must parse or fail with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = lantern_train::RunConfig::from_bytes(data, "fuzz.toml", &[]) {
        // What we accept we can write back and read again unchanged (the resolved config of a
        // run folder is read by --resume).
        let again = lantern_train::RunConfig::parse(&cfg.to_toml(), "resolved.toml", &[])
            .expect("a resolved config parses");
        assert_eq!(cfg, again);
    }
});
