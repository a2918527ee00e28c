//! Where FID and KID are computed.
//!
//! Statistics in f64 (two-pass centred covariance, ddof 1, as `np.cov(rowvar=False)`). The Frechet
//! distance uses the symmetric eigen-decomposition form
//! tr sqrt(S1 S2) = sum sqrt(eig(M)) for a symmetric positive semi-definite M with the same
//! eigenvalues (eigenvalues clamped at 0), which is stable for the rank-deficient covariances of
//! N < d: M = R S2 Rᵀ (N x N) when S1 = Rᵀ R comes from N ≤ d features, else Lᵀ S1 L with
//! S2 = L Lᵀ (Cholesky), else A S2 A with A = S1^(1/2). pytorch-fid's eps * I fallback is kept for
//! non-finite results. KID: unbiased MMD^2 with the cubic polynomial kernel
//! k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

use std::path::Path;

use faer::{Mat, Side};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Relative tolerance of [`Stats::check_psd`]: eigenvalues down to −1e-6 × the largest variance
/// pass (round-off of a rank-deficient covariance is about 1e-13 of it).
pub const PSD_TOLERANCE: f64 = 1e-6;

/// Mean and covariance of a feature set.
#[derive(Debug)]
pub struct Stats {
    pub mu: Vec<f64>,
    /// d x d, row-major.
    pub sigma: Vec<f64>,
    pub n: usize,
    /// A factor R ([k, d]) with sigma = Rᵀ R: the centred features / sqrt(N − 1), kept by
    /// [`Stats::from_features`] when N ≤ d (sample sets; a large reference set is full rank and
    /// keeps none). The Frechet distance then needs a k x k eigenproblem instead of a d x d one.
    root: Option<Mat<f64>>,
}

impl Stats {
    /// From features [N, d] (any float kind; computed in f64).
    pub fn from_features(features: &Tensor) -> Result<Self> {
        let s = features.size();
        if s.len() != 2 {
            return Err(Error::Input(format!("features must be [N, d], got {s:?}")));
        }
        let n = s[0] as usize;
        if n < 2 {
            return Err(Error::Input(format!("FID needs at least 2 samples, got N={n}")));
        }
        let x = features.to_device(Device::Cpu).to_kind(Kind::Double);
        if x.isfinite().all().int64_value(&[]) == 0 {
            return Err(Error::Input("features contain NaN or Inf".into()));
        }
        let mu = x.mean_dim(0, false, Kind::Double);
        let xc = &x - &mu;
        let sigma = xc.tr().mm(&xc) / (n as f64 - 1.0);
        let d = s[1] as usize;
        let root = (n <= d)
            .then(|| -> Result<Mat<f64>> {
                let r = Vec::<f64>::try_from(&(xc / (n as f64 - 1.0).sqrt()).flatten(0, -1))?;
                Ok(Mat::from_fn(n, d, |i, j| r[i * d + j]))
            })
            .transpose()?;
        Ok(Self { mu: Vec::<f64>::try_from(&mu)?, sigma: Vec::<f64>::try_from(&sigma.flatten(0, -1))?, n, root })
    }

    /// The same statistics without the factor R: the Frechet distance takes the d x d route
    /// (what statistics read from an .npz do; the benchmark's side-by-side reference).
    pub fn without_root(&self) -> Self {
        Self { mu: self.mu.clone(), sigma: self.sigma.clone(), n: self.n, root: None }
    }

    /// The factor of sigma, if kept and still consistent with `sigma` (its diagonal is compared,
    /// so statistics edited after they were made fall back to the d x d route).
    fn current_root(&self) -> Option<&Mat<f64>> {
        let r = self.root.as_ref()?;
        let d = self.dim();
        let scale = (0..d).map(|i| self.sigma[i * d + i].abs()).fold(f64::MIN_POSITIVE, f64::max);
        let consistent = r.ncols() == d
            && (0..d).all(|j| {
                let v: f64 = (0..r.nrows()).map(|i| r[(i, j)] * r[(i, j)]).sum();
                (v - self.sigma[j * d + j]).abs() <= 1e-9 * scale
            });
        consistent.then_some(r)
    }

    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// What statistics must satisfy before a distance is computed from them: a d-vector and a
    /// d x d matrix, finite, the covariance symmetric (relative 1e-6) with non-negative variances.
    pub fn check(&self) -> Result<()> {
        let d = self.dim();
        if d == 0 || self.sigma.len() != d * d {
            return Err(Error::Input(format!(
                "statistics: mu has {d} values but sigma {} (expected d x d)",
                self.sigma.len()
            )));
        }
        if !self.mu.iter().chain(&self.sigma).all(|v| v.is_finite()) {
            return Err(Error::Input("statistics contain NaN or Inf".into()));
        }
        let scale = self.sigma.iter().fold(0.0_f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
        for i in 0..d {
            if self.sigma[i * d + i] < -1e-9 * scale {
                return Err(Error::Input(format!("statistics: negative variance {} at {i}", self.sigma[i * d + i])));
            }
            for j in 0..i {
                if (self.sigma[i * d + j] - self.sigma[j * d + i]).abs() > 1e-6 * scale {
                    return Err(Error::Input(format!("statistics: covariance is not symmetric at ({i}, {j})")));
                }
            }
        }
        Ok(())
    }

    /// The covariance is positive semi-definite within [`PSD_TOLERANCE`]: its smallest eigenvalue
    /// is at least −`PSD_TOLERANCE` × its largest variance (tested as a Cholesky factorisation of
    /// sigma + that much on the diagonal). A covariance computed from features always is (up to
    /// round-off); one read from a file is checked, since a non-PSD "covariance" gives a number
    /// that is no Frechet distance.
    pub fn check_psd(&self) -> Result<()> {
        let d = self.dim();
        let top = (0..d).map(|i| self.sigma[i * d + i]).fold(0.0_f64, f64::max);
        if top == 0.0 {
            return Ok(());
        }
        let shift = PSD_TOLERANCE * top;
        let m = Mat::from_fn(d, d, |i, j| self.sigma[i * d + j] + if i == j { shift } else { 0.0 });
        m.llt(Side::Lower).map(|_| ()).map_err(|_| {
            Error::Input(format!(
                "statistics: sigma is not a covariance (an eigenvalue below -{PSD_TOLERANCE:e} x its largest variance {top:.3e})"
            ))
        })
    }

    fn sigma_mat(&self) -> Mat<f64> {
        let d = self.dim();
        Mat::from_fn(d, d, |i, j| self.sigma[i * d + j])
    }

    /// Save as `.npz` with `mu` and `sigma` (what pytorch-fid reads) plus `n`, via temp + rename.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let d = self.dim() as i64;
        let mu = Tensor::from_slice(&self.mu);
        let sigma = Tensor::from_slice(&self.sigma).view([d, d]);
        let n = Tensor::from_slice(&[self.n as i64]);
        Ok(fd_model::io::write_atomic_with(path, |tmp| {
            Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma), ("n", &n)], tmp)
        })?)
    }

    /// Load `.npz` statistics (`mu`, `sigma`; `n` when present), e.g. pytorch-fid's.
    pub fn load_npz(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Format { path: path.into(), msg };
        if !path.is_file() {
            return Err(bad("statistics file missing".into()));
        }
        let items = Tensor::read_npz(path).map_err(|e| bad(format!("not a readable .npz: {e}")))?;
        let get = |k: &str| items.iter().find(|(n, _)| n == k).map(|(_, t)| t.to_kind(Kind::Double));
        let mu = get("mu").ok_or_else(|| bad("no `mu` array".into()))?;
        let sigma = get("sigma").ok_or_else(|| bad("no `sigma` array".into()))?;
        let d = mu.size().first().copied().unwrap_or(0);
        if mu.dim() != 1 || sigma.size() != [d, d] {
            return Err(bad(format!("expected mu [d] and sigma [d, d], got {:?} and {:?}", mu.size(), sigma.size())));
        }
        if mu.isfinite().all().int64_value(&[]) == 0 || sigma.isfinite().all().int64_value(&[]) == 0 {
            return Err(bad("statistics contain NaN or Inf (corrupted?)".into()));
        }
        let n = get("n").map_or(0, |t| t.int64_value(&[0]).max(0) as usize);
        let stats =
            Self { mu: Vec::<f64>::try_from(&mu)?, sigma: Vec::<f64>::try_from(&sigma.flatten(0, -1))?, n, root: None };
        stats.check().map_err(|e| bad(e.to_string()))?;
        stats.check_psd().map_err(|e| bad(e.to_string()))?;
        Ok(stats)
    }
}

fn sqrt_psd(m: &Mat<f64>) -> Result<Mat<f64>> {
    let evd =
        m.self_adjoint_eigen(Side::Lower).map_err(|e| Error::Input(format!("eigendecomposition failed: {e:?}")))?;
    let u = evd.U();
    let s = evd.S().column_vector();
    let n = m.nrows();
    let scaled = Mat::from_fn(n, n, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    Ok(&scaled * u.transpose())
}

/// Lower half of Lᵀ S L for a symmetric S and a lower-triangular L (the upper half is left 0):
/// S L with L's structure, then Lᵀ (S L) writing the lower triangle only — about 1.2 d³ flops
/// against 4 d³ for two dense products.
fn congruence_lower(s: &Mat<f64>, l: faer::MatRef<'_, f64>) -> Mat<f64> {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    use faer::{Accum, Par};
    let n = s.nrows();
    let par = Par::rayon(0);
    let mut sl = Mat::<f64>::zeros(n, n);
    matmul(
        sl.as_mut(),
        BlockStructure::Rectangular,
        Accum::Replace,
        s.as_ref(),
        BlockStructure::Rectangular,
        l,
        BlockStructure::TriangularLower,
        1.0,
        par,
    );
    let mut m = Mat::<f64>::zeros(n, n);
    matmul(
        m.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        l.transpose(),
        BlockStructure::TriangularUpper,
        sl.as_ref(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    m
}

/// tr sqrt(Rᵀ R s) for a factor R ([k, d]) of one covariance: the non-zero eigenvalues of Rᵀ R s
/// are those of the k x k matrix R s Rᵀ (symmetric positive semi-definite), so for a sample set of
/// N ≤ d the eigenproblem is N x N. About 2 k d² + k² d flops plus a k x k eigensolve.
fn trace_sqrt_low_rank(r: &Mat<f64>, s: &Mat<f64>) -> Result<f64> {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    use faer::{Accum, Par};
    let rs = r * s;
    let k = r.nrows();
    let mut m = Mat::<f64>::zeros(k, k);
    matmul(
        m.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        rs.as_ref(),
        BlockStructure::Rectangular,
        r.transpose(),
        BlockStructure::Rectangular,
        1.0,
        Par::rayon(0),
    );
    let ev = m.self_adjoint_eigenvalues(Side::Lower).map_err(|e| Error::Input(format!("eigenvalues failed: {e:?}")))?;
    Ok(ev.iter().map(|&l| l.max(0.0).sqrt()).sum())
}

/// tr sqrt(s1 s2) = sum of sqrt(eigenvalues of s1 s2), which equal the eigenvalues of a symmetric
/// positive semi-definite matrix: Lᵀ s1 L when s2 = L Lᵀ (Cholesky; the reference covariance of
/// a large set is full rank; only its lower half is formed), else s1^½ s2 s1^½ (an
/// eigendecomposition with vectors, 5-10x the cost: both sets rank-deficient, N < d).
/// Eigenvalues only, f64 throughout.
fn trace_sqrt_product(s1: &Mat<f64>, s2: &Mat<f64>) -> Result<f64> {
    let m = match (s2.llt(Side::Lower), s1.llt(Side::Lower)) {
        (Ok(c), _) => congruence_lower(s1, c.L()),
        (_, Ok(c)) => congruence_lower(s2, c.L()),
        _ => {
            let a = sqrt_psd(s1)?;
            let m = &a * s2 * &a;
            // symmetrise against round-off before the symmetric solver
            let n = m.nrows();
            Mat::from_fn(n, n, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]))
        }
    };
    let ev = m.self_adjoint_eigenvalues(Side::Lower).map_err(|e| Error::Input(format!("eigenvalues failed: {e:?}")))?;
    Ok(ev.iter().map(|&l| l.max(0.0).sqrt()).sum())
}

/// Frechet distance between two Gaussians (FID when the statistics are Inception features).
pub fn frechet_distance(a: &Stats, b: &Stats) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(Error::Input(format!("feature dimensions differ: {} vs {}", a.dim(), b.dim())));
    }
    a.check()?;
    b.check()?;
    let (s1, s2) = (a.sigma_mat(), b.sigma_mat());
    let diff: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let tr = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();
    // a sample set's factor makes the eigenproblem N x N (the smaller one when both have one)
    let roots = (a.current_root(), b.current_root());
    let mut covmean = match roots {
        (Some(ra), Some(rb)) if rb.nrows() < ra.nrows() => trace_sqrt_low_rank(rb, &s1)?,
        (Some(ra), _) => trace_sqrt_low_rank(ra, &s2)?,
        (None, Some(rb)) => trace_sqrt_low_rank(rb, &s1)?,
        (None, None) => trace_sqrt_product(&s1, &s2)?,
    };
    if !covmean.is_finite() {
        // pytorch-fid: add eps to the diagonals and retry
        let eps = 1e-6;
        let d = a.dim();
        let s1e = Mat::from_fn(d, d, |i, j| s1[(i, j)] + if i == j { eps } else { 0.0 });
        let s2e = Mat::from_fn(d, d, |i, j| s2[(i, j)] + if i == j { eps } else { 0.0 });
        covmean = trace_sqrt_product(&s1e, &s2e)?;
    }
    let fid = diff + tr(&s1) + tr(&s2) - 2.0 * covmean;
    if !fid.is_finite() {
        return Err(Error::Input("Frechet distance is not finite (degenerate statistics)".into()));
    }
    Ok(fid)
}

/// Unbiased MMD^2 between two feature sets with k(x, y) = (x.y / d + 1)^3.
pub fn polynomial_mmd(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (x, y) = (x.to_kind(Kind::Double), y.to_kind(Kind::Double));
    let (m, n, d) = (x.size()[0], y.size()[0], x.size()[1] as f64);
    if m < 2 || n < 2 {
        return Err(Error::Input(format!("KID needs at least 2 samples per set, got {m} and {n}")));
    }
    let k = |a: &Tensor, b: &Tensor| (a.mm(&b.tr()) / d + 1.0).pow_tensor_scalar(3);
    let (kxx, kyy, kxy) = (k(&x, &x), k(&y, &y), k(&x, &y));
    let off =
        |t: &Tensor| t.sum(Kind::Double).double_value(&[]) - t.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
    let (m, n) = (m as f64, n as f64);
    Ok(off(&kxx) / (m * (m - 1.0)) + off(&kyy) / (n * (n - 1.0))
        - 2.0 * kxy.sum(Kind::Double).double_value(&[]) / (m * n))
}

/// KID estimate: mean and standard deviation of [`polynomial_mmd`] over subsets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

/// KID over `subsets` random subsets of `subset_size` (capped at the smaller set), drawn with a
/// seeded splitmix64 generator (reproducible, documented here rather than in numpy's RNG).
pub fn kid(x: &Tensor, y: &Tensor, subsets: usize, subset_size: usize, seed: u64) -> Result<Kid> {
    let (nx, ny) = (x.size()[0] as usize, y.size()[0] as usize);
    let size = subset_size.min(nx).min(ny);
    if !(1..=100_000).contains(&subsets) || size < 2 {
        return Err(Error::Input(format!(
            "KID: --kid-subsets must be in 1..=100000 and subsets need at least 2 samples (got {subsets} subsets of {size})"
        )));
    }
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut choose = |n: usize| -> Tensor {
        // partial Fisher-Yates: `size` distinct indices out of n
        let mut idx: Vec<i64> = (0..n as i64).collect();
        for i in 0..size {
            let j = i + (next() % (n - i) as u64) as usize;
            idx.swap(i, j);
        }
        Tensor::from_slice(&idx[..size])
    };
    let mut vals = Vec::with_capacity(subsets);
    for _ in 0..subsets.max(1) {
        let (ix, iy) = (choose(nx), choose(ny));
        vals.push(polynomial_mmd(&x.index_select(0, &ix), &y.index_select(0, &iy))?);
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let std = (vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64).sqrt();
    Ok(Kid { mean, std, subsets: vals.len(), subset_size: size })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The factor route (N x N), the Cholesky route and the square-root route give the same
    /// trace, and statistics edited after they were made do not use a stale factor.
    #[test]
    fn low_rank_route_agrees_and_a_stale_factor_is_not_used() {
        tch::manual_seed(5);
        let fa = Tensor::randn([20, 32], (Kind::Double, Device::Cpu));
        let low = Stats::from_features(&fa).unwrap();
        let low2 = Stats::from_features(&(Tensor::randn([25, 32], (Kind::Double, Device::Cpu)) * 0.7)).unwrap();
        let full = Stats::from_features(&(Tensor::randn([500, 32], (Kind::Double, Device::Cpu)) * 1.3)).unwrap();
        assert!(low.current_root().is_some() && full.current_root().is_none());
        let (s1, s2, s3) = (low.sigma_mat(), full.sigma_mat(), low2.sigma_mat());
        let want = trace_sqrt_product(&s1, &s2).unwrap();
        let got = trace_sqrt_low_rank(low.current_root().unwrap(), &s2).unwrap();
        assert!((got - want).abs() <= 1e-7 * want, "{got} vs {want}");
        let want = trace_sqrt_product(&s1, &s3).unwrap(); // both rank-deficient: the square-root route
        for got in [
            trace_sqrt_low_rank(low.current_root().unwrap(), &s3).unwrap(),
            trace_sqrt_low_rank(low2.current_root().unwrap(), &s1).unwrap(),
        ] {
            assert!((got - want).abs() <= 1e-7 * want, "{got} vs {want}");
        }
        let mut edited = Stats::from_features(&fa).unwrap();
        for v in edited.sigma.iter_mut() {
            *v *= 2.0;
        }
        assert!(edited.current_root().is_none());
        let f = frechet_distance(&edited, &full).unwrap();
        assert_eq!(f, frechet_distance(&edited.without_root(), &full).unwrap());
    }

    /// The Cholesky route and the square-root route give the same trace on a rank-deficient set
    /// against a full-rank one (the FID case: N < d samples vs a large reference set).
    #[test]
    fn cholesky_and_square_root_routes_agree() {
        tch::manual_seed(3);
        let low = Stats::from_features(&Tensor::randn([20, 32], (Kind::Double, Device::Cpu))).unwrap();
        let full = Stats::from_features(&(Tensor::randn([500, 32], (Kind::Double, Device::Cpu)) * 1.3)).unwrap();
        let (s1, s2) = (low.sigma_mat(), full.sigma_mat());
        let a = sqrt_psd(&s1).unwrap();
        let m = &a * &s2 * &a;
        let m = Mat::from_fn(32, 32, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
        let reference: f64 = m.self_adjoint_eigenvalues(Side::Lower).unwrap().iter().map(|&l| l.max(0.0).sqrt()).sum();
        for got in [trace_sqrt_product(&s1, &s2).unwrap(), trace_sqrt_product(&s2, &s1).unwrap()] {
            assert!((got - reference).abs() <= 1e-8 * reference, "{got} vs {reference}");
        }
    }
}
