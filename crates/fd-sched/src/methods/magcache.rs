//! MagCache (Ma et al. 2025, Zehong-Ma/MagCache; diffusers' `MagCacheConfig`;
//! `magcache:T[:K[:R]]` with diffusers' names and defaults: `threshold` T, `max_skip_steps` K = 3,
//! `retention_ratio` R = 0.2) on a DiT. The model's magnitude ratios (manifest `magcache`,
//! calibrated by experiments/add/add_magcache.py) are multiplied over the steps since the last
//! computed one; while the accumulated error sum |1 - product| stays within T and at most K steps
//! were skipped in a row, a step reuses the last computed residual of the transformer blocks
//! (h0 + r) and runs the final layer at its own timestep; the first round(R x steps) steps always
//! compute. The schedule depends on the ratios only (diffusers' hook decides it from them too):
//! every sample computes the same steps, so per-sample and per-batch decisions agree. The loop is
//! [`super::step_cache`]'s.

use super::step_cache::{self, Indicator};
use super::{
    refuse, refuse_hooks, require_dit, CachingMethod, DitGraphs, Family, MethodInfo, MethodRecord, Observer, Plan,
    PlanSpec,
};
use crate::step::{CallCounts, StepCtx};
use crate::{Error, Result};
use fd_model::Denoiser;
use tch::Tensor;

pub static INFO: MethodInfo = MethodInfo {
    name: "magcache",
    syntax: "magcache:T[:K[:R]]",
    source: file!(),
    help: "MagCache (diffusers' MagCacheConfig): on a DiT, reuse the blocks' residual while the accumulated error of \
           the model's calibrated magnitude ratios stays within T, at most K steps in a row (default 3), never in the \
           first R of the steps (default 0.2)",
    families: &[Family { name: "magcache", rgb: (120, 90, 200) }],
    parse: |body| Ok(PlanSpec::MagCache(body.parse()?)),
    offered: |m| m.manifest.magcache.as_ref().map(|s| format!("magcache ({} calibrated ratios)", s.mag_ratios.len())),
    record: ("magcache", &["threshold", "max_skip_steps", "retention_ratio"]),
};

/// diffusers' `MagCacheConfig.max_skip_steps` default.
pub const DEFAULT_MAX_SKIP_STEPS: usize = 3;
/// diffusers' `MagCacheConfig.retention_ratio` default.
pub const DEFAULT_RETENTION_RATIO: f64 = 0.2;

/// A MagCache plan; a parameter left out (None) takes diffusers' default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MagCache {
    /// `threshold`: the accumulated ratio error a skipped run may reach.
    pub threshold: f64,
    /// `max_skip_steps`: most steps skipped in a row (K). Default 3.
    pub max_skip_steps: Option<usize>,
    /// `retention_ratio`: the leading fraction of the steps that always compute. Default 0.2.
    pub retention_ratio: Option<f64>,
}

impl std::str::FromStr for MagCache {
    type Err = Error;

    fn from_str(body: &str) -> Result<Self> {
        let expected =
            "expected magcache:T[:K[:R]] (T = threshold > 0, K = max_skip_steps >= 1, R = retention_ratio in [0, 1])";
        let parts: Vec<&str> = body.split(':').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(refuse("", expected));
        }
        let threshold: f64 = parts[0].parse().map_err(|_| refuse("", expected))?;
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(refuse("", format!("threshold {threshold}: must be finite and > 0")));
        }
        let max_skip_steps = match parts.get(1) {
            None => None,
            Some(k) => match k.parse::<usize>() {
                Ok(k) if k >= 1 => Some(k),
                _ => return Err(refuse("", format!("max_skip_steps `{k}`: must be an integer >= 1"))),
            },
        };
        let retention_ratio = match parts.get(2) {
            None => None,
            Some(r) => match r.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Some(r),
                _ => return Err(refuse("", format!("retention_ratio `{r}`: must be a number in [0, 1]"))),
            },
        };
        Ok(Self { threshold, max_skip_steps, retention_ratio })
    }
}

impl MagCache {
    fn k(&self) -> usize {
        self.max_skip_steps.unwrap_or(DEFAULT_MAX_SKIP_STEPS)
    }

    fn r(&self) -> f64 {
        self.retention_ratio.unwrap_or(DEFAULT_RETENTION_RATIO)
    }

    /// Which of `n` steps compute with the model's `ratios`, as diffusers' `MagCacheHeadHook`
    /// decides (its float32 tensor arithmetic; the ratios resampled to n steps as it does).
    pub fn schedule(&self, spec: &fd_model::MagCacheSpec, n: usize) -> Vec<bool> {
        let ratios = spec.ratios_for(n);
        let retention = (self.r() * n as f64 + 0.5) as usize;
        let threshold = self.threshold as f32;
        let (mut ratio, mut skipped, mut err) = (1.0f32, 0usize, 0.0f32);
        let mut have_residual = false;
        (0..n)
            .map(|i| {
                let mut compute = true;
                if i >= retention {
                    ratio *= ratios.get(i).copied().unwrap_or(1.0);
                    skipped += 1;
                    err += (1.0 - ratio).abs();
                    if have_residual && err <= threshold && skipped <= self.k() {
                        compute = false;
                    } else {
                        (ratio, skipped, err) = (1.0, 0, 0.0);
                    }
                }
                have_residual |= compute;
                compute
            })
            .collect()
    }

    /// The model's ratios, or an error naming the plan and what the model lacks.
    fn spec<'m>(&self, model: &'m Denoiser) -> Result<&'m fd_model::MagCacheSpec> {
        let (m, part) = (&model.manifest, self.to_string());
        let why = "MagCache skips a transformer's blocks (its paper and diffusers' hook define it on DiT-style models)";
        require_dit(model, &part, why, DitGraphs::StepCache)?;
        m.magcache.as_ref().ok_or_else(|| {
            refuse(
                &part,
                format!(
                    "model `{}` has no calibrated magnitude ratios: run `python experiments/add/add_magcache.py --model DIR`",
                    m.name
                ),
            )
        })
    }
}

impl CachingMethod for MagCache {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut std::fmt::Formatter<'_>, full: bool) -> std::fmt::Result {
        write!(f, "magcache:{}", self.threshold)?;
        let (k, r) = if full { (Some(self.k()), Some(self.r())) } else { (self.max_skip_steps, self.retention_ratio) };
        match (k, r) {
            (_, Some(r)) => write!(f, ":{}:{r}", k.unwrap_or(DEFAULT_MAX_SKIP_STEPS)),
            (Some(k), None) => write!(f, ":{k}"),
            (None, None) => Ok(()),
        }
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::params(
            INFO.record.0,
            &[
                ("threshold", self.threshold.into()),
                ("max_skip_steps", self.k().into()),
                ("retention_ratio", self.r().into()),
            ],
        )
    }

    fn is_dynamic(&self) -> bool {
        true
    }

    fn summary(&self, plan: &Plan, counts: &CallCounts, samples: usize, branches: usize) -> String {
        step_cache::summary(plan, counts, samples, branches)
    }

    fn check(&self, model: &Denoiser, _guidance: f64) -> Result<()> {
        self.spec(model).map(|_| ())
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "magcache", false)?;
        let schedule = self.schedule(self.spec(ctx.model)?, ctx.timesteps.len());
        step_cache::run_with(ctx, latents, Indicator::Schedule(schedule), self.threshold, true)
    }
}

impl std::fmt::Display for MagCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write(f, false)
    }
}
