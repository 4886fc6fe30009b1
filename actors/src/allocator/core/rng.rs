//! The round's only randomness: the order agents are visited in.
//!
//! Mesos shuffles agents every round so that no agent is always offered first (and to the
//! role that happens to sort first). The shuffle here is a function of the seed alone:
//! SplitMix64 (Steele, Lea and Flood, 2014), a 64-bit state with a strong output mix, which is
//! plenty for a permutation and small enough to live in the core.

pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (multiply-shift: the bias is below n / 2^64, nothing for a shuffle).
    pub(super) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Fisher-Yates: every permutation of `items` equally likely for a random seed.
pub(super) fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}
