//! The executor: [`sample`] checks a run's inputs, sets up the step context and hands the loop to
//! the plan's method ([`crate::methods`]); it holds no method logic. Also the types a run is
//! described and measured with ([`ExecOptions`], [`Timings`], [`CallCounts`]).

use std::time::Instant;

use fd_model::{Cond, Denoiser};
use tch::{Kind, Tensor};

use crate::methods::Plan;
use crate::options::ExecOptions;
use crate::schedulers::Scheduler;
use crate::step::{CallCounts, Clock, StepCtx, StepFeatures, Timings};
use crate::{Error, Result};

/// Result of one sampling run.
#[derive(Debug)]
pub struct SampleOutput {
    /// Final latents (pixel model: images in [-1, 1]).
    pub latents: Tensor,
    pub timings: Timings,
    pub counts: CallCounts,
}

/// Inputs of [`sample`].
#[derive(Debug)]
pub struct SampleInput<'a> {
    /// z_T, unit variance [B, C, H, W] (scaled by the scheduler's init_noise_sigma inside).
    pub noise: &'a Tensor,
    /// Prepared conditioning of the batch (B rows).
    pub cond: &'a Cond,
    /// Unconditional conditioning (B rows), used when guidance > 1.
    pub uncond: Option<&'a Cond>,
}

/// Optional callbacks of [`sample`].
#[derive(Default)]
pub struct Hooks<'a, 'b> {
    /// Fresh noise for step `i` (shape of the latents), for samplers that need it.
    pub step_noise: Option<&'a mut dyn FnMut(usize) -> Tensor>,
    /// Called at every step with the features in use (fd-analysis). Decoding becomes sequential
    /// and uses the model's `decoder_analysis` graph; encoder-propagation plans only.
    pub observe: Option<&'b mut dyn FnMut(&StepFeatures<'_>)>,
}

impl std::fmt::Debug for Hooks<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("step_noise", &self.step_noise.is_some())
            .field("observe", &self.observe.is_some())
            .finish()
    }
}

/// Run `plan` with `scheduler` on `model`: checks the inputs against the model and the options,
/// builds the step context and runs the plan's method ([`crate::methods::CachingMethod::run`]).
pub fn sample(
    model: &Denoiser,
    scheduler: &mut dyn Scheduler,
    plan: &Plan,
    opts: &ExecOptions,
    input: &SampleInput<'_>,
    hooks: Hooks<'_, '_>,
) -> Result<SampleOutput> {
    let Hooks { step_noise, observe } = hooks;
    let t_start = Instant::now();
    let timesteps = scheduler.timesteps().to_vec();
    if timesteps.len() != plan.num_steps {
        return Err(Error::Sampling(format!(
            "plan has {} steps but the scheduler has {}",
            plan.num_steps,
            timesteps.len()
        )));
    }
    if !(opts.guidance >= 1.0 && opts.guidance.is_finite()) {
        return Err(Error::Sampling(format!(
            "guidance {} is not supported: use 1 (conditional only) or > 1 (classifier-free guidance)",
            opts.guidance
        )));
    }
    // the plan's method against the model and the guidance (its graphs, kind, CFG), here too for
    // callers that did not check it before writing anything
    check_plan(model, plan, opts.guidance)?;
    let cfg = opts.guidance > 1.0;
    let controlled = input.cond.control.is_some();
    if controlled != model.has_controlnet() {
        return Err(Error::Sampling(if controlled {
            format!("model `{}` has no ControlNet but condition images were given", model.manifest.name)
        } else {
            format!("model `{}` has a ControlNet: condition images are required", model.manifest.name)
        }));
    }
    let cond2 = match (cfg, input.uncond) {
        (true, Some(u)) => {
            // both CFG branches see the condition image, as diffusers' ControlNet pipeline does
            let mut u = u.clone();
            if u.control.is_none() {
                u.control = input.cond.control.as_ref().map(Tensor::shallow_clone);
            }
            Cond::cat(&[&u, input.cond])
        }
        (true, None) => return Err(Error::Sampling("guidance > 1 needs unconditional embeddings".into())),
        (false, _) => input.cond.clone(),
    }
    .to_device(model.device);
    let z_t = (input.noise.to_device(model.device).to_kind(Kind::Float)) * scheduler.init_noise_sigma();
    let mut ctx = StepCtx {
        model,
        scheduler,
        plan_label: plan.label(),
        opts,
        z_t: &z_t,
        step_noise,
        clock: Clock { device: model.device },
        tm: Timings::default(),
        counts: CallCounts::default(),
        cond2: &cond2,
        timesteps: &timesteps,
        branches: if cfg { 2 } else { 1 },
        b: input.noise.size()[0],
    };
    let latents = plan.spec.method().run(&mut ctx, plan, z_t.shallow_clone(), observe)?;
    let mut timings = ctx.tm;
    timings.total_s = t_start.elapsed().as_secs_f64();
    Ok(SampleOutput { latents, timings, counts: ctx.counts })
}

/// Whether `model` can run `plan` under `guidance` (its graphs, its kind, CFG): checked before
/// any run writes a file.
pub fn check_plan(model: &Denoiser, plan: &Plan, guidance: f64) -> Result<()> {
    plan.spec.method().check(model, guidance)
}
