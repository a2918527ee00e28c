//! Encoder propagation (Li et al., "Faster Diffusion"; the paper's method): the encoder runs at
//! the key steps only, and every step of a group decodes the key step's encoder features, so a
//! group's decoders can run as one batch (the paper's parallel decoding).
//!
//! Its plug-ins, in the manner of cache-dit's calibrators (update at a computed step, approximate
//! at a reused one):
//! - [`forecast`] (`+forecast:K`): a non-key step decodes features extrapolated in t through the
//!   last K+1 key steps' features;
//! - [`partial`] (`+partial:ID`): a non-key step recomputes DeepCache id ID's shallow encoder on its
//!   own latents and propagates only the deeper features;
//! - [`runtime`] (`runtime:K`): the key steps themselves are chosen while sampling.

use std::fmt;

use fd_model::{Denoiser, EncoderFeatures};
use tch::Tensor;

use super::Plan;
use super::{refuse, CachingMethod, Family, MethodInfo, MethodRecord, Observer, PlanSpec};
use crate::plan::KeySteps;
use crate::step::StepCtx;
use crate::step::StepFeatures;
use crate::{Error, Result};

pub mod forecast;
pub mod partial;
pub mod runtime;

pub(crate) use runtime::for_each_group;

pub static INFO: MethodInfo = MethodInfo {
    name: "keys",
    syntax: "KEYS[+forecast:K|+partial:ID|+taylorseer[:O]]",
    source: file!(),
    help: "encoder propagation, the paper's method: the encoder runs at the key steps KEYS only (none = \
           the baseline, uniform:K, a preset such as 50ls, a list 0,1,2,5, a plan file from fd drift \
           --save-plan, auto:K / auto:threshold=X calibrated on encoder drift, runtime:K chosen while \
           sampling); +forecast:K extrapolates the features through the last K+1 key steps, \
           +partial:ID recomputes DeepCache id ID's shallow encoder every step, +taylorseer[:O] (a DiT) skips \
           the whole block stack at non-key steps and forecasts its output by TaylorSeer's series of order O \
           (default 1) over the key steps",
    families: &[
        Family { name: "ours", rgb: (40, 90, 200) },
        Family { name: "baseline", rgb: (0, 0, 0) },
        Family { name: "auto", rgb: (20, 150, 80) },
        Family { name: "ours+taylorseer", rgb: (150, 60, 30) },
    ],
    parse: |body| Ok(PlanSpec::propagation(KeySteps::parse(body)?)),
    offered: |_| Some("encoder propagation".into()),
    record: ("encoder_propagation", &[]),
};

/// How a non-key step gets the encoder features it decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// The key step's features as they are (the paper).
    Copy,
    /// `+forecast:K`: extrapolated through the last K+1 key steps (K = 1 linear, 2 quadratic).
    Forecast { order: usize },
    /// `+partial:ID`: DeepCache id ID's shallow encoder recomputed on the step's own latents.
    Partial { id: usize },
    /// `+taylorseer[:O]` (a DiT): a non-key step runs no block at all; the blocks' output tokens
    /// are forecast by TaylorSeer's Taylor series of order O (None: its default 1) over the key
    /// steps, factors in bf16 as diffusers' default, and the final layer runs at the step's own
    /// timestep. TaylorSeer with the plan's key steps as its computed steps.
    TaylorSeer { order: Option<usize> },
}

/// An encoder-propagation plan: its key steps and how non-key steps reuse the key step's
/// features.
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    pub keys: KeySteps,
    pub reuse: Reuse,
}

impl Propagation {
    /// Apply the `+`-separated modifiers `mods` (`forecast:K`, `partial:ID`), each at most once
    /// and not both.
    pub(crate) fn with_modifiers(mut self, mods: &str) -> Result<Self> {
        let mut given: Option<String> = None;
        for m in mods.split('+') {
            let part = format!("+{m}");
            let (name, value) = m.split_once(':').unwrap_or((m, ""));
            let reuse = match name {
                "forecast" => {
                    let order: usize =
                        value.parse().map_err(|_| refuse(&part, format!("forecast order `{value}` is not 1 or 2")))?;
                    if !(1..=2).contains(&order) {
                        return Err(refuse(&part, format!("forecast order {order}: expected 1 (linear) or 2 (quadratic)")));
                    }
                    Reuse::Forecast { order }
                }
                "partial" => Reuse::Partial {
                    id: value.parse().map_err(|_| {
                        refuse(
                            &part,
                            format!("`{value}` is not a DeepCache cache_branch_id (the shallow encoder recomputed every step)"),
                        )
                    })?,
                },
                "taylorseer" => Reuse::TaylorSeer {
                    order: match value {
                        "" if !m.contains(':') => None,
                        v => Some(v.parse().map_err(|_| {
                            refuse(&part, format!("TaylorSeer order `{v}`: expected an integer >= 0 (max_order)"))
                        })?),
                    },
                },
                other => {
                    // a method of its own decides its steps itself: name it
                    let msg = match super::METHODS.iter().skip(1).find(|i| i.name == other) {
                        Some(info) => format!(
                            "{} decides its own steps and does not take a key-step set: run `{}` as a plan of its own \
                             (a key-step set combines with +forecast:K, +partial:ID or +taylorseer[:O])",
                            info.help.split(':').next().unwrap_or(info.name),
                            info.syntax
                        ),
                        None => "unknown plan modifier: expected +forecast:K, +partial:ID or +taylorseer[:O]".to_string(),
                    };
                    return Err(refuse(&part, msg));
                }
            };
            if let Some(prev) = &given {
                let msg = if prev.split(':').next() == part.split(':').next() {
                    format!("given twice (already {prev})")
                } else {
                    format!("does not combine with {prev} (a non-key step is forecast, partly recomputed or skipped: one of them)")
                };
                return Err(refuse(&part, msg));
            }
            given = Some(part);
            self.reuse = reuse;
        }
        Ok(self)
    }

    /// Decoder steps per call: one per step when sequential or observed, the whole group when
    /// parallel without a cap, else as many whole steps as fit the cap.
    fn chunk_steps(ctx: &StepCtx<'_, '_>, observed: bool) -> usize {
        let opts = ctx.opts;
        if !opts.decode.parallel || observed {
            1
        } else if opts.decode.max_decoder_batch == 0 {
            usize::MAX
        } else {
            (opts.decode.max_decoder_batch / ctx.rows_per_step()).max(1)
        }
    }
}

impl CachingMethod for Propagation {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, _full: bool) -> fmt::Result {
        write!(f, "{}", self.keys)?;
        match self.reuse {
            Reuse::Copy => Ok(()),
            Reuse::Forecast { order } => write!(f, "+forecast:{order}"),
            Reuse::Partial { id } => write!(f, "+partial:{id}"),
            Reuse::TaylorSeer { order: None } => write!(f, "+taylorseer"),
            Reuse::TaylorSeer { order: Some(o) } => write!(f, "+taylorseer:{o}"),
        }
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::Name("encoder_propagation".into())
    }

    fn keys(&self) -> Option<KeySteps> {
        Some(self.keys.clone())
    }

    fn family(&self) -> &'static str {
        match self.keys {
            _ if matches!(self.reuse, Reuse::TaylorSeer { .. }) => "ours+taylorseer",
            KeySteps::None => "baseline",
            KeySteps::Auto(_) => "auto",
            _ => "ours",
        }
    }

    fn check(&self, model: &Denoiser, _guidance: f64) -> Result<()> {
        if let Reuse::TaylorSeer { .. } = self.reuse {
            let part = PlanSpec::Propagation(self.clone()).to_string();
            if matches!(self.keys, KeySteps::Runtime(_)) {
                return Err(refuse(
                    &part,
                    "runtime key steps are chosen from the encoder's drift at every step, which +taylorseer does not run: use a key-step set or auto:K",
                ));
            }
            let why = "+taylorseer forecasts a DiT's block stack between key steps";
            super::require_dit(model, &part, why, super::DitGraphs::StepCache)?;
        }
        if let Reuse::Partial { id } = self.reuse {
            let part = format!("+partial:{id}");
            let m = &model.manifest;
            if m.kind != fd_model::ModelKind::Unet2d {
                return Err(refuse(
                    part,
                    format!(
                        "partial propagation recomputes a 2-D UNet's shallow encoder (DeepCache's cut); model `{}` is a {} model",
                        m.name, m.kind
                    ),
                ));
            }
            model.deepcache_key_for_id(id).map_err(|e| refuse(part, e.to_string()))?;
        }
        Ok(())
    }

    fn max_steps_per_call(&self, plan: &Plan) -> usize {
        match self.reuse {
            // partial propagation decodes one step at a time (each step's fresh skips need its latents);
            // +taylorseer decodes nothing at non-key steps
            Reuse::Partial { .. } | Reuse::TaylorSeer { .. } => 1,
            // runtime key steps: groups are decided while sampling (plan.groups is the whole run)
            _ => plan.groups.iter().map(|g| g.len()).max().unwrap_or(1),
        }
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        plan: &Plan,
        latents: Tensor,
        mut observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        if let Reuse::TaylorSeer { order } = self.reuse {
            super::refuse_hooks(ctx, observe.is_some(), "+taylorseer", false)?;
            let schedule: Vec<bool> = (0..plan.num_steps).map(|i| plan.key_steps.contains(&i)).collect();
            let order = order.unwrap_or(super::taylorseer::DEFAULT_ORDER);
            return super::taylorseer::run_schedule(ctx, latents, &schedule, order, super::taylorseer::DEFAULT_DTYPE);
        }
        let mut calibrator: Box<dyn Calibrator> = match self.reuse {
            Reuse::TaylorSeer { .. } => unreachable!("handled above"),
            Reuse::Copy => Box::new(forecast::Copy),
            Reuse::Forecast { order } => Box::new(forecast::Forecast::new(order)),
            Reuse::Partial { id } => {
                if observe.is_some() {
                    return Err(Error::Sampling("feature observation does not support +partial plans".into()));
                }
                Box::new(partial::Partial::new(ctx.model, id)?)
            }
        };
        let chunk_steps = Self::chunk_steps(ctx, observe.is_some());
        for_each_group(ctx, plan, latents, observe.is_some(), |ctx, key, group, mut latents| {
            // 1. the key step's encoder features (for_each_group ran the encoder on [uncond; cond])
            let s = group.start;
            let steps: Vec<usize> = group.collect();
            calibrator.update(ctx.timesteps[s], &key.feats);
            if calibrator.reads_latents() {
                // each step needs its own latents: the group's decoders run one step at a time
                for &i in &steps {
                    let pred = if i == s {
                        ctx.decode_one(&key.feats, s)?
                    } else {
                        calibrator.fresh_step(ctx, i, &latents, &key.feats)?
                    };
                    latents = ctx.scheduler_step(pred, i, latents)?;
                }
                return Ok(latents);
            }
            let timesteps = ctx.timesteps;
            let feats_at = |j: usize| -> EncoderFeatures {
                if j == s {
                    key.feats.clone()
                } else {
                    calibrator.approximate(timesteps[j], &key.feats)
                }
            };
            // 2. decoders of the group, in chunks of whole steps (one chunk per step when sequential)
            let mut preds: Vec<Tensor> = Vec::with_capacity(steps.len());
            for chunk in steps.chunks(chunk_steps.min(steps.len())) {
                if let Some(obs) = observe.as_mut() {
                    let i = chunk[0];
                    let emb = ctx.time_embed(i)?;
                    let f = feats_at(i);
                    let (model, cond2, rows) = (ctx.model, ctx.cond2, ctx.rows_per_step());
                    let (pred, ups) =
                        ctx.clock.time(&mut ctx.tm.decoder_s, || model.decode_analysis(&f, &emb, &cond2.states))?;
                    ctx.counts.add("decoder", rows);
                    obs(&StepFeatures {
                        step: i,
                        timestep: timesteps[i],
                        is_key: i == s,
                        encoder: &f,
                        encoder_layers: &key.layers,
                        decoder: &ups,
                    });
                    preds.push(pred);
                } else if calibrator.per_step() {
                    let per: Vec<EncoderFeatures> = chunk.iter().map(|&j| feats_at(j)).collect();
                    preds.extend(ctx.decode_steps(&key.feats, chunk, Some(&per))?);
                } else {
                    preds.extend(ctx.decode_steps(&key.feats, chunk, None)?);
                }
            }
            // 3. scheduler stepped sequentially through the group
            for (&i, pred) in steps.iter().zip(preds) {
                latents = ctx.scheduler_step(pred, i, latents)?;
            }
            Ok(latents)
        })
    }
}

/// A plug-in of encoder propagation that decides the features a non-key step decodes (cache-dit's
/// `CalibratorBase`: update at a computed step, approximate at a reused one).
pub(crate) trait Calibrator {
    /// A key step at timestep `t` computed `feats`.
    fn update(&mut self, t: f64, feats: &EncoderFeatures);

    /// The features a non-key step at timestep `t` decodes, from its key step's `feats`.
    fn approximate(&self, t: f64, feats: &EncoderFeatures) -> EncoderFeatures;

    /// Whether non-key steps decode their own [`Calibrator::approximate`] features (else the key
    /// step's, shared by the group's rows).
    fn per_step(&self) -> bool {
        false
    }

    /// Whether non-key steps compute from their own latents ([`Calibrator::fresh_step`]); their
    /// decoders then run one step at a time.
    fn reads_latents(&self) -> bool {
        false
    }

    /// The prediction of non-key step `i` computed from its own `latents` (only called when
    /// [`Calibrator::reads_latents`]).
    fn fresh_step(
        &mut self,
        _ctx: &mut StepCtx<'_, '_>,
        i: usize,
        _latents: &Tensor,
        _feats: &EncoderFeatures,
    ) -> Result<Tensor> {
        Err(Error::Sampling(format!("step {i}: this calibrator does not recompute steps (internal error)")))
    }
}
