//! Batches of samples with per-sample seeds and conditioning: what every command calls. A sample's
//! image depends only on its seed and prompt/class, never on batch size.

use fd_model::{Condition, Denoiser};
use tch::Tensor;

use crate::decode::DecodeChoice;
use crate::executor::{sample, Hooks, SampleInput};
use crate::methods::Plan;
use crate::options::ExecOptions;
use crate::sampler::SamplerSpec;
use crate::schedulers::Scheduler;
use crate::step::{initial_noise, step_noise, CallCounts, StepFeatures, Timings};
use crate::{Error, Result};

/// Everything that decides how a batch is sampled, built once per run and checked then: the
/// sampler, the key-step plan (its step count is the sampler's) and how the plan executes.
#[derive(Debug, Clone)]
pub struct SamplingSpec {
    pub sampler: SamplerSpec,
    pub plan: Plan,
    /// How the plan executes (its decoding, and why, included).
    pub exec: ExecOptions,
}

impl SamplingSpec {
    /// Check the parts against each other: the sampler builds for the plan's step count, guidance
    /// is 1 or more and finite.
    pub fn new(sampler: SamplerSpec, plan: Plan, exec: ExecOptions) -> Result<Self> {
        sampler.build(plan.num_steps)?;
        if !(exec.guidance >= 1.0 && exec.guidance.is_finite()) {
            return Err(Error::Config(format!(
                "guidance {} is not supported: use 1 (conditional only) or > 1 (classifier-free guidance)",
                exec.guidance
            )));
        }
        Ok(Self { sampler, plan, exec })
    }

    /// Decode as `choice` says (the execution options hold it; it is recorded).
    pub fn with_decode(mut self, choice: DecodeChoice) -> Self {
        self.exec = self.exec.with_decode(choice);
        self
    }

    /// Sampler steps.
    pub fn steps(&self) -> usize {
        self.plan.num_steps
    }

    /// A fresh scheduler for this run.
    pub fn scheduler(&self) -> Result<Box<dyn Scheduler>> {
        self.sampler.build(self.plan.num_steps)
    }

    /// Generate one batch: samples with `seeds[i]` and `conds[i]`.
    pub fn generate(&self, model: &Denoiser, seeds: &[u64], conds: &[Condition]) -> Result<BatchOutput> {
        self.generate_observed(model, seeds, conds, None)
    }

    /// [`SamplingSpec::generate`] with a feature observer (see [`Hooks::observe`]).
    pub fn generate_observed(
        &self,
        model: &Denoiser,
        seeds: &[u64],
        conds: &[Condition],
        observe: Option<&mut dyn FnMut(&StepFeatures<'_>)>,
    ) -> Result<BatchOutput> {
        if seeds.len() != conds.len() || seeds.is_empty() {
            return Err(Error::Sampling(format!("{} seeds for {} conditions", seeds.len(), conds.len())));
        }
        let m = &model.manifest;
        let shape: Vec<i64> = std::iter::once(1).chain(m.sample_shape()).collect();
        let noise = Tensor::cat(&seeds.iter().map(|&s| initial_noise(s, &shape)).collect::<Vec<_>>(), 0);
        let t0 = std::time::Instant::now();
        let cond = model.encode_conditions(conds)?;
        let uncond = if self.exec.guidance > 1.0 { Some(model.uncond(conds.len())?) } else { None };
        let cond_s = t0.elapsed().as_secs_f64();
        let mut scheduler = self.scheduler()?;
        let mut noise_fn =
            |i: usize| Tensor::cat(&seeds.iter().map(|&s| step_noise(s, i, &shape)).collect::<Vec<_>>(), 0);
        let out = sample(
            model,
            scheduler.as_mut(),
            &self.plan,
            &self.exec,
            &SampleInput { noise: &noise, cond: &cond, uncond: uncond.as_ref() },
            Hooks { step_noise: Some(&mut noise_fn), observe },
        )?;
        let t1 = std::time::Instant::now();
        let images = model.to_images(&out.latents)?.to_device(tch::Device::Cpu);
        Ok(BatchOutput { images, timings: out.timings, counts: out.counts, cond_s, vae_s: t1.elapsed().as_secs_f64() })
    }
}

/// Accumulated output of [`SamplingSpec::generate`].
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
