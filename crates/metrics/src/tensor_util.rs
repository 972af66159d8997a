//! Validation and small tensor helpers shared by the metrics.
//!
//! Ids are checked on the host before any indexing: an out-of-range `index_select` on CUDA is a
//! device-side assert that poisons the whole process, not a recoverable error.

use tch::{Kind, Tensor};

use crate::error::{MetricsError, Result, TorchContext};

/// Norms below this are treated as this, so a zero vector has cosine 0 with everything and
/// normalises to zero instead of NaN (the convention of PyTorch's `F.normalize`).
pub(crate) const EPS: f64 = 1e-8;

/// Returns `(rows, cols)` of a 2-D tensor.
pub(crate) fn matrix_dims(t: &Tensor, what: &'static str) -> Result<(i64, i64)> {
    match t.size().as_slice() {
        &[rows, cols] => Ok((rows, cols)),
        other => Err(MetricsError::Shape {
            what,
            expected: "[rows, cols]".to_string(),
            found: other.to_vec(),
        }),
    }
}

/// Checks that E [V, C] and U [V, C] are matrices of one shape on one device; returns V.
pub(crate) fn check_emb_head(e: &Tensor, u: &Tensor, what: &'static str) -> Result<i64> {
    let (v, c) = matrix_dims(e, what)?;
    let (vu, cu) = matrix_dims(u, what)?;
    if (vu, cu) != (v, c) {
        return Err(MetricsError::Shape {
            what,
            expected: format!("head [V, C] = [{v}, {c}] like the embedding"),
            found: vec![vu, cu],
        });
    }
    if u.device() != e.device() {
        return Err(MetricsError::DeviceMismatch {
            what,
            expected: e.device(),
            found: u.device(),
        });
    }
    Ok(v)
}

/// Checks every id against `0..bound`.
pub(crate) fn check_ids(ids: &[i64], bound: i64, what: &'static str) -> Result<()> {
    match ids.iter().position(|&id| id < 0 || id >= bound) {
        Some(index) => Err(MetricsError::IdOutOfRange {
            what,
            index,
            id: ids[index],
            bound,
        }),
        None => Ok(()),
    }
}

/// Checks a pair list: at least `min` pairs, both ends of each in `0..bound`.
pub(crate) fn check_pairs(
    pairs: &[(i64, i64)],
    bound: i64,
    min: usize,
    what: &'static str,
) -> Result<()> {
    if pairs.len() < min {
        return Err(MetricsError::TooFew {
            what,
            expected: min,
            found: pairs.len(),
        });
    }
    check_ids(&sources(pairs), bound, what)?;
    check_ids(&targets(pairs), bound, what)
}

/// First components of the pairs.
pub(crate) fn sources(pairs: &[(i64, i64)]) -> Vec<i64> {
    pairs.iter().map(|&(s, _)| s).collect()
}

/// Second components of the pairs.
pub(crate) fn targets(pairs: &[(i64, i64)]) -> Vec<i64> {
    pairs.iter().map(|&(_, t)| t).collect()
}

/// Rows `ids` of `matrix` [V, C], detached, as f64 on the matrix's device: [ids.len(), C].
///
/// The ids must already be validated.
pub(crate) fn rows(matrix: &Tensor, ids: &[i64], what: &'static str) -> Result<Tensor> {
    let index = Tensor::f_from_slice(ids)
        .and_then(|t| t.f_to_device(matrix.device()))
        .ctx(what)?;
    matrix
        .f_detach()
        .and_then(|m| m.f_index_select(0, &index))
        .and_then(|r| r.f_to_kind(Kind::Double))
        .ctx(what)
}

/// Squared Euclidean norm of each row: [n, C] -> [n].
pub(crate) fn row_sq_norms(x: &Tensor, what: &'static str) -> Result<Tensor> {
    x.f_mul(x)
        .and_then(|sq| sq.f_sum_dim_intlist(1i64, false, None::<Kind>))
        .ctx(what)
}

/// Euclidean norm of each row: [n, C] -> [n].
pub(crate) fn row_norms(x: &Tensor, what: &'static str) -> Result<Tensor> {
    row_sq_norms(x, what)?.f_sqrt().ctx(what)
}

/// Each row divided by max(its norm, EPS): [n, C] -> [n, C].
pub(crate) fn normalize_rows(x: &Tensor, what: &'static str) -> Result<Tensor> {
    let norms = row_norms(x, what)?;
    norms
        .f_clamp_min(EPS)
        .and_then(|n| n.f_unsqueeze(1))
        .and_then(|n| x.f_div(&n))
        .ctx(what)
}

/// Row-wise cosine a·b / (max(‖a‖, EPS) · max(‖b‖, EPS)): [n, C], [n, C] -> [n].
pub(crate) fn row_cosines(a: &Tensor, b: &Tensor, what: &'static str) -> Result<Tensor> {
    let dot = a
        .f_mul(b)
        .and_then(|p| p.f_sum_dim_intlist(1i64, false, None::<Kind>))
        .ctx(what)?;
    let na = row_norms(a, what)?.f_clamp_min(EPS).ctx(what)?;
    let nb = row_norms(b, what)?.f_clamp_min(EPS).ctx(what)?;
    na.f_mul(&nb).and_then(|d| dot.f_div(&d)).ctx(what)
}

/// Mean of all elements as an f64 on the host (one device sync).
pub(crate) fn mean_value(x: &Tensor, what: &'static str) -> Result<f64> {
    x.f_mean(Kind::Double)
        .and_then(|m| m.f_double_value(&[]))
        .ctx(what)
}

/// The single value of a 0-d tensor as an f64 on the host.
pub(crate) fn scalar_value(x: &Tensor, what: &'static str) -> Result<f64> {
    x.f_double_value(&[]).ctx(what)
}
