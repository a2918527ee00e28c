//! Capture on the tiny fixture model: every step x every encoder / decoder layer is recorded, and
//! observing does not change the samples.

use std::path::PathBuf;

use fd_model::Condition;
use fd_model::{Denoiser, LoadOptions};
use fd_sched::{ExecOptions, KeySteps, Plan};

#[test]
fn capture_records_every_layer_and_step_without_changing_samples() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fd-model/tests/fixtures/tiny");
    let model = Denoiser::load(&dir, &LoadOptions::default()).unwrap();
    let opts = ExecOptions { guidance: 3.0, ..Default::default() };
    let conds = [Condition::Class(0), Condition::Class(2)];
    let steps = 10;
    let sampler = fd_sched::SamplerSpec::from_config("ddim", &model.manifest.scheduler, 0.0).unwrap();
    let acc = fd_analysis::measure_drift(&model, &sampler, steps, opts.guidance, &[5, 6], &conds, "tiny").unwrap();
    let n_layers =
        1 + model.manifest.skip_shapes.len() + model.manifest.unet_config["up_block_types"].as_array().unwrap().len();
    assert_eq!(acc.rows().len(), steps * n_layers);
    assert!(acc.rows().iter().all(|r| r.n == 4), "CFG rows counted as samples");
    let s = acc.summary();
    assert!(s.encoder_mean_mse.is_finite() && s.decoder_mean_mse.is_finite() && s.encoder_drift_profile.len() == steps);

    let plan = Plan::new(KeySteps::None, steps).unwrap();
    let spec = fd_sched::SamplingSpec::new(sampler, plan, opts).unwrap();
    let plain = spec.generate(&model, &[5, 6], &conds).unwrap();
    let mut count = 0;
    let mut obs = |_: &fd_sched::StepFeatures<'_>| count += 1;
    let observed = spec.generate_observed(&model, &[5, 6], &conds, Some(&mut obs)).unwrap();
    assert_eq!(count, steps);
    let d = (&plain.images - &observed.images).abs().max().double_value(&[]);
    assert!(d <= 1e-5, "observation changed the samples by {d:e}");
}
