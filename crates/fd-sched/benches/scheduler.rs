//! Micro-benchmarks: one scheduler step (DDIM, DPM-Solver++ 2M) on a [32, 4, 64, 64] latent batch
//! (SD-1.5 at 512 px, batch 32), and plan construction (preset, uniform, list, DeepCache).

use criterion::{criterion_group, criterion_main, Criterion};
use fd_sched::{Plan, SamplerSpec};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn sd_config() -> serde_json::Value {
    json!({ "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "steps_offset": 1, "set_alpha_to_one": false, "clip_sample": false, "prediction_type": "epsilon" })
}

fn scheduler_step(c: &mut Criterion) {
    tch::manual_seed(0);
    let x = Tensor::randn([32, 4, 64, 64], (Kind::Float, Device::Cpu));
    let eps = Tensor::randn([32, 4, 64, 64], (Kind::Float, Device::Cpu));
    for name in ["ddim", "dpm++"] {
        c.bench_function(&format!("{name} step [32,4,64,64]"), |b| {
            b.iter_batched(
                || SamplerSpec::from_config(name, &sd_config(), 0.0).and_then(|s| s.build(50)).unwrap(),
                |mut s| s.step(&eps, 10, &x, None).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

fn plan_construction(c: &mut Criterion) {
    for spec in ["50ls", "uniform:4", "0,1,2,3,5,10,15,25,35", "deepcache:3:0", "100ls"] {
        let steps = if spec == "100ls" { 100 } else { 50 };
        c.bench_function(&format!("Plan::parse {spec}"), |b| {
            b.iter(|| Plan::parse(std::hint::black_box(spec), steps).unwrap())
        });
    }
}

criterion_group!(benches, scheduler_step, plan_construction);
criterion_main!(benches);
