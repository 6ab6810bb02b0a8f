//! Token shards: a flat array of token ids behind a 32-byte header, memory-mapped for reading.
//!
//! Layout (all little-endian):
//! ```text
//! offset  size  field
//!      0     8  magic        b"LNTNTOK\0"
//!      8     4  version      1
//!     12     4  dtype        1 = u16 tokens, 2 = u32 tokens
//!     16     8  count        number of tokens
//!     24     4  vocab_size   every token id is < vocab_size
//!     28     4  reserved     0
//!     32     -  tokens       count * (2 or 4) bytes
//! ```
//! The header is 32 bytes so the tokens that follow a page-aligned mapping are aligned for both
//! dtypes. u16 halves the file (and page-cache footprint) for vocabularies up to 65536 ids, which
//! covers GPT-2's 50257. Tokens are decoded with `from_le_bytes` rather than by casting the
//! mapping to `&[u16]`, which keeps this module free of alignment/endianness `unsafe`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::fsio::AtomicFile;

pub const MAGIC: [u8; 8] = *b"LNTNTOK\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;

/// Element type of the tokens in a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    fn code(self) -> u32 {
        match self {
            Dtype::U16 => 1,
            Dtype::U32 => 2,
        }
    }

    fn from_code(code: u32) -> Option<Dtype> {
        match code {
            1 => Some(Dtype::U16),
            2 => Some(Dtype::U32),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    /// The narrowest dtype that holds every id below `vocab_size` (ids go up to vocab_size - 1).
    pub fn for_vocab(vocab_size: u32) -> Dtype {
        if vocab_size <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }
}

fn header_bytes(dtype: Dtype, count: u64, vocab_size: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&dtype.code().to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..28].copy_from_slice(&vocab_size.to_le_bytes());
    // 28..32 reserved, zero.
    h
}

/// Write `tokens` as a shard at `path`, atomically (temp file in the same folder, then rename).
/// Uses u16 storage when `vocab_size <= 65536`. Fails before touching the disk if any token is
/// `>= vocab_size`, so a bad shard is never written.
pub fn write_shard(path: &Path, tokens: &[u32], vocab_size: u32) -> Result<()> {
    if let Some((position, &id)) = tokens.iter().enumerate().find(|(_, &t)| t >= vocab_size) {
        return Err(Error::TokenOutOfRange {
            path: path.to_path_buf(),
            id,
            position: position as u64,
            vocab_size,
        });
    }
    let mut w = ShardWriter::create(path, vocab_size)?;
    w.push(tokens)?;
    w.finish().map(|_| ())
}

/// A shard written as its tokens come, for corpora that do not fit in memory: a temp file next
/// to `path` whose header gets the token count in [`ShardWriter::finish`], which syncs the file
/// and renames it into place. Dropped unfinished (an error on the way), it removes the temp
/// file and leaves `path` as it was.
pub struct ShardWriter {
    path: PathBuf,
    out: AtomicFile,
    dtype: Dtype,
    vocab_size: u32,
    count: u64,
    buf: Vec<u8>,
}

impl ShardWriter {
    /// Start the shard `path` of ids below `vocab_size` (u16 storage up to 65536).
    pub fn create(path: &Path, vocab_size: u32) -> Result<Self> {
        let dtype = Dtype::for_vocab(vocab_size);
        let mut w = Self {
            path: path.to_path_buf(),
            out: AtomicFile::create(path)?,
            dtype,
            vocab_size,
            count: 0,
            buf: Vec::new(),
        };
        // The count stays 0 until `finish`: a temp file left by a crash reads as empty.
        w.out.write_all(&header_bytes(dtype, 0, vocab_size))?;
        Ok(w)
    }

    /// Append `tokens`; an id `>= vocab_size` is an error naming its position in the shard,
    /// and none of `tokens` is written then.
    pub fn push(&mut self, tokens: &[u32]) -> Result<()> {
        if let Some((i, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t >= self.vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                path: self.path.clone(),
                id,
                position: self.count + i as u64,
                vocab_size: self.vocab_size,
            });
        }
        // Encode in chunks: one write call per token would dominate the time for large shards.
        for chunk in tokens.chunks(16 * 1024) {
            let buf = &mut self.buf;
            buf.clear();
            match self.dtype {
                // Cannot truncate: every id < vocab_size <= 65536 was checked above.
                Dtype::U16 => chunk
                    .iter()
                    .for_each(|&t| buf.extend_from_slice(&(t as u16).to_le_bytes())),
                Dtype::U32 => chunk
                    .iter()
                    .for_each(|&t| buf.extend_from_slice(&t.to_le_bytes())),
            }
            self.out.write_all(&self.buf)?;
        }
        self.count += tokens.len() as u64;
        Ok(())
    }

    /// Tokens pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Write the header's count, sync, and rename the shard into place; its token count.
    pub fn finish(self) -> Result<u64> {
        let header = header_bytes(self.dtype, self.count, self.vocab_size);
        self.out.commit(|file| {
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)
        })?;
        Ok(self.count)
    }
}

/// What a valid shard's header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    pub dtype: Dtype,
    pub count: u64,
    pub vocab_size: u32,
}

/// Validates a whole shard held in memory exactly as [`Shard::open`] validates a file (`path` is
/// for messages): header, length, every id below the vocabulary size.
pub fn check_bytes(bytes: &[u8], path: &Path) -> Result<ShardInfo> {
    let (dtype, count, vocab_size) = parse_header(bytes, path)?;
    validate_ids(&bytes[HEADER_LEN..], dtype, vocab_size, path)?;
    Ok(ShardInfo {
        dtype,
        count,
        vocab_size,
    })
}

/// Checks magic, version, dtype, the reserved field, and that the length of `bytes` (the whole
/// file) is exactly header + count × size. Returns (dtype, count, vocab_size).
///
/// Nothing is allocated from header values: the count is checked against the file length
/// before anything is read, so a corrupt header cannot ask for a huge buffer.
fn parse_header(bytes: &[u8], path: &Path) -> Result<(Dtype, u64, u32)> {
    let file_len = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        return Err(Error::format(
            path,
            format!("file is {file_len} bytes, shorter than the {HEADER_LEN}-byte shard header"),
        ));
    }
    let h = &bytes[..HEADER_LEN];
    if h[0..8] != MAGIC {
        return Err(Error::format(
            path,
            format!(
                "not a lantern token shard (magic {:?}, expected {:?})",
                String::from_utf8_lossy(&h[0..8]),
                String::from_utf8_lossy(&MAGIC)
            ),
        ));
    }
    let version = u32_at(h, 8);
    if version != VERSION {
        return Err(Error::format(
            path,
            format!("shard format version {version} is not supported (expected {VERSION})"),
        ));
    }
    let dtype_code = u32_at(h, 12);
    let dtype = Dtype::from_code(dtype_code).ok_or_else(|| {
        Error::format(
            path,
            format!("unknown token dtype {dtype_code} (expected 1 = u16 or 2 = u32)"),
        )
    })?;
    let count = u64_at(h, 16);
    let vocab_size = u32_at(h, 24);
    let reserved = u32_at(h, 28);
    if reserved != 0 {
        return Err(Error::format(
            path,
            format!("reserved header field is {reserved}, expected 0"),
        ));
    }
    let expected = count
        .checked_mul(dtype.size() as u64)
        .and_then(|n| n.checked_add(HEADER_LEN as u64));
    if expected != Some(file_len) {
        let want = match expected {
            Some(n) => format!("{n} bytes"),
            None => "more bytes than fit in 64 bits".to_string(),
        };
        return Err(Error::format(
            path,
            format!(
                "header says {count} tokens of {} bytes ({want}) but the file is {file_len} bytes (truncated or corrupt)",
                dtype.size()
            ),
        ));
    }
    Ok((dtype, count, vocab_size))
}

/// One linear pass over the tokens; at memory bandwidth this is cheap next to training, and
/// it means `get` and `read_into` never have to check ids again.
fn validate_ids(data: &[u8], dtype: Dtype, vocab_size: u32, path: &Path) -> Result<()> {
    let found = match dtype {
        Dtype::U16 => data
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .enumerate()
            .find(|&(_, t)| t >= vocab_size),
        Dtype::U32 => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .enumerate()
            .find(|&(_, t)| t >= vocab_size),
    };
    match found {
        None => Ok(()),
        Some((position, id)) => Err(Error::TokenOutOfRange {
            path: path.to_path_buf(),
            id,
            position: position as u64,
            vocab_size,
        }),
    }
}

/// A read-only, memory-mapped, fully validated token shard.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    dtype: Dtype,
    len: usize,
    vocab_size: u32,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl Shard {
    /// Open and validate a shard: magic, version, dtype, that the file length is exactly
    /// header + count * size, and that every token id is below the header's vocab_size.
    ///
    /// Nothing is allocated from header values: the count is checked against the file length
    /// before anything is read, so a corrupt header cannot ask for a huge buffer.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if file_len < HEADER_LEN as u64 {
            return Err(Error::format(
                path,
                format!(
                    "file is {file_len} bytes, shorter than the {HEADER_LEN}-byte shard header"
                ),
            ));
        }
        // SAFETY: the mapping is read-only and shards are never modified in place: writers
        // (`write_shard`) create a new file and rename it over the old one, which leaves this
        // mapping on the old inode. Another program truncating the file while it is mapped would
        // break this, as it would for any mmap reader; that is outside what we support.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.len() as u64 != file_len {
            return Err(Error::format(
                path,
                format!(
                    "file changed while opening ({file_len} bytes, {} mapped)",
                    map.len()
                ),
            ));
        }
        let (dtype, count, vocab_size) = parse_header(&map, path)?;
        // Fits: the whole file is mapped into our address space, so count < usize::MAX.
        let len = count as usize;
        validate_ids(&map[HEADER_LEN..], dtype, vocab_size, path)?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            dtype,
            len,
            vocab_size,
        })
    }

    /// [`Shard::open`], and also require that the shard's vocabulary fits the model's embedding
    /// table, so a dataset tokenized for a larger vocabulary fails here and not as an
    /// out-of-bounds gather deep inside the model.
    pub fn open_checked(path: &Path, model_vocab: u32) -> Result<Shard> {
        let shard = Shard::open(path)?;
        if shard.vocab_size > model_vocab {
            return Err(Error::VocabMismatch {
                path: path.to_path_buf(),
                shard_vocab: shard.vocab_size,
                model_vocab,
            });
        }
        Ok(shard)
    }

    fn data(&self) -> &[u8] {
        &self.map[HEADER_LEN..]
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every id in the shard is below this (checked at open).
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token at position `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing: positions come from the program, not the data.
    pub fn get(&self, i: usize) -> u32 {
        assert!(
            i < self.len,
            "token position {i} out of range for shard of {} tokens",
            self.len
        );
        let d = self.data();
        match self.dtype {
            Dtype::U16 => u32::from(u16::from_le_bytes([d[2 * i], d[2 * i + 1]])),
            Dtype::U32 => u32_at(d, 4 * i),
        }
    }

    /// Copy `out.len()` tokens starting at position `start` into `out`.
    ///
    /// # Panics
    /// If `start + out.len() > self.len()`.
    pub fn read_into(&self, start: usize, out: &mut [u32]) {
        let end = start
            .checked_add(out.len())
            .filter(|&e| e <= self.len)
            .unwrap_or_else(|| {
                panic!(
                    "token range {start}..{}+{} out of range for shard of {} tokens",
                    start,
                    out.len(),
                    self.len
                )
            });
        let size = self.dtype.size();
        let bytes = &self.data()[start * size..end * size];
        match self.dtype {
            Dtype::U16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u32::from(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            Dtype::U32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
    }

    /// All tokens as a vector (for tests and small validation shards).
    pub fn to_vec(&self) -> Vec<u32> {
        let mut v = vec![0; self.len];
        self.read_into(0, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn round_trip_u16() {
        let dir = tmp();
        let path = dir.path().join("a.bin");
        let tokens: Vec<u32> = vec![0, 1, 50256, 65535, 7, 42];
        write_shard(&path, &tokens, 65536).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (HEADER_LEN + 2 * tokens.len()) as u64
        );
        let s = Shard::open(&path).unwrap();
        assert_eq!(s.dtype(), Dtype::U16);
        assert_eq!((s.len(), s.vocab_size(), s.is_empty()), (6, 65536, false));
        assert_eq!(s.to_vec(), tokens);
        assert_eq!(s.get(3), 65535);
        let mut out = [0u32; 3];
        s.read_into(2, &mut out);
        assert_eq!(out, [50256, 65535, 7]);
        assert_eq!(s.path(), path);
    }

    #[test]
    fn a_shard_written_in_pieces_is_the_shard_written_at_once() {
        let dir = tmp();
        let tokens: Vec<u32> = (0..40_000u32).map(|i| (i * 7919) % 70_000).collect();
        for vocab in [70_000, 65_536] {
            let tokens: Vec<u32> = tokens.iter().map(|t| t % vocab).collect();
            let once = dir.path().join(format!("once-{vocab}.bin"));
            write_shard(&once, &tokens, vocab).unwrap();
            let pieces = dir.path().join(format!("pieces-{vocab}.bin"));
            let mut w = ShardWriter::create(&pieces, vocab).unwrap();
            for piece in tokens.chunks(17_001) {
                w.push(piece).unwrap();
            }
            w.push(&[]).unwrap();
            assert_eq!(w.len(), tokens.len() as u64);
            assert!(!pieces.exists(), "in place only when finished");
            assert_eq!(w.finish().unwrap(), tokens.len() as u64);
            assert!(fs::read(&once).unwrap() == fs::read(&pieces).unwrap());
        }
    }

    #[test]
    fn a_shard_writer_that_fails_or_is_dropped_leaves_nothing_behind() {
        let dir = tmp();
        let path = dir.path().join("s.bin");
        write_shard(&path, &[1, 2, 3], 10).unwrap();
        let before = fs::read(&path).unwrap();
        let mut w = ShardWriter::create(&path, 10).unwrap();
        w.push(&[4, 5]).unwrap();
        let err = w.push(&[6, 10, 7]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TokenOutOfRange {
                    id: 10,
                    position: 3,
                    vocab_size: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(w.len(), 2, "nothing of a refused piece is written");
        drop(w);
        // The old shard as it was, and no temp file.
        assert!(fs::read(&path).unwrap() == before);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.bin"]);
    }

    #[test]
    fn round_trip_u32() {
        let dir = tmp();
        let path = dir.path().join("b.bin");
        let tokens: Vec<u32> = vec![70_000, 0, 65_536, 99_999];
        write_shard(&path, &tokens, 100_000).unwrap();
        let s = Shard::open(&path).unwrap();
        assert_eq!(s.dtype(), Dtype::U32);
        assert_eq!(s.to_vec(), tokens);
        assert_eq!(s.get(0), 70_000);
    }

    #[test]
    fn empty_shard_and_overwrite() {
        let dir = tmp();
        let path = dir.path().join("e.bin");
        write_shard(&path, &[], 10).unwrap();
        let s = Shard::open(&path).unwrap();
        assert!(s.is_empty());
        // Overwriting replaces by rename; the old mapping still reads the old contents.
        write_shard(&path, &[1, 2, 3], 10).unwrap();
        assert!(s.is_empty());
        assert_eq!(Shard::open(&path).unwrap().to_vec(), [1, 2, 3]);
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_rejects_out_of_range_ids_and_keeps_old_file() {
        let dir = tmp();
        let path = dir.path().join("train.bin");
        write_shard(&path, &[1, 2], 100).unwrap();
        let err = write_shard(&path, &[1, 2, 100], 100).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.ends_with("train.bin: token id 100 at position 2 is >= vocabulary size 100"),
            "{msg}"
        );
        assert_eq!(Shard::open(&path).unwrap().to_vec(), [1, 2]);
    }

    #[test]
    fn open_rejects_out_of_range_id_in_corrupted_file() {
        let dir = tmp();
        let path = dir.path().join("c.bin");
        write_shard(&path, &[5, 6, 7, 8], 50257).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Token at position 2 := 60000 (u16 storage).
        bytes[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&60000u16.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let msg = Shard::open(&path).unwrap_err().to_string();
        assert!(
            msg.ends_with("c.bin: token id 60000 at position 2 is >= vocabulary size 50257"),
            "{msg}"
        );
    }

    #[test]
    fn open_rejects_truncated_file() {
        let dir = tmp();
        let path = dir.path().join("t.bin");
        write_shard(&path, &[1, 2, 3, 4], 10).unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let msg = Shard::open(&path).unwrap_err().to_string();
        assert!(msg.contains("t.bin") && msg.contains("truncated"), "{msg}");
        fs::write(&path, &bytes[..10]).unwrap();
        let msg = Shard::open(&path).unwrap_err().to_string();
        assert!(msg.contains("shorter than the 32-byte"), "{msg}");
    }

    #[test]
    fn open_rejects_header_lying_about_count() {
        let dir = tmp();
        let path = dir.path().join("h.bin");
        write_shard(&path, &[1, 2, 3], 10).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        for count in [4u64, 1 << 40, u64::MAX / 2, u64::MAX] {
            bytes[16..24].copy_from_slice(&count.to_le_bytes());
            fs::write(&path, &bytes).unwrap();
            // Must fail on the length check, not try to allocate or read `count` tokens.
            let msg = Shard::open(&path).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("header says {count} tokens")),
                "{msg}"
            );
        }
    }

    #[test]
    fn open_rejects_bad_magic_version_dtype_reserved() {
        let dir = tmp();
        let path = dir.path().join("m.bin");
        write_shard(&path, &[1, 2, 3], 10).unwrap();
        let good = fs::read(&path).unwrap();
        let cases: [(usize, &[u8], &str); 4] = [
            (0, b"GPT2TOK\0", "not a lantern token shard"),
            (8, &2u32.to_le_bytes(), "version 2 is not supported"),
            (12, &3u32.to_le_bytes(), "unknown token dtype 3"),
            (28, &1u32.to_le_bytes(), "reserved header field is 1"),
        ];
        for (offset, patch, expect) in cases {
            let mut bytes = good.clone();
            bytes[offset..offset + patch.len()].copy_from_slice(patch);
            fs::write(&path, &bytes).unwrap();
            let msg = Shard::open(&path).unwrap_err().to_string();
            assert!(msg.contains("m.bin") && msg.contains(expect), "{msg}");
        }
        let missing = dir.path().join("missing.bin");
        let msg = Shard::open(&missing).unwrap_err().to_string();
        assert!(msg.contains("missing.bin"), "{msg}");
    }

    #[test]
    fn open_checked_compares_vocab_sizes() {
        let dir = tmp();
        let path = dir.path().join("v.bin");
        write_shard(&path, &[1, 2, 3], 50257).unwrap();
        assert!(Shard::open_checked(&path, 50304).is_ok());
        let msg = Shard::open_checked(&path, 4096).unwrap_err().to_string();
        assert!(
            msg.contains("v.bin") && msg.contains("50257") && msg.contains("4096"),
            "{msg}"
        );
    }

    #[test]
    fn check_bytes_validates_like_open() {
        let dir = tmp();
        let path = dir.path().join("b.bin");
        write_shard(&path, &[1, 2, 3], 10).unwrap();
        let bytes = fs::read(&path).unwrap();
        let info = check_bytes(&bytes, &path).unwrap();
        assert_eq!(
            (info.dtype, info.count, info.vocab_size),
            (Dtype::U16, 3, 10)
        );
        let msg = check_bytes(&bytes[..bytes.len() - 2], &path)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("b.bin") && msg.contains("header says 3 tokens"),
            "{msg}"
        );
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 2] = 10;
        let msg = check_bytes(&bad, &path).unwrap_err().to_string();
        assert!(
            msg.ends_with("token id 10 at position 1 is >= vocabulary size 10"),
            "{msg}"
        );
    }
}
