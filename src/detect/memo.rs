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

/// Slots for fields with many values (paths, targets, queries): the
/// popular pages and assets of a busy site, a few hundred KiB per field and
/// worker. On the benchmark log the 2,048 most frequent targets are 72 %
/// of the lines; four times as many slots measured no faster.
pub const MANY: usize = 2048;
/// Slots for fields with few values (methods, protocols, user agents).
pub const FEW: usize = 512;
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

impl Memo {
    /// A memo of `slots` (a power of two) slots.
    pub fn new(slots: usize) -> Memo {
        Memo {
            slots: vec![Slot::default(); slots.next_power_of_two()],
        }
    }

    fn index(&self, hash: u64) -> usize {
        // The high bits: the hasher mixes them best.
        let bits = self.slots.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (hash >> (64 - bits)) as usize
    }

    /// What `value` (hashed to `hash`) satisfied when last seen, if it is
    /// still remembered.
    pub fn get(&self, hash: u64, value: &[u8]) -> Option<&Conds> {
        let slot = self.slots.get(self.index(hash))?;
        (slot.filled && slot.hash == hash && slot.value == value).then_some(&slot.conds)
    }

    /// Remembers what `value` satisfied, in place of whatever shared its slot.
    pub fn put(&mut self, hash: u64, value: &[u8], conds: &[u32]) {
        if value.len() > MAX_VALUE {
            return;
        }
        let i = self.index(hash);
        let Some(slot) = self.slots.get_mut(i) else {
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
        let mut m = Memo::new(FEW);
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
        let mut m = Memo::new(FEW);
        let long = vec![b'a'; MAX_VALUE + 1];
        m.put(1, &long, &[1]);
        assert!(m.get(1, &long).is_none());
    }
}
