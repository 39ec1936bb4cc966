//! SentencePiece (`tokenizer.ggml.model = llama`) encoding, as llama.cpp does
//! it: start from single UTF-8 characters, repeatedly merge the adjacent
//! pair whose merged piece has the highest score (leftmost on ties), and
//! spell out pieces that are not in the vocabulary as `<0xNN>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The vocabulary side of the SentencePiece encoder.
#[derive(Debug, Clone)]
pub struct SpmEncoder {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    byte_tokens: [Option<u32>; 256],
    unk: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Debug, PartialEq)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl SpmEncoder {
    pub fn new(tokens: &[String], scores: Vec<f32>, unk: Option<u32>) -> Self {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied();
        }
        Self {
            ids,
            scores,
            byte_tokens,
            unk,
        }
    }

    /// Encodes `text`, already escaped (spaces as `▁`), onto `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        let n = symbols.len();
        symbols[n - 1].next = None;

        let mut queue = BinaryHeap::new();
        let try_add = |left: Option<usize>,
                       right: Option<usize>,
                       symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let (ls, rs) = (symbols[l], symbols[r]);
            let joined = &text[ls.start..rs.start + rs.len];
            if let Some(&id) = self.ids.get(joined) {
                queue.push(Bigram {
                    left: l,
                    right: r,
                    score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                    len: joined.len(),
                });
            }
        };
        for i in 1..n {
            try_add(Some(i - 1), Some(i), &symbols, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue; // outdated: one side has merged since
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(b.left);
            }
            let prev = symbols[b.left].prev;
            let next = symbols[b.left].next;
            try_add(prev, Some(b.left), &symbols, &mut queue);
            try_add(Some(b.left), next, &symbols, &mut queue);
        }

        // Merged symbols are vocabulary pieces by construction; a symbol that
        // is not one is a single character missing from the vocabulary.
        let mut cursor = Some(0);
        while let Some(i) = cursor {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => self.push_bytes(piece, out),
            }
            cursor = s.next;
        }
    }

    fn push_bytes(&self, piece: &str, out: &mut Vec<u32>) {
        for &b in piece.as_bytes() {
            if let Some(id) = self.byte_tokens[b as usize].or(self.unk) {
                out.push(id);
            }
        }
    }
}
