//! Rust sampling on each committed default model equals the plain diffusers pipeline loop run at
//! export time (`<model>/reference_ddim50_cfg3.safetensors`, written by export_unet.py for the UNet
//! and export_dit.py for the DiT): DDIM-50, CFG 3, same seeds -> max abs diff <= 1e-4; the default
//! UNet again on its AOTInductor packages (`target/fixtures/fmnist-aoti`, compiled by
//! `experiments/tests/make_aoti.py`, which `just test` runs first), within 2.5e-4.

use std::collections::HashMap;
use std::path::PathBuf;

use fd_model::Condition;
use fd_model::{Denoiser, LoadOptions};
use fd_sched::tch::Tensor;
use fd_sched::{ExecOptions, KeySteps, Plan};

/// Sample the export reference's seeds and classes with fd and compare to the diffusers loop.
fn check_against_export_reference(model_dir: &str) {
    check_folder(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(model_dir),
        LoadOptions::default(),
        1e-4,
    );
}

fn check_folder(dir: &std::path::Path, opts: LoadOptions, tol: f64) {
    let model_dir = dir.display().to_string();
    let model = Denoiser::load(dir, &opts).unwrap();
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
    eprintln!("{model_dir}: max abs diff {d:e} against the diffusers loop (tolerance {tol:e})");
    assert!(d <= tol, "{model_dir}: max abs diff {d:e} (tolerance {tol:e})");
    assert!(r["samples"].abs().max().double_value(&[]) > 0.1);
}

#[test]
fn default_model_ddim50_cfg_equals_diffusers_loop() {
    check_against_export_reference("fmnist");
}

#[test]
fn default_model_on_aoti_packages_equals_diffusers_loop() {
    let dir = std::env::var_os("FD_FMNIST_AOTI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures/fmnist-aoti"));
    let opts = LoadOptions { format: fd_model::GraphFormat::Aoti.into(), ..Default::default() };
    assert_eq!(
        Denoiser::load(&dir, &opts).unwrap().graphs_loaded.1,
        12,
        "the loop's and the methods' graphs run from packages"
    );
    // Inductor's fused kernels sum in another order than eager PyTorch: one call differs by a few
    // 1e-6 (convert_aoti.py prints each package's), and 50 DDIM steps at CFG 3 grow that to 1.4e-4
    // on this model (TorchScript: 1.4e-5; `--nocapture` prints both), 1/28 of one 8-bit PNG level
    check_folder(&dir, opts, 2.5e-4);
}

/// What `fd sample` runs by default: the packages the default models ship (`--format auto`):
/// the UNet's time_embed, encoder and decoder, the DiT's encoder and decoder.
#[test]
fn default_models_on_their_shipped_packages_equal_diffusers_loop() {
    let here = fd_model::aoti::cpu_capability();
    if !fd_model::aoti::cpu_compatible("AVX2", &here) {
        eprintln!("skipped: this CPU runs {here} kernels, the shipped packages need AVX2");
        return;
    }
    for (name, packaged) in [("fmnist", 3), ("fmnist-dit", 2)] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name);
        let opts = LoadOptions { format: fd_model::FormatChoice::Auto, ..Default::default() };
        let m = Denoiser::load(&dir, &opts).unwrap();
        assert_eq!(m.format, fd_model::GraphFormat::Aoti, "{name}: {:?}", m.format_note);
        assert_eq!(m.graphs_loaded.1, packaged, "{name}: the loop's graphs run from packages");
        // fused kernels sum in another order (see the test above); 1/28 of an 8-bit PNG level
        check_folder(&dir, opts, 2.5e-4);
    }
}

#[test]
fn default_dit_ddim50_cfg_equals_diffusers_loop() {
    check_against_export_reference("fmnist-dit");
}
