//! The executor vs Python references on fd-model's tiny fixture UNet (tests/fixtures/gen_golden.py):
//! baseline = the plain diffusers pipeline loop; key-step plans = a faithful reference of the
//! paper's algorithm (with and without prior noise injection). Tolerance 1e-4; parallel, sequential
//! and chunked execution agree within 1e-5.

use std::collections::HashMap;
use std::path::PathBuf;

use fd_model::{Denoiser, LoadOptions};
use fd_sched::tch::{Kind, Tensor};
use fd_sched::{sample, ExecOptions, InjectWhen, Injection, Plan, PlanSpec, SampleInput};

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Setup {
    model: Denoiser,
    golden: HashMap<String, Tensor>,
    cases: serde_json::Value,
}

fn setup() -> Setup {
    let model = Denoiser::load(here().join("../fd-model/tests/fixtures/tiny"), &LoadOptions::default()).unwrap();
    let golden =
        Tensor::read_safetensors(here().join("tests/fixtures/sampling.safetensors")).unwrap().into_iter().collect();
    let cases =
        serde_json::from_str(&std::fs::read_to_string(here().join("tests/fixtures/sampling_cases.json")).unwrap())
            .unwrap();
    Setup { model, golden, cases }
}

fn run(s: &Setup, spec: &str, inject: Option<Injection>, parallel: bool, cap: usize) -> Tensor {
    let steps = s.cases["steps"].as_u64().unwrap() as usize;
    let plan = Plan::parse(spec, steps).unwrap();
    let mut sched = fd_sched::SamplerSpec::from_config("ddim", &s.model.manifest.scheduler, 0.0)
        .and_then(|s| s.build(steps))
        .unwrap();
    let classes: Vec<i64> = s.cases["classes"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let seeds: Vec<u64> = s.cases["seeds"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    // per-sample noise from torch's CPU generator equals Python's torch.Generator().manual_seed(seed)
    let noise =
        Tensor::cat(&seeds.iter().map(|&sd| fd_sched::initial_noise(sd, &[1, 4, 16, 16])).collect::<Vec<_>>(), 0);
    assert!((&noise - &s.golden["noise"]).abs().max().double_value(&[]) == 0.0, "initial noise differs from torch");
    let cond = fd_model::Cond::from(s.model.encode_classes(&classes).unwrap());
    let uncond = s.model.uncond(classes.len()).unwrap();
    let opts = ExecOptions { guidance: s.cases["guidance"].as_f64().unwrap(), injection: inject, ..Default::default() }
        .decoding(parallel, cap);
    let input = SampleInput { noise: &noise, cond: &cond, uncond: Some(&uncond) };
    let out = sample(&s.model, sched.as_mut(), &plan, &opts, &input, Default::default()).unwrap();
    assert_eq!(out.counts.calls("encoder"), plan.encoder_calls());
    if matches!(plan.spec, PlanSpec::Propagation(_)) {
        assert_eq!(out.counts.rows("decoder"), steps * 2 * classes.len());
    } else {
        let shallow = steps - plan.encoder_calls();
        assert_eq!(out.counts.rows("deepcache0_shallow_encoder"), shallow * 2 * classes.len());
    }
    out.latents
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// The case as a `--keys` spec, and its injection.
fn case(s: &Setup, name: &str) -> (String, Option<Injection>) {
    let c = &s.cases["cases"][name];
    let keys: Vec<String> = c["keys"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    // the golden's DeepCache case is the block-level branch 0 reference (input of the last up block
    // cached), which is DeepCache's own id 1 on this UNet (one layer per down block): the tiny
    // fixture's block-level graphs `0` serve `deepcache:N:1`
    let keys = match c["deepcache_branch"].as_u64() {
        Some(0) => format!("deepcache:{}:1", c["keys"][1].as_u64().unwrap()),
        Some(b) => format!("deepcache-block:{}:{b}", c["keys"][1].as_u64().unwrap()),
        None => keys.join(","),
    };
    let inject = c["inject"].as_object().map(|i| Injection {
        strength: i["c"].as_f64().unwrap(),
        tau: i["tau"].as_f64().unwrap(),
        when: if i["when"] == "after" { InjectWhen::After } else { InjectWhen::Before },
    });
    (keys, inject)
}

#[test]
fn every_plan_matches_its_python_reference() {
    let s = setup();
    let names: Vec<String> = s.cases["cases"].as_object().unwrap().keys().cloned().collect();
    assert!(names.len() >= 6 && names.iter().any(|n| n.starts_with("deepcache")));
    for name in &names {
        let (keys, inject) = case(&s, name);
        for parallel in [true, false] {
            let out = run(&s, &keys, inject, parallel, 0);
            let d = max_abs(&out, &s.golden[name.as_str()]);
            assert!(d <= 1e-4, "{name} (parallel={parallel}): max abs diff {d:e}");
        }
    }
    // the cases really differ from each other (propagation changes the result)
    assert!(max_abs(&s.golden["none"], &s.golden["50ls"]) > 1e-3);
    assert!(max_abs(&s.golden["50ls"], &s.golden["50ls_inject"]) > 1e-5);
    assert!(max_abs(&s.golden["none"], &s.golden["deepcache3"]) > 1e-3);
}

#[test]
fn parallel_sequential_and_chunked_agree() {
    let s = setup();
    let (keys, inject) = case(&s, "50ls_inject");
    let par = run(&s, &keys, inject, true, 0);
    let seq = run(&s, &keys, inject, false, 0);
    let chunked = run(&s, &keys, inject, true, 12); // 3 steps x [uncond 2, cond 2] rows per call
    assert!(max_abs(&par, &seq) <= 1e-5);
    assert!(max_abs(&par, &chunked) <= 1e-5);
}

/// Forecast plans (`KEYS+forecast:K`, issue 21): non-key steps decode the encoder features
/// extrapolated in t through the last K+1 key steps, against the Python loop that substitutes the
/// same extrapolation into diffusers' forward (gen_golden.py `forecast_loop`); parallel, chunked
/// and sequential decoding agree.
#[test]
fn forecast_plans_match_reference() {
    let s = setup();
    let golden: HashMap<String, Tensor> =
        Tensor::read_safetensors(here().join("tests/fixtures/forecast.safetensors")).unwrap().into_iter().collect();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(here().join("tests/fixtures/forecast_cases.json")).unwrap())
            .unwrap();
    for (name, c) in cases["cases"].as_object().unwrap() {
        let keys: Vec<String> = c["keys"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
        let spec = format!("{}+forecast:{}", keys.join(","), c["order"]);
        let inject = c["inject"].as_object().map(|i| Injection {
            strength: i["c"].as_f64().unwrap(),
            tau: i["tau"].as_f64().unwrap(),
            when: if i["when"] == "after" { InjectWhen::After } else { InjectWhen::Before },
        });
        for (parallel, cap) in [(true, 0), (true, 4), (false, 0)] {
            let out = run(&s, &spec, inject, parallel, cap);
            let d = max_abs(&out, &golden[name]);
            assert!(d <= 1e-4, "{name} ({spec}, parallel {parallel}, cap {cap}): max |diff| {d:e}");
        }
    }
    // the plain plan is untouched by the feature: no forecast, same label
    let p = Plan::parse("50ls", 20).unwrap();
    assert_eq!(
        (p.spec.clone(), p.label()),
        (PlanSpec::propagation(fd_sched::KeySteps::Preset("50ls".into())), "50ls".to_string())
    );
    assert_eq!(Plan::parse("50ls+forecast:2", 20).unwrap().label(), "50ls+forecast:2");
    for (bad, want) in [
        ("50ls+forecast:3", "expected 1 (linear) or 2"),
        ("deepcache:2+forecast:1", "apply to encoder-propagation plans"),
    ] {
        let e = Plan::parse(bad, 20).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}
