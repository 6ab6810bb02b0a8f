//! Dataset preparation: text files in, a dataset folder out.
//!
//! ```text
//! out_dir/
//!   tokenizer.json   the tokenizer the shards were encoded with
//!   train.bin        training documents, each followed by the end-of-document token
//!   val.bin          validation documents, same layout
//!   meta.json        sizes, ids and the options that made the split (written last)
//! ```
//! Text inputs use the fortune file format: documents separated by lines holding only `%`; a
//! file without such lines is one document. JSON Lines inputs (`.jsonl`, `.ndjson`, `.json`,
//! as `datasets` writes them) hold one document per record, in a string field (`text` unless
//! told otherwise). Any input may be compressed (`.gz`, `.zst`). See [`crate::documents`].
//!
//! The files are read twice, as streams: once to count their documents (and, when a tokenizer
//! is trained, to keep them for its training), once to encode them in batches straight into
//! the shards. With a given tokenizer the corpus is never held in memory: what is held is one
//! batch of text, its encodings, and a byte per document for the split. The train/val split is per document and a pure function
//! of `(seed, document index)`, so the same inputs and seed always give the same split, and the
//! tokenizer is trained on training documents only, so validation text never shapes the
//! vocabulary it is scored with.
//!
//! The trained tokenizer is GPT-2's byte-level BPE (documents end with `<|endoftext|>`) or, for
//! BERT, a WordPiece one with BERT's specials (documents end with `[SEP]`). Both kinds write the
//! same layout, one token stream: a masked-LM sample is a window of `seq_len - 2` tokens of it,
//! drawn by the same pure sampler as a causal-LM one, with `[CLS]` put before and `[SEP]` after
//! at batch time (see lantern-train's `task` module). Windows may cross document boundaries,
//! where the stream's own `[SEP]` marks the break, as RoBERTa's FULL-SENTENCES packing does;
//! no padding is needed and no token of the corpus is wasted.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::documents::for_each_document;
pub use crate::documents::split_documents;
use crate::error::{Error, Result};
use crate::fsio::write_bytes_atomic;
use crate::hash::{hash_index, unit_f64};
use crate::shard::ShardWriter;
use crate::tokenizer::{
    document_separator, load_tokenizer, train_bpe_from_iter, train_wordpiece_from_iter, vocab_size,
};

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TRAIN_FILE: &str = "train.bin";
pub const VAL_FILE: &str = "val.bin";
pub const META_FILE: &str = "meta.json";
pub const META_FORMAT_VERSION: u32 = 1;

/// Keeps the document split independent of the sampler's window hash for the same seed.
const SPLIT_DOMAIN: u64 = 0x7370_6C69_745F_7631; // "split_v1"

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Files or folders; folders are walked recursively in sorted order.
    pub inputs: Vec<PathBuf>,
    pub out_dir: PathBuf,
    /// Vocabulary size of the tokenizer to train; ignored when `tokenizer` is given.
    pub vocab_size: usize,
    /// Which tokenizer to train when `tokenizer` is not given: `Bpe` (GPT) or `WordPiece`
    /// (BERT).
    pub train_kind: TokenizerKind,
    /// Probability that a document goes to validation, in [0, 1).
    pub val_fraction: f64,
    /// Use this tokenizer.json instead of training one.
    pub tokenizer: Option<PathBuf>,
    pub seed: u64,
    /// The field of a JSON record that holds its text (JSON Lines inputs; default `text`).
    pub text_field: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrepareSummary {
    /// Ids in the shards are below this; the model's vocabulary must be at least this large.
    pub vocab_size: u32,
    /// The id appended after every document.
    pub eot_id: u32,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Non-empty documents found (train + val).
    pub documents: usize,
    pub val_documents: usize,
    pub tokenizer_kind: TokenizerKind,
    /// Text files read.
    pub files: usize,
    /// Files passed over: binary (NUL bytes), `.dat` fortune indexes, hidden files, symlinks.
    pub skipped: Vec<PathBuf>,
}

/// The model family of a tokenizer, as recorded in `meta.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Byte-pair encoding (GPT-2's byte-level BPE when trained here).
    #[default]
    Bpe,
    /// WordPiece with BERT's specials (`[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`).
    WordPiece,
    /// Anything else a given tokenizer.json holds (Unigram, WordLevel).
    Other,
}

impl TokenizerKind {
    pub fn of(tokenizer: &Tokenizer) -> Self {
        use tokenizers::ModelWrapper;
        match tokenizer.get_model() {
            ModelWrapper::BPE(_) => Self::Bpe,
            ModelWrapper::WordPiece(_) => Self::WordPiece,
            _ => Self::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bpe => "bpe",
            Self::WordPiece => "wordpiece",
            Self::Other => "other",
        }
    }
}

/// Contents of `meta.json`.
///
/// Unknown fields are accepted rather than denied: meta.json is written by this crate, and a
/// newer writer adding a field should not stop an older reader; incompatible changes bump
/// `format_version` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub format_version: u32,
    pub vocab_size: u32,
    pub eot_id: u32,
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub documents: usize,
    pub val_fraction: f64,
    pub seed: u64,
    /// Tokenizer file name, relative to the dataset folder.
    pub tokenizer: String,
    /// The tokenizer's kind; absent in folders written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_kind: Option<TokenizerKind>,
}

impl DatasetMeta {
    pub fn tokenizer_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.tokenizer)
    }
}

/// Read and check `dir/meta.json`.
pub fn read_meta(dir: &Path) -> Result<DatasetMeta> {
    if !dir.is_dir() {
        return Err(Error::MissingDataDir(dir.to_path_buf()));
    }
    let path = dir.join(META_FILE);
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let meta: DatasetMeta = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, format!("invalid dataset metadata: {e}")))?;
    if meta.format_version != META_FORMAT_VERSION {
        return Err(Error::format(
            &path,
            format!(
                "format_version {} is not supported (expected {META_FORMAT_VERSION})",
                meta.format_version
            ),
        ));
    }
    if meta.eot_id >= meta.vocab_size {
        return Err(Error::format(
            &path,
            format!(
                "eot_id {} is >= vocab_size {}",
                meta.eot_id, meta.vocab_size
            ),
        ));
    }
    Ok(meta)
}

/// Where a preparation is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareProgress {
    /// First pass, after each file: `files_done` of `files` read, `documents` found in them.
    Reading {
        files_done: usize,
        files: usize,
        documents: usize,
    },
    /// The tokenizer is being trained on the training documents.
    Training { documents: usize },
    /// Second pass, after each batch: `documents_done` of `documents` encoded, `tokens`
    /// written (end-of-document tokens included).
    Encoding {
        documents_done: usize,
        documents: usize,
        tokens: u64,
    },
}

/// Build a dataset folder from text files; see the module docs for the layout and rules.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareSummary> {
    prepare_with_progress(opts, &mut |_| {})
}

/// The tokenizer `opts` asks for, trained on the training documents of `files` (each with
/// its count of documents) read once more: a thread reads them, in order, and hands them over
/// in batches of about `batch_bytes` of text to the trainer, which keeps only word counts.
fn train_streaming(
    opts: &PrepareOptions,
    files: &[(PathBuf, usize)],
    is_val: &[bool],
    batch_bytes: usize,
) -> Result<Tokenizer> {
    if opts.train_kind == TokenizerKind::Other {
        return Err(Error::InvalidArgument(
            "only a BPE or a WordPiece tokenizer can be trained".into(),
        ));
    }
    // Two batches in flight: the reader fills one while the trainer counts the other.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<String>>(1);
    std::thread::scope(|scope| {
        // Ok(false): the trainer stopped taking documents (with its own error) before the end.
        let reader = scope.spawn(move || -> Result<bool> {
            let (mut next, mut batch, mut bytes) = (0usize, Vec::new(), 0usize);
            let mut stopped = false;
            for (path, count) in files {
                let read = for_each_counted_document(path, *count, &opts.text_field, &mut |doc| {
                    // In range: the counts add up to the split's length.
                    let train = !is_val[next];
                    next += 1;
                    if train {
                        bytes += doc.len();
                        batch.push(doc);
                    }
                    if bytes >= batch_bytes {
                        bytes = 0;
                        if tx.send(std::mem::take(&mut batch)).is_err() {
                            stopped = true;
                            return Err(Error::TokenizerTraining("stopped".into()));
                        }
                    }
                    Ok(())
                });
                if stopped {
                    return Ok(false);
                }
                read?;
            }
            Ok(tx.send(batch).is_ok())
        });
        let docs = rx.into_iter().flatten();
        let trained = match opts.train_kind {
            TokenizerKind::WordPiece => train_wordpiece_from_iter(docs, opts.vocab_size),
            _ => train_bpe_from_iter(docs, opts.vocab_size),
        };
        let read = reader.join().unwrap_or_else(|_| {
            Err(Error::InvalidArgument(
                "the corpus reader stopped unexpectedly".into(),
            ))
        });
        // The reader's error first: a trainer cut short by it has trained on part of the data.
        match (read?, trained) {
            (false, Ok(_)) => Err(Error::TokenizerTraining(
                "the trainer stopped before the end of the corpus".into(),
            )),
            (_, trained) => trained,
        }
    })
}

/// [`prepare`], telling `progress` where it is (after each file read and each batch encoded).
pub fn prepare_with_progress(
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(PrepareProgress),
) -> Result<PrepareSummary> {
    prepare_in_batches(opts, ENCODE_BATCH_BYTES, progress)
}

/// [`prepare_with_progress`], encoding about `batch_bytes` of text at a time.
fn prepare_in_batches(
    opts: &PrepareOptions,
    batch_bytes: usize,
    progress: &mut dyn FnMut(PrepareProgress),
) -> Result<PrepareSummary> {
    if !(opts.val_fraction.is_finite() && (0.0..1.0).contains(&opts.val_fraction)) {
        return Err(Error::InvalidArgument(format!(
            "val_fraction must be in [0, 1), got {}",
            opts.val_fraction
        )));
    }

    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for input in &opts.inputs {
        collect_input(input, &mut files, &mut skipped)?;
    }

    // First pass: each file's documents counted (the split needs their number). A tokenizer
    // to train reads the training documents again, and the encoding reads them all again.
    let mut used_files: Vec<(PathBuf, usize)> = Vec::new();
    let (n_files, mut documents) = (files.len(), 0);
    for (i, path) in files.into_iter().enumerate() {
        let mut count = 0;
        let text = for_each_document(&path, &opts.text_field, &mut |_| {
            count += 1;
            Ok(())
        })?;
        if text {
            used_files.push((path, count));
            documents += count;
        } else {
            skipped.push(path);
        }
        progress(PrepareProgress::Reading {
            files_done: i + 1,
            files: n_files,
            documents,
        });
    }
    let is_val = assign_split(documents, opts.val_fraction, opts.seed)?;

    let tokenizer = match &opts.tokenizer {
        Some(path) => load_tokenizer(path)?,
        None => {
            progress(PrepareProgress::Training {
                documents: is_val.iter().filter(|&&v| !v).count(),
            });
            train_streaming(opts, &used_files, &is_val, batch_bytes)?
        }
    };
    let tokenizer_label = opts
        .tokenizer
        .clone()
        .unwrap_or_else(|| opts.out_dir.join(TOKENIZER_FILE));
    let vocab = u32::try_from(vocab_size(&tokenizer)).map_err(|_| Error::Tokenizer {
        path: tokenizer_label.clone(),
        problem: "vocabulary does not fit in u32 ids".into(),
    })?;
    let (eot_id, _) = document_separator(&tokenizer).ok_or_else(|| Error::Tokenizer {
        path: tokenizer_label.clone(),
        problem: format!(
            "has no end-of-document token ({}, [SEP] or </s>) to put between documents",
            crate::tokenizer::EOT
        ),
    })?;
    let tokenizer_json = tokenizer.to_string(false).map_err(|e| Error::Tokenizer {
        path: tokenizer_label,
        problem: format!("cannot serialize: {e}"),
    })?;

    let created = !opts.out_dir.exists();
    fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let written = (|| {
        let mut encoder = Encoder {
            tokenizer: &tokenizer,
            is_val: &is_val,
            eot_id,
            train: ShardWriter::create(&opts.out_dir.join(TRAIN_FILE), vocab)?,
            val: ShardWriter::create(&opts.out_dir.join(VAL_FILE), vocab)?,
            next: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_limit: batch_bytes,
            ids: Vec::new(),
            progress,
        };
        for (path, count) in &used_files {
            encoder.file(path, *count, &opts.text_field)?;
        }
        write_bytes_atomic(
            &opts.out_dir.join(TOKENIZER_FILE),
            tokenizer_json.as_bytes(),
        )?;
        Ok((encoder.train.finish()?, encoder.val.finish()?))
    })();
    let (train_tokens, val_tokens) = match written {
        Ok(counts) => counts,
        Err(e) => {
            if created {
                // Empty unless an earlier file of ours was renamed into it; then it stays.
                let _ = fs::remove_dir(&opts.out_dir);
            }
            return Err(e);
        }
    };

    let meta = DatasetMeta {
        format_version: META_FORMAT_VERSION,
        vocab_size: vocab,
        eot_id,
        train_tokens,
        val_tokens,
        documents,
        val_fraction: opts.val_fraction,
        seed: opts.seed,
        tokenizer: TOKENIZER_FILE.to_string(),
        tokenizer_kind: Some(TokenizerKind::of(&tokenizer)),
    };
    let meta_path = opts.out_dir.join(META_FILE);
    let meta_json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::format(&meta_path, format!("cannot serialize: {e}")))?;
    // Last, so a folder with a meta.json always has the shards it describes.
    write_bytes_atomic(&meta_path, &meta_json)?;

    Ok(PrepareSummary {
        vocab_size: vocab,
        eot_id,
        train_tokens,
        val_tokens,
        documents,
        val_documents: is_val.iter().filter(|&&v| v).count(),
        tokenizer_kind: TokenizerKind::of(&tokenizer),
        files: used_files.len(),
        skipped,
    })
}

/// Text encoded at a time: the tokenizer's thread pool shares out a batch's documents, and a
/// batch's encodings (ids, offsets, token strings) stay a few times its size.
const ENCODE_BATCH_BYTES: usize = 4 << 20;

/// The documents of `path`, of which the first pass counted `count`: a file that has changed
/// since (more documents, fewer, or now binary) is an error as soon as it shows.
fn for_each_counted_document(
    path: &Path,
    count: usize,
    text_field: &str,
    f: &mut dyn FnMut(String) -> Result<()>,
) -> Result<()> {
    let changed = |seen: &str| {
        Error::format(
            path,
            format!("changed while it was read: {count} documents, then {seen}"),
        )
    };
    let mut seen = 0;
    let text = for_each_document(path, text_field, &mut |doc| {
        seen += 1;
        if seen > count {
            return Err(changed("more"));
        }
        f(doc)
    })?;
    if !text || seen != count {
        return Err(changed(&seen.to_string()));
    }
    Ok(())
}

/// The last pass: documents encoded in batches, each followed by the end-of-document id, into
/// the shard of its side of the split.
struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    is_val: &'a [bool],
    eot_id: u32,
    train: ShardWriter,
    val: ShardWriter,
    /// The global index of the batch's first document.
    next: usize,
    batch: Vec<String>,
    batch_bytes: usize,
    /// The batch is encoded once it holds this much text.
    batch_limit: usize,
    ids: Vec<u32>,
    progress: &'a mut dyn FnMut(PrepareProgress),
}

impl Encoder<'_> {
    /// The `count` documents of `path` (the first pass's count).
    fn file(&mut self, path: &Path, count: usize, text_field: &str) -> Result<()> {
        for_each_counted_document(path, count, text_field, &mut |doc| {
            self.batch_bytes += doc.len();
            self.batch.push(doc);
            if self.batch_bytes >= self.batch_limit {
                self.flush(path)?;
            }
            Ok(())
        })?;
        self.flush(path)
    }

    fn flush(&mut self, path: &Path) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() {
            return Ok(());
        }
        // No special tokens: a BERT tokenizer would otherwise wrap every document in [CLS]/[SEP].
        let encodings = self
            .tokenizer
            .encode_batch_fast(batch, false)
            .map_err(|e| Error::Tokenizer {
                path: path.to_path_buf(),
                problem: format!("cannot encode: {e}"),
            })?;
        for enc in encodings {
            self.ids.clear();
            self.ids.extend_from_slice(enc.get_ids());
            self.ids.push(self.eot_id);
            let shard = match self.is_val[self.next] {
                true => &mut self.val,
                false => &mut self.train,
            };
            shard.push(&self.ids)?;
            self.next += 1;
        }
        (self.progress)(PrepareProgress::Encoding {
            documents_done: self.next,
            documents: self.is_val.len(),
            tokens: self.train.len() + self.val.len(),
        });
        Ok(())
    }
}

/// Add `input` (a file, or a folder walked recursively in sorted order) to `files`.
fn collect_input(input: &Path, files: &mut Vec<PathBuf>, skipped: &mut Vec<PathBuf>) -> Result<()> {
    // `metadata` follows a symlink the user named explicitly; inside folders we do not (below).
    let meta = fs::metadata(input).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingInput(input.to_path_buf()),
        _ => Error::io(input, e),
    })?;
    if meta.is_dir() {
        walk_dir(input, files, skipped)
    } else {
        files.push(input.to_path_buf());
        Ok(())
    }
}

fn walk_dir(dir: &Path, files: &mut Vec<PathBuf>, skipped: &mut Vec<PathBuf>) -> Result<()> {
    // One dataset, read as a whole (`documents::for_each_document`): its `state.json` is not a
    // document, nor its Arrow files text.
    if crate::records::is_saved_dataset(dir) {
        files.push(dir.to_path_buf());
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        entries.push(entry.path());
    }
    // Directory order is filesystem-dependent; sorting makes document indices (and so the
    // split) the same on every machine.
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.file_type().is_symlink() {
            // Fortune packages link `name.u8 -> name`; following links would read documents
            // twice (and could loop or leave the folder).
            skipped.push(path);
        } else if meta.is_dir() {
            walk_dir(&path, files, skipped)?;
        } else if path.extension().is_some_and(|e| e == "dat") {
            // strfile's binary index next to each fortune file.
            skipped.push(path);
        } else if meta.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// `true` for validation documents: document `i` goes to validation iff
/// `u(seed, i) < val_fraction`, `u` uniform in [0, 1). With at least two documents, both sides
/// are made non-empty by moving the document with the smallest `u` to validation (or the largest
/// to training), which keeps the result a pure function of the inputs.
fn assign_split(n: usize, val_fraction: f64, seed: u64) -> Result<Vec<bool>> {
    if n < 2 {
        return Err(Error::Corpus(format!(
            "found {n} non-empty document(s); need at least 2 for a train and a validation split"
        )));
    }
    let u: Vec<f64> = (0..n as u64)
        .map(|i| unit_f64(hash_index(seed ^ SPLIT_DOMAIN, i)))
        .collect();
    let mut is_val: Vec<bool> = u.iter().map(|&x| x < val_fraction).collect();
    let by_u = |a: &(usize, &f64), b: &(usize, &f64)| a.1.total_cmp(b.1);
    if !is_val.contains(&true) {
        if let Some((i, _)) = u.iter().enumerate().min_by(by_u) {
            is_val[i] = true;
        }
    } else if !is_val.contains(&false) {
        if let Some((i, _)) = u.iter().enumerate().max_by(by_u) {
            is_val[i] = false;
        }
    }
    Ok(is_val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::tests::read_documents;
    use crate::shard::Shard;

    const COMPUTERS: &str = "A computer lets you make more mistakes faster.\n\
%\n\
There are 10 kinds of people: those who understand binary and those who don't.\n\
%\n\
   \n\
%\n\
Real programmers count from zero.\n  -- anonymous\n\
%\n";
    const SCIENCE: &str = "If it's green or wriggles, it's biology.\n\
%\n\
If it stinks, it's chemistry.\n%\n\
If it doesn't work, it's physics.\n%\n\
The universe is made of stories, not of atoms.\n%\n\
Science is what we understand well enough to explain to a computer.\n";

    /// corpus/{computers, science, science.dat, .hidden, sub/notes.txt, blob}
    fn corpus() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("corpus");
        fs::create_dir_all(c.join("sub")).unwrap();
        fs::write(c.join("computers"), COMPUTERS).unwrap();
        fs::write(c.join("science"), SCIENCE).unwrap();
        fs::write(c.join("science.dat"), b"\x00\x00\x00\x02binary index").unwrap();
        fs::write(c.join(".hidden"), "should not be read\n").unwrap();
        fs::write(
            c.join("sub").join("notes.txt"),
            "A file with no separators is one document.\nSecond line.\n",
        )
        .unwrap();
        fs::write(c.join("blob"), b"text then \x00 a NUL byte").unwrap();
        dir
    }

    fn opts(root: &Path, out: &str, seed: u64) -> PrepareOptions {
        PrepareOptions {
            inputs: vec![root.join("corpus")],
            out_dir: root.join(out),
            vocab_size: 300,
            val_fraction: 0.3,
            train_kind: TokenizerKind::Bpe,
            tokenizer: None,
            seed,
            text_field: "text".into(),
        }
    }

    fn all_docs() -> Vec<String> {
        // Sorted walk: blob (skipped), computers, science, sub/notes.txt.
        let mut docs = split_documents(COMPUTERS);
        docs.extend(split_documents(SCIENCE));
        docs.push("A file with no separators is one document.\nSecond line.\n".into());
        docs
    }

    #[test]
    fn split_documents_follows_fortune_format() {
        let docs = split_documents("one\n%\ntwo\nlines\n%\r\n%\n  \n%\nthree");
        assert_eq!(docs, ["one\n", "two\nlines\n", "three"]);
        assert_eq!(split_documents("no separators\n"), ["no separators\n"]);
        // A `%` inside a line is text.
        assert_eq!(split_documents("100% sure\n"), ["100% sure\n"]);
    }

    #[test]
    fn prepare_writes_a_consistent_dataset() {
        let root = corpus();
        let o = opts(root.path(), "out", 1);
        let s = prepare(&o).unwrap();
        let docs = all_docs();
        assert_eq!(s.documents, docs.len());
        assert_eq!(s.documents, 3 + 5 + 1);
        assert_eq!(s.files, 3);
        assert!(s.skipped.iter().any(|p| p.ends_with("blob")));
        assert!(s.skipped.iter().any(|p| p.ends_with("science.dat")));
        assert!(s.val_documents >= 1 && s.val_documents < s.documents);

        let meta = read_meta(&o.out_dir).unwrap();
        assert_eq!(meta.format_version, 1);
        assert_eq!(meta.vocab_size, s.vocab_size);
        assert_eq!(meta.eot_id, s.eot_id);
        assert_eq!(
            (meta.train_tokens, meta.val_tokens),
            (s.train_tokens, s.val_tokens)
        );
        assert_eq!(meta.documents, s.documents);
        assert_eq!((meta.val_fraction, meta.seed), (0.3, 1));
        assert_eq!(meta.tokenizer, "tokenizer.json");
        assert_eq!(meta.tokenizer_kind, Some(TokenizerKind::Bpe));

        let tok = load_tokenizer(&meta.tokenizer_path(&o.out_dir)).unwrap();
        assert_eq!(tok.token_to_id(crate::EOT), Some(meta.eot_id));
        let train = Shard::open_checked(&o.out_dir.join(TRAIN_FILE), meta.vocab_size).unwrap();
        let val = Shard::open_checked(&o.out_dir.join(VAL_FILE), meta.vocab_size).unwrap();
        assert_eq!(train.len() as u64, meta.train_tokens);
        assert_eq!(val.len() as u64, meta.val_tokens);

        // Tokens decode back to the documents, in order, each followed by EOT.
        let is_val = assign_split(docs.len(), 0.3, 1).unwrap();
        let expect = |want_val: bool| -> String {
            docs.iter()
                .zip(&is_val)
                .filter(|(_, &v)| v == want_val)
                .map(|(d, _)| format!("{d}{}", crate::EOT))
                .collect()
        };
        assert_eq!(tok.decode(&train.to_vec(), false).unwrap(), expect(false));
        assert_eq!(tok.decode(&val.to_vec(), false).unwrap(), expect(true));
        assert_eq!(*train.to_vec().last().unwrap(), meta.eot_id);

        // Only our four files, no temp files left.
        let mut names: Vec<_> = fs::read_dir(&o.out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
        );
    }

    #[test]
    fn prepare_is_deterministic_and_seed_changes_split() {
        let root = corpus();
        let a = prepare(&opts(root.path(), "a", 5)).unwrap();
        let b = prepare(&opts(root.path(), "b", 5)).unwrap();
        assert_eq!(a, b);
        for f in [TRAIN_FILE, VAL_FILE, TOKENIZER_FILE] {
            let fa = fs::read(root.path().join("a").join(f)).unwrap();
            let fb = fs::read(root.path().join("b").join(f)).unwrap();
            assert!(fa == fb, "{f} differs between identical runs");
        }
        // Over a few seeds, the split of 9 documents is not always the same.
        let splits: std::collections::HashSet<Vec<bool>> =
            (0..8).map(|s| assign_split(9, 0.3, s).unwrap()).collect();
        assert!(splits.len() > 1);
    }

    #[test]
    fn split_guarantees_both_sides() {
        for seed in 0..20 {
            let v = assign_split(2, 0.0, seed).unwrap();
            assert_eq!(v.iter().filter(|&&x| x).count(), 1);
            let v = assign_split(3, 0.999_999, seed).unwrap();
            assert!(v.contains(&true) && v.contains(&false));
        }
        let msg = assign_split(1, 0.1, 0).unwrap_err().to_string();
        assert!(msg.contains("need at least 2"), "{msg}");
        // Roughly the asked-for fraction on a larger corpus.
        let v = assign_split(10_000, 0.1, 3).unwrap();
        let n = v.iter().filter(|&&x| x).count();
        assert!((800..1200).contains(&n), "{n} val docs");
    }

    #[test]
    fn prepare_with_given_tokenizer() {
        let root = corpus();
        let first = opts(root.path(), "first", 1);
        prepare(&first).unwrap();
        let mut second = opts(root.path(), "second", 2);
        second.tokenizer = Some(first.out_dir.join(TOKENIZER_FILE));
        second.vocab_size = 0; // ignored with a given tokenizer
        let s = prepare(&second).unwrap();
        let m1 = read_meta(&first.out_dir).unwrap();
        assert_eq!((s.vocab_size, s.eot_id), (m1.vocab_size, m1.eot_id));
        assert_eq!(
            s.train_tokens + s.val_tokens,
            m1.train_tokens + m1.val_tokens
        );
    }

    /// A minimal BERT-style (WordPiece) tokenizer.json in the Hugging Face format.
    fn wordpiece_json() -> String {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "computer", "if", "it", "'", "s", ".", "##s",
        ];
        let vocab: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{:?}: {i}", w))
            .collect();
        let added: Vec<String> = words[..4]
            .iter()
            .enumerate()
            .map(|(i, w)| {
                format!(
                    r#"{{"id": {i}, "content": "{w}", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}"#
                )
            })
            .collect();
        format!(
            r###"{{"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{}],
            "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
            "pre_tokenizer": {{"type": "BertPreTokenizer"}},
            "post_processor": {{"type": "TemplateProcessing",
                "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
                "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
                "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
            "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
            "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {{{}}}}}}}"###,
            added.join(", "),
            vocab.join(", ")
        )
    }

    #[test]
    fn prepare_with_wordpiece_tokenizer_uses_sep() {
        let root = corpus();
        let tok_path = root.path().join("bert-tokenizer.json");
        fs::write(&tok_path, wordpiece_json()).unwrap();
        let mut o = opts(root.path(), "bert", 1);
        o.tokenizer = Some(tok_path);
        let s = prepare(&o).unwrap();
        assert_eq!((s.vocab_size, s.eot_id), (12, 3));
        assert_eq!(s.tokenizer_kind, TokenizerKind::WordPiece);
        let train = Shard::open(&o.out_dir.join(TRAIN_FILE)).unwrap().to_vec();
        // No [CLS] per document: documents are separated by [SEP] only.
        assert!(!train.contains(&2));
        assert_eq!(
            train.iter().filter(|&&t| t == 3).count() as u64 + s.val_documents as u64,
            s.documents as u64
        );
        // The copied tokenizer.json still encodes with the WordPiece vocabulary above.
        let tok = load_tokenizer(&o.out_dir.join(TOKENIZER_FILE)).unwrap();
        let ids = tok.encode("If it's a computer.", false).unwrap();
        assert_eq!(ids.get_ids(), [6, 7, 8, 9, 4, 5, 10]);
    }

    #[test]
    fn prepare_trains_a_bert_wordpiece_tokenizer() {
        let root = corpus();
        let mut o = opts(root.path(), "wp", 1);
        o.train_kind = TokenizerKind::WordPiece;
        o.vocab_size = 200;
        let s = prepare(&o).unwrap();
        assert_eq!(s.tokenizer_kind, TokenizerKind::WordPiece);
        let meta = read_meta(&o.out_dir).unwrap();
        assert_eq!(meta.tokenizer_kind, Some(TokenizerKind::WordPiece));
        let tok = load_tokenizer(&meta.tokenizer_path(&o.out_dir)).unwrap();
        // BERT's specials in BERT's order; documents end with [SEP].
        for (id, t) in crate::tokenizer::BERT_SPECIALS.iter().enumerate() {
            assert_eq!(tok.token_to_id(t), Some(id as u32), "{t}");
        }
        assert_eq!(meta.eot_id, 3);
        let train = Shard::open(&o.out_dir.join(TRAIN_FILE)).unwrap().to_vec();
        assert_eq!(*train.last().unwrap(), 3);
        assert!(
            !train.contains(&2) && !train.contains(&4),
            "no [CLS] or [MASK] in the stream"
        );
        let text = tok.decode(&train, true).unwrap();
        assert!(text.contains("computer"), "{text}");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A file's documents, `None` for a binary one.
    fn json_line(field: &str, text: &str) -> String {
        format!(
            "{{\"id\": 7, \"{field}\": {}}}\n",
            serde_json::to_string(text).unwrap()
        )
    }

    #[test]
    fn json_lines_and_compressed_files_give_the_text_corpus_dataset() {
        // The corpus's documents in the same order (computers, science, notes) as JSON Lines
        // with a blank line and a whitespace record in two zstd frames, a JSON array, and
        // gzipped text in two gzip members: the same documents, so the same split, tokenizer
        // and shards.
        let root = corpus();
        let json = root.path().join("json");
        fs::create_dir_all(&json).unwrap();
        let mut lines = String::new();
        for d in split_documents(COMPUTERS) {
            lines.push_str(&json_line("text", &d));
        }
        lines.push_str("\n   \n");
        lines.push_str(&json_line("text", " \n\t"));
        let (head, tail) = lines.split_at(lines.len() / 2);
        let mut two_frames = zstd::encode_all(head.as_bytes(), 3).unwrap();
        two_frames.extend(zstd::encode_all(tail.as_bytes(), 19).unwrap());
        fs::write(json.join("a.jsonl.zst"), two_frames).unwrap();
        let records: Vec<_> = split_documents(SCIENCE)
            .into_iter()
            .map(|d| serde_json::json!({"text": d, "n": [1, 2]}))
            .collect();
        fs::write(
            json.join("b.json"),
            serde_json::to_string(&records).unwrap(),
        )
        .unwrap();
        let notes = "A file with no separators is one document.\nSecond line.\n";
        let (head, tail) = notes.split_at(10);
        let mut two_members = gzip(head.as_bytes());
        two_members.extend(gzip(tail.as_bytes()));
        fs::write(json.join("c.txt.gz"), two_members).unwrap();

        let text = prepare(&opts(root.path(), "from-text", 3)).unwrap();
        let mut o = opts(root.path(), "from-json", 3);
        o.inputs = vec![json];
        let from_json = prepare(&o).unwrap();
        assert_eq!(from_json.documents, all_docs().len());
        assert_eq!(
            (from_json.train_tokens, from_json.val_tokens),
            (text.train_tokens, text.val_tokens)
        );
        for f in [TRAIN_FILE, VAL_FILE, TOKENIZER_FILE] {
            let a = fs::read(root.path().join("from-text").join(f)).unwrap();
            let b = fs::read(root.path().join("from-json").join(f)).unwrap();
            assert!(a == b, "{f} differs");
        }
    }

    #[test]
    fn batches_of_any_size_write_the_same_dataset() {
        // A batch per document (a flush inside every file, and a batch handed to the tokenizer
        // trainer per training document) against the default (one per file here): the same
        // tokenizer, shards and summary.
        let root = corpus();
        let whole = prepare(&opts(root.path(), "whole", 9)).unwrap();
        let mut seen = Vec::new();
        let single =
            prepare_in_batches(&opts(root.path(), "single", 9), 1, &mut |p| seen.push(p)).unwrap();
        assert_eq!(whole, single);
        // Each of the 4 files read (the binary blob among them; the walk passed over two more),
        // the training, then each document encoded.
        let n = whole.documents;
        let reading = [0, 3, 8, 9].iter().enumerate().map(|(i, &d)| {
            let files_done = i + 1;
            PrepareProgress::Reading {
                files_done,
                files: 4,
                documents: d,
            }
        });
        assert!(seen.iter().take(4).cloned().eq(reading), "{seen:?}");
        let training = n - whole.val_documents;
        assert_eq!(
            seen[4],
            PrepareProgress::Training {
                documents: training
            }
        );
        assert_eq!(seen.len(), 5 + n);
        let last = PrepareProgress::Encoding {
            documents_done: n,
            documents: n,
            tokens: whole.train_tokens + whole.val_tokens,
        };
        assert_eq!(seen[4 + n], last);
        for f in [TRAIN_FILE, VAL_FILE, TOKENIZER_FILE, META_FILE] {
            let a = fs::read(root.path().join("whole").join(f)).unwrap();
            let b = fs::read(root.path().join("single").join(f)).unwrap();
            assert!(a == b, "{f} differs");
        }
    }

    #[test]
    fn a_json_record_is_one_document_in_the_field_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.jsonl.gz");
        let text = "100% sure\n%\nstill the same record\n";
        let lines = json_line("content", text) + &json_line("content", "another");
        fs::write(&path, gzip(lines.as_bytes())).unwrap();
        let docs = read_documents(&path, "content").unwrap().unwrap();
        assert_eq!(docs, [text, "another"]);
        // A binary file is passed over; a gzipped one is read.
        fs::write(dir.path().join("blob"), b"a\x00b").unwrap();
        assert_eq!(
            read_documents(&dir.path().join("blob"), "text").unwrap(),
            None
        );
    }

    #[test]
    fn json_input_errors_name_the_file_the_line_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let err = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            let msg = read_documents(&path, "text").unwrap_err().to_string();
            assert!(msg.contains(name), "{msg}");
            msg
        };
        let good = json_line("text", "fine");
        let msg = err("bad.jsonl", format!("{good}{{\"text\": \"cut\n").as_bytes());
        assert!(msg.contains("line 2: not JSON"), "{msg}");
        let msg = err("field.jsonl", json_line("content", "x").as_bytes());
        // The keys in the record's order, or sorted: serde_json's map keeps either.
        assert!(
            msg.contains("line 1: no field \"text\" (the record has: ")
                && msg.contains("id")
                && msg.contains("content")
                && msg.contains("--text-field"),
            "{msg}"
        );
        let msg = err("number.ndjson", b"\n{\"text\": 3}\n");
        assert!(
            msg.contains("line 2: field \"text\" is a number, not a string"),
            "{msg}"
        );
        let msg = err("list.jsonl", b"[\"text\"]\n");
        assert!(
            msg.contains("line 1: a record is a JSON object, found an array"),
            "{msg}"
        );
        let msg = err("array.json", b"[{\"text\": \"a\"}, {\"text\": null}]");
        assert!(msg.contains("record 1: field \"text\" is null"), "{msg}");
        let msg = err("cut.json", b"[{\"text\": \"a\"}, ");
        assert!(msg.contains("not a JSON array of records"), "{msg}");
        let mut cut = gzip(good.as_bytes());
        cut.truncate(cut.len() - 6);
        let msg = err("cut.jsonl.gz", &cut);
        assert!(msg.contains("cannot decompress (gzip)"), "{msg}");
        let mut cut = zstd::encode_all(good.as_bytes(), 3).unwrap();
        cut.truncate(cut.len() - 3);
        let msg = err("cut.jsonl.zst", &cut);
        assert!(msg.contains("cannot decompress (zstd)"), "{msg}");
        let msg = err("plain.jsonl.zst", good.as_bytes());
        assert!(msg.contains("cannot decompress (zstd)"), "{msg}");
    }

    #[test]
    fn prepare_errors_are_clear() {
        let root = corpus();
        let mut o = opts(root.path(), "out", 1);
        o.inputs.push(root.path().join("nowhere"));
        let msg = prepare(&o).unwrap_err().to_string();
        assert!(
            msg.contains("nowhere") && msg.contains("does not exist"),
            "{msg}"
        );

        let mut o = opts(root.path(), "out", 1);
        o.val_fraction = 1.0;
        assert!(matches!(prepare(&o), Err(Error::InvalidArgument(_))));

        let one = root.path().join("one.txt");
        fs::write(&one, "just one document\n").unwrap();
        let mut o = opts(root.path(), "out", 1);
        o.inputs = vec![one];
        let msg = prepare(&o).unwrap_err().to_string();
        assert!(msg.contains("need at least 2"), "{msg}");
        assert!(
            !root.path().join("out").exists(),
            "nothing written on error"
        );

        // A vocabulary too small for the trainer: its own error, although the reader still had
        // batches to hand over (a document a batch), and nothing written.
        for (kind, size, problem) in [
            (
                TokenizerKind::Bpe,
                100,
                "BPE vocabulary size 100 is too small",
            ),
            (
                TokenizerKind::WordPiece,
                10,
                "WordPiece vocabulary size 10 is too small",
            ),
        ] {
            let mut o = opts(root.path(), "out", 1);
            (o.train_kind, o.vocab_size) = (kind, size);
            let msg = prepare_in_batches(&o, 1, &mut |_| {})
                .unwrap_err()
                .to_string();
            assert!(msg.contains(problem), "{msg}");
            assert!(!root.path().join("out").exists());
        }

        let msg = read_meta(&root.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("data folder") && msg.contains("nope does not exist"),
            "{msg}"
        );
        let msg = read_meta(&root.path().join("corpus"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("meta.json"), "{msg}");
        fs::write(
            root.path().join("corpus").join("meta.json"),
            "{\"format_version\": 1}",
        )
        .unwrap();
        let msg = read_meta(&root.path().join("corpus"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("meta.json") && msg.contains("missing field"),
            "{msg}"
        );
    }
}
