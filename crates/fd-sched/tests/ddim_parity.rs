//! DDIM vs diffusers.DDIMScheduler golden values (tests/fixtures/gen_golden.py): every step's
//! prev_sample within 1e-5 relative, feeding Rust's own running sample forward.

use std::collections::HashMap;
use std::path::PathBuf;

use fd_sched::tch::{Kind, Tensor};
use fd_sched::{DDIMSchedulerConfig, Ddim, Scheduler};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn ddim_matches_diffusers_every_step() {
    let t: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixtures().join("ddim.safetensors")).unwrap().into_iter().collect();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ddim_cases.json")).unwrap()).unwrap();
    let cases = cases.as_object().unwrap();
    assert!(cases.len() >= 8);
    for (name, case) in cases {
        let cfg = DDIMSchedulerConfig::from_json(&case["config"]).unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let mut s = Ddim::new(cfg, steps, case["eta"].as_f64().unwrap()).unwrap();
        let want_t: Vec<f64> = case["timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(s.timesteps(), &want_t[..], "{name}: timesteps");
        let mut x = t[&format!("{name}.x")].shallow_clone();
        for i in 0..steps {
            let noise = &t[&format!("{name}.noise{i}")];
            x = s.step(&t[&format!("{name}.out{i}")], i, &x, Some(noise)).unwrap();
            let want = &t[&format!("{name}.prev{i}")];
            let err = ((&x - want).abs() / want.abs().clamp_min(1.0)).max().double_value(&[]);
            assert!(err <= 1e-5, "{name} step {i}: rel err {err:e}");
        }
        assert!(x.to_kind(Kind::Double).abs().max().double_value(&[]) > 0.0);
    }
}

#[test]
fn config_defaults_equal_diffusers() {
    let c = DDIMSchedulerConfig::default();
    assert_eq!(c.betas.num_train_timesteps, 1000);
    assert_eq!((c.betas.beta_start, c.betas.beta_end), (0.0001, 0.02));
    assert!(c.clip_sample && c.set_alpha_to_one);
    assert_eq!(c.steps_offset, 0);
    let e = DDIMSchedulerConfig::from_json(&serde_json::json!({"rescale_betas_zero_snr": true})).unwrap_err();
    assert!(e.to_string().contains("rescale_betas_zero_snr"));
    let e = Ddim::new(DDIMSchedulerConfig::default(), 1001, 0.0).unwrap_err().to_string();
    assert!(e.contains("1..=1000") && e.contains("1001"), "{e}");
    let e = fd_sched::SamplerSpec::from_config("heun", &serde_json::json!({}), 0.0)
        .and_then(|s| s.build(10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown scheduler `heun`"), "{e}");
}
