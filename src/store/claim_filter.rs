//! Which record keys were surely not claimed lately, answered from memory: the embedded store's
//! record dedup then skips the claims index for nearly every key (a new record is the common
//! case; Microsoft's duplicates are a few in a hundred), and looks up only the keys the filter
//! may hold.
//!
//! Blocked Bloom filters (one 64-byte block a key, 6 bits set in it, 10 bits a key: about 1 %
//! false positives, which only cost the lookup the filter saved), one a *generation* of claims.
//! A generation ends when it is full or one span (the record dedup window) old; a generation that
//! ended more than a span ago is dropped whole, so nothing is ever deleted key by key. A key is
//! answered "surely not claimed since `t`" only when every claim since `t` went through the filter
//! (`covered_from ≤ t`): a longer window (audit-search items) asks the index as before.
//!
//! Bounded: the generations together hold at most [`MAX_BYTES`]. A generation that would exceed
//! it is made no larger, and fills past its capacity: more false positives (more lookups), never
//! a wrong answer.

use std::collections::VecDeque;

/// The most memory all generations hold together: 32 MiB, about 26 million keys at 10 bits.
pub const MAX_BYTES: usize = 32 << 20;
/// A first generation's capacity (80 KiB): grows by doubling as generations fill.
const MIN_CAPACITY: usize = 1 << 16;
const BITS_PER_KEY: usize = 10;
/// One block: a cache line of 512 bits.
const BLOCK_WORDS: usize = 8;

/// See the module doc.
#[derive(Debug)]
pub struct ClaimFilter {
    /// Oldest first.
    generations: VecDeque<Generation>,
    /// Every claim made from this time (ms) on is in the filter.
    covered_from: u64,
    /// How long a generation is kept after it ends (ms): the record dedup window.
    span_ms: u64,
    /// The bound on [`ClaimFilter::bytes`]: [`MAX_BYTES`].
    max_bytes: usize,
}

#[derive(Debug)]
struct Generation {
    blocks: Vec<[u64; BLOCK_WORDS]>,
    /// When its first key was added (ms).
    from: u64,
    keys: usize,
    capacity: usize,
}

impl Generation {
    fn new(capacity: usize, from: u64) -> Generation {
        let blocks = (capacity * BITS_PER_KEY).div_ceil(BLOCK_WORDS * 64).max(1);
        Generation {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
            from,
            keys: 0,
            capacity,
        }
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * BLOCK_WORDS * 8
    }

    /// The block and the 6 bits (word, bit) of `key`.
    fn slots(&self, key: u128) -> (usize, [(usize, u64); 6]) {
        let h = mix(key);
        let block = ((u128::from(h >> 32) * self.blocks.len() as u128) >> 32) as usize;
        // Six 9-bit slices (word 0–7, bit 0–63) of a second product, apart from the block's bits.
        let h2 = h.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let mut bits = [(0usize, 0u64); 6];
        for (i, slot) in bits.iter_mut().enumerate() {
            let v = ((h2 >> (9 * i + 8)) as usize) & 0x1ff;
            *slot = (v >> 6, 1u64 << (v & 63));
        }
        (block, bits)
    }

    fn insert(&mut self, key: u128) {
        let (block, bits) = self.slots(key);
        let b = &mut self.blocks[block];
        for (w, m) in bits {
            b[w] |= m;
        }
        self.keys += 1;
    }

    fn may_hold(&self, key: u128) -> bool {
        let (block, bits) = self.slots(key);
        let b = &self.blocks[block];
        bits.iter().all(|&(w, m)| b[w] & m != 0)
    }
}

/// A record key's 64 filter bits. Its low 96 bits are a hash already (the top 32 its creation
/// minute), so one multiply spreads them well enough.
fn mix(key: u128) -> u64 {
    let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(32);
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

impl ClaimFilter {
    /// An empty filter: every claim from `now_ms` on goes through it; claims are kept in it for
    /// `span_ms` after their generation ends.
    pub fn new(now_ms: u64, span_ms: u64) -> ClaimFilter {
        ClaimFilter::bounded(now_ms, span_ms, MAX_BYTES)
    }

    fn bounded(now_ms: u64, span_ms: u64, max_bytes: usize) -> ClaimFilter {
        ClaimFilter {
            generations: VecDeque::new(),
            covered_from: now_ms,
            span_ms,
            max_bytes,
        }
    }

    /// False: `key` was surely not claimed at or after `since_ms`. True: it may have been (ask
    /// the index); always true for a time before what the filter covers.
    pub fn may_hold(&self, key: u128, since_ms: u64) -> bool {
        if since_ms < self.covered_from {
            return true;
        }
        let mut ends = self.generations.iter().skip(1).map(|g| g.from);
        for g in &self.generations {
            // A generation that ended before `since_ms` holds only older claims.
            let end = ends.next().unwrap_or(u64::MAX);
            if end >= since_ms && g.may_hold(key) {
                return true;
            }
        }
        false
    }

    /// Adds a claim made at `now_ms`.
    pub fn insert(&mut self, key: u128, now_ms: u64) {
        self.expire(now_ms);
        let held: usize = self.generations.iter().map(Generation::bytes).sum();
        let capacity = match self.generations.back() {
            None => Some(MIN_CAPACITY),
            // A full one doubles; one that aged out is followed by one sized by what it held.
            Some(g) if g.keys >= g.capacity && g.bytes() < self.max_bytes / 4 => {
                Some(g.capacity * 2)
            }
            Some(g) if now_ms.saturating_sub(g.from) >= self.span_ms => {
                Some((g.keys + g.keys / 4).max(MIN_CAPACITY))
            }
            Some(_) => None,
        };
        // Within the bound; without room the last one goes on filling (more false positives)
        // until expiry frees some.
        let room = self.max_bytes.saturating_sub(held) * 8 / BITS_PER_KEY;
        if let Some(capacity) = capacity.map(|c| c.min(room))
            && capacity >= MIN_CAPACITY
        {
            self.generations
                .push_back(Generation::new(capacity, now_ms));
        }
        if let Some(g) = self.generations.back_mut() {
            g.insert(key);
        }
    }

    /// Drops the generations that ended more than a span before `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        while self.generations.len() > 1 {
            let end = self.generations[1].from;
            if end.saturating_add(self.span_ms) >= now_ms {
                break;
            }
            self.generations.pop_front();
            self.covered_from = self.covered_from.max(end);
        }
    }

    /// Memory held (bytes).
    pub fn bytes(&self) -> usize {
        self.generations.iter().map(Generation::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn key(i: u64) -> u128 {
        // As record keys are: creation minute on top, a hash below.
        (u128::from(29_000_000u32) << 96) | u128::from(i.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    #[test]
    fn every_claimed_key_is_held_and_few_others_are() {
        let mut f = ClaimFilter::new(0, 24 * HOUR);
        for i in 0..500_000 {
            f.insert(key(i), i / 100);
        }
        assert!(
            (0..500_000).all(|i| f.may_hold(key(i), 0)),
            "no false negative"
        );
        let false_positives = (1_000_000..1_100_000)
            .filter(|&i| f.may_hold(key(i), 0))
            .count();
        // Generations doubled from 64 Ki keys: each answers, so the rate adds up over them.
        assert!(false_positives < 6_000, "{false_positives} in 100,000");
        assert!(f.bytes() <= MAX_BYTES);
    }

    #[test]
    fn a_time_before_what_is_covered_always_asks_the_index() {
        let mut f = ClaimFilter::new(10 * HOUR, 24 * HOUR);
        f.insert(key(1), 10 * HOUR);
        assert!(!f.may_hold(key(2), 10 * HOUR));
        assert!(
            f.may_hold(key(2), 9 * HOUR),
            "claims before the filter began are unknown"
        );
    }

    #[test]
    fn generations_expire_whole_a_span_after_they_end() {
        let mut f = ClaimFilter::new(0, 24 * HOUR);
        f.insert(key(1), 0);
        // A day later a new generation starts; the first is still within the window.
        f.insert(key(2), 24 * HOUR);
        assert!(f.may_hold(key(1), HOUR / 2));
        // Once the first generation ended a span ago it goes, and with it what it covered.
        f.insert(key(3), 48 * HOUR + 1);
        assert!(f.may_hold(key(1), 0), "before the coverage: ask the index");
        assert!(
            !f.may_hold(key(1), 24 * HOUR + 1),
            "dropped with its generation"
        );
        assert!(f.may_hold(key(2), 24 * HOUR + 1));
        // Queried from after a generation ended, it is not consulted.
        assert!(!f.may_hold(key(2), 48 * HOUR + 2) || f.generations.len() == 1);
    }

    #[test]
    fn memory_stays_within_its_bound_however_many_keys() {
        // 1 MiB holds about 840,000 keys at 10 bits; 3 million go in.
        let mut f = ClaimFilter::bounded(0, 24 * HOUR, 1 << 20);
        for i in 0..3_000_000u64 {
            f.insert(key(i), 0);
        }
        assert!(f.bytes() <= 1 << 20, "{} bytes", f.bytes());
        assert!(
            (0..3_000_000).all(|i| f.may_hold(key(i), 0)),
            "no false negative"
        );
    }
}
