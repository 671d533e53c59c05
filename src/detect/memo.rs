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
//! allocation per line once slots are warm. Values over [`MAX_VALUE`] bytes
//! are not kept: they are rare, and mostly attacks.

use smallvec::SmallVec;

/// Slots per field: a few thousand distinct pages and assets fit, with a
/// few hundred KiB per worker in all.
const SLOTS: usize = 2048;
/// Longest value remembered.
pub const MAX_VALUE: usize = 256;

/// The conditions a value satisfied (usually none).
pub type Conds = SmallVec<[u32; 3]>;

#[derive(Debug, Default, Clone)]
struct Slot {
    hash: u64,
    value: Vec<u8>,
    conds: Conds,
    filled: bool,
}

/// One field's memo.
#[derive(Debug, Clone)]
pub struct Memo {
    slots: Vec<Slot>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            slots: vec![Slot::default(); SLOTS],
        }
    }
}

impl Memo {
    fn index(hash: u64) -> usize {
        // The high bits: the hasher mixes them best.
        (hash >> 53) as usize % SLOTS
    }

    /// What `value` (hashed to `hash`) satisfied when last seen, if it is
    /// still remembered.
    pub fn get(&self, hash: u64, value: &[u8]) -> Option<&Conds> {
        let slot = self.slots.get(Self::index(hash))?;
        (slot.filled && slot.hash == hash && slot.value == value).then_some(&slot.conds)
    }

    /// Remembers what `value` satisfied, in place of whatever shared its slot.
    pub fn put(&mut self, hash: u64, value: &[u8], conds: &[u32]) {
        if value.len() > MAX_VALUE {
            return;
        }
        let Some(slot) = self.slots.get_mut(Self::index(hash)) else {
            return;
        };
        slot.hash = hash;
        slot.value.clear();
        slot.value.extend_from_slice(value);
        slot.conds.clear();
        slot.conds.extend_from_slice(conds);
        slot.filled = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_found_only_by_itself() {
        let mut m = Memo::default();
        assert!(m.get(7, b"/a").is_none());
        m.put(7, b"/a", &[3]);
        assert_eq!(m.get(7, b"/a").map(|c| c.to_vec()), Some(vec![3]));
        // Same hash, other value: never mistaken for it.
        assert!(m.get(7, b"/b").is_none());
        // A value sharing the slot replaces the older one.
        m.put(7, b"/b", &[]);
        assert!(m.get(7, b"/a").is_none());
        assert_eq!(m.get(7, b"/b").map(|c| c.len()), Some(0));
    }

    #[test]
    fn long_values_are_not_kept() {
        let mut m = Memo::default();
        let long = vec![b'a'; MAX_VALUE + 1];
        m.put(1, &long, &[1]);
        assert!(m.get(1, &long).is_none());
    }
}
