//! Embedding geometry of the functor: how E1's input embeddings and E2's unembeddings line up.
//!
//! Notation: `E` = input embedding `tok_emb.weight` [V, C]; `U` = head weight
//! `head.weight` [V, C], whose row `U[t]` is the unembedding of token `t`; `e_f = E[<f>]`;
//! functor pairs `(s, t)` with `s ∈ E1` and `t = f(s) ∈ E2`, given as token ids.
//!
//! Every function detaches its inputs, computes in f64 on the inputs' device and returns host
//! numbers; none of them touches autograd state.

use tch::{Kind, Tensor};

use crate::error::{MetricsError, Result, TorchContext};
use crate::keys;
use crate::tensor_util::{
    check_emb_head, check_ids, check_pairs, matrix_dims, mean_value, normalize_rows, row_cosines,
    row_norms, row_sq_norms, rows, scalar_value, sources, targets,
};

/// Dirichlet energy of the functor graph on the rows of `emb`.
///
/// Each row is L2-normalised (a zero row stays zero); the energy is the Dirichlet form
/// `½ · mean over the functor edges, each traversed in both directions, of ‖ê(a) − ê(b)‖²`
/// (the ½ of the graph-Laplacian quadratic form, which counts every undirected edge once). Both
/// directions of one edge give the same value, so for unit rows this is `1 − mean cos(ê(s), ê(t))`.
///
/// Range [0, 2]: 0 when every pair points the same way, 1 for orthogonal pairs, 2 for opposite
/// unit vectors.
///
/// # Arguments
/// * `emb` - [V, C] any embedding-like matrix: `tok_emb.weight` or `head.weight`.
/// * `pairs` - functor edges `(s, f(s))` as token ids in `0..V`; at least one.
///
/// # Errors
/// `Shape` if `emb` is not 2-D, `TooFew` for no pairs, `IdOutOfRange`, `Torch`.
pub fn dirichlet_energy(emb: &Tensor, pairs: &[(i64, i64)]) -> Result<f64> {
    const W: &str = "dirichlet_energy";
    let (v, _) = matrix_dims(emb, W)?;
    check_pairs(pairs, v, 1, W)?;
    let (from, to): (Vec<i64>, Vec<i64>) = pairs
        .iter()
        .map(|&(s, t)| (s, t))
        .chain(pairs.iter().map(|&(s, t)| (t, s)))
        .unzip();
    let a = normalize_rows(&rows(emb, &from, W)?, W)?; // (2n, C)
    let b = normalize_rows(&rows(emb, &to, W)?, W)?; // (2n, C)
    let diff = a.f_sub(&b).ctx(W)?;
    Ok(0.5 * mean_value(&row_sq_norms(&diff, W)?, W)?)
}

/// Translation consistency `1 / (1 + mean_i ‖t_i − t̄‖²)` with `t_i = U[f(e_i)] − E[e_i]`.
///
/// 1 when the functor is one common translation vector; falls towards 0 as the per-entity
/// translations scatter.
///
/// # Arguments
/// * `e` - [V, C] input embedding; `u` - [V, C] head weight, same device.
/// * `pairs` - `(e_i, f(e_i))` token ids; at least one.
///
/// # Errors
/// `Shape`, `DeviceMismatch`, `TooFew`, `IdOutOfRange`, `Torch`.
pub fn translation_consistency(e: &Tensor, u: &Tensor, pairs: &[(i64, i64)]) -> Result<f64> {
    const W: &str = "translation_consistency";
    let v = check_emb_head(e, u, W)?;
    check_pairs(pairs, v, 1, W)?;
    let t = translations(e, u, pairs, W)?; // (n, C)
    let centered = t
        .f_mean_dim(0i64, true, None::<Kind>)
        .and_then(|mean| t.f_sub(&mean))
        .ctx(W)?;
    let spread = mean_value(&row_sq_norms(&centered, W)?, W)?;
    Ok(1.0 / (1.0 + spread))
}

/// Parallelogram score: `mean_i cos(U[f(e_i)] − E[e_i], e_f)` over all functor pairs.
///
/// Cosines use max(‖·‖, 1e-8) for each norm, so a zero vector scores 0.
///
/// # Arguments
/// * `e` - [V, C] input embedding; `u` - [V, C] head weight, same device.
/// * `pairs` - `(e_i, f(e_i))` token ids; at least one.
/// * `functor_id` - token id of `<f>`.
///
/// # Errors
/// `Shape`, `DeviceMismatch`, `TooFew`, `IdOutOfRange`, `Torch`.
pub fn parallelogram_score(
    e: &Tensor,
    u: &Tensor,
    pairs: &[(i64, i64)],
    functor_id: i64,
) -> Result<f64> {
    mean_translation_cosine(e, u, pairs, functor_id, "parallelogram_score")
}

/// Parallelism (paper Eq. 3): mean over analogical facts `(e_s, <f>, e_t)` of
/// `cos(U[e_t] − E[e_s], E[<f>])`.
///
/// The same quantity as [`parallelogram_score`], restricted to a list of facts; the trainer calls
/// it once for the ID and once for the OOD analogical facts.
///
/// # Arguments
/// * `e` - [V, C] input embedding; `u` - [V, C] head weight, same device.
/// * `facts` - `(e_s, e_t)` token ids of facts whose relation is `functor_id`; at least one.
/// * `functor_id` - token id of `<f>`.
///
/// # Errors
/// `Shape`, `DeviceMismatch`, `TooFew`, `IdOutOfRange`, `Torch`.
pub fn parallelism(e: &Tensor, u: &Tensor, facts: &[(i64, i64)], functor_id: i64) -> Result<f64> {
    mean_translation_cosine(e, u, facts, functor_id, "parallelism")
}

/// Analogy-addition score: `mean_i cos(E[e_i] + e_f, U[f(e_i)])`.
///
/// # Arguments
/// * `e` - [V, C] input embedding; `u` - [V, C] head weight, same device.
/// * `pairs` - `(e_i, f(e_i))` token ids; at least one.
/// * `functor_id` - token id of `<f>`.
///
/// # Errors
/// `Shape`, `DeviceMismatch`, `TooFew`, `IdOutOfRange`, `Torch`.
pub fn analogy_addition_score(
    e: &Tensor,
    u: &Tensor,
    pairs: &[(i64, i64)],
    functor_id: i64,
) -> Result<f64> {
    const W: &str = "analogy_addition_score";
    let v = check_emb_head(e, u, W)?;
    check_pairs(pairs, v, 1, W)?;
    check_ids(&[functor_id], v, W)?;
    let sum = rows(e, &sources(pairs), W)?
        .f_add(&rows(e, &[functor_id], W)?) // (n, C) + (1, C)
        .ctx(W)?;
    let target = rows(u, &targets(pairs), W)?; // (n, C)
    mean_value(&row_cosines(&sum, &target, W)?, W)
}

/// Isometry: Pearson correlation between the pairwise distances within `E[E1]` and the
/// corresponding pairwise distances within `U[f(E1)]`.
///
/// For pair indices i < j (row-major order) the two lists are `‖E[s_i] − E[s_j]‖` and
/// `‖U[t_i] − U[t_j]‖`. 1 when `U[f(E1)]` is a rotated, translated (and uniformly scaled) copy
/// of `E[E1]`.
///
/// # Arguments
/// * `e` - [V, C] input embedding; `u` - [V, C] head weight, same device.
/// * `pairs` - `(s_i, t_i = f(s_i))` token ids; at least three (two points give one distance,
///   whose correlation is undefined).
///
/// # Errors
/// `Shape`, `DeviceMismatch`, `TooFew`, `IdOutOfRange`, `Torch`; `Degenerate` when either
/// distance list is constant (standard deviation below 1e-6 of its root mean square).
pub fn isometry(e: &Tensor, u: &Tensor, pairs: &[(i64, i64)]) -> Result<f64> {
    const W: &str = "isometry";
    let v = check_emb_head(e, u, W)?;
    check_pairs(pairs, v, 3, W)?;
    let dx = upper_distances(&rows(e, &sources(pairs), W)?, W)?; // (n(n-1)/2,)
    let dy = upper_distances(&rows(u, &targets(pairs), W)?, W)?; // (n(n-1)/2,)
    pearson(&dx, &dy, W)
}

/// Cluster separation: `‖centroid(E[E1]) − centroid(U[f(E1)])‖ / spread`.
///
/// The spread of a cluster is the mean Euclidean distance of its members to its centroid; the
/// denominator is the average of the two clusters' spreads. Values well above 1 mean the two
/// categories sit apart; near 0 they overlap.
///
/// # Arguments
/// * `e` - [V, C] input embedding; `u` - [V, C] head weight, same device.
/// * `pairs` - `(s_i, f(s_i))` token ids; at least two.
///
/// # Errors
/// `Shape`, `DeviceMismatch`, `TooFew`, `IdOutOfRange`, `Torch`; `Degenerate` when both
/// clusters have zero spread.
pub fn cluster_separation(e: &Tensor, u: &Tensor, pairs: &[(i64, i64)]) -> Result<f64> {
    const W: &str = "cluster_separation";
    let v = check_emb_head(e, u, W)?;
    check_pairs(pairs, v, 2, W)?;
    let x = rows(e, &sources(pairs), W)?; // (n, C)
    let y = rows(u, &targets(pairs), W)?; // (n, C)
    let cx = x.f_mean_dim(0i64, true, None::<Kind>).ctx(W)?; // (1, C)
    let cy = y.f_mean_dim(0i64, true, None::<Kind>).ctx(W)?; // (1, C)
    let spread_x = mean_value(&row_norms(&x.f_sub(&cx).ctx(W)?, W)?, W)?;
    let spread_y = mean_value(&row_norms(&y.f_sub(&cy).ctx(W)?, W)?, W)?;
    let spread = 0.5 * (spread_x + spread_y);
    if spread.is_nan() || spread <= 0.0 {
        return Err(MetricsError::Degenerate {
            what: W,
            reason: format!("mean within-cluster spread is {spread}"),
        });
    }
    let gap = scalar_value(
        &row_norms(&cx.f_sub(&cy).ctx(W)?, W)?.f_squeeze().ctx(W)?,
        W,
    )?;
    Ok(gap / spread)
}

/// All E/U-based geometry numbers of one model state, named as in the metrics log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeometryReport {
    /// [`dirichlet_energy`] on the input embedding E.
    pub dirichlet_energy: f64,
    /// [`dirichlet_energy`] on the head rows U.
    pub dirichlet_energy_head: f64,
    /// [`translation_consistency`].
    pub translation_consistency: f64,
    /// [`parallelogram_score`].
    pub parallelogram: f64,
    /// [`analogy_addition_score`].
    pub analogy_addition: f64,
    /// [`isometry`].
    pub isometry: f64,
    /// [`cluster_separation`].
    pub cluster_separation: f64,
    /// [`parallelism`] over the ID analogical facts; `None` when there are none.
    pub parallelism_id: Option<f64>,
    /// [`parallelism`] over the OOD analogical facts; `None` when there are none.
    pub parallelism_ood: Option<f64>,
}

impl GeometryReport {
    /// The report as `(metrics-log key, value)` pairs in a fixed order; absent parallelism
    /// entries are skipped.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        let mut out = vec![
            (keys::DIRICHLET_ENERGY, self.dirichlet_energy),
            (keys::DIRICHLET_ENERGY_HEAD, self.dirichlet_energy_head),
            (keys::TRANSLATION_CONSISTENCY, self.translation_consistency),
            (keys::PARALLELOGRAM, self.parallelogram),
            (keys::ANALOGY_ADDITION, self.analogy_addition),
            (keys::ISOMETRY, self.isometry),
            (keys::CLUSTER_SEPARATION, self.cluster_separation),
        ];
        if let Some(p) = self.parallelism_id {
            out.push((keys::PARALLELISM_ID, p));
        }
        if let Some(p) = self.parallelism_ood {
            out.push((keys::PARALLELISM_OOD, p));
        }
        out
    }
}

/// Computes every field of [`GeometryReport`] from one model state.
///
/// # Arguments
/// * `e` - [V, C] input embedding `tok_emb.weight`; `u` - [V, C] head weight, same device.
/// * `functor_pairs` - all `(s, f(s))` pairs, `s ∈ E1`; at least three (for [`isometry`]).
/// * `functor_id` - token id of `<f>`.
/// * `id_facts`, `ood_facts` - `(e_s, e_t)` of the ID / OOD analogical facts; either may be
///   empty, which leaves the matching parallelism field `None`.
///
/// # Errors
/// The first error of any of the metrics.
pub fn geometry_report(
    e: &Tensor,
    u: &Tensor,
    functor_pairs: &[(i64, i64)],
    functor_id: i64,
    id_facts: &[(i64, i64)],
    ood_facts: &[(i64, i64)],
) -> Result<GeometryReport> {
    let optional_parallelism = |facts: &[(i64, i64)]| -> Result<Option<f64>> {
        if facts.is_empty() {
            Ok(None)
        } else {
            parallelism(e, u, facts, functor_id).map(Some)
        }
    };
    Ok(GeometryReport {
        dirichlet_energy: dirichlet_energy(e, functor_pairs)?,
        dirichlet_energy_head: dirichlet_energy(u, functor_pairs)?,
        translation_consistency: translation_consistency(e, u, functor_pairs)?,
        parallelogram: parallelogram_score(e, u, functor_pairs, functor_id)?,
        analogy_addition: analogy_addition_score(e, u, functor_pairs, functor_id)?,
        isometry: isometry(e, u, functor_pairs)?,
        cluster_separation: cluster_separation(e, u, functor_pairs)?,
        parallelism_id: optional_parallelism(id_facts)?,
        parallelism_ood: optional_parallelism(ood_facts)?,
    })
}

/// `t_i = U[t_i] − E[s_i]`: (n, C). Ids must be validated.
fn translations(
    e: &Tensor,
    u: &Tensor,
    pairs: &[(i64, i64)],
    what: &'static str,
) -> Result<Tensor> {
    rows(u, &targets(pairs), what)?
        .f_sub(&rows(e, &sources(pairs), what)?)
        .ctx(what)
}

/// `mean_i cos(U[t_i] − E[s_i], E[functor_id])`, shared by parallelogram and parallelism.
fn mean_translation_cosine(
    e: &Tensor,
    u: &Tensor,
    pairs: &[(i64, i64)],
    functor_id: i64,
    what: &'static str,
) -> Result<f64> {
    let v = check_emb_head(e, u, what)?;
    check_pairs(pairs, v, 1, what)?;
    check_ids(&[functor_id], v, what)?;
    let t = translations(e, u, pairs, what)?; // (n, C)
    let ef = rows(e, &[functor_id], what)?; // (1, C), broadcast over the n rows
    mean_value(&row_cosines(&t, &ef, what)?, what)
}

/// Distances ‖x_i − x_j‖ for i < j in row-major order: [n, C] -> [n(n−1)/2].
fn upper_distances(x: &Tensor, what: &'static str) -> Result<Tensor> {
    let n = x.size()[0];
    let sq = row_sq_norms(x, what)?; // (n,)
    // The Gram form avoids the (n, n, C) difference tensor; f64 keeps its cancellation harmless.
    let gram = x
        .f_transpose(0, 1)
        .and_then(|xt| x.f_matmul(&xt))
        .ctx(what)?; // (n, n)
    let d2 = sq
        .f_unsqueeze(1)
        .and_then(|col| col.f_add(&sq.f_unsqueeze(0)?))
        .and_then(|s| s.f_sub(&gram.f_mul_scalar(2.0)?))
        .and_then(|d| d.f_clamp_min(0.0))
        .ctx(what)?; // (n, n)
    let upper = Tensor::f_triu_indices(n, n, 1, (Kind::Int64, x.device())).ctx(what)?; // (2, m)
    let flat = upper
        .f_select(0, 0)
        .and_then(|i| i.f_mul_scalar(n))
        .and_then(|i| i.f_add(&upper.f_select(0, 1)?))
        .ctx(what)?; // (m,)
    d2.f_reshape([-1])
        .and_then(|d| d.f_index_select(0, &flat))
        .and_then(|d| d.f_sqrt())
        .ctx(what)
}

/// Pearson correlation of two equally long 1-D tensors.
fn pearson(a: &Tensor, b: &Tensor, what: &'static str) -> Result<f64> {
    let center = |x: &Tensor| x.f_mean(Kind::Double).and_then(|m| x.f_sub(&m));
    let ac = center(a).ctx(what)?;
    let bc = center(b).ctx(what)?;
    let dot = |x: &Tensor, y: &Tensor| {
        x.f_mul(y)
            .and_then(|p| p.f_sum(Kind::Double))
            .and_then(|s| s.f_double_value(&[]))
    };
    let cov = dot(&ac, &bc).ctx(what)?;
    let var_a = dot(&ac, &ac).ctx(what)?;
    let var_b = dot(&bc, &bc).ctx(what)?;
    let sq_a = dot(a, a).ctx(what)?;
    let sq_b = dot(b, b).ctx(what)?;
    // Rounding leaves a constant list with a tiny nonzero variance, whose correlation is noise.
    const REL: f64 = 1e-12;
    for (name, var, sq) in [("first", var_a, sq_a), ("second", var_b, sq_b)] {
        if var.is_nan() || var <= REL * sq {
            return Err(MetricsError::Degenerate {
                what,
                reason: format!("the {name} distance list is constant (variance {var:e})"),
            });
        }
    }
    Ok(cov / (var_a * var_b).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, to_mat};
    use tch::Device;

    /// A [rows, cols] f64 tensor from literal rows.
    fn mat(rows: &[&[f64]]) -> Tensor {
        let cols = rows[0].len() as i64;
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, cols])
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    fn assert_close(found: f64, expected: f64, tol: f64, what: &str) {
        assert!(
            close(found, expected, tol),
            "{what}: found {found}, expected {expected}"
        );
    }

    /// E and U of V = 14 tokens: ids 0..5 are E1, 5..10 E2 (f(i) = i + 5), 13 is `<f>`.
    fn random_model(seed: i64, kind: Kind) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let e = Tensor::randn([14, 6], (kind, Device::Cpu));
        let u = Tensor::randn([14, 6], (kind, Device::Cpu));
        (e, u)
    }

    const PAIRS: [(i64, i64); 5] = [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9)];
    const F: i64 = 13;

    #[test]
    fn every_metric_matches_its_loop_twin_on_random_tensors() {
        for (seed, kind) in [(0, Kind::Float), (1, Kind::Double), (7, Kind::Float)] {
            let (e, u) = random_model(seed, kind);
            let (em, um) = (to_mat(&e), to_mat(&u));
            let tol = 1e-10;
            assert_close(
                dirichlet_energy(&e, &PAIRS).unwrap(),
                reference::dirichlet_energy(&em, &PAIRS),
                tol,
                "dirichlet E",
            );
            assert_close(
                dirichlet_energy(&u, &PAIRS).unwrap(),
                reference::dirichlet_energy(&um, &PAIRS),
                tol,
                "dirichlet U",
            );
            assert_close(
                translation_consistency(&e, &u, &PAIRS).unwrap(),
                reference::translation_consistency(&em, &um, &PAIRS),
                tol,
                "translation consistency",
            );
            assert_close(
                parallelogram_score(&e, &u, &PAIRS, F).unwrap(),
                reference::parallelogram(&em, &um, &PAIRS, F),
                tol,
                "parallelogram",
            );
            assert_close(
                parallelism(&e, &u, &PAIRS[1..3], F).unwrap(),
                reference::parallelogram(&em, &um, &PAIRS[1..3], F),
                tol,
                "parallelism",
            );
            assert_close(
                analogy_addition_score(&e, &u, &PAIRS, F).unwrap(),
                reference::analogy_addition(&em, &um, &PAIRS, F),
                tol,
                "analogy addition",
            );
            assert_close(
                isometry(&e, &u, &PAIRS).unwrap(),
                reference::isometry(&em, &um, &PAIRS),
                1e-9,
                "isometry",
            );
            assert_close(
                cluster_separation(&e, &u, &PAIRS).unwrap(),
                reference::cluster_separation(&em, &um, &PAIRS),
                tol,
                "cluster separation",
            );
        }
    }

    #[test]
    fn dirichlet_energy_hand_cases() {
        // Row 1 is row 0 scaled: same direction, energy 0.
        let same = mat(&[&[0.6, 0.8], &[1.8, 2.4]]);
        assert_close(
            dirichlet_energy(&same, &[(0, 1)]).unwrap(),
            0.0,
            1e-12,
            "same",
        );
        // Opposite unit vectors: ½‖ê − (−ê)‖² = 2.
        let opposite = mat(&[&[0.6, 0.8], &[-0.6, -0.8]]);
        assert_close(
            dirichlet_energy(&opposite, &[(0, 1)]).unwrap(),
            2.0,
            1e-12,
            "opposite",
        );
        // Orthogonal: 1. Mixed with an aligned pair: (1 + 0) / 2 = 0.5.
        let mixed = mat(&[&[3.0, 0.0], &[0.0, 0.5], &[1.0, 1.0], &[2.0, 2.0]]);
        assert_close(
            dirichlet_energy(&mixed, &[(0, 1)]).unwrap(),
            1.0,
            1e-12,
            "orthogonal",
        );
        assert_close(
            dirichlet_energy(&mixed, &[(0, 1), (2, 3)]).unwrap(),
            0.5,
            1e-12,
            "mixed",
        );
        // A zero row normalises to zero, not NaN: ½‖0 − ê‖² = 0.5.
        let zero = mat(&[&[0.0, 0.0], &[0.0, 5.0]]);
        assert_close(
            dirichlet_energy(&zero, &[(0, 1)]).unwrap(),
            0.5,
            1e-12,
            "zero row",
        );
    }

    #[test]
    fn translation_consistency_hand_cases() {
        // One common translation (1, 2): consistency 1.
        let e = mat(&[&[0.0, 0.0], &[3.0, -1.0], &[0.0, 0.0], &[0.0, 0.0]]);
        let u = mat(&[&[0.0, 0.0], &[0.0, 0.0], &[1.0, 2.0], &[4.0, 1.0]]);
        let pairs = [(0, 2), (1, 3)];
        assert_close(
            translation_consistency(&e, &u, &pairs).unwrap(),
            1.0,
            1e-12,
            "common",
        );
        // Translations (1, 0) and (−1, 0): t̄ = 0, mean ‖t − t̄‖² = 1, consistency 1/2.
        let u = mat(&[&[0.0, 0.0], &[0.0, 0.0], &[1.0, 0.0], &[2.0, -1.0]]);
        assert_close(
            translation_consistency(&e, &u, &pairs).unwrap(),
            0.5,
            1e-12,
            "scattered",
        );
    }

    #[test]
    fn parallelogram_parallelism_and_addition_hand_cases() {
        // E[0] = (0, 0), E[1] = (1, 0), e_f = E[4] = (1, 0); U[2] = (1, 1), U[3] = (1, 2).
        let e = mat(&[
            &[0.0, 0.0],
            &[1.0, 0.0],
            &[0.0, 0.0],
            &[0.0, 0.0],
            &[1.0, 0.0],
        ]);
        let u = mat(&[
            &[0.0, 0.0],
            &[0.0, 0.0],
            &[1.0, 1.0],
            &[1.0, 2.0],
            &[0.0, 0.0],
        ]);
        let pairs = [(0, 2), (1, 3)];
        // Translations (1, 1) and (0, 2): cosines with (1, 0) are 1/√2 and 0.
        let half_sqrt2 = std::f64::consts::FRAC_1_SQRT_2;
        assert_close(
            parallelogram_score(&e, &u, &pairs, 4).unwrap(),
            half_sqrt2 / 2.0,
            1e-12,
            "parallelogram",
        );
        assert_close(
            parallelism(&e, &u, &pairs[..1], 4).unwrap(),
            half_sqrt2,
            1e-12,
            "id",
        );
        assert_close(
            parallelism(&e, &u, &pairs[1..], 4).unwrap(),
            0.0,
            1e-12,
            "ood",
        );
        // E[s] + e_f: (1, 0) vs U = (1, 1) → 1/√2; (2, 0) vs (1, 2) → 2/(2·√5).
        let expected = (half_sqrt2 + 1.0 / 5f64.sqrt()) / 2.0;
        assert_close(
            analogy_addition_score(&e, &u, &pairs, 4).unwrap(),
            expected,
            1e-12,
            "addition",
        );
    }

    #[test]
    fn isometry_is_one_for_a_rotated_translated_scaled_copy() {
        tch::manual_seed(3);
        let x = Tensor::randn([6, 4], (Kind::Double, Device::Cpu));
        let (q, _) = Tensor::linalg_qr(
            &Tensor::randn([4, 4], (Kind::Double, Device::Cpu)),
            "reduced",
        );
        let shift = Tensor::from_slice(&[5.0, -2.0, 0.5, 3.0]).view([1, 4]);
        let y = x.matmul(&q) * 2.5 + shift;
        let e = Tensor::cat(
            &[&x, &Tensor::zeros([6, 4], (Kind::Double, Device::Cpu))],
            0,
        );
        let u = Tensor::cat(
            &[&Tensor::zeros([6, 4], (Kind::Double, Device::Cpu)), &y],
            0,
        );
        let pairs: Vec<(i64, i64)> = (0..6).map(|i| (i, i + 6)).collect();
        assert_close(isometry(&e, &u, &pairs).unwrap(), 1.0, 1e-12, "isometry");
        // Shuffling the correspondence breaks it.
        let shuffled: Vec<(i64, i64)> = (0..6).map(|i| (i, (i + 1) % 6 + 6)).collect();
        assert!(isometry(&e, &u, &shuffled).unwrap() < 0.99);
    }

    #[test]
    fn isometry_hand_case() {
        // Points 0, 1, 3 on a line (distances 1, 3, 2) against 0, 2, 3 (distances 2, 3, 1):
        // centred (−1, 1, 0) and (0, 1, −1), correlation 1 / 2.
        let e = mat(&[&[0.0], &[1.0], &[3.0], &[0.0], &[0.0], &[0.0]]);
        let u = mat(&[&[0.0], &[0.0], &[0.0], &[0.0], &[2.0], &[3.0]]);
        let pairs = [(0, 3), (1, 4), (2, 5)];
        assert_close(isometry(&e, &u, &pairs).unwrap(), 0.5, 1e-12, "isometry");
    }

    #[test]
    fn cluster_separation_hand_case() {
        // E1 at (±1, 0): centroid 0, spread 1. f(E1) at (10, ±2): centroid (10, 0), spread 2.
        // Gap 10 over mean spread 1.5.
        let e = mat(&[&[1.0, 0.0], &[-1.0, 0.0], &[0.0, 0.0], &[0.0, 0.0]]);
        let u = mat(&[&[0.0, 0.0], &[0.0, 0.0], &[10.0, 2.0], &[10.0, -2.0]]);
        let pairs = [(0, 2), (1, 3)];
        assert_close(
            cluster_separation(&e, &u, &pairs).unwrap(),
            10.0 / 1.5,
            1e-12,
            "separation",
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (e, u) = random_model(0, Kind::Float);
        assert!(matches!(
            dirichlet_energy(&e, &[(0, 5), (2, 14)]),
            Err(MetricsError::IdOutOfRange {
                index: 1,
                id: 14,
                bound: 14,
                ..
            })
        ));
        assert!(matches!(
            dirichlet_energy(&e, &[(-1, 5)]),
            Err(MetricsError::IdOutOfRange { id: -1, .. })
        ));
        assert!(matches!(
            dirichlet_energy(&e, &[]),
            Err(MetricsError::TooFew {
                expected: 1,
                found: 0,
                ..
            })
        ));
        assert!(matches!(
            dirichlet_energy(&Tensor::zeros([3], (Kind::Float, Device::Cpu)), &[(0, 1)]),
            Err(MetricsError::Shape { .. })
        ));
        let wide = Tensor::zeros([14, 7], (Kind::Float, Device::Cpu));
        match translation_consistency(&e, &wide, &PAIRS) {
            Err(MetricsError::Shape { found, .. }) => assert_eq!(found, vec![14, 7]),
            other => panic!("expected a shape error, got {other:?}"),
        }
        assert!(matches!(
            parallelogram_score(&e, &u, &PAIRS, 14),
            Err(MetricsError::IdOutOfRange { id: 14, .. })
        ));
        assert!(matches!(
            analogy_addition_score(&e, &u, &PAIRS, -3),
            Err(MetricsError::IdOutOfRange { id: -3, .. })
        ));
        assert!(matches!(
            isometry(&e, &u, &PAIRS[..2]),
            Err(MetricsError::TooFew {
                expected: 3,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            cluster_separation(&e, &u, &PAIRS[..1]),
            Err(MetricsError::TooFew {
                expected: 2,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            parallelism(&e, &u, &[], F),
            Err(MetricsError::TooFew { .. })
        ));
        // Every target on one row: all distances within f(E1) are 0.
        let collapsed = [(0, 5), (1, 5), (2, 5)];
        assert!(matches!(
            isometry(&e, &u, &collapsed),
            Err(MetricsError::Degenerate { .. })
        ));
        let same_rows = [(0, 5), (0, 5)];
        assert!(matches!(
            cluster_separation(&e, &u, &same_rows),
            Err(MetricsError::Degenerate { .. })
        ));
    }

    #[test]
    fn parameters_that_require_grad_are_accepted_and_untouched() {
        let (e, u) = random_model(5, Kind::Float);
        let e = e.set_requires_grad(true);
        let u = u.set_requires_grad(true);
        let report = geometry_report(&e, &u, &PAIRS, F, &PAIRS[..2], &PAIRS[2..]).unwrap();
        assert!(report.dirichlet_energy.is_finite());
        assert!(!e.grad().defined());
    }

    #[test]
    fn report_collects_every_metric_under_its_key() {
        let (e, u) = random_model(2, Kind::Float);
        let report = geometry_report(&e, &u, &PAIRS, F, &PAIRS[..2], &PAIRS[2..]).unwrap();
        let expected = [
            (
                "geom/dirichlet_energy",
                dirichlet_energy(&e, &PAIRS).unwrap(),
            ),
            (
                "geom/dirichlet_energy_head",
                dirichlet_energy(&u, &PAIRS).unwrap(),
            ),
            (
                "geom/translation_consistency",
                translation_consistency(&e, &u, &PAIRS).unwrap(),
            ),
            (
                "geom/parallelogram",
                parallelogram_score(&e, &u, &PAIRS, F).unwrap(),
            ),
            (
                "geom/analogy_addition",
                analogy_addition_score(&e, &u, &PAIRS, F).unwrap(),
            ),
            ("geom/isometry", isometry(&e, &u, &PAIRS).unwrap()),
            (
                "geom/cluster_separation",
                cluster_separation(&e, &u, &PAIRS).unwrap(),
            ),
            (
                "geom/parallelism/id_analogical",
                parallelism(&e, &u, &PAIRS[..2], F).unwrap(),
            ),
            (
                "geom/parallelism/ood_analogical",
                parallelism(&e, &u, &PAIRS[2..], F).unwrap(),
            ),
        ];
        assert_eq!(report.entries(), expected.to_vec());
        // The two parallelism entries are different subsets, so they must differ.
        assert_ne!(report.parallelism_id, report.parallelism_ood);

        let no_ood = geometry_report(&e, &u, &PAIRS, F, &PAIRS[..2], &[]).unwrap();
        assert_eq!(no_ood.parallelism_ood, None);
        let keys: Vec<&str> = no_ood.entries().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys.len(), 8);
        assert!(!keys.contains(&"geom/parallelism/ood_analogical"));
        assert!(keys.contains(&"geom/parallelism/id_analogical"));
    }

    #[test]
    #[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
    fn report_on_cuda_matches_cpu() {
        let dev = crate::test_cuda();
        let (e, u) = random_model(11, Kind::Float);
        let cpu = geometry_report(&e, &u, &PAIRS, F, &PAIRS[..2], &PAIRS[2..]).unwrap();
        let gpu = geometry_report(
            &e.to_device(dev),
            &u.to_device(dev),
            &PAIRS,
            F,
            &PAIRS[..2],
            &PAIRS[2..],
        )
        .unwrap();
        for ((k, a), (_, b)) in cpu.entries().into_iter().zip(gpu.entries()) {
            assert_close(b, a, 1e-9, k);
        }
        assert!(matches!(
            translation_consistency(&e, &u.to_device(dev), &PAIRS),
            Err(MetricsError::DeviceMismatch { .. })
        ));
    }
}
