//! Finding an agent or a framework by name, once per allocation and per filter each round.
//!
//! A binary search over 2,000 names compares a dozen strings that each sit elsewhere in
//! memory; with hundreds of thousands of live filters that dominated a round. [`NameIndex`]
//! hashes the name once (a fixed multiply-rotate hash over 8-byte words, no per-process key)
//! into an open-addressing table and compares one string. It is only ever probed, never
//! iterated, so no hash order can reach an output.

/// Sorted names, each found at its position.
#[derive(Debug)]
pub(super) struct NameIndex<'a> {
    names: Vec<&'a str>,
    /// Position + 1 of the name hashed here, 0 for an empty slot; a power of two long, at
    /// least twice the names, so probes stay short.
    slots: Vec<u32>,
}

impl<'a> NameIndex<'a> {
    /// `names` must be sorted and distinct (a map's keys are).
    pub fn new(names: Vec<&'a str>) -> NameIndex<'a> {
        let mut slots = vec![0; (names.len() * 2).next_power_of_two().max(2)];
        let mask = slots.len() - 1;
        for (position, name) in names.iter().enumerate() {
            let mut slot = hash(name) as usize & mask;
            while slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            slots[slot] = u32::try_from(position + 1).expect("fewer than 4 billion names");
        }
        NameIndex { names, slots }
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut slot = hash(name) as usize & mask;
        loop {
            let position = (self.slots[slot] as usize).checked_sub(1)?;
            if self.names[position] == name {
                return Some(position);
            }
            slot = (slot + 1) & mask;
        }
    }

    pub fn name(&self, position: usize) -> &'a str {
        self.names[position]
    }
}

/// FxHash's step (rotate, xor, multiply by a 64-bit odd constant) over 8-byte words: a
/// name of 15 bytes is two multiplications, where a byte-wise hash chained fifteen.
fn hash(name: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(K);
    let mut words = name.as_bytes().chunks_exact(8);
    let mut hash = name.len() as u64;
    for word in &mut words {
        hash = step(hash, u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    // The high bits are the best mixed; the table takes the low ones.
    step(hash, u64::from_le_bytes(tail)).rotate_left(26)
}
