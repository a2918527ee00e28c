//! The executor: [`sample`] checks a run's inputs, sets up the step context and hands the loop to
//! the plan's method ([`crate::methods`]); it holds no method logic. Also the types a run is
//! described and measured with ([`ExecOptions`], [`Timings`], [`CallCounts`]).

use std::collections::BTreeMap;
use std::time::Instant;

use fd_model::{Cond, EncoderFeatures, UNetModel};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::decode::{DecodeChoice, DecodeMode};
use crate::plan::Plan;
use crate::schedulers::Scheduler;
use crate::step::{Clock, StepCtx};
use crate::{Error, Result};

/// When prior noise injection is applied relative to the scheduler step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectWhen {
    Before,
    After,
}

/// Prior noise injection: z <- z + strength * z_T while t < tau * num_train_timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    /// c; the paper's SD default is 0.003.
    pub strength: f64,
    /// tau; the paper's SD default is 0.5.
    pub tau: f64,
    /// The paper's SD default is before the scheduler step.
    pub when: InjectWhen,
}

impl Injection {
    /// Parse `C@TAU` (e.g. `0.003@0.5`), optionally suffixed `:before` / `:after`.
    pub fn parse(spec: &str) -> Result<Self> {
        let err = || Error::Sampling(format!("--inject `{spec}`: expected C@TAU[:before|:after], e.g. 0.003@0.5"));
        let (body, when) = match spec.rsplit_once(':') {
            Some((b, "before")) => (b, InjectWhen::Before),
            Some((b, "after")) => (b, InjectWhen::After),
            Some(_) => return Err(err()),
            None => (spec, InjectWhen::Before),
        };
        let (c, tau) = body.split_once('@').ok_or_else(err)?;
        let strength: f64 = c.trim().parse().map_err(|_| err())?;
        let tau: f64 = tau.trim().parse().map_err(|_| err())?;
        if !strength.is_finite() || !(0.0..=1.0).contains(&tau) {
            return Err(err());
        }
        Ok(Self { strength, tau, when })
    }
}

/// How a plan is executed.
///
/// In records (`config.json` `exec`, part of the run identity) it is written as
/// [`ExecRecord`]: the decoding that runs (`parallel`, `max_decoder_batch`), not why it was chosen
/// (that is `run.json` `decode`); two options are equal when they run the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "ExecRecord", from = "ExecRecord")]
pub struct ExecOptions {
    /// How a group's decoders run, and why ([`crate::decode`]). Default parallel, uncapped.
    pub decode: DecodeChoice,
    /// Classifier-free guidance scale; 1 runs the conditional branch only, < 1 is an error. Default 1.
    pub guidance: f64,
    /// Prior noise injection. Default none.
    pub injection: Option<Injection>,
    /// ControlNet conditioning scale (diffusers' `controlnet_conditioning_scale`): the residuals
    /// are multiplied by it. Default 1; ignored without a ControlNet.
    pub control_scale: f64,
}

impl PartialEq for ExecOptions {
    fn eq(&self, other: &Self) -> bool {
        ExecRecord::from(self.clone()) == ExecRecord::from(other.clone())
    }
}

/// [`ExecOptions`] as records write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRecord {
    /// Batch the decoders of a group into one call (paper's parallel mode).
    pub parallel: bool,
    /// Cap on rows per decoder call (0 = no cap); a group is split into chunks of whole steps.
    pub max_decoder_batch: usize,
    pub guidance: f64,
    pub injection: Option<Injection>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub control_scale: f64,
}

impl From<ExecOptions> for ExecRecord {
    fn from(o: ExecOptions) -> Self {
        Self {
            parallel: o.decode.parallel,
            max_decoder_batch: o.decode.max_decoder_batch,
            guidance: o.guidance,
            injection: o.injection,
            control_scale: o.control_scale,
        }
    }
}

impl From<ExecRecord> for ExecOptions {
    fn from(r: ExecRecord) -> Self {
        let mode = if r.parallel { DecodeMode::Parallel } else { DecodeMode::Sequential };
        Self {
            decode: DecodeChoice::explicit(mode, r.parallel, r.max_decoder_batch, "recorded"),
            guidance: r.guidance,
            injection: r.injection,
            control_scale: r.control_scale,
        }
    }
}

fn one() -> f64 {
    1.0
}

// defaults are left out of records, so run identities of runs without a ControlNet are unchanged
fn is_one(v: &f64) -> bool {
    *v == 1.0
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            decode: DecodeChoice::explicit(DecodeMode::Parallel, true, 0, "given"),
            guidance: 1.0,
            injection: None,
            control_scale: 1.0,
        }
    }
}

impl ExecOptions {
    /// These options decoding as `choice` says.
    pub fn with_decode(mut self, choice: DecodeChoice) -> Self {
        self.decode = choice;
        self
    }

    /// Decoding given explicitly: parallel (with a row cap, 0 = none) or sequential.
    pub fn decoding(self, parallel: bool, max_decoder_batch: usize) -> Self {
        let mode = if parallel { DecodeMode::Parallel } else { DecodeMode::Sequential };
        self.with_decode(DecodeChoice::explicit(mode, parallel, max_decoder_batch, "given"))
    }
}

/// Wall time per component.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub time_embed_s: f64,
    pub encoder_s: f64,
    pub decoder_s: f64,
    pub scheduler_s: f64,
    pub total_s: f64,
    /// ControlNet (key steps only under encoder propagation; every step in the baseline).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub controlnet_s: f64,
}

impl Timings {
    /// Sum of two runs' timings.
    pub fn add(&mut self, other: &Timings) {
        self.time_embed_s += other.time_embed_s;
        self.encoder_s += other.encoder_s;
        self.decoder_s += other.decoder_s;
        self.scheduler_s += other.scheduler_s;
        self.total_s += other.total_s;
        self.controlnet_s += other.controlnet_s;
    }
}

/// Calls and rows evaluated per graph (a row = one sample in one CFG branch at one step).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallCounts {
    pub calls: BTreeMap<String, usize>,
    pub rows: BTreeMap<String, usize>,
    /// The key steps a `runtime:K` plan chose for this batch (empty for every other plan; a part
    /// record keeps its batch's list, run totals leave it out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_steps: Vec<usize>,
}

impl CallCounts {
    pub(crate) fn add(&mut self, graph: &str, rows: usize) {
        *self.calls.entry(graph.to_string()).or_default() += 1;
        *self.rows.entry(graph.to_string()).or_default() += rows;
    }

    pub fn calls(&self, graph: &str) -> usize {
        self.calls.get(graph).copied().unwrap_or(0)
    }

    pub fn rows(&self, graph: &str) -> usize {
        self.rows.get(graph).copied().unwrap_or(0)
    }

    /// Sum of two runs' counts.
    pub fn merge(&mut self, other: &CallCounts) {
        for (g, n) in &other.calls {
            *self.calls.entry(g.clone()).or_default() += n;
        }
        for (g, n) in &other.rows {
            *self.rows.entry(g.clone()).or_default() += n;
        }
    }

    /// GFLOPs of the UNet work executed per image: rows x per-row FLOPs of each graph
    /// (torch.utils.flop_counter at export, 2 x MACs), CFG batch doubling included.
    pub fn gflops_per_image(&self, model: &UNetModel, images: usize) -> f64 {
        let f: f64 = self.rows.iter().map(|(g, &r)| r as f64 * model.manifest.flops(g) as f64).sum();
        f / images as f64 / 1e9
    }
}

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

/// What the executor shows an observer at every step.
#[derive(Debug)]
pub struct StepFeatures<'a> {
    pub step: usize,
    pub timestep: f64,
    /// Whether the encoder ran at this step (else `encoder` is the key step's, reused).
    pub is_key: bool,
    /// Encoder features in use ([uncond; cond] rows with CFG).
    pub encoder: &'a EncoderFeatures,
    /// The encoder's layers beyond its features at the key step (a DiT's earlier blocks, from the
    /// `encoder_analysis` graph; empty when the model has none).
    pub encoder_layers: &'a [Tensor],
    /// Every up block's output at this step.
    pub decoder: &'a [Tensor],
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
    model: &UNetModel,
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
        plan,
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
    let latents = plan.spec.method().run(&mut ctx, z_t.shallow_clone(), observe)?;
    let mut timings = ctx.tm;
    timings.total_s = t_start.elapsed().as_secs_f64();
    Ok(SampleOutput { latents, timings, counts: ctx.counts })
}

/// Whether `model` can run `plan` under `guidance` (its graphs, its kind, CFG): checked before
/// any run writes a file.
pub fn check_plan(model: &UNetModel, plan: &Plan, guidance: f64) -> Result<()> {
    plan.spec.method().check(model, guidance)
}
