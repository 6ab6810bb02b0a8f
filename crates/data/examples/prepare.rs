//! Prepare a dataset folder and report how long it took.
//!
//! ```text
//! scripts/fetch_fortunes.sh
//! cargo run --release -p lantern-data --example prepare -- data/raw/fortunes data/fortunes 4096
//! ```
//! Arguments: INPUT OUT_DIR [VOCAB_SIZE=4096] [VAL_FRACTION=0.05] [SEED=1337].

use std::path::PathBuf;
use std::time::Instant;

use lantern_data::{prepare, PrepareOptions, Shard, TRAIN_FILE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: prepare INPUT OUT_DIR [VOCAB_SIZE] [VAL_FRACTION] [SEED]".into());
    }
    let opts = PrepareOptions {
        inputs: vec![PathBuf::from(&args[0])],
        out_dir: PathBuf::from(&args[1]),
        vocab_size: args.get(2).map_or(Ok(4096), |s| s.parse())?,
        val_fraction: args.get(3).map_or(Ok(0.05), |s| s.parse())?,
        train_kind: lantern_data::prepare::TokenizerKind::Bpe,
        tokenizer: None,
        seed: args.get(4).map_or(Ok(1337), |s| s.parse())?,
        text_field: "text".into(),
    };
    let t0 = Instant::now();
    let s = prepare(&opts)?;
    let elapsed = t0.elapsed();
    println!(
        "{} files, {} documents ({} val), vocab {} (eot {}): {} train + {} val tokens in {:.2?}",
        s.files,
        s.documents,
        s.val_documents,
        s.vocab_size,
        s.eot_id,
        s.train_tokens,
        s.val_tokens,
        elapsed
    );
    let t0 = Instant::now();
    let train = Shard::open(&opts.out_dir.join(TRAIN_FILE))?;
    println!(
        "reopened and validated {} tokens in {:.2?}",
        train.len(),
        t0.elapsed()
    );
    Ok(())
}
