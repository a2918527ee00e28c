//! Micro-benchmark: Frechet distance between two 2048-d Gaussians (the FID core, faer), for two
//! rank-deficient sets (N = 1000 each) and for a sample set against a full-rank reference set
//! (N = 1000 vs 10000, what `fd eval fid` does), each by the route fd takes (the sample set's
//! factor: a 1000 x 1000 eigenproblem) and, side by side, by the d x d routes statistics without
//! a factor take (Cholesky of the reference; square root of a covariance); and statistics from
//! 1000 x 2048 features.

use criterion::{criterion_group, criterion_main, Criterion};
use fd_eval::fid::{frechet_distance, Stats};
use tch::{Device, Kind, Tensor};

fn frechet(c: &mut Criterion) {
    tch::manual_seed(0);
    let fa = Tensor::randn([1000, 2048], (Kind::Double, Device::Cpu));
    let fb = Tensor::randn([1000, 2048], (Kind::Double, Device::Cpu)) * 1.1 + 0.05;
    let (a, b) = (Stats::from_features(&fa).unwrap(), Stats::from_features(&fb).unwrap());
    let fr = Tensor::randn([10_000, 2048], (Kind::Double, Device::Cpu)) * 0.9 - 0.05;
    let reference = Stats::from_features(&fr).unwrap();
    let mut g = c.benchmark_group("fid");
    g.sample_size(10);
    let (a_dd, b_dd) = (a.without_root(), b.without_root());
    g.bench_function("frechet_distance 2048-d", |bch| bch.iter(|| frechet_distance(&a, &b).unwrap()));
    g.bench_function("frechet_distance 2048-d, d x d route", |bch| {
        bch.iter(|| frechet_distance(&a_dd, &b_dd).unwrap())
    });
    g.bench_function("frechet_distance 2048-d vs full-rank reference", |bch| {
        bch.iter(|| frechet_distance(&a, &reference).unwrap())
    });
    g.bench_function("frechet_distance 2048-d vs full-rank reference, d x d route", |bch| {
        bch.iter(|| frechet_distance(&a_dd, &reference).unwrap())
    });
    g.bench_function("Stats::from_features 1000x2048", |bch| bch.iter(|| Stats::from_features(&fa).unwrap()));
    g.finish();
}

criterion_group!(benches, frechet);
criterion_main!(benches);
