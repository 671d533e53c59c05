//! Remembers which conditions a field value satisfied, per parse worker.
//!
//! Scanning a field for every rule's patterns (decoding it, resolving the
//! path, an Aho-Corasick search, a regex set) costs about a microsecond a
//! request with the built-in rules, and it is the same work every time a
//! value comes again: a log repeats its user agents, protocols and methods
//! on nearly every line, and its popular pages and assets on most. A small
//! direct-mapped table per field, keyed by the raw value, turns those into
//! one hash and one comparison (`BENCHMARKS.md`, "classification memo").
//!
//! The table is exact (the value itself is compared, not only its hash), so
//! it changes no decision; a value that never comes back (a flood of random
//! paths) costs a hash and a copy into a slot that is reused, never an
//! allocation.
//!
//! Layout, for the cache: the hashes sit in one small array, so a value
//! seen for the first time costs a look there only; each slot's value and
//! conditions sit together in one fixed-size entry, so a value seen before
//! costs one entry's cache lines and no pointer to follow. (Slots holding a
//! `Vec` each cost three cache misses a lookup: `BENCHMARKS.md`, "a flatter
//! memo".) Values longer than an entry holds, and values satisfying more
//! than [`MAX_CONDS`] conditions, are not kept: both are rare, and mostly
//! attacks.

/// Slots for fields with many values (paths, targets, queries): the
/// popular pages and assets of a busy site. On the benchmark log the 2,048
/// most frequent targets are 72 % of the lines; four times as many slots
/// measured no faster.
pub const MANY: usize = 2048;
/// Entry size for those fields: 112 bytes of value, which holds nearly
/// every page a site links to.
pub const MANY_ENTRY: usize = 128;
/// Slots for fields with few values (methods, protocols, user agents).
pub const FEW: usize = 512;
/// Entry size for those fields: 240 bytes of value, for user agents.
pub const FEW_ENTRY: usize = 256;
/// Most conditions remembered for one value.
pub const MAX_CONDS: usize = 3;

/// Bytes before an entry's value: its length (u16), the number of
/// conditions (u8), a spare byte, and the conditions (3 × u32).
const HEADER: usize = 16;

/// One field's memo.
#[derive(Debug, Clone)]
pub struct Memo {
    /// Each slot's value hash; 0 marks a free slot (a value whose hash is 0
    /// is not kept).
    hashes: Vec<u64>,
    /// `entry` bytes a slot: header, then the value.
    entries: Vec<u8>,
    entry: usize,
}

impl Memo {
    /// A memo of `slots` (rounded up to a power of two) slots of `entry`
    /// bytes each (at least the header and one byte of value).
    pub fn new(slots: usize, entry: usize) -> Memo {
        let slots = slots.next_power_of_two();
        let entry = entry.max(HEADER + 1);
        Memo {
            hashes: vec![0; slots],
            entries: vec![0; slots * entry],
            entry,
        }
    }

    fn index(&self, hash: u64) -> usize {
        // The high bits: the hasher mixes them best.
        let bits = self.hashes.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (hash >> (64 - bits)) as usize
    }

    fn entry(&self, i: usize) -> Option<&[u8]> {
        self.entries.get(i * self.entry..(i + 1) * self.entry)
    }

    /// Whether `value` (hashed to `hash`) is remembered; if so, hands each
    /// condition it satisfied to `found`. (A callback, not a returned list:
    /// copying the list out cost a stalled load on every request.)
    #[inline]
    pub fn recall(&self, hash: u64, value: &[u8], mut found: impl FnMut(u32)) -> bool {
        let i = self.index(hash);
        if hash == 0 || self.hashes.get(i) != Some(&hash) {
            return false;
        }
        let Some(entry) = self.entry(i) else {
            return false;
        };
        let len = usize::from(u16::from_le_bytes([entry[0], entry[1]]));
        if entry.get(HEADER..HEADER + len) != Some(value) {
            return false;
        }
        let n = usize::from(entry[2]).min(MAX_CONDS);
        for k in 0..n {
            let at = 4 + 4 * k;
            found(u32::from_le_bytes([
                entry[at],
                entry[at + 1],
                entry[at + 2],
                entry[at + 3],
            ]));
        }
        true
    }

    /// Remembers what `value` satisfied, in place of whatever shared its slot.
    pub fn put(&mut self, hash: u64, value: &[u8], conds: &[u32]) {
        if hash == 0 || value.len() > self.entry - HEADER || conds.len() > MAX_CONDS {
            return;
        }
        let i = self.index(hash);
        let start = i * self.entry;
        let (Some(tag), Some(entry)) = (
            self.hashes.get_mut(i),
            self.entries.get_mut(start..start + self.entry),
        ) else {
            return;
        };
        *tag = hash;
        entry[..2].copy_from_slice(&(value.len() as u16).to_le_bytes());
        entry[2] = conds.len() as u8;
        for (k, id) in conds.iter().enumerate() {
            entry[4 + 4 * k..8 + 4 * k].copy_from_slice(&id.to_le_bytes());
        }
        entry[HEADER..HEADER + value.len()].copy_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(m: &Memo, hash: u64, value: &[u8]) -> Option<Vec<u32>> {
        let mut found = Vec::new();
        m.recall(hash, value, |c| found.push(c)).then_some(found)
    }

    #[test]
    fn a_value_is_found_only_by_itself() {
        let mut m = Memo::new(FEW, FEW_ENTRY);
        assert!(get(&m, 7, b"/a").is_none());
        m.put(7, b"/a", &[3]);
        assert_eq!(get(&m, 7, b"/a"), Some(vec![3]));
        // Same hash, other value: never mistaken for it, even a prefix.
        assert!(get(&m, 7, b"/b").is_none());
        assert!(get(&m, 7, b"/").is_none());
        assert!(get(&m, 7, b"/a/").is_none());
        // A value sharing the slot replaces the older one.
        m.put(7, b"/b", &[]);
        assert!(get(&m, 7, b"/a").is_none());
        assert_eq!(get(&m, 7, b"/b").map(|c| c.len()), Some(0));
    }

    #[test]
    fn what_an_entry_cannot_hold_is_not_kept() {
        let mut m = Memo::new(FEW, FEW_ENTRY);
        let longest = vec![b'a'; FEW_ENTRY - HEADER];
        m.put(1, &longest, &[1, 2, 3]);
        assert_eq!(get(&m, 1, &longest), Some(vec![1, 2, 3]));
        let long = vec![b'b'; FEW_ENTRY - HEADER + 1];
        m.put(2, &long, &[1]);
        assert!(get(&m, 2, &long).is_none());
        m.put(3, b"/x", &[1, 2, 3, 4]);
        assert!(get(&m, 3, b"/x").is_none());
        // Hash 0 marks a free slot: an empty memo finds nothing.
        m.put(0, b"", &[]);
        assert!(get(&m, 0, b"").is_none());
    }

    #[test]
    fn the_empty_value_is_kept_like_any_other() {
        let mut m = Memo::new(2, 32);
        m.put(u64::MAX, b"", &[9]);
        assert_eq!(get(&m, u64::MAX, b""), Some(vec![9]));
        assert!(get(&m, u64::MAX, b"x").is_none());
    }
}
