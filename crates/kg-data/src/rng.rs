//! A small sampling layer over ChaCha20 whose output depends only on the raw `u64` stream.
//!
//! `rand`'s own distributions have changed their algorithms between releases, which would
//! silently change every generated dataset. Everything here is built from
//! [`RngCore::next_u64`] alone, so the bytes a seed produces depend only on:
//! - `rand_chacha` 0.9.x: the ChaCha20 keystream and the order in which `next_u64` consumes it;
//! - `rand_core` 0.9.x: [`SeedableRng::seed_from_u64`], which expands the `u64` seed into a
//!   256-bit key.
//!
//! Both crates promise value stability within a minor-version series; a bump of either must be
//! checked against the pinned-stream test below before datasets are assumed to be unchanged.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Seeded random source with the three primitives the generator needs.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: ChaCha20Rng,
}

impl Sampler {
    /// A sampler seeded with `ChaCha20Rng::seed_from_u64(seed)`.
    pub fn new(seed: u64) -> Self {
        Sampler {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// The next raw 64-bit word of the stream.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A uniform integer in `0..n`, without modulo bias.
    ///
    /// Words from the top, incomplete copy of `0..n` inside `0..2^64` are rejected and redrawn,
    /// so the number of words consumed is variable (one, almost always).
    ///
    /// # Panics
    /// If `n == 0` (a programmer error: callers validate sizes first).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Sampler::below(0)");
        // 2^64 mod n: the size of the incomplete copy at the top of the range.
        let rem = (u64::MAX % n + 1) % n;
        loop {
            let x = self.next_u64();
            // rem.wrapping_neg() == 2^64 - rem, the end of the last complete copy.
            if rem == 0 || x < rem.wrapping_neg() {
                return x % n;
            }
        }
    }

    /// Uniform index in `0..n` as a `usize`; see [`Sampler::below`].
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn index(&mut self, n: usize) -> usize {
        // usize fits in u64 on every supported target, and the result is < n.
        self.below(n as u64) as usize
    }

    /// A uniform float in `[0, 1)`: the top 53 bits of one word, scaled by `2^-53`.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Shuffles `xs` in place (Fisher–Yates, from the last position down to 1).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.index(i + 1);
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let a: Vec<u64> = {
            let mut s = Sampler::new(7);
            (0..8).map(|_| s.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut s = Sampler::new(7);
            (0..8).map(|_| s.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut s = Sampler::new(8);
            (0..8).map(|_| s.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn stream_matches_plain_chacha20() {
        let mut s = Sampler::new(42);
        let mut r = ChaCha20Rng::seed_from_u64(42);
        for _ in 0..16 {
            assert_eq!(s.next_u64(), r.next_u64());
        }
    }

    /// Regression pin recorded with rand_chacha 0.9.0 and rand_core 0.9.5: the stream every
    /// dataset is drawn from. A failure after a dependency bump means datasets changed.
    #[test]
    fn seed_42_stream_is_pinned() {
        let mut s = Sampler::new(42);
        assert_eq!(s.next_u64(), 0x8398_bc11_d7b5_4878);
        assert_eq!(s.next_u64(), 0x6902_c9f9_a317_6399);
    }

    #[test]
    fn below_is_in_range_and_one_is_always_zero() {
        let mut s = Sampler::new(1);
        for n in [1u64, 2, 3, 5, 10, 10_000, u64::MAX] {
            for _ in 0..200 {
                let x = s.below(n);
                assert!(x < n, "{x} >= {n}");
            }
        }
        for _ in 0..50 {
            assert_eq!(s.below(1), 0);
        }
    }

    #[test]
    fn below_rejects_the_biased_top_of_the_range() {
        // n = 2^63 + 1: 2^64 mod n = 2^63 - 1, so every word >= 2^64 - (2^63 - 1) = 2^63 + 1 is
        // rejected. Accepted words are all < 2^63 + 1, and x % n == x for them.
        let n = (1u64 << 63) + 1;
        let mut s = Sampler::new(3);
        let mut raw = Sampler::new(3);
        for _ in 0..64 {
            let x = s.below(n);
            // Replay the raw stream: skip exactly the words the rejection rule discards.
            let mut w = raw.next_u64();
            while w >= n {
                w = raw.next_u64();
            }
            assert_eq!(x, w);
        }
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut s = Sampler::new(11);
        let n = 6;
        let draws = 60_000;
        let mut hist = [0usize; 6];
        for _ in 0..draws {
            hist[s.index(n)] += 1;
        }
        // Expected 10 000 each; 5 sigma is about 456.
        for h in hist {
            assert!((9_500..=10_500).contains(&h), "{hist:?}");
        }
    }

    #[test]
    fn unit_f64_uses_the_top_53_bits() {
        let mut s = Sampler::new(5);
        let mut raw = Sampler::new(5);
        for _ in 0..100 {
            let u = s.unit_f64();
            let w = raw.next_u64();
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, (w >> 11) as f64 / 9_007_199_254_740_992.0);
        }
    }

    #[test]
    fn shuffle_is_a_permutation_and_depends_on_the_seed() {
        let mut a: Vec<u32> = (0..50).collect();
        Sampler::new(9).shuffle(&mut a);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, sorted, "50 elements left in order: vanishingly unlikely");
        let mut b: Vec<u32> = (0..50).collect();
        Sampler::new(10).shuffle(&mut b);
        assert_ne!(a, b);
        let mut empty: [u8; 0] = [];
        Sampler::new(1).shuffle(&mut empty);
        let mut one = [4];
        Sampler::new(1).shuffle(&mut one);
        assert_eq!(one, [4]);
    }

    #[test]
    fn shuffle_of_two_follows_one_below_two_draw() {
        let mut s = Sampler::new(21);
        let mut raw = Sampler::new(21);
        for _ in 0..32 {
            let mut xs = ['a', 'b'];
            s.shuffle(&mut xs);
            let j = raw.below(2);
            let expected = if j == 0 { ['b', 'a'] } else { ['a', 'b'] };
            assert_eq!(xs, expected);
        }
    }
}
