//! The sampling loop for any [`Plan`]: encoder once per group, the group's decoders batched
//! (parallel) or one per step (sequential), the scheduler stepped sequentially through the group.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fd_model::{Cond, EncoderFeatures, UNetModel};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::plan::{CacheRule, Method, Plan};
use crate::schedulers::Scheduler;
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecOptions {
    /// Batch the decoders of a group into one call (paper's parallel mode). Default true.
    pub parallel: bool,
    /// Cap on rows per decoder call (0 = no cap); a group is split into chunks of whole steps.
    pub max_decoder_batch: usize,
    /// Classifier-free guidance scale; 1 runs the conditional branch only, < 1 is an error. Default 1.
    pub guidance: f64,
    /// Prior noise injection. Default none.
    pub injection: Option<Injection>,
    /// ControlNet conditioning scale (diffusers' `controlnet_conditioning_scale`): the residuals
    /// are multiplied by it. Default 1; ignored without a ControlNet.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub control_scale: f64,
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
        Self { parallel: true, max_decoder_batch: 0, guidance: 1.0, injection: None, control_scale: 1.0 }
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
    fn add(&mut self, graph: &str, rows: usize) {
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

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

struct Clock {
    device: Device,
}

impl Clock {
    fn time<T>(&self, acc: &mut f64, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        sync(self.device);
        *acc += Duration::as_secs_f64(&t0.elapsed());
        out
    }
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

/// Run `plan` with `scheduler` on `model`.
pub fn sample(
    model: &UNetModel,
    scheduler: &mut dyn Scheduler,
    plan: &Plan,
    opts: &ExecOptions,
    input: &SampleInput<'_>,
    hooks: Hooks<'_, '_>,
) -> Result<SampleOutput> {
    let Hooks { step_noise, mut observe } = hooks;
    let t_start = Instant::now();
    let clock = Clock { device: model.device };
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
    let b = input.noise.size()[0];
    let cfg = opts.guidance > 1.0;
    let controlled = input.cond.control.is_some();
    if controlled != model.has_controlnet() {
        return Err(Error::Sampling(if controlled {
            format!("model `{}` has no ControlNet but condition images were given", model.manifest.name)
        } else {
            format!("model `{}` has a ControlNet: condition images are required", model.manifest.name)
        }));
    }
    if controlled && plan.is_deepcache() {
        return Err(Error::Sampling("DeepCache plans do not support ControlNet (its residuals reach the skips the shallow path recomputes); use an encoder-propagation plan".into()));
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
    let branches: i64 = if cfg { 2 } else { 1 };
    let z_t = (input.noise.to_device(model.device).to_kind(Kind::Float)) * scheduler.init_noise_sigma();
    let mut latents = z_t.shallow_clone();
    let mut tm = Timings::default();
    let mut counts = CallCounts::default();
    let rows_per_step = (branches * b) as usize;
    let chunk_steps = if !opts.parallel || observe.is_some() {
        1
    } else if opts.max_decoder_batch == 0 {
        usize::MAX
    } else {
        (opts.max_decoder_batch / rows_per_step).max(1)
    };

    let mut ctx = StepCtx {
        model,
        scheduler,
        plan,
        opts,
        z_t: &z_t,
        step_noise,
        clock: &clock,
        tm: &mut tm,
        counts: &mut counts,
        cond2: &cond2,
        timesteps: &timesteps,
        branches,
        b,
    };
    if let Method::Adaptive { threshold, max_skip } = plan.method {
        if observe.is_some() || controlled {
            return Err(Error::Sampling(
                "adaptive plans support neither feature observation nor ControlNet models".into(),
            ));
        }
        latents = ctx.adaptive(latents, threshold as f32, max_skip)?;
        tm.total_s = t_start.elapsed().as_secs_f64();
        return Ok(SampleOutput { latents, timings: tm, counts });
    }
    if let Method::StepCache { rule, threshold, residual } = plan.method {
        if observe.is_some() || controlled {
            return Err(Error::Sampling(format!(
                "{} plans support neither feature observation nor ControlNet models",
                rule.as_str()
            )));
        }
        latents = ctx.step_cache(latents, rule, threshold, residual)?;
        tm.total_s = t_start.elapsed().as_secs_f64();
        return Ok(SampleOutput { latents, timings: tm, counts });
    }
    if let Method::TGate { gate_step, sp_interval, fi_interval, warm_up } = plan.method {
        if observe.is_some() || controlled || !cfg {
            return Err(Error::Sampling(
                "tgate plans need classifier-free guidance (--cfg > 1: the gate caches the mean of its two branches) and support neither feature observation nor ControlNet models".into(),
            ));
        }
        let gate = TGateSteps { gate_step, sp_interval, fi_interval, warm_up };
        latents = ctx.tgate(latents, gate)?;
        tm.total_s = t_start.elapsed().as_secs_f64();
        return Ok(SampleOutput { latents, timings: tm, counts });
    }
    // (timestep, features) of the last key steps, for forecast plans
    let mut history: Vec<(f64, EncoderFeatures)> = Vec::new();
    // runtime key steps: each group's end is decided at its key step
    let mut runtime = match plan.keys {
        crate::plan::KeySteps::Runtime(k) => Some(RuntimeKeys::new(k, timesteps.len())),
        _ => None,
    };
    let mut start = 0;
    let mut group_index = 0;
    while start < plan.num_steps {
        // 1. encoder at the key step, on [uncond; cond]
        let s = start;
        let x_in = ctx.model_input(&latents, s);
        let emb_key = ctx.time_embed(s)?;
        // (observed runs of a model with the `encoder_analysis` graph also get its earlier layers)
        let (mut feats, enc_layers) = ctx.clock.time(&mut ctx.tm.encoder_s, || {
            if observe.is_some() && model.has_encoder_analysis() {
                model.encode_analysis(&x_in, &emb_key, &cond2.states)
            } else {
                model.encode(&x_in, &emb_key, &cond2.states).map(|f| (f, Vec::new()))
            }
        })?;
        ctx.counts.add("encoder", rows_per_step);
        if controlled {
            // ControlNet at the key step only; its residuals join the features before they are reused
            let t = Tensor::full([rows_per_step as i64], timesteps[s], (Kind::Float, model.device));
            let res = ctx.clock.time(&mut ctx.tm.controlnet_s, || model.controlnet(&x_in, &t, &cond2))?;
            ctx.counts.add("controlnet", rows_per_step);
            feats = feats.add_scaled(&res, opts.control_scale);
        }
        let end = match runtime.as_mut() {
            Some(r) => {
                ctx.counts.key_steps.push(s);
                r.next_key(s, &timesteps, &feats)?
            }
            None => plan.groups[group_index].end,
        };
        start = end;
        group_index += 1;
        let steps: Vec<usize> = (s..end).collect();
        match plan.method {
            Method::EncoderPropagation => {
                // forecast plans extrapolate the features in t through the last key steps
                if plan.forecast > 0 {
                    history.push((timesteps[s], feats.clone()));
                    if history.len() > plan.forecast + 1 {
                        history.remove(0);
                    }
                }
                let feats_at = |j: usize| -> EncoderFeatures {
                    if j == s || history.len() < 2 {
                        feats.clone()
                    } else {
                        extrapolate(&history, timesteps[j])
                    }
                };
                if let Some(id) = plan.partial {
                    // partial propagation: each step recomputes the shallow skips on its own
                    // latents, so the group's decoders run one step at a time
                    if observe.is_some() {
                        return Err(Error::Sampling("feature observation does not support +partial plans".into()));
                    }
                    let key = model.deepcache_key_for_id(id)?;
                    let shallow = fd_model::manifest::deepcache_graph(&key, "shallow_encoder");
                    for &i in &steps {
                        let pred = if i == s {
                            ctx.decode_steps(&feats, &[s], None)?.pop().expect("one step decoded")
                        } else {
                            let x_in = ctx.model_input(&latents, i);
                            let emb = ctx.time_embed(i)?;
                            let states = &cond2.states;
                            let fresh = ctx.clock.time(&mut ctx.tm.encoder_s, || {
                                model.deepcache_shallow_encode(&key, &x_in, &emb, states)
                            })?;
                            ctx.counts.add(&shallow, rows_per_step);
                            let f = feats.with_skips_replaced(&fresh);
                            let out =
                                ctx.clock.time(&mut ctx.tm.decoder_s, || model.decode(&f, &emb, &cond2.states))?;
                            ctx.counts.add("decoder", rows_per_step);
                            out
                        };
                        latents = ctx.scheduler_step(pred, i, latents)?;
                    }
                    continue;
                }
                // 2. decoders of the group, in chunks of whole steps (one chunk per step when sequential)
                let mut preds: Vec<Tensor> = Vec::with_capacity(steps.len());
                for chunk in steps.chunks(chunk_steps.min(steps.len())) {
                    if let Some(obs) = observe.as_mut() {
                        let i = chunk[0];
                        let emb = ctx.time_embed(i)?;
                        let f = feats_at(i);
                        let (pred, ups) =
                            ctx.clock.time(&mut ctx.tm.decoder_s, || model.decode_analysis(&f, &emb, &cond2.states))?;
                        ctx.counts.add("decoder", rows_per_step);
                        obs(&StepFeatures {
                            step: i,
                            timestep: timesteps[i],
                            is_key: i == s,
                            encoder: &f,
                            encoder_layers: &enc_layers,
                            decoder: &ups,
                        });
                        preds.push(pred);
                    } else if plan.forecast > 0 {
                        let per: Vec<EncoderFeatures> = chunk.iter().map(|&j| feats_at(j)).collect();
                        preds.extend(ctx.decode_steps(&feats, chunk, Some(&per))?);
                    } else {
                        preds.extend(ctx.decode_steps(&feats, chunk, None)?);
                    }
                }
                // 3. scheduler stepped sequentially through the group
                for (&i, pred) in steps.iter().zip(preds) {
                    latents = ctx.scheduler_step(pred, i, latents)?;
                }
            }
            Method::DeepCache { .. } | Method::DeepCacheId { .. } | Method::DecoderPropagation if observe.is_some() => {
                return Err(Error::Sampling("feature observation supports encoder-propagation plans only".into()));
            }
            Method::Adaptive { .. } | Method::StepCache { .. } | Method::TGate { .. } => {
                return Err(Error::Sampling("adaptive and step-cache plans run their own loop (internal error)".into()))
            }
            Method::DecoderPropagation => {
                // the key step's decoder output, reused by every step of the group
                let pred = ctx.decode_steps(&feats, &[s], None)?.pop().expect("one step decoded");
                for &i in &steps {
                    latents = ctx.scheduler_step(pred.shallow_clone(), i, latents)?;
                }
            }
            Method::DeepCache { .. } | Method::DeepCacheId { .. } => {
                // full step: deep part once, cached; shallow path every step of the group
                let key = deepcache_key(model, plan.method)?;
                let graph = |part: &str| fd_model::manifest::deepcache_graph(&key, part);
                let cached = ctx.clock.time(&mut ctx.tm.decoder_s, || {
                    model.deepcache_deep_decode(&key, &feats, &emb_key, &cond2.states)
                })?;
                ctx.counts.add(&graph("deep_decoder"), rows_per_step);
                let n_shallow = model.deepcache_shallow_skips(&key)?;
                for &i in &steps {
                    let (skips, emb) = if i == s {
                        (
                            feats.skips()[..n_shallow].iter().map(Tensor::shallow_clone).collect(),
                            emb_key.shallow_clone(),
                        )
                    } else {
                        let x_in = ctx.model_input(&latents, i);
                        let emb = ctx.time_embed(i)?;
                        let skips = ctx.clock.time(&mut ctx.tm.encoder_s, || {
                            model.deepcache_shallow_encode(&key, &x_in, &emb, &cond2.states)
                        })?;
                        ctx.counts.add(&graph("shallow_encoder"), rows_per_step);
                        (skips, emb)
                    };
                    let pred = ctx.clock.time(&mut ctx.tm.decoder_s, || {
                        model.deepcache_shallow_decode(&key, &cached, &skips, &emb, &cond2.states)
                    })?;
                    ctx.counts.add(&graph("shallow_decoder"), rows_per_step);
                    latents = ctx.scheduler_step(pred, i, latents)?;
                }
            }
        }
    }
    tm.total_s = t_start.elapsed().as_secs_f64();
    Ok(SampleOutput { latents, timings: tm, counts })
}

/// Whether `model` can run `plan` (DeepCache graphs, TeaCache probe, ...): checked before any
/// run writes a file.
pub fn check_plan(model: &UNetModel, plan: &Plan) -> Result<()> {
    match plan.method {
        Method::DeepCache { .. } | Method::DeepCacheId { .. } => {
            deepcache_key(model, plan.method)?;
        }
        Method::EncoderPropagation if plan.partial.is_some() => {
            model.deepcache_key_for_id(plan.partial.unwrap_or_default())?;
        }
        Method::StepCache { rule, residual, .. } => {
            step_cache_indicator(model, rule, residual)?;
        }
        Method::TGate { .. } if model.manifest.tgate.is_none() => {
            let m = &model.manifest;
            return Err(Error::Sampling(if m.kind == fd_model::ModelKind::Unet2d {
                format!(
                    "model `{}` has no T-GATE graphs: add them with `python experiments/add_tgate.py --model DIR`",
                    m.name
                )
            } else {
                format!("T-GATE applies to 2-D UNets with cross-attention; model `{}` is a {} model", m.name, m.kind)
            }));
        }
        _ => {}
    }
    Ok(())
}

/// A T-GATE plan's step numbers ([`Method::TGate`]).
#[derive(Debug, Clone, Copy)]
struct TGateSteps {
    gate_step: usize,
    sp_interval: usize,
    fi_interval: usize,
    warm_up: usize,
}

/// What a step-cache plan measures every step, and where its cache sits.
enum Indicator {
    /// A UNet's TeaCache: the `teacache_probe` graph, rescaled by the model's polynomial.
    Probe(fd_model::TeaCacheSpec),
    /// A UNet's FBCache: conv_in's output through this DeepCache key's shallow encoder.
    FirstBlock(String),
    /// A DiT (the official DiT form of both methods): the token stream through the step-cache
    /// graphs; TeaCache (with its polynomial) reads the first block's modulated input, FBCache
    /// the first block's residual; a reused step adds the cached token residual of the skipped
    /// blocks and runs the final layer at its own timestep.
    Tokens(Option<fd_model::TeaCacheSpec>),
}

/// The indicator a TeaCache / FBCache plan reads on `model`, or an error saying what the model
/// lacks (a 2-D UNet or a DiT, the probe graph and polynomial, a DeepCache shallow encoder, equal
/// in and out channels for the residual form).
fn step_cache_indicator(model: &UNetModel, rule: CacheRule, residual: bool) -> Result<Indicator> {
    let m = &model.manifest;
    let no_poly = || {
        Error::Sampling(format!(
            "model `{}` has no TeaCache probe graph and polynomial: add them with `python experiments/add_teacache.py --model DIR`",
            m.name
        ))
    };
    match m.kind {
        fd_model::ModelKind::Unet2d => {}
        fd_model::ModelKind::Dit => {
            if residual {
                return Err(Error::Sampling(format!(
                    "on a DiT, {} always reuses the token residual of the blocks it skips (the method's DiT form); drop `:residual`",
                    rule.as_str()
                )));
            }
            if !model.has_stepcache() {
                return Err(Error::Sampling(format!(
                    "DiT `{}` has no TeaCache / FBCache graphs (stepcache.pt): export it again with experiments/export_dit.py",
                    m.name
                )));
            }
            return Ok(Indicator::Tokens(match rule {
                CacheRule::TeaCache => Some(m.teacache.clone().ok_or_else(no_poly)?),
                CacheRule::FbCache => None,
            }));
        }
        _ => {
            return Err(Error::Sampling(format!(
                "{} plans read the first block of a 2-D UNet or a DiT; model `{}` is a {} model (use an encoder-propagation plan)",
                rule.as_str(),
                m.name,
                m.kind
            )))
        }
    }
    if residual && m.out_channels != m.in_channels {
        return Err(Error::Sampling(format!(
            "{}:T:residual reuses output - input, but model `{}` outputs {} channels for {} input channels; drop `:residual`",
            rule.as_str(),
            m.name,
            m.out_channels,
            m.in_channels
        )));
    }
    Ok(match rule {
        CacheRule::TeaCache => Indicator::Probe(m.teacache.clone().ok_or_else(no_poly)?),
        CacheRule::FbCache => Indicator::FirstBlock(model.first_block_key()?),
    })
}

/// The model's DeepCache graphs a DeepCache plan runs (their manifest key), or an error naming
/// what the model lacks.
pub fn deepcache_key(model: &UNetModel, method: Method) -> Result<String> {
    Ok(match method {
        Method::DeepCacheId { id } => model.deepcache_key_for_id(id)?,
        Method::DeepCache { branch } => model.deepcache_key_for_block(branch)?,
        _ => return Err(Error::Sampling("not a DeepCache plan".into())),
    })
}

/// Runtime key steps (`runtime:K`): where the next key step is decided, at each key step and
/// before its group's decoders run. Step 0 and step 1 are key steps (a rate needs two); at key step
/// s with the previous key step p, the features' rate of change is
/// r = ||f_s - f_p||_F / ||f_p||_F / (t_p - t_s) (all encoder tensors, all rows, f64 sums);
/// with k passes left and n steps after s, the group is round((n / (k + 1)) x mean(r so far) / r)
/// steps long, at least 1 and leaving a step for each remaining pass: faster-changing features
/// than so far get shorter groups, slower ones longer. With no pass left the group runs to the end.
/// Decided on the whole batch (a sample's image depends on its batch, as AdaptiveDiffusion's
/// official batch-mean rule).
struct RuntimeKeys {
    budget: usize,
    used: usize,
    steps: usize,
    prev: Option<(f64, EncoderFeatures)>,
    rates: Vec<f64>,
}

impl RuntimeKeys {
    fn new(budget: usize, steps: usize) -> Self {
        Self { budget, used: 0, steps, prev: None, rates: Vec::new() }
    }

    /// The end (exclusive) of the group that starts at key step `s` with features `feats`.
    fn next_key(&mut self, s: usize, timesteps: &[f64], feats: &EncoderFeatures) -> Result<usize> {
        self.used += 1;
        let after = self.steps - 1 - s;
        let left = self.budget.saturating_sub(self.used);
        let len = if after == 0 || left == 0 {
            after + 1
        } else if let Some((tp, fp)) = &self.prev {
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for (a, b) in feats.tensors.iter().zip(&fp.tensors) {
                num += (a - b).to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
                den += b.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
            }
            let rate = (num.sqrt() / den.sqrt().max(f64::MIN_POSITIVE)) / (tp - timesteps[s]).abs().max(1e-9);
            self.rates.push(rate);
            let mean = self.rates.iter().sum::<f64>() / self.rates.len() as f64;
            let base = after as f64 / (left + 1) as f64;
            let most = (after + 1).saturating_sub(left).max(1);
            let len = if rate > 0.0 && rate.is_finite() { (base * mean / rate).round() } else { most as f64 };
            (len as usize).clamp(1, most)
        } else {
            1
        };
        self.prev = Some((timesteps[s], feats.clone()));
        Ok(s + len)
    }
}

/// The encoder features at timestep `t` extrapolated through `points` (timestep, features) by the
/// Lagrange polynomial: weights w_i = prod_{m != i} (t - t_m) / (t_i - t_m) in f64, features summed
/// in order (the forecast plans' rule; tests/fixtures/gen_golden.py has the same reference).
fn extrapolate(points: &[(f64, EncoderFeatures)], t: f64) -> EncoderFeatures {
    let n = points.len();
    let w: Vec<f64> = (0..n)
        .map(|i| (0..n).filter(|&m| m != i).map(|m| (t - points[m].0) / (points[i].0 - points[m].0)).product())
        .collect();
    let parts: Vec<&EncoderFeatures> = points.iter().map(|p| &p.1).collect();
    EncoderFeatures::weighted_sum(&parts, &w)
}

/// What every step of a run needs: the model, the scheduler and the plan, the run's options,
/// z_T and step noise, and the accounting every loop adds to.
struct StepCtx<'a, 'n> {
    model: &'a UNetModel,
    scheduler: &'a mut dyn Scheduler,
    plan: &'a Plan,
    opts: &'a ExecOptions,
    /// z_T (scaled by the scheduler's init_noise_sigma), for prior noise injection.
    z_t: &'a Tensor,
    step_noise: Option<&'n mut dyn FnMut(usize) -> Tensor>,
    clock: &'a Clock,
    tm: &'a mut Timings,
    counts: &'a mut CallCounts,
    cond2: &'a Cond,
    timesteps: &'a [f64],
    branches: i64,
    b: i64,
}

impl StepCtx<'_, '_> {
    /// The UNet input at step `i`: scaled latents, duplicated for CFG.
    fn model_input(&self, latents: &Tensor, i: usize) -> Tensor {
        let x = self.scheduler.scale_model_input(latents, i);
        if self.branches == 2 {
            Tensor::cat(&[&x, &x], 0)
        } else {
            x
        }
    }

    /// Time embedding of step `i` for the [branches x B] batch (with each row's added
    /// conditioning).
    fn time_embed(&mut self, i: usize) -> Result<Tensor> {
        let t = Tensor::full([self.branches * self.b], self.timesteps[i], (Kind::Float, self.model.device));
        let (model, extra) = (self.model, self.cond2.extra.as_ref());
        let emb = self.clock.time(&mut self.tm.time_embed_s, || model.time_embed(&t, extra))?;
        self.counts.add("time_embed", (self.branches * self.b) as usize);
        Ok(emb)
    }

    /// One of a DiT's step-cache graphs on `x`'s rows, timed (embedding and first block as encoder
    /// time, the rest as decoder time) and counted; its outputs.
    fn stepcache(&mut self, graph: &str, x: &Tensor, emb: &Tensor, states: &Tensor) -> Result<Vec<Tensor>> {
        let model = self.model;
        let slot = if matches!(graph, "stepcache_embed" | "stepcache_first") {
            &mut self.tm.encoder_s
        } else {
            &mut self.tm.decoder_s
        };
        let out = self.clock.time(slot, || model.stepcache(graph, x, emb, states))?;
        self.counts.add(graph, x.size()[0] as usize);
        Ok(out)
    }

    /// AdaptiveDiffusion's loop (see [`Method::Adaptive`]): per sample, the UNet runs at steps 0-3
    /// and whenever the last decision says so; otherwise the sample's last prediction (both CFG
    /// rows) is reused. Only the rows that run are batched into the UNet call (and counted).
    /// Latent differences are float32 means over a sample's elements, compared in float32, as
    /// the official pipeline computes them.
    fn adaptive(&mut self, mut latents: Tensor, threshold: f32, max_skip: usize) -> Result<Tensor> {
        let (b, branches) = (self.b as usize, self.branches);
        let model = self.model;
        // per sample: latent differences d_i and run (true) / reuse decisions for the next step
        let mut diffs: Vec<Vec<f32>> = vec![Vec::new(); b];
        let mut runs: Vec<Vec<bool>> = vec![Vec::new(); b];
        let mut prev: Vec<Tensor> = Vec::new(); // latents after the last two steps
        let mut pred: Option<Tensor> = None;
        let row_diff = |a: &Tensor, c: &Tensor| -> Result<Vec<f32>> {
            let d = (a - c).abs().flatten(1, -1).mean_dim(1, false, Kind::Float).to_device(Device::Cpu);
            Ok(Vec::<f32>::try_from(&d)?)
        };
        for i in 0..self.timesteps.len() {
            if (2..=3).contains(&i) {
                for (r, d) in row_diff(&prev[prev.len() - 1], &prev[prev.len() - 2])?.into_iter().enumerate() {
                    diffs[r].push(d);
                }
            }
            let run: Vec<i64> =
                (0..b).filter(|&r| i <= 3 || runs[r].last().copied().unwrap_or(true)).map(|r| r as i64).collect();
            if !run.is_empty() {
                // the running samples' rows of the [uncond B; cond B] batch
                let bb = self.b;
                let rows: Vec<i64> = (0..branches).flat_map(|br| run.iter().map(move |&r| br * bb + r)).collect();
                let idx = Tensor::from_slice(&rows).to_device(model.device);
                let x_in = self.model_input(&latents, i).index_select(0, &idx);
                let c = self.cond2.index_select(&idx);
                let t = Tensor::full([rows.len() as i64], self.timesteps[i], (Kind::Float, model.device));
                let emb = self.clock.time(&mut self.tm.time_embed_s, || model.time_embed(&t, c.extra.as_ref()))?;
                self.counts.add("time_embed", rows.len());
                let feats = self.clock.time(&mut self.tm.encoder_s, || model.encode(&x_in, &emb, &c.states))?;
                self.counts.add("encoder", rows.len());
                let out = self.clock.time(&mut self.tm.decoder_s, || model.decode(&feats, &emb, &c.states))?;
                self.counts.add("decoder", rows.len());
                pred = Some(match pred {
                    Some(p) if rows.len() < p.size()[0] as usize => p.index_copy(0, &idx, &out),
                    _ => out,
                });
            }
            let p = pred.as_ref().expect("step 0 runs every sample").shallow_clone();
            latents = self.scheduler_step(p, i, latents)?;
            if i >= 3 {
                let cur = row_diff(&latents, &prev[prev.len() - 1])?;
                for r in 0..b {
                    let (d, m) = (&mut diffs[r], &mut runs[r]);
                    let (prev_d, prev_prev_d) = (d[d.len() - 1], d[d.len() - 2]);
                    d.push(cur[r]);
                    let forced = m.len() > 4 && !m[m.len().saturating_sub(max_skip)..].iter().any(|&x| x);
                    let smooth = ((cur[r] + prev_prev_d) / 2.0 - prev_d).abs() <= prev_d * threshold;
                    m.push(forced || !smooth);
                }
            }
            prev.push(latents.shallow_clone());
            if prev.len() > 2 {
                drop(prev.remove(0));
            }
        }
        Ok(latents)
    }

    /// TeaCache / First-Block Cache ([`Method::StepCache`]): every step the indicator runs on all
    /// rows; per sample, over its CFG rows, its relative L1 change mean|a - b| / mean|b| decides
    /// whether the sample's rows compute (only those are batched and counted) or reuse the cache.
    /// Each step is front -> body -> head: on a UNet the front is the indicator graph (TeaCache:
    /// `teacache_probe`; FBCache: conv_in through the cheapest DeepCache shallow encoder) with
    /// state = the UNet input, the body the whole UNet, no head; the cache is the last computed
    /// output (with `residual`: output - input, added to the input). On a DiT the front is the
    /// patch embedding (TeaCache's state h0; FBCache runs the first block too, state h1), the body
    /// the blocks after the state, the head the final layer on every row; the cache is always the
    /// body's token residual.
    fn step_cache(&mut self, mut latents: Tensor, rule: CacheRule, threshold: f64, residual: bool) -> Result<Tensor> {
        let (b, bb, branches) = (self.b as usize, self.b, self.branches);
        let model = self.model;
        let n = self.timesteps.len();
        let rows_all = (branches * bb) as usize;
        let indicator = step_cache_indicator(model, rule, residual)?;
        let (tea, tokens) = match &indicator {
            Indicator::Probe(spec) => (Some(spec.clone()), false),
            Indicator::FirstBlock(_) => (None, false),
            Indicator::Tokens(spec) => (spec.clone(), true),
        };
        let residual = residual || tokens;
        // per sample: mean over its rows of row means, |a - b| over |b| (float32, as torch's means)
        let rel = |a: &Tensor, r: &Tensor| -> Result<Vec<f64>> {
            let per = |t: Tensor| {
                t.abs().flatten(1, -1).mean_dim(1, false, Kind::Float).view([branches, bb]).mean_dim(
                    0,
                    false,
                    Kind::Float,
                )
            };
            let d = (per(a - r) / per(r.shallow_clone())).to_device(Device::Cpu);
            Ok(Vec::<f32>::try_from(&d)?.into_iter().map(f64::from).collect())
        };
        let mut acc = vec![0.0f64; b];
        // TeaCache: the previous step's indicator; FBCache: each sample's at its last computed step
        let mut reference: Option<Tensor> = None;
        let mut cache: Option<Tensor> = None;
        for i in 0..n {
            let x_in = self.model_input(&latents, i);
            let emb = self.time_embed(i)?;
            let states = &self.cond2.states;
            // front: the indicator and the state the body starts from
            let (ind, state) = match &indicator {
                Indicator::Probe(_) => {
                    let ind = self.clock.time(&mut self.tm.encoder_s, || model.teacache_probe(&x_in, &emb))?;
                    self.counts.add("teacache_probe", rows_all);
                    (ind, x_in.shallow_clone())
                }
                Indicator::FirstBlock(key) => {
                    let ind =
                        self.clock.time(&mut self.tm.encoder_s, || model.first_block(key, &x_in, &emb, states))?;
                    self.counts.add(&fd_model::manifest::deepcache_graph(key, "shallow_encoder"), rows_all);
                    (ind, x_in.shallow_clone())
                }
                Indicator::Tokens(spec) => {
                    let mut v = self.stepcache("stepcache_embed", &x_in, &emb, states)?;
                    let (h0, modulated) = (v.swap_remove(0), v.pop().expect("embed returns two tensors"));
                    if spec.is_some() {
                        (modulated, h0)
                    } else {
                        let h1 = self.stepcache("stepcache_first", &h0, &emb, states)?.swap_remove(0);
                        (&h1 - &h0, h1)
                    }
                }
            };
            let compute: Vec<bool> = match (&reference, &tea) {
                (None, _) => vec![true; b],
                (Some(_), Some(_)) if i == n - 1 => {
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    vec![true; b]
                }
                (Some(r), Some(spec)) => rel(&ind, r)?
                    .into_iter()
                    .zip(acc.iter_mut())
                    .map(|(d, a)| {
                        *a += spec.rescale(d);
                        let run = *a >= threshold;
                        if run {
                            *a = 0.0;
                        }
                        run
                    })
                    .collect(),
                (Some(r), None) => rel(&ind, r)?.into_iter().map(|d| d > threshold).collect(),
            };
            let run: Vec<i64> = (0..b).filter(|&r| compute[r]).map(|r| r as i64).collect();
            let rows: Vec<i64> = (0..branches).flat_map(|br| run.iter().map(move |&r| br * bb + r)).collect();
            let idx = Tensor::from_slice(&rows).to_device(model.device);
            reference = Some(match (reference, &tea) {
                (Some(r), None) if rows.len() < rows_all => r.index_copy(0, &idx, &ind.index_select(0, &idx)),
                _ => ind,
            });
            // the body's output of every row from the cache, then the computed rows' own
            let mut body = match &cache {
                Some(c) if residual => &state + c,
                Some(c) => c.shallow_clone(),
                None => state.zeros_like(),
            };
            if !rows.is_empty() {
                let all = rows.len() == rows_all;
                let (s_sel, e_sel, c_sel) = if all {
                    (state.shallow_clone(), emb.shallow_clone(), self.cond2.clone())
                } else {
                    (state.index_select(0, &idx), emb.index_select(0, &idx), self.cond2.index_select(&idx))
                };
                let out = if tokens {
                    let h = if tea.is_some() {
                        self.stepcache("stepcache_first", &s_sel, &e_sel, &c_sel.states)?.swap_remove(0)
                    } else {
                        s_sel.shallow_clone()
                    };
                    self.stepcache("stepcache_rest", &h, &e_sel, &c_sel.states)?.swap_remove(0)
                } else {
                    let feats =
                        self.clock.time(&mut self.tm.encoder_s, || model.encode(&s_sel, &e_sel, &c_sel.states))?;
                    self.counts.add("encoder", rows.len());
                    let out =
                        self.clock.time(&mut self.tm.decoder_s, || model.decode(&feats, &e_sel, &c_sel.states))?;
                    self.counts.add("decoder", rows.len());
                    out
                };
                let new = if residual { &out - &s_sel } else { out.shallow_clone() };
                cache = Some(match cache {
                    Some(c) if !all => c.index_copy(0, &idx, &new),
                    _ => new,
                });
                body = if all { out } else { body.index_copy(0, &idx, &out) };
            }
            let pred =
                if tokens { self.stepcache("stepcache_head", &body, &emb, states)?.swap_remove(0) } else { body };
            latents = self.scheduler_step(pred, i, latents)?;
        }
        Ok(latents)
    }

    /// T-GATE's loop ([`Method::TGate`], the official tgate_scheduler's decisions): which graph
    /// runs at each step, which attention outputs it returns are kept, and the switch to the
    /// unconditional branch alone after the gate.
    fn tgate(&mut self, mut latents: Tensor, g: TGateSteps) -> Result<Tensor> {
        let model = self.model;
        let nc = model.manifest.tgate.as_ref().map_or(0, |t| t.cross_layers.len());
        let (b, rows2) = (self.b, (2 * self.b) as usize);
        // the unconditional rows [0, B) of [uncond; cond]: the only branch after the gate
        let uncond = self.cond2.index_select(&Tensor::arange(b, (Kind::Int64, model.device)));
        let half_mean = |v: &[Tensor]| -> Vec<Tensor> {
            v.iter()
                .map(|t| {
                    let h = t.chunk(2, 0);
                    (&h[0] + &h[1]) / 2.0
                })
                .collect()
        };
        let (mut ca, mut sa): (Vec<Tensor>, Vec<Tensor>) = (Vec::new(), Vec::new());
        for i in 0..self.timesteps.len() {
            let pred = if i < g.gate_step {
                let x_in = self.model_input(&latents, i);
                let emb = self.time_embed(i)?;
                let states = &self.cond2.states;
                let sa_reuse = i + 1 < g.gate_step && i > g.warm_up && i % g.sp_interval != 0;
                if sa_reuse {
                    let out = self
                        .clock
                        .time(&mut self.tm.decoder_s, || model.tgate("tgate_sa_reuse", &x_in, &emb, states, &sa))?;
                    self.counts.add("tgate_sa_reuse", rows2);
                    out.0
                } else {
                    let (out, extra) = self
                        .clock
                        .time(&mut self.tm.decoder_s, || model.tgate("tgate_capture", &x_in, &emb, states, &[]))?;
                    self.counts.add("tgate_capture", rows2);
                    if i + 1 == g.gate_step {
                        ca = half_mean(&extra[..nc]);
                        sa = half_mean(&extra[nc..]);
                    } else if i >= g.warm_up {
                        sa = extra[nc..].iter().map(Tensor::shallow_clone).collect();
                    }
                    out
                }
            } else {
                let x_in = self.scheduler.scale_model_input(&latents, i);
                let t = Tensor::full([b], self.timesteps[i], (Kind::Float, model.device));
                let extra = uncond.extra.as_ref();
                let emb = self.clock.time(&mut self.tm.time_embed_s, || model.time_embed(&t, extra))?;
                self.counts.add("time_embed", b as usize);
                if i % g.fi_interval == 0 {
                    let (out, extra) = self.clock.time(&mut self.tm.decoder_s, || {
                        model.tgate("tgate_ca_reuse", &x_in, &emb, &uncond.states, &ca)
                    })?;
                    self.counts.add("tgate_ca_reuse", b as usize);
                    sa = extra;
                    out
                } else {
                    let cached: Vec<Tensor> = ca.iter().chain(sa.iter()).map(Tensor::shallow_clone).collect();
                    let (out, _) = self.clock.time(&mut self.tm.decoder_s, || {
                        model.tgate("tgate_both_reuse", &x_in, &emb, &uncond.states, &cached)
                    })?;
                    self.counts.add("tgate_both_reuse", b as usize);
                    out
                }
            };
            latents = self.scheduler_step(pred, i, latents)?;
        }
        Ok(latents)
    }

    /// Guidance, prior noise injection and one scheduler step; checks the latents stay finite.
    fn scheduler_step(&mut self, pred: Tensor, i: usize, mut latents: Tensor) -> Result<Tensor> {
        // a learned-variance model (DeepFloyd-IF, DiT) stacks [noise, variance] on channels:
        // guidance applies to the noise part (or its first `guidance_channels`, as the original DiT
        // code), every other channel is the conditional branch's (as the IF / DiT references)
        let c = latents.size()[1];
        let learned = pred.size()[1] == 2 * c;
        // guided when the prediction has both CFG branches (T-GATE's steps after its gate do not)
        let eps = if self.branches == 2 && pred.size()[0] == 2 * self.b {
            let g = self.model.manifest.guidance_channels.unwrap_or(c).min(c);
            let parts = pred.chunk(2, 0);
            let (u, t) = (parts[0].narrow(1, 0, g), parts[1].narrow(1, 0, g));
            let guided = &u + (&t - &u) * self.opts.guidance;
            let rest = pred.size()[1] - g;
            if rest > 0 {
                Tensor::cat(&[guided, parts[1].narrow(1, g, rest)], 1)
            } else {
                guided
            }
        } else {
            pred
        };
        let eps = if learned && !self.scheduler.learned_variance() { eps.narrow(1, 0, c) } else { eps };
        let n_train = self.scheduler.num_train_timesteps() as f64;
        let inject = self.opts.injection.filter(|inj| self.timesteps[i] < inj.tau * n_train);
        let t0 = Instant::now();
        if let Some(inj) = inject.filter(|inj| inj.when == InjectWhen::Before) {
            latents = &latents + self.z_t * inj.strength;
        }
        let noise = if self.scheduler.needs_noise() {
            let name = self.scheduler.name();
            let f = self
                .step_noise
                .as_mut()
                .ok_or_else(|| Error::Sampling(format!("scheduler `{name}` needs step noise")))?;
            Some(f(i).to_device(self.model.device))
        } else {
            None
        };
        latents = self.scheduler.step(&eps, i, &latents, noise.as_ref())?;
        if let Some(inj) = inject.filter(|inj| inj.when == InjectWhen::After) {
            latents = &latents + self.z_t * inj.strength;
        }
        sync(self.model.device);
        self.tm.scheduler_s += t0.elapsed().as_secs_f64();
        if latents.isfinite().all().int64_value(&[]) == 0 {
            return Err(Error::NonFinite { step: i, timestep: self.timesteps[i], plan: self.plan.label() });
        }
        Ok(latents)
    }

    /// Where a decoder batch is formed: for steps `js` of one group, rows laid out
    /// [uncond x k, cond x k] (each block B rows), every row reading the key step's features of
    /// its branch (or, with `per_step`, its own step's forecast features) with its own step's
    /// time embedding. Returns one [branches*B, ...] prediction per step.
    fn decode_steps(
        &mut self,
        feats: &EncoderFeatures,
        js: &[usize],
        per_step: Option<&[EncoderFeatures]>,
    ) -> Result<Vec<Tensor>> {
        let (branches, b, k) = (self.branches, self.b, js.len() as i64);
        let mut index = Vec::with_capacity((branches * k * b) as usize);
        let mut ts = Vec::with_capacity(index.capacity());
        for br in 0..branches {
            for &j in js {
                for r in 0..b {
                    index.push(br * b + r);
                    ts.push(self.timesteps[j] as f32);
                }
            }
        }
        let model = self.model;
        let dev = model.device;
        let (f, c) = match per_step {
            Some(per) if k == 1 => (per[0].clone(), self.cond2.clone()),
            Some(per) => {
                let idx = Tensor::from_slice(&index).to_device(dev);
                let parts: Vec<EncoderFeatures> = (0..branches)
                    .flat_map(|br| {
                        let rows = Tensor::arange_start(br * b, (br + 1) * b, (Kind::Int64, dev));
                        per.iter().map(move |p| p.index_select(&rows))
                    })
                    .collect();
                (EncoderFeatures::cat(&parts), self.cond2.index_select(&idx))
            }
            None if k == 1 => (feats.clone(), self.cond2.clone()),
            None => {
                let idx = Tensor::from_slice(&index).to_device(dev);
                (feats.index_select(&idx), self.cond2.index_select(&idx))
            }
        };
        let t = Tensor::from_slice(&ts).to_device(dev);
        let emb = self.clock.time(&mut self.tm.time_embed_s, || model.time_embed(&t, c.extra.as_ref()))?;
        self.counts.add("time_embed", index.len());
        let out = self.clock.time(&mut self.tm.decoder_s, || model.decode(&f, &emb, &c.states))?;
        self.counts.add("decoder", index.len());
        // rows (branch, step jj) -> per step: [uncond B; cond B]
        let blocks = out.chunk(branches * k, 0);
        Ok((0..k as usize)
            .map(|jj| {
                let per_branch: Vec<&Tensor> = (0..branches as usize).map(|br| &blocks[br * k as usize + jj]).collect();
                Tensor::cat(&per_branch, 0)
            })
            .collect())
    }
}
