//! Plain-loop twins of the tensor metrics, on `Vec<Vec<f64>>`, for the tests.
//!
//! Each twin follows the written definition element by element with no tensor library, so a
//! mistake in a broadcast, a reduction axis or an index order in the tensor code shows up as a
//! mismatch.

use std::cmp::Ordering;

use tch::{Device, Kind, Tensor};

pub type Mat = Vec<Vec<f64>>;

const EPS: f64 = 1e-8;

pub fn to_mat(t: &Tensor) -> Mat {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous();
    Mat::try_from(&t).expect("test tensor is 2-D")
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

pub fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

pub fn cos(a: &[f64], b: &[f64]) -> f64 {
    dot(a, b) / (norm(a).max(EPS) * norm(b).max(EPS))
}

fn row(m: &Mat, id: i64) -> &[f64] {
    &m[id as usize]
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn centroid(points: &[&[f64]]) -> Vec<f64> {
    let c = points[0].len();
    (0..c)
        .map(|k| points.iter().map(|p| p[k]).sum::<f64>() / points.len() as f64)
        .collect()
}

pub fn dirichlet_energy(m: &Mat, pairs: &[(i64, i64)]) -> f64 {
    let unit = |id: i64| {
        let r = row(m, id);
        let n = norm(r).max(EPS);
        r.iter().map(|x| x / n).collect::<Vec<f64>>()
    };
    let mut total = 0.0;
    let mut edges = 0;
    for &(s, t) in pairs {
        for (a, b) in [(s, t), (t, s)] {
            let d = sub(&unit(a), &unit(b));
            total += 0.5 * dot(&d, &d);
            edges += 1;
        }
    }
    total / edges as f64
}

fn translations(e: &Mat, u: &Mat, pairs: &[(i64, i64)]) -> Mat {
    pairs
        .iter()
        .map(|&(s, t)| sub(row(u, t), row(e, s)))
        .collect()
}

pub fn translation_consistency(e: &Mat, u: &Mat, pairs: &[(i64, i64)]) -> f64 {
    let ts = translations(e, u, pairs);
    let refs: Vec<&[f64]> = ts.iter().map(|t| t.as_slice()).collect();
    let tbar = centroid(&refs);
    let spread: Vec<f64> = ts
        .iter()
        .map(|t| {
            let d = sub(t, &tbar);
            dot(&d, &d)
        })
        .collect();
    1.0 / (1.0 + mean(&spread))
}

pub fn parallelogram(e: &Mat, u: &Mat, pairs: &[(i64, i64)], f: i64) -> f64 {
    let cosines: Vec<f64> = translations(e, u, pairs)
        .iter()
        .map(|t| cos(t, row(e, f)))
        .collect();
    mean(&cosines)
}

pub fn analogy_addition(e: &Mat, u: &Mat, pairs: &[(i64, i64)], f: i64) -> f64 {
    let cosines: Vec<f64> = pairs
        .iter()
        .map(|&(s, t)| cos(&add(row(e, s), row(e, f)), row(u, t)))
        .collect();
    mean(&cosines)
}

pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let mut cov = 0.0;
    let mut va = 0.0;
    let mut vb = 0.0;
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    cov / (va * vb).sqrt()
}

pub fn isometry(e: &Mat, u: &Mat, pairs: &[(i64, i64)]) -> f64 {
    let mut dx = Vec::new();
    let mut dy = Vec::new();
    for i in 0..pairs.len() {
        for j in i + 1..pairs.len() {
            dx.push(norm(&sub(row(e, pairs[i].0), row(e, pairs[j].0))));
            dy.push(norm(&sub(row(u, pairs[i].1), row(u, pairs[j].1))));
        }
    }
    pearson(&dx, &dy)
}

pub fn cluster_separation(e: &Mat, u: &Mat, pairs: &[(i64, i64)]) -> f64 {
    let xs: Vec<&[f64]> = pairs.iter().map(|&(s, _)| row(e, s)).collect();
    let ys: Vec<&[f64]> = pairs.iter().map(|&(_, t)| row(u, t)).collect();
    let (cx, cy) = (centroid(&xs), centroid(&ys));
    let spread = |pts: &[&[f64]], c: &[f64]| {
        mean(&pts.iter().map(|p| norm(&sub(p, c))).collect::<Vec<f64>>())
    };
    norm(&sub(&cx, &cy)) / (0.5 * (spread(&xs, &cx) + spread(&ys, &cy)))
}

/// Ranks by counting, per row, the candidates whose logit is not strictly below the target's.
pub fn ranks(logits: &Mat, targets: &[i64], candidates: &[i64]) -> Vec<i64> {
    targets
        .iter()
        .enumerate()
        .map(|(b, &t)| {
            let target = logits[b][t as usize];
            candidates
                .iter()
                .filter(|&&c| logits[b][c as usize].partial_cmp(&target) != Some(Ordering::Less))
                .count() as i64
        })
        .collect()
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: (eigenvalues,
/// eigenvectors as columns), unsorted.
fn jacobi_eigen(mut a: Mat) -> (Vec<f64>, Mat) {
    let n = a.len();
    let mut v: Mat = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- Jᵀ A J with J the identity except J[p][p] = J[q][q] = c, J[p][q] = s,
                // J[q][p] = -s; V <- V J.
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (row_p, row_q) = (a[p].clone(), a[q].clone());
                a[p] = row_p
                    .iter()
                    .zip(&row_q)
                    .map(|(x, y)| c * x - s * y)
                    .collect();
                a[q] = row_p
                    .iter()
                    .zip(&row_q)
                    .map(|(x, y)| s * x + c * y)
                    .collect();
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

/// (coords [n][2], components [2][C], explained variance ratios) by eigen-decomposition of the
/// covariance matrix, with the sign convention of `pca_2d`.
pub fn pca_2d(points: &Mat) -> (Vec<[f64; 2]>, [Vec<f64>; 2], [f64; 2]) {
    let n = points.len();
    let c = points[0].len();
    let refs: Vec<&[f64]> = points.iter().map(|p| p.as_slice()).collect();
    let mu = centroid(&refs);
    let centered: Mat = points.iter().map(|p| sub(p, &mu)).collect();
    let cov: Mat = (0..c)
        .map(|i| {
            (0..c)
                .map(|j| centered.iter().map(|x| x[i] * x[j]).sum::<f64>() / n as f64)
                .collect()
        })
        .collect();
    let (values, vectors) = jacobi_eigen(cov);
    let mut order: Vec<usize> = (0..c).collect();
    order.sort_by(|&i, &j| values[j].total_cmp(&values[i]));
    let total: f64 = values.iter().sum();
    let components = [order[0], order[1]].map(|k| {
        let dir: Vec<f64> = (0..c).map(|i| vectors[i][k]).collect();
        let mut best = 0;
        for i in 1..c {
            if dir[i].abs() > dir[best].abs() {
                best = i;
            }
        }
        let sign = if dir[best] < 0.0 { -1.0 } else { 1.0 };
        dir.iter().map(|x| x * sign).collect::<Vec<f64>>()
    });
    let coords = centered
        .iter()
        .map(|x| [dot(x, &components[0]), dot(x, &components[1])])
        .collect();
    let ratios = [values[order[0]] / total, values[order[1]] / total];
    (coords, components, ratios)
}
