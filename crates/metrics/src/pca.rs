//! Two-dimensional PCA of embedding rows, for the picture of the functor arrows (paper Fig. 7).

use tch::{Device, Kind, Tensor};

use crate::error::{MetricsError, Result, TorchContext};
use crate::tensor_util::{check_ids, matrix_dims, rows};

/// The first two principal components of a point set and the points' coordinates on them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca2d {
    /// Coordinates of each input point on the two principal directions, in input order: `[n][2]`.
    pub coords: Vec<[f64; 2]>,
    /// The two principal directions, unit vectors of length C, by decreasing variance. Sign
    /// convention: each direction's component of largest magnitude (the first one on ties) is
    /// positive, so the picture does not flip between runs or devices.
    pub components: [Vec<f64>; 2],
    /// Mean of the points (length C), subtracted before projecting.
    pub mean: Vec<f64>,
    /// Share of the total variance along each direction, in [0, 1], summing to at most 1.
    pub explained_variance_ratio: [f64; 2],
}

/// 2-D PCA of the rows of `points`, via the SVD of the centred data.
///
/// # Arguments
/// * `points` - [n, C] with n ≥ 2 and C ≥ 2, any float dtype and device (computed in f64 there).
///
/// # Errors
/// `Shape` if `points` is not 2-D or C < 2, `TooFew` for n < 2, `Degenerate` when all points
/// coincide (zero total variance), `Torch`.
pub fn pca_2d(points: &Tensor) -> Result<Pca2d> {
    const W: &str = "pca_2d";
    let (n, c) = matrix_dims(points, W)?;
    if c < 2 {
        return Err(MetricsError::Shape {
            what: W,
            expected: "[n, C] with C >= 2".to_string(),
            found: vec![n, c],
        });
    }
    if n < 2 {
        return Err(MetricsError::TooFew {
            what: W,
            expected: 2,
            found: n as usize,
        });
    }
    let x = points
        .f_detach()
        .and_then(|p| p.f_to_kind(Kind::Double))
        .ctx(W)?; // (n, C)
    let mean = x.f_mean_dim(0i64, true, None::<Kind>).ctx(W)?; // (1, C)
    let centered = x.f_sub(&mean).ctx(W)?; // (n, C)
    // torch.svd returns V (not Vᴴ): its columns are the principal directions.
    let (_, s, v) = centered.f_svd(true, true).ctx(W)?; // s (k,), v (C, k), k = min(n, C)
    let variances = to_host_vec(&s.f_mul(&s).ctx(W)?, W)?;
    let total: f64 = variances.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return Err(MetricsError::Degenerate {
            what: W,
            reason: format!("total variance of the {n} points is {total}"),
        });
    }
    let top = to_host_matrix(&v.f_narrow(1, 0, 2).ctx(W)?, W)?; // (C, 2)
    let signs: [f64; 2] = [0, 1].map(|j| {
        let mut best = 0;
        for i in 1..top.len() {
            if top[i][j].abs() > top[best][j].abs() {
                best = i;
            }
        }
        if top[best][j] < 0.0 { -1.0 } else { 1.0 }
    });
    let components = [0, 1].map(|j| {
        top.iter()
            .map(|row| row[j] * signs[j])
            .collect::<Vec<f64>>()
    });
    let basis = Tensor::f_from_slice(&[signs[0], signs[1]])
        .and_then(|sg| sg.f_to_device(v.device()))
        .and_then(|sg| v.f_narrow(1, 0, 2)?.f_mul(&sg.f_unsqueeze(0)?))
        .ctx(W)?; // (C, 2)
    let coords = to_host_matrix(&centered.f_matmul(&basis).ctx(W)?, W)? // (n, 2)
        .into_iter()
        .map(|row| [row[0], row[1]])
        .collect();
    Ok(Pca2d {
        coords,
        components,
        mean: to_host_vec(&mean.f_squeeze_dim(0).ctx(W)?, W)?,
        explained_variance_ratio: [variances[0] / total, variances[1] / total],
    })
}

/// 2-D PCA of rows `ids` of `matrix` (for example E1 and E2 entity rows of `tok_emb.weight`);
/// `coords[i]` belongs to `ids[i]`.
///
/// # Arguments
/// * `matrix` - [V, C] with C ≥ 2.
/// * `ids` - at least two row ids in `0..V`.
///
/// # Errors
/// `IdOutOfRange` and those of [`pca_2d`].
pub fn pca_2d_rows(matrix: &Tensor, ids: &[i64]) -> Result<Pca2d> {
    const W: &str = "pca_2d_rows";
    let (v, _) = matrix_dims(matrix, W)?;
    check_ids(ids, v, W)?;
    pca_2d(&rows(matrix, ids, W)?)
}

fn to_host_vec(t: &Tensor, what: &'static str) -> Result<Vec<f64>> {
    t.f_to_device(Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .and_then(|t| Vec::<f64>::try_from(&t))
        .ctx(what)
}

fn to_host_matrix(t: &Tensor, what: &'static str) -> Result<Vec<Vec<f64>>> {
    t.f_to_device(Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .and_then(|t| Vec::<Vec<f64>>::try_from(&t))
        .ctx(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, to_mat};

    fn mat(rows: &[&[f64]]) -> Tensor {
        let cols = rows[0].len() as i64;
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, cols])
    }

    fn assert_vec_close(found: &[f64], expected: &[f64], tol: f64, what: &str) {
        assert_eq!(found.len(), expected.len(), "{what}: lengths");
        for (f, e) in found.iter().zip(expected) {
            assert!(
                (f - e).abs() <= tol,
                "{what}: found {found:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn points_on_a_line_have_one_component() {
        // p = (1, 2, 3) + t·(0.6, −0.8, 0) for t = −2, 0, 1, 4 (mean 0.75). The sign convention
        // makes the −0.8 loading positive, so the direction is (−0.6, 0.8, 0) and the
        // coordinate is −(t − 0.75).
        let ts = [-2.0, 0.0, 1.0, 4.0];
        let rows: Vec<Vec<f64>> = ts
            .iter()
            .map(|t| vec![1.0 + 0.6 * t, 2.0 - 0.8 * t, 3.0])
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
        let pca = pca_2d(&mat(&refs)).unwrap();
        assert!((pca.explained_variance_ratio[0] - 1.0).abs() < 1e-12);
        assert!(pca.explained_variance_ratio[1].abs() < 1e-12);
        assert_vec_close(&pca.components[0], &[-0.6, 0.8, 0.0], 1e-12, "direction");
        let first: Vec<f64> = pca.coords.iter().map(|c| c[0]).collect();
        let expected: Vec<f64> = ts.iter().map(|t| -(t - 0.75)).collect();
        assert_vec_close(&first, &expected, 1e-12, "coords");
        assert_vec_close(&pca.mean, &[1.45, 1.4, 3.0], 1e-12, "mean");
    }

    #[test]
    fn cross_shaped_points_hand_case() {
        // Variances 8/4 = 2 along x and 2/4 = 0.5 along y: ratios 0.8 and 0.2.
        let pts = mat(&[&[2.0, 0.0], &[-2.0, 0.0], &[0.0, 1.0], &[0.0, -1.0]]);
        let pca = pca_2d(&pts).unwrap();
        assert_vec_close(&pca.explained_variance_ratio, &[0.8, 0.2], 1e-12, "ratios");
        assert_vec_close(&pca.components[0], &[1.0, 0.0], 1e-12, "first");
        assert_vec_close(&pca.components[1], &[0.0, 1.0], 1e-12, "second");
        let flat: Vec<f64> = pca.coords.iter().flatten().copied().collect();
        assert_vec_close(
            &flat,
            &[2.0, 0.0, -2.0, 0.0, 0.0, 1.0, 0.0, -1.0],
            1e-12,
            "coords",
        );
    }

    #[test]
    fn matches_the_jacobi_twin_on_random_points() {
        for (seed, n, c) in [(0, 9, 5), (1, 4, 6), (2, 30, 3)] {
            tch::manual_seed(seed);
            let pts = Tensor::randn([n, c], (Kind::Float, Device::Cpu));
            let pca = pca_2d(&pts).unwrap();
            let (coords, components, ratios) = reference::pca_2d(&to_mat(&pts));
            assert_vec_close(&pca.explained_variance_ratio, &ratios, 1e-9, "ratios");
            assert_vec_close(&pca.components[0], &components[0], 1e-7, "first");
            assert_vec_close(&pca.components[1], &components[1], 1e-7, "second");
            let found: Vec<f64> = pca.coords.iter().flatten().copied().collect();
            let expected: Vec<f64> = coords.iter().flatten().copied().collect();
            assert_vec_close(&found, &expected, 1e-7, "coords");
        }
    }

    #[test]
    fn rows_variant_selects_rows_in_order() {
        tch::manual_seed(6);
        let m = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
        let ids = [7, 2, 9, 0, 4];
        let by_rows = pca_2d_rows(&m, &ids).unwrap();
        let direct = pca_2d(&m.index_select(0, &Tensor::from_slice(&ids))).unwrap();
        assert_eq!(by_rows, direct);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let line = Tensor::zeros([5, 1], (Kind::Float, Device::Cpu));
        assert!(matches!(pca_2d(&line), Err(MetricsError::Shape { .. })));
        let one = Tensor::ones([1, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            pca_2d(&one),
            Err(MetricsError::TooFew {
                expected: 2,
                found: 1,
                ..
            })
        ));
        let same = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            pca_2d(&same),
            Err(MetricsError::Degenerate { .. })
        ));
        let m = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            pca_2d_rows(&m, &[0, 4]),
            Err(MetricsError::IdOutOfRange {
                id: 4,
                bound: 4,
                ..
            })
        ));
    }

    #[test]
    #[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
    fn pca_on_cuda_matches_cpu() {
        let dev = crate::test_cuda();
        tch::manual_seed(12);
        let pts = Tensor::randn([20, 8], (Kind::Float, Device::Cpu));
        let cpu = pca_2d(&pts).unwrap();
        let gpu = pca_2d(&pts.to_device(dev)).unwrap();
        assert_vec_close(
            &gpu.explained_variance_ratio,
            &cpu.explained_variance_ratio,
            1e-9,
            "ratios",
        );
        // The sign convention must make the two devices agree, not only up to sign.
        assert_vec_close(&gpu.components[0], &cpu.components[0], 1e-7, "first");
        assert_vec_close(&gpu.components[1], &cpu.components[1], 1e-7, "second");
        let found: Vec<f64> = gpu.coords.iter().flatten().copied().collect();
        let expected: Vec<f64> = cpu.coords.iter().flatten().copied().collect();
        assert_vec_close(&found, &expected, 1e-7, "coords");
    }
}
