//! Padded rows of token ids, ready to become tensors.

use crate::Example;

/// Inputs of several examples, right-padded to a common width, with their lengths and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedRows {
    /// `rows × width` input ids, row-major, right-padded with the pad id. Shape `(rows, width)`.
    pub ids: Vec<i64>,
    /// Number of examples.
    pub rows: usize,
    /// Longest input length.
    pub width: usize,
    /// Input length of each row (the position of the answer). Shape `(rows,)`.
    pub lengths: Vec<i64>,
    /// Answer token of each row. Shape `(rows,)`.
    pub answers: Vec<i64>,
}

impl PaddedRows {
    /// The padded input ids of row `i`, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[i64]> {
        (i < self.rows).then(|| &self.ids[i * self.width..(i + 1) * self.width])
    }
}

/// Pads the inputs (all tokens but the last) of `examples` on the right with `pad_id`.
///
/// # Arguments
/// - `examples`: `rows` examples of any lengths ≥ 1;
/// - `pad_id`: the id written after each shorter input.
///
/// # Returns
/// [`PaddedRows`] with `ids` of shape `(rows, width)`, `width` the longest input, and `lengths`
/// and `answers` of shape `(rows,)`. An empty slice gives `rows = width = 0`.
///
/// # Panics
/// If an example has no tokens (examples from [`crate::generate`] and [`crate::Dataset::load`]
/// always have at least three).
pub fn pad_inputs(examples: &[Example], pad_id: i64) -> PaddedRows {
    let width = examples.iter().map(|e| e.input().len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(examples.len() * width);
    let mut lengths = Vec::with_capacity(examples.len());
    let mut answers = Vec::with_capacity(examples.len());
    for ex in examples {
        let answer = ex.answer().expect("pad_inputs: example without tokens");
        let input = ex.input();
        ids.extend(input.iter().map(|&t| i64::from(t)));
        ids.extend(std::iter::repeat_n(pad_id, width - input.len()));
        lengths.push(input.len() as i64);
        answers.push(i64::from(answer));
    }
    PaddedRows {
        ids,
        rows: examples.len(),
        width,
        lengths,
        answers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FactType;

    #[test]
    fn pads_mixed_lengths_on_the_right() {
        let exs = [
            Example {
                tokens: vec![1, 20, 3],
                kind: FactType::IdAtomic,
            },
            Example {
                tokens: vec![4, 21, 22, 5],
                kind: FactType::IdCompositional,
            },
            Example {
                tokens: vec![6, 30, 7],
                kind: FactType::OodAnalogical,
            },
        ];
        let p = pad_inputs(&exs, -1);
        assert_eq!(p.rows, 3);
        assert_eq!(p.width, 3);
        assert_eq!(p.ids, [1, 20, -1, 4, 21, 22, 6, 30, -1]);
        assert_eq!(p.lengths, [2, 3, 2]);
        assert_eq!(p.answers, [3, 5, 7]);
        assert_eq!(p.row(1), Some(&[4i64, 21, 22][..]));
        assert_eq!(p.row(3), None);
    }

    #[test]
    fn empty_input_gives_an_empty_batch() {
        let p = pad_inputs(&[], 0);
        assert_eq!((p.rows, p.width), (0, 0));
        assert!(p.ids.is_empty() && p.lengths.is_empty() && p.answers.is_empty());
    }
}
