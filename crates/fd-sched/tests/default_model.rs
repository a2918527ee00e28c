//! Rust sampling on each committed default model equals the plain diffusers pipeline loop run at
//! export time (`<model>/reference_ddim50_cfg3.safetensors`, written by export_unet.py for the UNet
//! and export_dit.py for the DiT): DDIM-50, CFG 3, same seeds -> max abs diff <= 1e-4.

use std::collections::HashMap;
use std::path::PathBuf;

use fd_model::Condition;
use fd_model::{Denoiser, LoadOptions};
use fd_sched::tch::Tensor;
use fd_sched::{ExecOptions, KeySteps, Plan};

/// Sample the export reference's seeds and classes with fd and compare to the diffusers loop.
fn check_against_export_reference(model_dir: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(model_dir);
    let model = Denoiser::load(&dir, &LoadOptions::default()).unwrap();
    let r: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("reference_ddim50_cfg3.safetensors")).unwrap().into_iter().collect();
    let seeds: Vec<u64> = Vec::<i64>::try_from(&r["seeds"]).unwrap().into_iter().map(|s| s as u64).collect();
    let conds: Vec<Condition> =
        Vec::<i64>::try_from(&r["classes"]).unwrap().into_iter().map(Condition::Class).collect();
    let steps = r["steps"].int64_value(&[]) as usize;
    let opts = ExecOptions { guidance: r["guidance"].double_value(&[]), ..Default::default() };
    let plan = Plan::new(KeySteps::None, steps).unwrap();
    let sampler = fd_sched::SamplerSpec::from_config("ddim", &model.manifest.scheduler, 0.0).unwrap();
    let spec = fd_sched::SamplingSpec::new(sampler, plan, opts).unwrap();
    let out = spec.generate(&model, &seeds, &conds).unwrap();
    let d = (&out.images - &r["samples"]).abs().max().double_value(&[]);
    assert!(d <= 1e-4, "{model_dir}: max abs diff {d:e}");
    assert!(r["samples"].abs().max().double_value(&[]) > 0.1);
}

#[test]
fn default_model_ddim50_cfg_equals_diffusers_loop() {
    check_against_export_reference("fmnist");
}

#[test]
fn default_dit_ddim50_cfg_equals_diffusers_loop() {
    check_against_export_reference("fmnist-dit");
}
