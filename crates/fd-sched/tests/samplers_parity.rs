//! DDPM, DPM-Solver, DPM-Solver++ and Euler vs diffusers golden values
//! (tests/fixtures/gen_golden.py), built from configs the way `fd sample --scheduler` builds them
//! (diffusers' from_config semantics): timesteps, init_noise_sigma, scale_model_input and every
//! step's prev_sample within 1e-5 relative, feeding Rust's own running sample forward.

use std::collections::HashMap;
use std::path::PathBuf;

use fd_sched::tch::Tensor;

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    ((a - b).abs() / b.abs().clamp_min(1.0)).max().double_value(&[])
}

#[test]
fn samplers_match_diffusers_every_step() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let t: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("samplers.safetensors")).unwrap().into_iter().collect();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("samplers_cases.json")).unwrap()).unwrap();
    let cases = cases.as_object().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (name, case) in cases {
        let kind = case["scheduler"].as_str().unwrap();
        seen.insert(kind.to_string());
        let steps = case["steps"].as_u64().unwrap() as usize;
        let mut s =
            fd_sched::SamplerSpec::from_config(kind, &case["config"], 0.0).and_then(|s| s.build(steps)).unwrap();
        let want: Vec<f64> = case["timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(s.timesteps().len(), want.len(), "{name}: number of timesteps");
        for (a, b) in s.timesteps().iter().zip(&want) {
            assert!((a - b).abs() <= 1e-3, "{name}: timesteps {:?} vs {want:?}", s.timesteps());
        }
        let sigma = case["init_noise_sigma"].as_f64().unwrap();
        assert!((s.init_noise_sigma() - sigma).abs() <= 1e-5 * sigma.max(1.0), "{name}: init_noise_sigma");
        let mut x = t[&format!("{name}.x")].shallow_clone();
        for i in 0..steps {
            let scaled = s.scale_model_input(&x, i);
            let e = rel_err(&scaled, &t[&format!("{name}.scaled{i}")]);
            assert!(e <= 1e-5, "{name} step {i}: scale_model_input rel err {e:e}");
            let noise = &t[&format!("{name}.noise{i}")];
            x = s.step(&t[&format!("{name}.out{i}")], i, &x, Some(noise)).unwrap();
            let e = rel_err(&x, &t[&format!("{name}.prev{i}")]);
            assert!(e <= 1e-5, "{name} step {i}: rel err {e:e}");
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["ddpm", "dpm", "dpm++", "euler"]);
}

#[test]
fn sampler_config_errors() {
    let e = fd_sched::SamplerSpec::from_config("dpm++", &serde_json::json!({"use_karras_sigmas": true}), 0.0)
        .and_then(|s| s.build(20))
        .unwrap_err();
    assert!(e.to_string().contains("use_karras_sigmas"), "{e}");
    let e =
        fd_sched::SamplerSpec::from_config("euler", &serde_json::json!({}), 0.5).and_then(|s| s.build(20)).unwrap_err();
    assert!(e.to_string().contains("eta applies to ddim only"), "{e}");
    let e = fd_sched::SamplerSpec::from_config("ddpm", &serde_json::json!({}), 0.0)
        .and_then(|s| s.build(2000))
        .unwrap_err();
    assert!(e.to_string().contains("1..=1000"), "{e}");
    let e = fd_sched::SamplerSpec::from_config("dpm++", &serde_json::json!({"solver_order": 3}), 0.0)
        .and_then(|s| s.build(20))
        .unwrap_err();
    assert!(e.to_string().contains("solver_order 3"), "{e}");
    let e = fd_sched::SamplerSpec::from_config("ddim", &serde_json::json!({"beta_schedule": "sigmoid"}), 0.0)
        .and_then(|s| s.build(20))
        .unwrap_err();
    assert!(e.to_string().contains("sigmoid"), "{e}");
}
