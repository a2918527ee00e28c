//! The loop TeaCache, First-Block Cache and MagCache share ([`super::teacache`],
//! [`super::fbcache`], [`super::magcache`]): every step a cheap indicator runs on all rows; per
//! sample, over its CFG rows, its relative L1 change mean|a - b| / mean|b| decides whether the
//! sample's rows compute (only those are batched and counted) or reuse the cache. MagCache
//! measures nothing while sampling: its schedule comes from the model's calibrated ratios and is
//! the same for every sample.
//!
//! Each step is front -> body -> head. On a UNet the front is the indicator graph (TeaCache:
//! `teacache_probe`; FBCache: conv_in through the cheapest DeepCache shallow encoder) with
//! state = the UNet input, the body the whole UNet, no head; the cache is the last computed
//! output (with `residual`: output - input, added to the input). On a DiT the front is the patch
//! embedding (TeaCache's state h0; FBCache runs the first block too, state h1), the body the
//! blocks after the state, the head the final layer on every row; the cache is always the body's
//! token residual.

use fd_model::Denoiser;
use tch::{Device, Kind, Tensor};

use super::{refuse, refuse_hooks, Observer};
use crate::step::StepCtx;
use crate::{Error, Result};

/// The indicator and decision rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    TeaCache,
    FbCache,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::TeaCache => "teacache",
            Rule::FbCache => "fbcache",
        }
    }
}

/// What a step-cache plan measures every step, and where its cache sits.
pub(crate) enum Indicator {
    /// A UNet's TeaCache: the `teacache_probe` graph, rescaled by the model's polynomial.
    Probe(fd_model::TeaCacheSpec),
    /// A UNet's FBCache: conv_in's output through this DeepCache key's shallow encoder.
    FirstBlock(String),
    /// A DiT (the official DiT form of both methods): the token stream through the step-cache
    /// graphs; TeaCache (with its polynomial) reads the first block's modulated input, FBCache
    /// the first block's residual; a reused step adds the cached token residual of the skipped
    /// blocks and runs the final layer at its own timestep.
    Tokens(Option<fd_model::TeaCacheSpec>),
    /// A DiT's MagCache: which steps compute, decided before sampling from the model's magnitude
    /// ratios; the cache is the residual of all blocks (from h0), as TeaCache's.
    Schedule(Vec<bool>),
}

/// The indicator `rule` reads on `model`, or an error naming the plan part `part` and what the
/// model lacks (a 2-D UNet or a DiT, the probe graph and polynomial, a DeepCache shallow encoder,
/// equal in and out channels for the residual form).
pub(crate) fn indicator(model: &Denoiser, rule: Rule, residual: bool, part: &str) -> Result<Indicator> {
    let m = &model.manifest;
    let name = rule.name();
    let no_poly = || {
        refuse(
            part,
            format!(
                "model `{}` has no TeaCache probe graph and polynomial: add them with `python experiments/add/add_teacache.py --model DIR`",
                m.name
            ),
        )
    };
    match m.kind {
        fd_model::ModelKind::Unet2d => {}
        fd_model::ModelKind::Dit => {
            if residual {
                return Err(refuse(
                    part,
                    format!("on a DiT, {name} always reuses the token residual of the blocks it skips (the method's DiT form); drop `:residual`"),
                ));
            }
            if !model.has_stepcache() {
                return Err(refuse(
                    part,
                    format!(
                        "DiT `{}` has no TeaCache / FBCache graphs (stepcache.pt): export it again with experiments/export/export_dit.py",
                        m.name
                    ),
                ));
            }
            return Ok(Indicator::Tokens(match rule {
                Rule::TeaCache => Some(m.teacache.clone().ok_or_else(no_poly)?),
                Rule::FbCache => None,
            }));
        }
        _ => {
            return Err(refuse(
                part,
                format!(
                    "{name} plans read the first block of a 2-D UNet or a DiT; model `{}` is a {} model (use an encoder-propagation plan)",
                    m.name, m.kind
                ),
            ))
        }
    }
    if residual && m.out_channels != m.in_channels {
        return Err(refuse(
            part,
            format!(
                "{name}:T:residual reuses output - input, but model `{}` outputs {} channels for {} input channels; drop `:residual`",
                m.name, m.out_channels, m.in_channels
            ),
        ));
    }
    Ok(match rule {
        Rule::TeaCache => Indicator::Probe(m.teacache.clone().ok_or_else(no_poly)?),
        Rule::FbCache => Indicator::FirstBlock(model.first_block_key().map_err(|e| refuse(part, e.to_string()))?),
    })
}

/// The step loop of a TeaCache / FBCache plan with threshold `threshold` (see the module docs).
pub(crate) fn run(
    ctx: &mut StepCtx<'_, '_>,
    latents: Tensor,
    observe: Option<Observer<'_>>,
    rule: Rule,
    threshold: f64,
    residual: bool,
    part: &str,
) -> Result<Tensor> {
    refuse_hooks(ctx, observe.is_some(), rule.name(), false)?;
    let indicator = indicator(ctx.model, rule, residual, part)?;
    run_with(ctx, latents, indicator, threshold, residual)
}

/// The step loop over a resolved indicator (a MagCache plan passes its schedule).
pub(crate) fn run_with(
    ctx: &mut StepCtx<'_, '_>,
    mut latents: Tensor,
    indicator: Indicator,
    threshold: f64,
    residual: bool,
) -> Result<Tensor> {
    let (b, bb, branches) = (ctx.b as usize, ctx.b, ctx.branches);
    let model = ctx.model;
    let n = ctx.timesteps.len();
    let rows_all = (branches * bb) as usize;
    let (tea, tokens) = match &indicator {
        Indicator::Probe(spec) => (Some(spec.clone()), false),
        Indicator::FirstBlock(_) => (None, false),
        Indicator::Tokens(spec) => (spec.clone(), true),
        Indicator::Schedule(_) => (None, true),
    };
    let schedule = match &indicator {
        Indicator::Schedule(s) => Some(s.as_slice()),
        _ => None,
    };
    // a DiT body that starts at h0 (TeaCache, MagCache) runs the first block too
    let from_h0 = tokens && !matches!(indicator, Indicator::Tokens(None));
    let residual = residual || tokens;
    // per sample: mean over its rows of row means, |a - b| over |b| (float32, as torch's means)
    let rel = |a: &Tensor, r: &Tensor| -> Result<Vec<f64>> {
        let per = |t: Tensor| {
            t.abs().flatten(1, -1).mean_dim(1, false, Kind::Float).view([branches, bb]).mean_dim(0, false, Kind::Float)
        };
        let d = (per(a - r) / per(r.shallow_clone())).to_device(Device::Cpu);
        Ok(Vec::<f32>::try_from(&d)?.into_iter().map(f64::from).collect())
    };
    let mut acc = vec![0.0f64; b];
    // TeaCache: the previous step's indicator; FBCache: each sample's at its last computed step
    let mut reference: Option<Tensor> = None;
    let mut cache: Option<Tensor> = None;
    for i in 0..n {
        let x_in = ctx.model_input(&latents, i);
        let emb = ctx.time_embed(i)?;
        let cond2 = ctx.cond2;
        let states = &cond2.states;
        // front: the indicator and the state the body starts from
        let (ind, state) = front(ctx, &indicator, &x_in, &emb)?;
        let compute: Vec<bool> = match (schedule, &reference, &tea) {
            (Some(s), _, _) => vec![s[i]; b],
            (None, None, _) => vec![true; b],
            (None, Some(_), Some(_)) if i == n - 1 => {
                acc.iter_mut().for_each(|a| *a = 0.0);
                vec![true; b]
            }
            (None, Some(r), Some(spec)) => rel(&ind, r)?
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
            (None, Some(r), None) => rel(&ind, r)?.into_iter().map(|d| d > threshold).collect(),
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
                (state.shallow_clone(), emb.shallow_clone(), cond2.clone())
            } else {
                (state.index_select(0, &idx), emb.index_select(0, &idx), cond2.index_select(&idx))
            };
            let out = if tokens {
                let h = if from_h0 {
                    ctx.stepcache("stepcache_first", &s_sel, &e_sel, &c_sel.states)?.swap_remove(0)
                } else {
                    s_sel.shallow_clone()
                };
                ctx.stepcache("stepcache_rest", &h, &e_sel, &c_sel.states)?.swap_remove(0)
            } else {
                ctx.unet(&s_sel, &e_sel, &c_sel)?
            };
            let new = if residual { &out - &s_sel } else { out.shallow_clone() };
            cache = Some(match cache {
                Some(c) if !all => c.index_copy(0, &idx, &new),
                _ => new,
            });
            body = if all { out } else { body.index_copy(0, &idx, &out) };
        }
        let pred = if tokens { ctx.stepcache("stepcache_head", &body, &emb, states)?.swap_remove(0) } else { body };
        latents = ctx.scheduler_step(pred, i, latents)?;
    }
    Ok(latents)
}

/// A step's front on every row: the indicator and the state the body starts from (a UNet: its
/// input; a DiT: h0, or h1 after the first block for FBCache).
fn front(ctx: &mut StepCtx<'_, '_>, indicator: &Indicator, x_in: &Tensor, emb: &Tensor) -> Result<(Tensor, Tensor)> {
    let (model, states, rows_all) = (ctx.model, &ctx.cond2.states, ctx.rows_per_step());
    Ok(match indicator {
        Indicator::Probe(_) => {
            let ind = ctx.clock.time(&mut ctx.tm.encoder_s, || model.teacache_probe(x_in, emb))?;
            ctx.counts.add("teacache_probe", rows_all);
            (ind, x_in.shallow_clone())
        }
        Indicator::FirstBlock(key) => {
            let ind = ctx.clock.time(&mut ctx.tm.encoder_s, || model.first_block(key, x_in, emb, states))?;
            ctx.counts.add(&fd_model::manifest::deepcache_graph(key, "shallow_encoder"), rows_all);
            (ind, x_in.shallow_clone())
        }
        Indicator::Schedule(_) => {
            let h0 = ctx.stepcache("stepcache_embed", x_in, emb, states)?.swap_remove(0);
            (h0.shallow_clone(), h0)
        }
        Indicator::Tokens(spec) => {
            let mut v = ctx.stepcache("stepcache_embed", x_in, emb, states)?;
            let (h0, modulated) = (v.swap_remove(0), v.pop().expect("embed returns two tensors"));
            if spec.is_some() {
                (modulated, h0)
            } else {
                let h1 = ctx.stepcache("stepcache_first", &h0, emb, states)?.swap_remove(0);
                (&h1 - &h0, h1)
            }
        }
    })
}

/// What ran: the body's computed steps per sample (a UNet's `encoder` rows, a DiT's
/// `stepcache_rest` rows) of the plan's steps.
pub(crate) fn summary(plan: &super::Plan, counts: &crate::step::CallCounts, samples: usize, branches: usize) -> String {
    let rows = counts.rows("encoder") + counts.rows("stepcache_rest");
    let per = samples.max(1) * branches;
    format!("{:.1} UNet steps per sample of {}", rows as f64 / per as f64, plan.num_steps)
}

/// Parse `T[:residual]` of `name:T[:residual]`.
pub(crate) fn parse(body: &str, name: &str) -> Result<(f64, bool)> {
    let (t, residual) = match body.split_once(':') {
        None => (body, false),
        Some((t, "residual")) => (t, true),
        Some((_, other)) => return Err(refuse("", format!("`{other}`: expected {name}:T or {name}:T:residual"))),
    };
    let threshold: f64 = t.parse().map_err(|_| Error::KeySteps {
        spec: String::new(),
        msg: format!("expected {name}:T[:residual] with T = threshold > 0"),
    })?;
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(refuse("", "threshold must be finite and > 0"));
    }
    Ok((threshold, residual))
}

/// The [`CachingMethod`] of a step-cache plan type `$ty { threshold, residual }` with table row
/// `$info` and rule `$rule`: TeaCache and FBCache differ in nothing else.
macro_rules! step_cache_method {
    ($ty:ident, $rule:expr, $info:expr) => {
        impl $crate::methods::CachingMethod for $ty {
            fn info(&self) -> &'static $crate::methods::MethodInfo {
                &$info
            }

            fn write(&self, f: &mut std::fmt::Formatter<'_>, _full: bool) -> std::fmt::Result {
                let residual = if self.residual { ":residual" } else { "" };
                write!(f, "{}:{}{residual}", $rule.name(), self.threshold)
            }

            fn record(&self) -> $crate::methods::MethodRecord {
                $crate::methods::MethodRecord::params(
                    $info.record.0,
                    &[
                        ("rule", $rule.name().into()),
                        ("threshold", self.threshold.into()),
                        ("residual", self.residual.into()),
                    ],
                )
            }

            fn is_dynamic(&self) -> bool {
                true
            }

            fn summary(
                &self,
                plan: &$crate::methods::Plan,
                counts: &$crate::step::CallCounts,
                samples: usize,
                branches: usize,
            ) -> String {
                $crate::methods::step_cache::summary(plan, counts, samples, branches)
            }

            fn check(&self, model: &fd_model::Denoiser, _guidance: f64) -> $crate::Result<()> {
                $crate::methods::step_cache::indicator(model, $rule, self.residual, &self.to_string()).map(|_| ())
            }

            fn run(
                &self,
                ctx: &mut $crate::step::StepCtx<'_, '_>,
                _plan: &$crate::methods::Plan,
                latents: tch::Tensor,
                observe: Option<$crate::methods::Observer<'_>>,
            ) -> $crate::Result<tch::Tensor> {
                let part = self.to_string();
                $crate::methods::step_cache::run(ctx, latents, observe, $rule, self.threshold, self.residual, &part)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                $crate::methods::CachingMethod::write(self, f, false)
            }
        }
    };
}
pub(crate) use step_cache_method;
