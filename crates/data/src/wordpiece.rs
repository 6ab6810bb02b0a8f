//! A deterministic WordPiece vocabulary learner: the same texts always give the same
//! vocabulary with the same ids.
//!
//! It learns what `tokenizers`' `WordPieceTrainer` learns (BPE merges over the words of the
//! normalised, pre-tokenised text, a `##` prefix on every symbol that continues a word, merges
//! only of pairs seen at least `min_frequency` times), but the trainer of `tokenizers` keeps its
//! counts in hash maps seeded at random per process: the ids of the `##` symbols, and so the
//! winner among pairs of equal count, change from run to run, and with them the vocabulary.
//! Here words are counted in order, symbols get ids in code-point order, and a tie between
//! pairs goes to the smaller pair of ids.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

/// The continuation prefix of BERT's WordPiece.
pub const PREFIX: &str = "##";

/// One pair to merge, ordered by count, then by the smaller pair of ids (max-heap).
#[derive(Debug, PartialEq, Eq)]
struct Candidate {
    count: u64,
    pair: (u32, u32),
}

impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.count
            .cmp(&o.count)
            .then_with(|| o.pair.cmp(&self.pair))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The vocabulary, in id order: `specials` first, then every character (as a word start, in
/// code-point order), then each character as a continuation (`##c`), then the merged tokens in
/// the order they were learned, up to `vocab_size` tokens. `words` are the words of the corpus
/// with their counts.
pub fn learn_vocab(
    words: &BTreeMap<String, u64>,
    specials: &[&str],
    vocab_size: usize,
    min_frequency: u64,
) -> Vec<String> {
    let mut tokens: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        ids.insert(t.clone(), i as u32);
    }
    let mut add = |t: String, tokens: &mut Vec<String>| -> u32 {
        if let Some(&id) = ids.get(&t) {
            return id;
        }
        let id = tokens.len() as u32;
        ids.insert(t.clone(), id);
        tokens.push(t);
        id
    };
    // The alphabet: starts, then continuations, each in code-point order.
    let mut starts = std::collections::BTreeSet::new();
    let mut continuations = std::collections::BTreeSet::new();
    for w in words.keys() {
        for (i, c) in w.chars().enumerate() {
            if i == 0 {
                starts.insert(c);
            } else {
                continuations.insert(c);
            }
        }
    }
    for c in &starts {
        add(c.to_string(), &mut tokens);
    }
    for c in &continuations {
        add(format!("{PREFIX}{c}"), &mut tokens);
    }
    // Each word as symbol ids.
    let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(words.len());
    let counts: Vec<u64> = words.values().copied().collect();
    for w in words.keys() {
        let seq = w
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let t = if i == 0 {
                    c.to_string()
                } else {
                    format!("{PREFIX}{c}")
                };
                add(t, &mut tokens)
            })
            .collect();
        seqs.push(seq);
    }
    // Pair counts and the words each pair occurs in.
    let mut pair_count: HashMap<(u32, u32), u64> = HashMap::new();
    let mut pair_words: HashMap<(u32, u32), HashSet<usize>> = HashMap::new();
    for (wi, seq) in seqs.iter().enumerate() {
        for p in seq.windows(2) {
            let pair = (p[0], p[1]);
            *pair_count.entry(pair).or_default() += counts[wi];
            pair_words.entry(pair).or_default().insert(wi);
        }
    }
    let mut heap: BinaryHeap<Candidate> = pair_count
        .iter()
        .map(|(&pair, &count)| Candidate { count, pair })
        .collect();
    while tokens.len() < vocab_size {
        let Some(top) = heap.pop() else { break };
        let now = pair_count.get(&top.pair).copied().unwrap_or(0);
        if now != top.count {
            // Stale: counts moved since this entry was pushed.
            if now > 0 {
                heap.push(Candidate {
                    count: now,
                    pair: top.pair,
                });
            }
            continue;
        }
        if top.count < min_frequency.max(1) {
            break;
        }
        let (a, b) = top.pair;
        let merged = format!(
            "{}{}",
            tokens[a as usize],
            tokens[b as usize]
                .strip_prefix(PREFIX)
                .unwrap_or(&tokens[b as usize])
        );
        let new_id = add(merged, &mut tokens);
        // Merge the pair in every word that holds it (sorted: the same order every run).
        let mut in_words: Vec<usize> = pair_words
            .remove(&top.pair)
            .unwrap_or_default()
            .into_iter()
            .collect();
        in_words.sort_unstable();
        pair_count.remove(&top.pair);
        let mut touched = std::collections::BTreeSet::new();
        for wi in in_words {
            let c = counts[wi];
            let old = std::mem::take(&mut seqs[wi]);
            // Remove the word's old pairs, merge, add its new pairs.
            for p in old.windows(2) {
                let pair = (p[0], p[1]);
                if pair != top.pair {
                    if let Some(n) = pair_count.get_mut(&pair) {
                        *n -= c;
                    }
                }
            }
            let mut new = Vec::with_capacity(old.len());
            let mut i = 0;
            while i < old.len() {
                if i + 1 < old.len() && (old[i], old[i + 1]) == top.pair {
                    new.push(new_id);
                    i += 2;
                } else {
                    new.push(old[i]);
                    i += 1;
                }
            }
            for p in new.windows(2) {
                let pair = (p[0], p[1]);
                *pair_count.entry(pair).or_default() += c;
                pair_words.entry(pair).or_default().insert(wi);
                touched.insert(pair);
            }
            seqs[wi] = new;
        }
        // The counts that moved go back on the heap; stale entries are skipped when popped.
        for pair in touched {
            if let Some(&count) = pair_count.get(&pair) {
                if count > 0 {
                    heap.push(Candidate { count, pair });
                }
            }
        }
    }
    tokens.truncate(vocab_size.max(specials.len()));
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for w in text.split_whitespace() {
            *m.entry(w.to_string()).or_default() += 1;
        }
        m
    }

    #[test]
    fn merges_the_most_frequent_pair_first_and_breaks_ties_by_id() {
        let w = words("ab ab ab cd cd abc abc");
        let v = learn_vocab(&w, &["[UNK]"], 100, 2);
        assert_eq!(&v[..4], ["[UNK]", "a", "c", "##b"]);
        let merged: Vec<&str> = v[6..].iter().map(String::as_str).collect();
        // Alphabet: a c | ##b ##c ##d; merges: a+##b (5), then c+##d and ab+##c tie at 2 and
        // the smaller pair of ids, (c, ##d), goes first.
        assert_eq!(&v[4..6], ["##c", "##d"]);
        assert_eq!(merged, ["ab", "cd", "abc"]);
        // The vocabulary stops at its size, and below min_frequency.
        assert_eq!(learn_vocab(&w, &["[UNK]"], 7, 2).len(), 7);
        assert_eq!(learn_vocab(&w, &["[UNK]"], 100, 3).len(), 7);
    }

    #[test]
    fn the_same_words_give_the_same_vocabulary() {
        let text = "the quick brown fox jumps over the lazy dog ".repeat(20)
            + &"pack my box with five dozen liquor jugs ".repeat(7);
        let w = words(&text);
        let a = learn_vocab(&w, &["[PAD]"], 60, 2);
        for _ in 0..5 {
            assert_eq!(learn_vocab(&w, &["[PAD]"], 60, 2), a);
        }
        // Every learned token is a piece of some word.
        for t in &a[1..] {
            let piece = t.strip_prefix(PREFIX).unwrap_or(t);
            assert!(w.keys().any(|x| x.contains(piece)), "{t}");
        }
    }
}
