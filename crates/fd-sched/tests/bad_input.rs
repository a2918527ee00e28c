//! Sampling-time bad input: divergence stops with the step and the plan; unsupported guidance.

use std::path::PathBuf;

use fd_model::{Denoiser, LoadOptions};
use fd_sched::{sample, ExecOptions, Hooks, Plan, SampleInput, SamplerSpec};
use tch::{Device, Kind, Tensor};

fn tiny() -> Denoiser {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fd-model/tests/fixtures/tiny");
    Denoiser::load(dir, &LoadOptions::default()).unwrap()
}

fn run(model: &Denoiser, noise: &Tensor, opts: &ExecOptions) -> String {
    let m = &model.manifest;
    let mut sched = SamplerSpec::from_config("ddim", &m.scheduler, 0.0).and_then(|s| s.build(8)).unwrap();
    let plan = Plan::parse("uniform:2", 8).unwrap();
    let cond = fd_model::Cond::from(model.encode_classes(&[0]).unwrap());
    let uncond = model.uncond(1).unwrap();
    let input = SampleInput { noise, cond: &cond, uncond: Some(&uncond) };
    sample(model, sched.as_mut(), &plan, opts, &input, Hooks::default()).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn non_finite_latents_stop_with_the_step_and_the_plan() {
    let model = tiny();
    let m = &model.manifest;
    let noise =
        Tensor::full([1, m.in_channels, m.sample_size[0], m.sample_size[1]], f64::NAN, (Kind::Float, Device::Cpu));
    let e = run(&model, &noise, &ExecOptions { guidance: 2.0, ..Default::default() });
    assert!(e.contains("non-finite latents after step 0") && e.contains("plan uniform:2"), "{e}");
}

#[test]
fn guidance_below_one_is_an_error() {
    let model = tiny();
    let m = &model.manifest;
    let noise = Tensor::randn([1, m.in_channels, m.sample_size[0], m.sample_size[1]], (Kind::Float, Device::Cpu));
    for g in [0.5, 0.0, -1.0, f64::NAN] {
        let e = run(&model, &noise, &ExecOptions { guidance: g, ..Default::default() });
        assert!(e.contains("guidance") && e.contains("not supported"), "{g}: {e}");
    }
}

/// Decoder-only propagation (the paper's failed ablation): the key step's noise prediction is
/// reused by the following steps. Checked against a hand-written loop over the model API.
#[test]
fn decoder_propagation_reuses_the_key_step_output() {
    let model = tiny();
    let m = &model.manifest;
    tch::manual_seed(3);
    let noise = Tensor::randn([2, m.in_channels, m.sample_size[0], m.sample_size[1]], (Kind::Float, Device::Cpu));
    let cond = fd_model::Cond::from(model.encode_classes(&[0, 2]).unwrap());
    let plan = Plan::parse("decoder-prop:uniform:3", 7).unwrap();
    assert_eq!(plan.label(), "decoder-prop:uniform:3");
    assert_eq!(plan.decoder_calls(), 3);
    let mut sched = SamplerSpec::from_config("ddim", &m.scheduler, 0.0).and_then(|s| s.build(7)).unwrap();
    let input = SampleInput { noise: &noise, cond: &cond, uncond: None };
    let out = sample(&model, sched.as_mut(), &plan, &ExecOptions::default(), &input, Hooks::default()).unwrap();
    assert_eq!(out.counts.rows("encoder"), 6);
    assert_eq!(out.counts.rows("decoder"), 6);

    let mut sched = SamplerSpec::from_config("ddim", &m.scheduler, 0.0).and_then(|s| s.build(7)).unwrap();
    let ts = sched.timesteps().to_vec();
    let mut x = noise.shallow_clone();
    let mut eps = Tensor::zeros([1], (Kind::Float, Device::Cpu));
    for (i, &t) in ts.iter().enumerate() {
        if i % 3 == 0 {
            let emb = model.time_embed(&Tensor::full([2], t, (Kind::Float, Device::Cpu)), None).unwrap();
            let f = model.encode(&x, &emb, &cond.states).unwrap();
            eps = model.decode(&f, &emb, &cond.states).unwrap();
        }
        x = sched.step(&eps, i, &x, None).unwrap();
    }
    let d = (&out.latents - &x).abs().max().double_value(&[]);
    assert!(d <= 1e-6, "max abs diff {d:e}");
}
