//! First-Block Cache (ParaAttention; diffusers' `FirstBlockCacheConfig`; `fbcache:T[:residual]`):
//! the first block's output (a UNet's conv_in; a DiT's first transformer block residual) is
//! compared with its value at the last computed step; the step computes when the relative L1
//! change exceeds T. The first step computes. Decided per sample over its CFG rows (diffusers'
//! hook decides once per call over the whole batch); the loop is [`super::step_cache`]'s.

use std::fmt;

use fd_model::Denoiser;
use tch::Tensor;

use super::step_cache::{self, Rule};
use super::{CachingMethod, Family, MethodInfo, MethodRecord, Observer, Plan, PlanSpec};
use crate::step::StepCtx;
use crate::Result;

pub static INFO: MethodInfo = MethodInfo {
    name: "fbcache",
    syntax: "fbcache:T[:residual]",
    help: "First-Block Cache: skip while the first block's output changed by at most T since the last \
           computed step (on a UNet, :residual reuses output - input)",
    families: &[Family { name: "fbcache", rgb: (190, 60, 150) }],
    parse: |body| {
        let (threshold, residual) = step_cache::parse(body, "fbcache")?;
        Ok(PlanSpec::FbCache(FbCache { threshold, residual }))
    },
    offered: |m| (m.manifest.kind == fd_model::ModelKind::Dit && m.has_stepcache()).then(|| "fbcache".to_string()),
    record: ("step_cache", &["rule", "threshold", "residual"]),
};

/// A First-Block Cache plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FbCache {
    /// T: the relative L1 change of the first block's output that makes a step compute.
    pub threshold: f64,
    /// Reuse output - input (the UNet port) instead of the output.
    pub residual: bool,
}

impl CachingMethod for FbCache {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, _full: bool) -> fmt::Result {
        write!(f, "fbcache:{}{}", self.threshold, if self.residual { ":residual" } else { "" })
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::params(
            "step_cache",
            &[("rule", "fbcache".into()), ("threshold", self.threshold.into()), ("residual", self.residual.into())],
        )
    }

    fn is_dynamic(&self) -> bool {
        true
    }

    fn check(&self, model: &Denoiser, _guidance: f64) -> Result<()> {
        step_cache::indicator(model, Rule::FbCache, self.residual, &self.to_string()).map(|_| ())
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        step_cache::run(ctx, latents, observe, Rule::FbCache, self.threshold, self.residual, &self.to_string())
    }
}

impl fmt::Display for FbCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}
