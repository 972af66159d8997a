//! Generation parameters (the `[data]` table of a config file).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// The random stream, and with it the build order, that [`crate::generate()`] uses.
///
/// Written `"chacha"` or `"numpy"` (the `rng` key of `[data]`, `gen --rng`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum RngKind {
    /// This crate's seeded ChaCha20 stream ([`crate::Sampler`]): byte-stable across platforms
    /// and releases, the same distribution as the original but not its draws (the default).
    #[default]
    Chacha,
    /// NumPy's `default_rng(seed)` ([`crate::numpy_rng`]) with the original builder's order of
    /// operations: the original's files byte for byte.
    Numpy,
}

impl RngKind {
    /// Every kind, in the order of [`RngKind::NAMES`].
    pub const ALL: [RngKind; 2] = [RngKind::Chacha, RngKind::Numpy];
    /// The accepted spellings, as written in configs and on the command line.
    pub const NAMES: [&'static str; 2] = ["chacha", "numpy"];

    /// The spelling of this kind (`"chacha"` or `"numpy"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RngKind::Chacha => "chacha",
            RngKind::Numpy => "numpy",
        }
    }

    /// True for the default, [`RngKind::Chacha`] (which `meta.json` leaves implicit).
    pub fn is_chacha(&self) -> bool {
        *self == RngKind::Chacha
    }
}

impl fmt::Display for RngKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RngKind {
    type Err = DataError;

    /// Parses `"chacha"` or `"numpy"` (exact spelling).
    ///
    /// # Errors
    /// [`DataError::Config`] for key `rng`, listing the accepted values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| DataError::Config {
                key: "rng",
                value: format!("{s:?}"),
                reason: format!("accepted values are {}", Self::NAMES.join(", ")),
            })
    }
}

impl TryFrom<String> for RngKind {
    type Error = DataError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Parameters of one synthetic knowledge graph; the `[data]` table of a config file.
///
/// Unknown keys are rejected, missing keys take the defaults of the original generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Total number of entities `<e_0>` … `<e_{N-1}>` (default 10).
    pub num_entities: usize,
    /// Number of relation tokens `<r_0>` … `<r_{R-1}>` (default 10 000).
    pub num_relations: usize,
    /// Size of E1 and of E2; `None` means `num_entities / 2` (default `None`).
    pub sub_size: Option<usize>,
    /// Share of atomic facts held out, in `[0, 1]` (default 0.0).
    pub atomic_ood_ratio: f64,
    /// Probability that a 2-hop fact made only of seen hops is held out, in `[0, 1]` (default 0.1).
    pub compositional_ood_ratio: f64,
    /// Share of functor facts held out, in `[0, 1]` (default 0.4).
    pub analogical_ood_ratio: f64,
    /// Also emit inverse functor facts `(f(e), <f_inv>, e)` (default false).
    pub include_f_inverse: bool,
    /// Allow one head entity to use the same relation on two out-edges (default false).
    pub duplicate_relation: bool,
    /// Seed of the random stream that makes the dataset reproducible (default 42).
    pub seed: u64,
    /// Random stream and build order: [`RngKind::Chacha`] (`"chacha"`, default) or
    /// [`RngKind::Numpy`] (`"numpy"`, the original's exact draws). Left out when serialised at
    /// its default, so configs, cache keys and `meta.json` of ChaCha datasets are unchanged.
    #[serde(skip_serializing_if = "RngKind::is_chacha")]
    pub rng: RngKind,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            num_entities: 10,
            num_relations: 10_000,
            sub_size: None,
            atomic_ood_ratio: 0.0,
            compositional_ood_ratio: 0.1,
            analogical_ood_ratio: 0.4,
            include_f_inverse: false,
            duplicate_relation: false,
            seed: 42,
            rng: RngKind::Chacha,
        }
    }
}

impl DataConfig {
    /// The size of E1 and E2: `sub_size`, or `num_entities / 2` when unset.
    pub fn resolved_sub_size(&self) -> usize {
        self.sub_size.unwrap_or(self.num_entities / 2)
    }

    /// The dataset directory name of the original generator: `composition_functor.<E>.<R>.<S>`.
    pub fn dir_name(&self) -> String {
        format!(
            "composition_functor.{}.{}.{}",
            self.num_entities,
            self.num_relations,
            self.resolved_sub_size()
        )
    }

    /// Checks every constraint the generator relies on, so that [`crate::generate`] cannot fail
    /// half-way.
    ///
    /// # Errors
    /// [`DataError::Config`] naming the key when: a ratio is NaN or outside `[0, 1]`; there are
    /// no relations; E1/E2 would have fewer than two entities (no graph to compose or mirror);
    /// `2·sub_size > num_entities`; without `duplicate_relation`, a head needs more distinct
    /// relations (`sub_size − 1`) than exist; or the vocabulary would not fit `u32` token ids.
    pub fn validate(&self) -> Result<(), DataError> {
        for (key, value) in [
            ("atomic_ood_ratio", self.atomic_ood_ratio),
            ("compositional_ood_ratio", self.compositional_ood_ratio),
            ("analogical_ood_ratio", self.analogical_ood_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(DataError::Config {
                    key,
                    value: value.to_string(),
                    reason: "must be a number in [0, 1]".into(),
                });
            }
        }
        if self.num_relations == 0 {
            return Err(DataError::Config {
                key: "num_relations",
                value: "0".into(),
                reason: "at least one relation is needed to build a graph".into(),
            });
        }
        let sub = self.resolved_sub_size();
        if sub < 2 {
            return Err(DataError::Config {
                key: "sub_size",
                value: sub.to_string(),
                reason: format!(
                    "E1 and E2 need at least 2 entities each to form a graph (num_entities = {})",
                    self.num_entities
                ),
            });
        }
        if sub
            .checked_mul(2)
            .is_none_or(|both| both > self.num_entities)
        {
            return Err(DataError::Config {
                key: "sub_size",
                value: sub.to_string(),
                reason: format!(
                    "2·sub_size must not exceed num_entities = {}",
                    self.num_entities
                ),
            });
        }
        if !self.duplicate_relation && sub - 1 > self.num_relations {
            return Err(DataError::Config {
                key: "num_relations",
                value: self.num_relations.to_string(),
                reason: format!(
                    "each E1 head has {} out-edges needing distinct relations; \
                     raise num_relations or set duplicate_relation = true",
                    sub - 1
                ),
            });
        }
        // Entities + relations + <f> + <f_inv> must be addressable as u32 token ids.
        let vocab = self
            .num_entities
            .checked_add(self.num_relations)
            .and_then(|n| n.checked_add(2));
        if vocab.is_none_or(|n| n > u32::MAX as usize) {
            return Err(DataError::Config {
                key: "num_relations",
                value: self.num_relations.to_string(),
                reason: "num_entities + num_relations + 2 must fit in a u32 token id".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(cfg: &DataConfig) -> &'static str {
        match cfg.validate() {
            Err(DataError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_spec_defaults_and_valid() {
        let cfg = DataConfig::default();
        assert_eq!(cfg.resolved_sub_size(), 5);
        assert_eq!(cfg.dir_name(), "composition_functor.10.10000.5");
        cfg.validate().unwrap();
    }

    #[test]
    fn sub_size_overrides_half() {
        let cfg = DataConfig {
            num_entities: 9,
            sub_size: Some(3),
            ..DataConfig::default()
        };
        assert_eq!(cfg.resolved_sub_size(), 3);
        assert_eq!(cfg.dir_name(), "composition_functor.9.10000.3");
        let half = DataConfig {
            num_entities: 9,
            ..DataConfig::default()
        };
        assert_eq!(half.resolved_sub_size(), 4);
    }

    #[test]
    fn each_bad_parameter_names_its_key() {
        let base = DataConfig::default();
        for (cfg, key) in [
            (
                DataConfig {
                    atomic_ood_ratio: -0.1,
                    ..base.clone()
                },
                "atomic_ood_ratio",
            ),
            (
                DataConfig {
                    compositional_ood_ratio: 1.5,
                    ..base.clone()
                },
                "compositional_ood_ratio",
            ),
            (
                DataConfig {
                    analogical_ood_ratio: f64::NAN,
                    ..base.clone()
                },
                "analogical_ood_ratio",
            ),
            (
                DataConfig {
                    num_relations: 0,
                    ..base.clone()
                },
                "num_relations",
            ),
            (
                DataConfig {
                    sub_size: Some(6),
                    ..base.clone()
                },
                "sub_size",
            ),
            (
                DataConfig {
                    sub_size: Some(1),
                    ..base.clone()
                },
                "sub_size",
            ),
            (
                DataConfig {
                    num_entities: 0,
                    ..base.clone()
                },
                "sub_size",
            ),
            (
                DataConfig {
                    num_relations: 3,
                    ..base.clone()
                },
                "num_relations",
            ),
            (
                DataConfig {
                    sub_size: Some(usize::MAX),
                    ..base.clone()
                },
                "sub_size",
            ),
        ] {
            assert_eq!(key_of(&cfg), key, "{cfg:?}");
        }
    }

    #[test]
    fn duplicate_relation_lifts_the_distinct_relation_limit() {
        let cfg = DataConfig {
            num_relations: 1,
            duplicate_relation: true,
            ..DataConfig::default()
        };
        cfg.validate().unwrap();
        let exact = DataConfig {
            num_relations: 4,
            ..DataConfig::default()
        };
        exact.validate().unwrap();
    }

    #[test]
    fn ratio_bounds_are_inclusive() {
        let cfg = DataConfig {
            atomic_ood_ratio: 1.0,
            compositional_ood_ratio: 0.0,
            analogical_ood_ratio: 1.0,
            ..DataConfig::default()
        };
        cfg.validate().unwrap();
    }

    #[test]
    fn rng_kind_parses_its_names_and_rejects_others_naming_the_key() {
        for (name, kind) in RngKind::NAMES.iter().zip(RngKind::ALL) {
            assert_eq!(name.parse::<RngKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), *name);
        }
        let err = "NumPy".parse::<RngKind>().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Config { key: "rng", .. }));
        assert!(
            msg.contains("\"NumPy\"") && msg.contains("chacha, numpy"),
            "{msg}"
        );
    }

    #[test]
    fn rng_defaults_to_chacha_and_is_serialised_only_when_not_default() {
        assert_eq!(DataConfig::default().rng, RngKind::Chacha);
        let text = serde_json::to_string(&DataConfig::default()).unwrap();
        assert!(!text.contains("rng"), "{text}");
        let numpy = DataConfig {
            rng: RngKind::Numpy,
            ..DataConfig::default()
        };
        let text = serde_json::to_string(&numpy).unwrap();
        assert!(text.contains("\"rng\":\"numpy\""), "{text}");
        let back: DataConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, numpy);
        let err = serde_json::from_str::<DataConfig>(r#"{"rng": "pcg"}"#).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("rng") && msg.contains("chacha, numpy"),
            "{msg}"
        );
    }
}
