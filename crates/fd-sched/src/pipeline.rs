//! Batches of samples with per-sample seeds and conditioning: what `fd sample` and the experiment
//! recipes call. A sample's image depends only on its seed and prompt/class, never on batch size.

use fd_model::{CondKind, UNetModel};
use tch::{Kind, Tensor};

use crate::executor::{sample, CallCounts, ExecOptions, Hooks, SampleInput, StepFeatures, Timings};
use crate::plan::Plan;
use crate::schedulers::Scheduler;
use crate::{Error, Result};

/// What one sample is conditioned on.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Class(i64),
    Prompt(String),
}

/// Serialises seeding + drawing on libtorch's global CPU generator (tch exposes no per-call
/// generator), so concurrent callers cannot interleave and get each other's noise.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Initial noise z_T of one sample: torch's CPU generator seeded with `seed`, so it equals
/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` in Python.
pub fn initial_noise(seed: u64, shape: &[i64]) -> Tensor {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    Tensor::randn(shape, (Kind::Float, tch::Device::Cpu))
}

/// Step noise of one sample at step `i` (samplers with stochastic steps).
pub fn step_noise(seed: u64, i: usize, shape: &[i64]) -> Tensor {
    initial_noise(seed.wrapping_mul(1_000_003).wrapping_add(1 + i as u64), shape)
}

/// Accumulated output of [`generate_batch`].
#[derive(Debug)]
pub struct BatchOutput {
    /// Images in [-1, 1], [B, C, H, W] on the CPU.
    pub images: Tensor,
    pub timings: Timings,
    pub counts: CallCounts,
    /// Seconds spent in the conditioning encoder and the VAE decoder.
    pub cond_s: f64,
    pub vae_s: f64,
}

/// Build the conditioning tensor of a batch.
pub fn encode_conditions(model: &UNetModel, conds: &[Condition]) -> Result<Tensor> {
    match model.manifest.cond.kind {
        CondKind::Class => {
            let ids = conds
                .iter()
                .map(|c| match c {
                    Condition::Class(i) => Ok(*i),
                    Condition::Prompt(p) => model.class_id(p).map_err(Error::from),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(model.encode_classes(&ids)?)
        }
        CondKind::Text => {
            let prompts = conds
                .iter()
                .map(|c| match c {
                    Condition::Prompt(p) => Ok(p.as_str()),
                    Condition::Class(_) => Err(Error::Sampling("a text-conditioned model needs prompts".into())),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(model.encode_prompts(&prompts)?)
        }
        CondKind::Embedding => Err(Error::Sampling("model takes raw embeddings; use the library API".into())),
    }
}

/// Generate one batch: samples with `seeds[i]` and `conds[i]`. `make_scheduler` builds a fresh
/// scheduler (multistep samplers keep per-run history).
pub fn generate_batch(
    model: &UNetModel,
    make_scheduler: &dyn Fn() -> Result<Box<dyn Scheduler>>,
    plan: &Plan,
    opts: &ExecOptions,
    seeds: &[u64],
    conds: &[Condition],
) -> Result<BatchOutput> {
    generate_batch_observed(model, make_scheduler, plan, opts, seeds, conds, None)
}

/// [`generate_batch`] with a feature observer (see [`Hooks::observe`]).
pub fn generate_batch_observed(
    model: &UNetModel,
    make_scheduler: &dyn Fn() -> Result<Box<dyn Scheduler>>,
    plan: &Plan,
    opts: &ExecOptions,
    seeds: &[u64],
    conds: &[Condition],
    observe: Option<&mut dyn FnMut(&StepFeatures<'_>)>,
) -> Result<BatchOutput> {
    if seeds.len() != conds.len() || seeds.is_empty() {
        return Err(Error::Sampling(format!("{} seeds for {} conditions", seeds.len(), conds.len())));
    }
    let m = &model.manifest;
    let shape = [1, m.in_channels, m.sample_size[0], m.sample_size[1]];
    let noise = Tensor::cat(&seeds.iter().map(|&s| initial_noise(s, &shape)).collect::<Vec<_>>(), 0);
    let t0 = std::time::Instant::now();
    let cond = encode_conditions(model, conds)?;
    let uncond = if opts.guidance > 1.0 { Some(model.uncond(conds.len())?) } else { None };
    let cond_s = t0.elapsed().as_secs_f64();
    let mut scheduler = make_scheduler()?;
    let mut noise_fn = |i: usize| Tensor::cat(&seeds.iter().map(|&s| step_noise(s, i, &shape)).collect::<Vec<_>>(), 0);
    let out = sample(
        model,
        scheduler.as_mut(),
        plan,
        opts,
        &SampleInput { noise: &noise, cond: &cond, uncond: uncond.as_ref() },
        Hooks { step_noise: Some(&mut noise_fn), observe },
    )?;
    let t1 = std::time::Instant::now();
    let images = model.to_images(&out.latents)?.to_device(tch::Device::Cpu);
    Ok(BatchOutput { images, timings: out.timings, counts: out.counts, cond_s, vae_s: t1.elapsed().as_secs_f64() })
}
