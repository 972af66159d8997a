//! NumPy's default random stream, `numpy.random.default_rng(seed)`, for an integer seed, and the
//! few `Generator` methods the original's dataset builder calls.
//!
//! This is an independent Rust implementation of the algorithms NumPy uses (no NumPy code); it
//! reproduces NumPy's draws exactly (checked against NumPy 2.4.6 in the tests below), so that
//! `gen --rng numpy` writes the original's files byte for byte. It is *not* the default stream:
//! datasets use this crate's ChaCha20 [`crate::Sampler`] unless `rng = "numpy"` is asked for.
//!
//! What is reproduced, and how NumPy defines it:
//! - [`SeedSequence`]: the seed as little-endian 32-bit words, hashed into a pool of four words
//!   (`hashmix`/`mix`), then expanded by `generate_state`.
//! - [`Pcg64`]: the 128-bit LCG seeded from `generate_state(4, uint64)` (state words 0–1, stream
//!   words 2–3) with the XSL-RR output. [`Pcg64::next_u32`] returns the low half of a fresh
//!   64-bit output and keeps the high half for the next 32-bit call (64-bit calls do not touch
//!   that buffer); [`Pcg64::next_f64`] is `(next_u64 >> 11) · 2⁻⁵³`.
//! - [`NumpyRng`]: `Generator` methods over that bit generator, each with the bounded sampler
//!   NumPy uses for it:
//!   - [`NumpyRng::shuffle`] and [`NumpyRng::permutation`] (`shuffle`/`permutation`:
//!     Fisher–Yates from the last index down to 1 with `random_interval`, a masked rejection
//!     sampler drawing 32-bit words for bounds ≤ `0xFFFF_FFFF`, 64-bit words above);
//!   - [`NumpyRng::integers_below`] and [`NumpyRng::choice`] (`integers(0, n)` and one
//!     `choice(list)` with replacement: Lemire's multiply-and-reject, 32-bit for inclusive
//!     bounds ≤ `0xFFFF_FFFF`, 64-bit above);
//!   - [`NumpyRng::choice_without_replacement`] (`choice(n, size, replace=False)`: a tail
//!     shuffle of `0..n` when `n > 10 000` and `size > n / 50`, otherwise Floyd's algorithm
//!     followed by a shuffle of the sample, both with Lemire's sampler);
//!   - [`NumpyRng::uniform`] (`uniform()` on `[0, 1)`: one [`Pcg64::next_f64`]).
//!
//! Nothing else of NumPy is provided: no other distributions, no spawned or array seeds.

use std::collections::HashSet;

/// First multiplier of `hashmix` (`INIT_A`).
const INIT_A: u32 = 0x43b0_d7e5;
/// Step of the `hashmix` multiplier (`MULT_A`).
const MULT_A: u32 = 0x931e_8875;
/// First multiplier of `generate_state` (`INIT_B`).
const INIT_B: u32 = 0x8b51_f9dd;
/// Step of the `generate_state` multiplier (`MULT_B`).
const MULT_B: u32 = 0x58f3_8ded;
/// Left multiplier of `mix`.
const MIX_MULT_L: u32 = 0xca01_f9dd;
/// Right multiplier of `mix`.
const MIX_MULT_R: u32 = 0x4973_f715;
/// Half the width of a pool word.
const XSHIFT: u32 = 16;
/// Words in the entropy pool (NumPy's default `pool_size`).
const POOL_SIZE: usize = 4;

/// The 128-bit multiplier of PCG64's LCG.
const PCG_MULTIPLIER: u128 = (2_549_297_995_355_413_924_u128 << 64) | 4_865_540_595_714_422_341;

/// Population above which `choice(replace=False)` may use the tail shuffle.
const FLOYD_MAX_POPULATION: u64 = 10_000;
/// `choice`'s cutoff with `shuffle=True`: the tail shuffle needs `size > population / 50`.
const TAIL_SHUFFLE_CUTOFF: u64 = 50;

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// NumPy's `SeedSequence(seed)` for a non-negative integer seed without a spawn key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    /// `SeedSequence(seed)`: the seed split into 32-bit words, lowest first (one word `0` for
    /// seed 0), mixed into the pool.
    pub fn new(seed: u64) -> Self {
        let words: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        Self::from_entropy(&words)
    }

    /// Mixes an entropy array into a fresh pool (`SeedSequence.mix_entropy`).
    fn from_entropy(entropy: &[u32]) -> Self {
        let mut pool = [0u32; POOL_SIZE];
        let mut hash_const = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
        }
        for src in 0..POOL_SIZE {
            for dst in 0..POOL_SIZE {
                if src != dst {
                    pool[dst] = mix(pool[dst], hashmix(pool[src], &mut hash_const));
                }
            }
        }
        for &word in entropy.iter().skip(POOL_SIZE) {
            for slot in pool.iter_mut() {
                *slot = mix(*slot, hashmix(word, &mut hash_const));
            }
        }
        SeedSequence { pool }
    }

    /// The mixed entropy pool (`SeedSequence.pool`).
    pub fn pool(&self) -> [u32; POOL_SIZE] {
        self.pool
    }

    /// `generate_state(n_words, np.uint32)`.
    pub fn generate_state_u32(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        self.pool
            .iter()
            .cycle()
            .take(n_words)
            .map(|&word| {
                let mut v = word ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hash_const);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint64)`: twice as many 32-bit words, paired little-endian.
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        self.generate_state_u32(2 * n_words)
            .chunks_exact(2)
            .map(|pair| u64::from(pair[0]) | (u64::from(pair[1]) << 32))
            .collect()
    }
}

/// NumPy's `PCG64` bit generator (XSL-RR output), with its 32-bit half-word buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcg64 {
    state: u128,
    inc: u128,
    /// The high half of the last 64-bit output split by [`Pcg64::next_u32`], not yet returned.
    buffered_u32: Option<u32>,
}

impl Pcg64 {
    /// `PCG64(seed)`: seeded from `SeedSequence(seed).generate_state(4, np.uint64)`.
    pub fn new(seed: u64) -> Self {
        let words = SeedSequence::new(seed).generate_state_u64(4);
        let join = |hi: u64, lo: u64| (u128::from(hi) << 64) | u128::from(lo);
        Self::from_state_and_stream(join(words[0], words[1]), join(words[2], words[3]))
    }

    /// `pcg64_set_seed`: `inc = 2·stream + 1`, one step, add the initial state, one more step.
    fn from_state_and_stream(initial_state: u128, stream: u128) -> Self {
        let mut rng = Pcg64 {
            state: 0,
            inc: (stream << 1) | 1,
            buffered_u32: None,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(initial_state);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.inc);
    }

    /// `next_uint64`: advance, then XOR the two halves of the state and rotate right by its top
    /// six bits.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let high = (self.state >> 64) as u64;
        let low = self.state as u64;
        (high ^ low).rotate_right((self.state >> 122) as u32)
    }

    /// `next_uint32`: the buffered high half if there is one, otherwise the low half of a new
    /// 64-bit output (whose high half is buffered).
    pub fn next_u32(&mut self) -> u32 {
        if let Some(high) = self.buffered_u32.take() {
            return high;
        }
        let word = self.next_u64();
        self.buffered_u32 = Some((word >> 32) as u32);
        word as u32
    }

    /// `next_double`: the top 53 bits of one 64-bit output, scaled into `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// `numpy.random.default_rng(seed)`: the [`Pcg64`] bit generator and the `Generator` methods
/// the original's builder uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumpyRng {
    bits: Pcg64,
}

impl NumpyRng {
    /// `default_rng(seed)`.
    pub fn new(seed: u64) -> Self {
        NumpyRng {
            bits: Pcg64::new(seed),
        }
    }

    /// The underlying bit generator.
    pub fn bit_generator(&mut self) -> &mut Pcg64 {
        &mut self.bits
    }

    /// `random_interval(max)`: a uniform integer in `0..=max` by masked rejection, drawing
    /// 32-bit words when `max ≤ 0xFFFF_FFFF` and 64-bit words otherwise; no draw for `max = 0`.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.bits.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        } else {
            loop {
                let value = self.bits.next_u64() & mask;
                if value <= max {
                    return value;
                }
            }
        }
    }

    /// `random_bounded_uint64(0, rng, use_masked=False)`: a uniform integer in `0..=rng` by
    /// Lemire's method, 32-bit below `0xFFFF_FFFF`, a raw word at `0xFFFF_FFFF` and
    /// `u64::MAX`, 64-bit otherwise; no draw for `rng = 0`.
    pub fn bounded(&mut self, rng: u64) -> u64 {
        if rng == 0 {
            0
        } else if rng < u64::from(u32::MAX) {
            u64::from(self.lemire_u32(rng as u32))
        } else if rng == u64::from(u32::MAX) {
            u64::from(self.bits.next_u32())
        } else if rng == u64::MAX {
            self.bits.next_u64()
        } else {
            self.lemire_u64(rng)
        }
    }

    /// `buffered_bounded_lemire_uint32` for `rng < 0xFFFF_FFFF`.
    fn lemire_u32(&mut self, rng: u32) -> u32 {
        let excl = rng + 1;
        let mut m = u64::from(self.bits.next_u32()) * u64::from(excl);
        let mut leftover = m as u32;
        if leftover < excl {
            let threshold = (u32::MAX - rng) % excl;
            while leftover < threshold {
                m = u64::from(self.bits.next_u32()) * u64::from(excl);
                leftover = m as u32;
            }
        }
        (m >> 32) as u32
    }

    /// `bounded_lemire_uint64` for `0xFFFF_FFFF < rng < u64::MAX`.
    fn lemire_u64(&mut self, rng: u64) -> u64 {
        let excl = rng + 1;
        let mut m = u128::from(self.bits.next_u64()) * u128::from(excl);
        let mut leftover = m as u64;
        if leftover < excl {
            let threshold = (u64::MAX - rng) % excl;
            while leftover < threshold {
                m = u128::from(self.bits.next_u64()) * u128::from(excl);
                leftover = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// `integers(0, n)`: a uniform integer in `0..n`, `None` for `n = 0` (NumPy raises).
    pub fn integers_below(&mut self, n: u64) -> Option<u64> {
        n.checked_sub(1).map(|rng| self.bounded(rng))
    }

    /// `choice(xs)`: one element, uniformly, via [`NumpyRng::integers_below`]; `None` for an
    /// empty slice (NumPy raises).
    pub fn choice<'a, T>(&mut self, xs: &'a [T]) -> Option<&'a T> {
        let i = self.integers_below(xs.len() as u64)?;
        // i < xs.len(), so it fits usize.
        xs.get(i as usize)
    }

    /// `shuffle(xs)`, for a list or a 1-d array: for `i` from `len − 1` down to 1, swap `i` with
    /// `random_interval(i)`.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            // j ≤ i, so it fits usize.
            let j = self.random_interval(i as u64) as usize;
            xs.swap(i, j);
        }
    }

    /// `permutation(n)`: `arange(n)` shuffled with [`NumpyRng::shuffle`]. (`permutation(list)`
    /// is a shuffled copy of the list: the same draws.)
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut xs: Vec<usize> = (0..n).collect();
        self.shuffle(&mut xs);
        xs
    }

    /// `_shuffle_int`: for `i` from `len − 1` down to `first`, swap `i` with `bounded(i)`.
    fn shuffle_int(&mut self, xs: &mut [u64], first: usize) {
        for i in (first..xs.len()).rev() {
            // bounded(i) ≤ i, so it fits usize.
            let j = self.bounded(i as u64) as usize;
            xs.swap(i, j);
        }
    }

    /// `choice(population, size, replace=False)`: `size` distinct integers of
    /// `0..population`, in NumPy's order; `None` when `size > population` (NumPy raises).
    ///
    /// Above 10 000 with `size > population / 50`, the tail `size` entries of a partly
    /// shuffled `arange(population)`; otherwise Floyd's algorithm (draw `bounded(j)` for `j` in
    /// `population − size .. population`, taking `j` itself when the draw is a repeat), then
    /// the sample shuffled from index 1.
    pub fn choice_without_replacement(&mut self, population: u64, size: u64) -> Option<Vec<u64>> {
        if size > population {
            return None;
        }
        let first = population - size;
        if population > FLOYD_MAX_POPULATION && size > population / TAIL_SHUFFLE_CUTOFF {
            let mut all: Vec<u64> = (0..population).collect();
            // `first` ≤ population, which fits in memory as the vector above does.
            let start = first as usize;
            self.shuffle_int(&mut all, start.max(1));
            all.drain(..start);
            return Some(all);
        }
        let mut seen = HashSet::new();
        let mut sample = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for j in first..population {
            let val = self.bounded(j);
            if seen.insert(val) {
                sample.push(val);
            } else {
                seen.insert(j);
                sample.push(j);
            }
        }
        self.shuffle_int(&mut sample, 1);
        Some(sample)
    }

    /// `uniform()`: a float in `[0, 1)`, `0 + 1 · next_double`.
    pub fn uniform(&mut self) -> f64 {
        self.bits.next_f64()
    }
}

#[cfg(test)]
mod tests {
    //! Expected values come from NumPy 2.4.6 (`numpy.random.default_rng(seed)`,
    //! `numpy.random.PCG64(seed)`, `numpy.random.SeedSequence(seed)`), printed by a scratch
    //! script outside the repository, e.g. `default_rng(42).permutation(10).tolist()`.

    use super::*;

    const SEEDS: [u64; 3] = [0, 42, u64::MAX];

    /// `sum((i + 1) * x_i)`: a checksum of a long NumPy sample, computed the same way there.
    fn checksum(xs: &[u64]) -> u64 {
        xs.iter()
            .enumerate()
            .fold(0u64, |acc, (i, &x)| acc.wrapping_add((i as u64 + 1) * x))
    }

    #[test]
    fn seed_sequence_pool_and_state_match_numpy() {
        // SeedSequence(seed).pool, .generate_state(8, np.uint32), .generate_state(4, np.uint64).
        let pools = [
            [0xfe40_eb07, 0x4f36_3a36, 0x4eb2_009d, 0xc89a_7aa7],
            [0x631d_3606, 0x07ae_90ae, 0x6fc4_be28, 0x2ced_5c75],
            [0xfaf3_ecf4, 0xfa0f_8930, 0xe9f8_9a67, 0x0e23_d1f9],
        ];
        let u32s = [
            [
                0xb0f4_78be,
                0xdb2c_d7e7,
                0x2c71_ba49,
                0xabf4_641a,
                0x9d7b_8d41,
                0x20c6_ed6d,
                0x223c_39d4,
                0x2c40_99de,
            ],
            [
                0xcd54_0ab7,
                0x9f1e_2e6d,
                0x79fb_94b6,
                0xd578_73dc,
                0x64d4_20b7,
                0x7d28_2a1b,
                0x4692_d5ff,
                0x3365_7971,
            ],
            [
                0x928c_ad0d,
                0xaebc_a151,
                0x8638_dc7a,
                0x119c_3044,
                0x59e6_42a7,
                0x1bbb_1556,
                0xe8c4_a8f6,
                0xa76b_11e3,
            ],
        ];
        let u64s = [
            [
                0xdb2c_d7e7_b0f4_78be,
                0xabf4_641a_2c71_ba49,
                0x20c6_ed6d_9d7b_8d41,
                0x2c40_99de_223c_39d4,
            ],
            [
                0x9f1e_2e6d_cd54_0ab7,
                0xd578_73dc_79fb_94b6,
                0x7d28_2a1b_64d4_20b7,
                0x3365_7971_4692_d5ff,
            ],
            [
                0xaebc_a151_928c_ad0d,
                0x119c_3044_8638_dc7a,
                0x1bbb_1556_59e6_42a7,
                0xa76b_11e3_e8c4_a8f6,
            ],
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let ss = SeedSequence::new(seed);
            assert_eq!(ss.pool(), pools[i], "seed {seed}");
            assert_eq!(ss.generate_state_u32(8), u32s[i], "seed {seed}");
            assert_eq!(ss.generate_state_u64(4), u64s[i], "seed {seed}");
        }
    }

    #[test]
    fn pcg64_raw_outputs_match_numpy() {
        // PCG64(seed).random_raw(4).
        let expected = [
            [
                0xa30f_ebcf_d9c2_825f,
                0x4510_bdf8_82d9_d721,
                0x0a7d_3da9_4ecd_e8b8,
                0x043b_27b6_1342_f01d,
            ],
            [
                0xc621_fbcd_16d9_2688,
                0x705a_5661_a791_ffc1,
                0xdbcd_12c2_6eda_1624,
                0xb286_b60e_1600_888d,
            ],
            [
                0xae16_3a7a_8c47_568f,
                0xd866_59f5_f338_2359,
                0x01e5_2b19_5bc2_d24a,
                0xe502_6aaf_19a2_2db1,
            ],
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let mut bits = Pcg64::new(seed);
            let got: Vec<u64> = (0..4).map(|_| bits.next_u64()).collect();
            assert_eq!(got, expected[i], "seed {seed}");
        }
    }

    #[test]
    fn the_u32_buffer_survives_64_bit_and_double_draws_as_in_numpy() {
        // PCG64(seed).ctypes: next_uint32 ×3, next_uint64, next_uint32, next_double,
        // next_uint32.
        let expected: [([u32; 3], u64, u32, f64, u32); 3] = [
            (
                [0xd9c2_825f, 0xa30f_ebcf, 0x82d9_d721],
                0x0a7d_3da9_4ecd_e8b8,
                0x4510_bdf8,
                0.016527635528529094,
                0x2cde_513b,
            ),
            (
                [0x16d9_2688, 0xc621_fbcd, 0xa791_ffc1],
                0xdbcd_12c2_6eda_1624,
                0x705a_5661,
                0.6973680290593639,
                0x3393_81eb,
            ),
            (
                [0x8c47_568f, 0xae16_3a7a, 0xf338_2359],
                0x01e5_2b19_5bc2_d24a,
                0xd866_59f5,
                0.8945681264391473,
                0x9acf_f71c,
            ),
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let (first, word, buffered, double, last) = expected[i];
            let mut bits = Pcg64::new(seed);
            let got = [bits.next_u32(), bits.next_u32(), bits.next_u32()];
            assert_eq!(got, first, "seed {seed}");
            assert_eq!(bits.next_u64(), word, "seed {seed}");
            assert_eq!(bits.next_u32(), buffered, "seed {seed}: the kept high half");
            assert_eq!(bits.next_f64(), double, "seed {seed}");
            assert_eq!(bits.next_u32(), last, "seed {seed}");
        }
    }

    #[test]
    fn permutation_matches_numpy() {
        // default_rng(seed).permutation(10) and .permutation([3, 1, 4, 1, 5, 9, 2, 6]).
        let ints = [
            [4, 6, 2, 7, 3, 5, 9, 0, 8, 1],
            [5, 6, 0, 7, 3, 2, 4, 9, 1, 8],
            [8, 7, 3, 0, 4, 6, 1, 2, 5, 9],
        ];
        let lists = [
            [4, 5, 1, 2, 9, 3, 1, 6],
            [1, 5, 4, 6, 2, 1, 9, 3],
            [3, 5, 1, 9, 2, 1, 4, 6],
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            assert_eq!(NumpyRng::new(seed).permutation(10), ints[i], "seed {seed}");
            let mut list = [3, 1, 4, 1, 5, 9, 2, 6];
            NumpyRng::new(seed).shuffle(&mut list);
            assert_eq!(list, lists[i], "seed {seed}");
        }
    }

    #[test]
    fn shuffle_of_a_list_matches_numpy() {
        // l = list("abcdefghij"); default_rng(seed).shuffle(l).
        for (seed, expected) in SEEDS
            .into_iter()
            .zip(["egchdfjaib", "fgahdcejbi", "ihdaegbcfj"])
        {
            let mut letters: Vec<char> = "abcdefghij".chars().collect();
            NumpyRng::new(seed).shuffle(&mut letters);
            assert_eq!(letters.iter().collect::<String>(), expected, "seed {seed}");
        }
    }

    #[test]
    fn choice_without_replacement_floyd_branch_matches_numpy() {
        // x = default_rng(seed).choice(10000, size=10000, replace=False):
        // x[:6], x[-3:] and sum((i + 1) * x[i]).
        let expected: [([u64; 6], [u64; 3], u64); 3] = [
            (
                [772, 9160, 7039, 1032, 7141, 4226],
                [8850, 6802, 9470],
                249_818_764_268,
            ),
            (
                [2990, 3041, 3760, 6228, 1302, 7095],
                [2181, 3386, 6152],
                249_441_398_453,
            ),
            (
                [1028, 9482, 6218, 3169, 6733, 5476],
                [4816, 1938, 4981],
                249_584_896_581,
            ),
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let x = NumpyRng::new(seed)
                .choice_without_replacement(10_000, 10_000)
                .unwrap();
            let (head, tail, sum) = expected[i];
            assert_eq!(x[..6], head, "seed {seed}");
            assert_eq!(x[x.len() - 3..], tail, "seed {seed}");
            assert_eq!(checksum(&x), sum, "seed {seed}");
        }
        // default_rng(seed).choice(10, size=4, replace=False).
        for (seed, expected) in SEEDS
            .into_iter()
            .zip([[2, 4, 5, 7], [4, 0, 5, 6], [9, 8, 3, 5]])
        {
            let x = NumpyRng::new(seed)
                .choice_without_replacement(10, 4)
                .unwrap();
            assert_eq!(x, expected, "seed {seed}");
        }
    }

    #[test]
    fn choice_without_replacement_tail_shuffle_branch_matches_numpy() {
        // x = default_rng(seed).choice(20000, size=20000, replace=False), summarised as above.
        let expected: [([u64; 6], [u64; 3], u64); 3] = [
            (
                [11330, 11157, 9862, 14482, 2357, 7040],
                [10221, 12738, 17012],
                2_004_882_522_210,
            ),
            (
                [12883, 15339, 496, 9351, 2525, 16900],
                [13090, 15478, 1785],
                2_000_979_521_822,
            ),
            (
                [4960, 14121, 8728, 9703, 19795, 13203],
                [18999, 13599, 10959],
                2_003_447_267_341,
            ),
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let x = NumpyRng::new(seed)
                .choice_without_replacement(20_000, 20_000)
                .unwrap();
            let (head, tail, sum) = expected[i];
            assert_eq!(x.len(), 20_000);
            assert_eq!(x[..6], head, "seed {seed}");
            assert_eq!(x[x.len() - 3..], tail, "seed {seed}");
            assert_eq!(checksum(&x), sum, "seed {seed}");
        }
    }

    #[test]
    fn choice_without_replacement_edge_cases() {
        let mut rng = NumpyRng::new(1);
        assert_eq!(rng.choice_without_replacement(3, 4), None);
        assert_eq!(rng.choice_without_replacement(0, 0), Some(vec![]));
        // choice(1, 1) draws nothing: the stream is untouched afterwards.
        assert_eq!(rng.choice_without_replacement(1, 1), Some(vec![0]));
        assert_eq!(rng, NumpyRng::new(1));
        let x = rng.choice_without_replacement(30_000, 30_000).unwrap();
        let distinct: HashSet<u64> = x.iter().copied().collect();
        assert_eq!(distinct.len(), 30_000);
        assert!(x.iter().all(|&v| v < 30_000));
    }

    #[test]
    fn choice_from_a_list_matches_numpy() {
        // [default_rng(seed).choice([10, 20, 30, 40, 50, 60, 70]) for 12 draws] (one generator).
        let expected = [
            [60, 50, 40, 20, 30, 10, 10, 10, 20, 60, 50, 70],
            [10, 60, 50, 40, 40, 70, 10, 50, 20, 10, 40, 70],
            [40, 50, 70, 60, 30, 10, 10, 70, 50, 10, 30, 30],
        ];
        let list = [10, 20, 30, 40, 50, 60, 70];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let mut rng = NumpyRng::new(seed);
            let got: Vec<i32> = (0..12).map(|_| *rng.choice(&list).unwrap()).collect();
            assert_eq!(got, expected[i], "seed {seed}");
        }
        // [r.choice(list(range(10000))) for 5 draws].
        let expected = [
            [8506, 6369, 5111, 2697, 3078],
            [892, 7739, 6545, 4388, 4330],
            [5479, 6800, 9500, 8453, 3584],
        ];
        let big: Vec<u64> = (0..10_000).collect();
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let mut rng = NumpyRng::new(seed);
            let got: Vec<u64> = (0..5).map(|_| *rng.choice(&big).unwrap()).collect();
            assert_eq!(got, expected[i], "seed {seed}");
        }
        assert_eq!(NumpyRng::new(0).choice::<u8>(&[]), None);
        assert_eq!(NumpyRng::new(0).integers_below(0), None);
    }

    #[test]
    fn sixty_four_bit_lemire_matches_numpy() {
        // default_rng(seed).integers(0, 2**40, size=5).
        let expected = [
            [
                700_346_781_657,
                296_633_628_802,
                45_050_865_998,
                18_172_327_443,
                894_200_084_524,
            ],
            [
                850_973_674_774,
                482_551_947_687,
                944_038_396_526,
                766_764_256_790,
                103_549_089_075,
            ],
            [
                747_697_240_716,
                929_430_107_635,
                8_139_774_299,
                983_588_056_857,
                141_798_774_938,
            ],
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let mut rng = NumpyRng::new(seed);
            let got: Vec<u64> = (0..5)
                .map(|_| rng.integers_below(1 << 40).unwrap())
                .collect();
            assert_eq!(got, expected[i], "seed {seed}");
        }
    }

    #[test]
    fn uniform_matches_numpy() {
        // [default_rng(seed).uniform() for 4 draws] (one generator).
        let expected = [
            [
                0.6369616873214543,
                0.2697867137638703,
                0.04097352393619469,
                0.016527635528529094,
            ],
            [
                0.7739560485559633,
                0.4388784397520523,
                0.8585979199113825,
                0.6973680290593639,
            ],
            [
                0.6800266789616931,
                0.8453117585624743,
                0.007403081599260064,
                0.8945681264391473,
            ],
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let mut rng = NumpyRng::new(seed);
            let got: Vec<f64> = (0..4).map(|_| rng.uniform()).collect();
            assert_eq!(got, expected[i], "seed {seed}");
        }
    }

    #[test]
    fn interleaved_calls_match_numpy() {
        /// permutation(5), uniform(), shuffled list, choice, uniform().
        type Draws = ([usize; 5], f64, [u8; 6], u8, f64);
        // r = default_rng(seed); r.permutation(5); r.uniform(); l = list(range(6));
        // r.shuffle(l); r.choice([1, 2, 3]); r.uniform().
        let expected: [Draws; 3] = [
            (
                [2, 4, 3, 0, 1],
                0.016527635528529094,
                [4, 5, 1, 2, 0, 3],
                2,
                0.7294965609839984,
            ),
            (
                [4, 2, 3, 1, 0],
                0.8585979199113825,
                [2, 4, 0, 1, 3, 5],
                3,
                0.7860643052769538,
            ),
            (
                [4, 0, 3, 1, 2],
                0.8945681264391473,
                [5, 2, 3, 0, 4, 1],
                3,
                0.18268758618247305,
            ),
        ];
        for (i, seed) in SEEDS.into_iter().enumerate() {
            let (perm, u1, shuffled, pick, u2) = expected[i];
            let mut rng = NumpyRng::new(seed);
            assert_eq!(rng.permutation(5), perm, "seed {seed}");
            assert_eq!(rng.uniform(), u1, "seed {seed}");
            let mut list = [0u8, 1, 2, 3, 4, 5];
            rng.shuffle(&mut list);
            assert_eq!(list, shuffled, "seed {seed}");
            assert_eq!(*rng.choice(&[1u8, 2, 3]).unwrap(), pick, "seed {seed}");
            assert_eq!(rng.uniform(), u2, "seed {seed}");
        }
    }

    #[test]
    fn random_interval_uses_64_bit_words_above_u32_and_masks_them() {
        // No NumPy call reaches this branch for sizes that fit in memory; check it against the
        // definition: the first raw word whose masked value is ≤ max.
        let max = (1u64 << 40) + 12_345;
        let mask = (1u64 << 41) - 1;
        let mut rng = NumpyRng::new(9);
        let mut raw = Pcg64::new(9);
        for _ in 0..50 {
            let x = rng.random_interval(max);
            let expected = loop {
                let w = raw.next_u64() & mask;
                if w <= max {
                    break w;
                }
            };
            assert_eq!(x, expected);
        }
        assert_eq!(rng.random_interval(0), 0);
        assert_eq!(rng.random_interval(u64::MAX), raw.next_u64());
    }

    #[test]
    fn bounded_edges_draw_raw_words() {
        let mut rng = NumpyRng::new(5);
        let mut raw = Pcg64::new(5);
        assert_eq!(rng.bounded(0), 0);
        assert_eq!(rng.bounded(u64::MAX), raw.next_u64());
        assert_eq!(rng.bounded(u64::from(u32::MAX)), u64::from(raw.next_u32()));
        for _ in 0..200 {
            assert!(rng.bounded(6) <= 6);
            assert!(rng.bounded(u64::MAX - 1) < u64::MAX);
        }
    }
}
