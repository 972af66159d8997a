//! Fact types and examples.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// The seven kinds of fact of the original's `test.json`, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactType {
    /// A seen one-hop fact `(h, r, t)`.
    IdAtomic,
    /// A held-out one-hop fact of E1 (or of the other entities).
    OodAtomic,
    /// A seen two-hop fact `(s, r1, r2, t)`.
    IdCompositional,
    /// A held-out two-hop fact whose two hops are both seen.
    NearOodCompositional,
    /// A two-hop fact with at least one held-out hop.
    FarOodCompositional,
    /// A seen functor fact `(e, <f>, f(e))` (or `<f_inv>`).
    IdAnalogical,
    /// A held-out functor fact: the analogical generalisation test.
    OodAnalogical,
}

impl FactType {
    /// All types, in the order `test.json` groups them.
    pub const ALL: [FactType; 7] = [
        FactType::IdAtomic,
        FactType::OodAtomic,
        FactType::IdCompositional,
        FactType::NearOodCompositional,
        FactType::FarOodCompositional,
        FactType::IdAnalogical,
        FactType::OodAnalogical,
    ];

    /// The name used in `test.json` and as the per-type file stem (`"id_atomic"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FactType::IdAtomic => "id_atomic",
            FactType::OodAtomic => "ood_atomic",
            FactType::IdCompositional => "id_compositional",
            FactType::NearOodCompositional => "near_ood_compositional",
            FactType::FarOodCompositional => "far_ood_compositional",
            FactType::IdAnalogical => "id_analogical",
            FactType::OodAnalogical => "ood_analogical",
        }
    }

    /// All names, in [`FactType::ALL`] order.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.as_str()).collect()
    }

    /// True for the types that go into `train.json`.
    pub fn is_id(self) -> bool {
        matches!(
            self,
            FactType::IdAtomic | FactType::IdCompositional | FactType::IdAnalogical
        )
    }

    /// Number of tokens of a fact of this type, answer included (3 or 4).
    pub fn fact_len(self) -> usize {
        match self {
            FactType::IdCompositional
            | FactType::NearOodCompositional
            | FactType::FarOodCompositional => 4,
            _ => 3,
        }
    }
}

impl fmt::Display for FactType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FactType {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| DataError::UnknownType {
                found: s.to_string(),
            })
    }
}

/// One fact as token ids: the model reads all tokens but the last and predicts the last.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Example {
    /// The whole target sequence; the input is all but the last token, the answer the last.
    pub tokens: Vec<u32>,
    /// The fact's type.
    pub kind: FactType,
}

impl Example {
    /// The input tokens (all but the last).
    pub fn input(&self) -> &[u32] {
        &self.tokens[..self.tokens.len().saturating_sub(1)]
    }

    /// The answer token (the last), `None` for an empty example.
    pub fn answer(&self) -> Option<u32> {
        self.tokens.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_the_file_order() {
        for t in FactType::ALL {
            assert_eq!(t.as_str().parse::<FactType>().unwrap(), t);
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        let mut sorted = FactType::ALL;
        sorted.sort();
        assert_eq!(sorted, FactType::ALL);
        assert!(matches!(
            "atomic".parse::<FactType>(),
            Err(DataError::UnknownType { .. })
        ));
        assert_eq!(
            FactType::ALL.iter().filter(|t| t.is_id()).count(),
            3,
            "three ID types make up train.json"
        );
    }

    #[test]
    fn example_splits_input_and_answer() {
        let ex = Example {
            tokens: vec![3, 27, 5],
            kind: FactType::IdAtomic,
        };
        assert_eq!(ex.input(), [3, 27]);
        assert_eq!(ex.answer(), Some(5));
        let empty = Example {
            tokens: vec![],
            kind: FactType::IdAtomic,
        };
        assert_eq!(empty.input(), [] as [u32; 0]);
        assert_eq!(empty.answer(), None);
    }
}
