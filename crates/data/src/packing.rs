//! Packing SFT examples into rows of at most `max_length` tokens, as TRL's `pack_dataset` does
//! (`SFTConfig.packing`), so that batches carry little or no padding.
//!
//! - `bfd` (TRL's default): best-fit decreasing. Each example is cut to `max_length`, then
//!   examples are taken longest first (ties in their order) and each goes into the row whose
//!   free space fits it most tightly, or a new row; a row lists its examples in the order they
//!   went in. The examples stay whole sequences: positions restart and attention stays within
//!   each one (`lantern_models::Packing` on the model's side; TRL's padding-free batches).
//! - `bfd_split`: the same, but an example longer than `max_length` is split into pieces of
//!   `max_length` (the last shorter), each packed as a sequence of its own.
//! - `wrapped`: every example's tokens one after the other, cut every `max_length` tokens:
//!   rows are single sequences whose attention crosses the examples' boundaries.
//!
//! TRL packs through `datasets.map(batched=True)`, so each run of 1000 examples
//! ([`PACK_CHUNK`]) is packed on its own; so is it here, which makes the rows TRL's.

use crate::sft::SftExample;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Examples packed together at most: `datasets`' `map` batch size, over which TRL packs.
pub const PACK_CHUNK: usize = 1000;

/// How examples become rows (TRL's `packing_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackingStrategy {
    #[default]
    Bfd,
    BfdSplit,
    Wrapped,
}

impl PackingStrategy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bfd => "bfd",
            Self::BfdSplit => "bfd_split",
            Self::Wrapped => "wrapped",
        }
    }
}

/// Packs `examples` (each one sequence, as read) into rows of at most `max_length` tokens,
/// each a [`SftExample`] whose `seq_lengths` lists its sequences. Empty examples are left out.
pub fn pack(
    examples: &[SftExample],
    max_length: usize,
    strategy: PackingStrategy,
) -> Vec<SftExample> {
    assert!(max_length > 0, "packing into rows of 0 tokens");
    examples
        .chunks(PACK_CHUNK)
        .flat_map(|chunk| match strategy {
            PackingStrategy::Bfd => best_fit(pieces(chunk, max_length, false), max_length),
            PackingStrategy::BfdSplit => best_fit(pieces(chunk, max_length, true), max_length),
            PackingStrategy::Wrapped => wrapped(chunk, max_length),
        })
        .collect()
}

/// The sequences BFD packs: each non-empty example cut to `max_length`, or split into pieces
/// of `max_length` (the last shorter).
fn pieces(chunk: &[SftExample], max_length: usize, split: bool) -> Vec<SftExample> {
    let mut out = Vec::with_capacity(chunk.len());
    for e in chunk.iter().filter(|e| !e.ids.is_empty()) {
        let n = e.ids.len();
        let starts: Vec<usize> = match split {
            true => (0..n).step_by(max_length).collect(),
            false => vec![0],
        };
        for s in starts {
            let end = (s + max_length).min(n);
            out.push(SftExample {
                ids: e.ids[s..end].to_vec(),
                trained: e.trained[s..end].to_vec(),
                seq_lengths: vec![end - s],
                line: e.line,
            });
        }
    }
    out
}

/// Best-fit decreasing over sequences of at most `max_length` tokens (TRL's `_pack_bfd`): the
/// longest first, ties in order (a stable sort); each into the row with the least free space
/// that fits it, the row that got that much free space first among equals, else a new row.
fn best_fit(seqs: Vec<SftExample>, max_length: usize) -> Vec<SftExample> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].ids.len()));
    // Rows as the indices of their sequences; free space → rows with it, oldest first.
    let mut rows: Vec<(Vec<usize>, usize)> = Vec::new();
    let mut spaces: BTreeSet<usize> = BTreeSet::new();
    let mut with_space: HashMap<usize, VecDeque<usize>> = HashMap::new();
    for i in order {
        let len = seqs[i].ids.len();
        let row = match spaces.range(len..).next().copied() {
            Some(space) => {
                let q = with_space.get_mut(&space).expect("a listed space has rows");
                let row = q.pop_front().expect("a listed space has rows");
                if q.is_empty() {
                    spaces.remove(&space);
                }
                row
            }
            None => {
                rows.push((Vec::new(), max_length));
                rows.len() - 1
            }
        };
        let (members, free) = &mut rows[row];
        members.push(i);
        *free -= len;
        if *free > 0 {
            spaces.insert(*free);
            with_space.entry(*free).or_default().push_back(row);
        }
    }
    rows.into_iter()
        .map(|(members, _)| {
            let mut packed = SftExample {
                ids: Vec::new(),
                trained: Vec::new(),
                seq_lengths: Vec::with_capacity(members.len()),
                line: seqs[members[0]].line,
            };
            for i in members {
                let s = &seqs[i];
                packed.ids.extend_from_slice(&s.ids);
                packed.trained.extend_from_slice(&s.trained);
                packed.seq_lengths.push(s.ids.len());
            }
            packed
        })
        .collect()
}

/// The chunk's tokens one after the other, cut every `max_length` (TRL's `_pack_wrapped`):
/// rows of one sequence each.
fn wrapped(chunk: &[SftExample], max_length: usize) -> Vec<SftExample> {
    let ids: Vec<u32> = chunk.iter().flat_map(|e| e.ids.iter().copied()).collect();
    let trained: Vec<bool> = chunk
        .iter()
        .flat_map(|e| e.trained.iter().copied())
        .collect();
    // The line of the example each row starts in.
    let mut lines = Vec::with_capacity(ids.len());
    for e in chunk {
        lines.extend(std::iter::repeat_n(e.line, e.ids.len()));
    }
    (0..ids.len())
        .step_by(max_length)
        .map(|s| {
            let end = (s + max_length).min(ids.len());
            SftExample {
                ids: ids[s..end].to_vec(),
                trained: trained[s..end].to_vec(),
                seq_lengths: vec![end - s],
                line: lines[s],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], line: usize) -> SftExample {
        SftExample::new(ids.to_vec(), vec![true; ids.len()], line)
    }

    fn rows(packed: &[SftExample]) -> Vec<(Vec<u32>, Vec<usize>)> {
        packed
            .iter()
            .map(|p| (p.ids.clone(), p.seq_lengths.clone()))
            .collect()
    }

    /// The examples of TRL's `pack_dataset` docstring, with its results.
    #[test]
    fn trl_docstring_examples() {
        let data = [
            ex(&[1, 2, 3, 4, 5], 1),
            ex(&[6, 7], 2),
            ex(&[8, 9, 10], 3),
            ex(&[11], 4),
        ];
        assert_eq!(
            rows(&pack(&data, 4, PackingStrategy::Bfd)),
            [
                (vec![1, 2, 3, 4], vec![4]),
                (vec![8, 9, 10, 11], vec![3, 1]),
                (vec![6, 7], vec![2]),
            ]
        );
        assert_eq!(
            rows(&pack(&data, 4, PackingStrategy::BfdSplit)),
            [
                (vec![1, 2, 3, 4], vec![4]),
                (vec![8, 9, 10, 5], vec![3, 1]),
                (vec![6, 7, 11], vec![2, 1]),
            ]
        );
        assert_eq!(
            rows(&pack(&data, 4, PackingStrategy::Wrapped)),
            [
                (vec![1, 2, 3, 4], vec![4]),
                (vec![5, 6, 7, 8], vec![4]),
                (vec![9, 10, 11], vec![3]),
            ]
        );
    }

    /// Best fit, not first fit: 3 goes to the row with 3 free rather than the one with 5;
    /// equal spaces are served oldest row first; the trained flags travel with their tokens.
    #[test]
    fn best_fit_picks_the_tightest_row_oldest_first() {
        let data = [
            ex(&[1; 5], 1),
            ex(&[2; 7], 2),
            ex(&[3; 3], 3),
            ex(&[4; 5], 4),
            ex(&[5; 2], 5),
        ];
        let mut data = data.to_vec();
        data[2].trained = vec![false, true, false];
        let packed = pack(&data, 10, PackingStrategy::Bfd);
        // Sorted: 7 (2), 5 (1), 5 (4), 3 (3), 2 (5). 7 → row 0 (3 free); 5 → row 1 (5 free);
        // 5 → row 1 (full); 3 → row 0 (full); 2 → row 2.
        assert_eq!(
            packed
                .iter()
                .map(|p| p.seq_lengths.clone())
                .collect::<Vec<_>>(),
            [vec![7, 3], vec![5, 5], vec![2]]
        );
        assert_eq!(packed[0].ids, [vec![2; 7], vec![3; 3]].concat());
        assert_eq!(&packed[0].trained[7..], [false, true, false]);
        assert_eq!(packed[1].ids, [vec![1; 5], vec![4; 5]].concat());
        assert_eq!(packed[1].line, 1);
        // Two rows left with 4 free: the older takes the next sequence of 4.
        let data = [ex(&[1; 6], 1), ex(&[2; 6], 2), ex(&[3; 4], 3)];
        let packed = pack(&data, 10, PackingStrategy::Bfd);
        assert_eq!(packed[0].ids, [vec![1; 6], vec![3; 4]].concat());
    }

    /// Each run of `PACK_CHUNK` examples packs on its own, as TRL's batched map does.
    #[test]
    fn chunks_pack_apart() {
        let data: Vec<SftExample> = (0..PACK_CHUNK + 1).map(|i| ex(&[1], i + 1)).collect();
        let packed = pack(&data, PACK_CHUNK, PackingStrategy::Bfd);
        assert_eq!(packed.len(), 2);
        assert_eq!(packed[0].seq_lengths.len(), PACK_CHUNK);
        assert_eq!(packed[1].line, PACK_CHUNK + 1);
    }
}
