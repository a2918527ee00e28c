//! Micro-benchmark: Frechet distance between two 2048-d Gaussians (the FID core: two symmetric
//! eigen-decompositions with faer), and statistics from 1000 x 2048 features.

use criterion::{criterion_group, criterion_main, Criterion};
use fd_eval::fid::{frechet_distance, Stats};
use tch::{Device, Kind, Tensor};

fn frechet(c: &mut Criterion) {
    tch::manual_seed(0);
    let fa = Tensor::randn([1000, 2048], (Kind::Double, Device::Cpu));
    let fb = Tensor::randn([1000, 2048], (Kind::Double, Device::Cpu)) * 1.1 + 0.05;
    let (a, b) = (Stats::from_features(&fa).unwrap(), Stats::from_features(&fb).unwrap());
    let mut g = c.benchmark_group("fid");
    g.sample_size(10);
    g.bench_function("frechet_distance 2048-d", |bch| bch.iter(|| frechet_distance(&a, &b).unwrap()));
    g.bench_function("Stats::from_features 1000x2048", |bch| bch.iter(|| Stats::from_features(&fa).unwrap()));
    g.finish();
}

criterion_group!(benches, frechet);
criterion_main!(benches);
