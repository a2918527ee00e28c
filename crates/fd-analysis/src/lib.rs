//! fd-analysis: the paper's Fig. 3 observation, measured on any exported model, and key steps
//! chosen from it.
//!
//! - [`drift`]: streaming per-layer, per-step statistics of hierarchical features (encoder skips +
//!   mid, decoder up blocks): MSE between adjacent steps, Frobenius norm of the channel-mean map,
//!   relative change; batch-averaged with per-sample spread. Only the previous step's tensors are
//!   kept, so memory stays bounded.
//! - [`keysteps`]: drift-calibrated key steps (dynamic programming over the encoder drift profile).

#![forbid(unsafe_code)]

pub mod drift;
pub mod keysteps;
pub mod plot;

use fd_model::{Condition, Denoiser};
use fd_sched::{AutoRule, ExecOptions, KeySteps, Plan, SamplerSpec, SamplingSpec, StepFeatures};

use drift::{DriftAccumulator, Side};

/// Run the sampler with every step a key step (the plain sampler) and measure the drift of every
/// encoder skip / mid output (a DiT's encoder blocks, when the model has the `encoder_analysis`
/// graph: its last block's otherwise) and every decoder up-block output, at classifier-free guidance
/// `guidance`. CFG rows are included as samples.
pub fn measure_drift(
    model: &Denoiser,
    sampler: &SamplerSpec,
    steps: usize,
    guidance: f64,
    seeds: &[u64],
    conds: &[Condition],
    run: &str,
) -> Result<DriftAccumulator> {
    if steps < 2 {
        return Err(Error::Input(format!(
            "drift compares adjacent steps: a run of {steps} step has none (--steps must be at least 2)"
        )));
    }
    let m = &model.manifest;
    let names = m.feature_names();
    // the profile auto:K calibrates from covers the cached features only
    let mut acc = DriftAccumulator::new(run).profile_layers(&names);
    let exec = ExecOptions { guidance, ..Default::default() }.decoding(false, 0);
    let spec = SamplingSpec::new(sampler.clone(), Plan::new(KeySteps::None, steps)?, exec)?;
    let mut observe = |f: &StepFeatures<'_>| {
        // a DiT's earlier encoder blocks first (encoder_analysis), then the cached features
        for (name, t) in m.encoder_layer_names(f.encoder_layers.len()).iter().zip(f.encoder_layers) {
            acc.push(f.step, f.timestep, Side::Encoder, name, t);
        }
        for (name, t) in names.iter().zip(&f.encoder.tensors) {
            acc.push(f.step, f.timestep, Side::Encoder, name, t);
        }
        for (name, u) in m.decoder_layer_names(f.decoder.len()).iter().zip(f.decoder) {
            acc.push(f.step, f.timestep, Side::Decoder, name, u);
        }
    };
    spec.generate_observed(model, seeds, conds, Some(&mut observe))?;
    Ok(acc)
}

/// Errors of fd-analysis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] fd_model::Error),
    #[error(transparent)]
    Sched(#[from] fd_sched::Error),
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("CSV: {0}")]
    CsvIo(#[from] std::io::Error),
    #[error("{0}")]
    Input(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Drift-calibrated key steps for `rule` = `auto:K` (optimal K key steps) or
/// `auto:threshold=X`, from the encoder drift profile of `seeds.len()` calibration samples under
/// the plain sampler. Returns the key steps and the profile they were chosen from.
pub fn calibrate_key_steps(
    model: &Denoiser,
    sampler: &SamplerSpec,
    steps: usize,
    guidance: f64,
    seeds: &[u64],
    conds: &[Condition],
    rule: AutoRule,
) -> Result<(Vec<usize>, Vec<f64>)> {
    keysteps::check_rule(rule, steps)?;
    let acc = measure_drift(model, sampler, steps, guidance, seeds, conds, &rule.to_string())?;
    let profile = acc.summary().encoder_drift_profile;
    let keys = keysteps::rule_key_steps(rule, &profile)?;
    Ok((keys, profile))
}
