//! TeaCache (Liu et al. 2024, ali-vilab/TeaCache; `teacache:T[:residual]`): the first block's
//! timestep-modulated input (graph `teacache_probe`, or a DiT's `stepcache_embed`); its relative
//! L1 change against the previous step, rescaled by the model's fitted polynomial (manifest
//! `teacache`), is accumulated; the step reuses the cache while the sum stays below T, else
//! computes and the sum restarts. The first and last steps always compute. Decided per sample
//! over its CFG rows; the loop is [`super::step_cache`]'s.

use std::fmt;

use fd_model::Denoiser;
use tch::Tensor;

use super::step_cache::{self, Rule};
use super::{CachingMethod, Family, MethodInfo, MethodRecord, Observer, Plan, PlanSpec};
use crate::step::StepCtx;
use crate::Result;

pub static INFO: MethodInfo = MethodInfo {
    name: "teacache",
    syntax: "teacache:T[:residual]",
    help: "TeaCache: skip while the accumulated, rescaled change of the first block's timestep-modulated \
           input stays below T (on a UNet, :residual reuses output - input)",
    families: &[Family { name: "teacache", rgb: (0, 160, 170) }],
    parse: |body| {
        let (threshold, residual) = step_cache::parse(body, "teacache")?;
        Ok(PlanSpec::TeaCache(TeaCache { threshold, residual }))
    },
    offered: |m| {
        m.manifest.teacache.as_ref().map(|t| {
            let r2 = t
                .fit
                .as_ref()
                .and_then(|f| f.get("r2"))
                .map_or("given by hand".to_string(), |v| format!("fit R^2 {v}"));
            format!("teacache (polynomial of degree {}, {r2})", t.coefficients.len().saturating_sub(1))
        })
    },
    record: ("step_cache", &["rule", "threshold", "residual"]),
};

/// A TeaCache plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TeaCache {
    /// T: the accumulated rescaled change that makes a step compute.
    pub threshold: f64,
    /// Reuse output - input (the UNet port) instead of the output.
    pub residual: bool,
}

impl CachingMethod for TeaCache {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, _full: bool) -> fmt::Result {
        write!(f, "teacache:{}{}", self.threshold, if self.residual { ":residual" } else { "" })
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::params(
            "step_cache",
            &[("rule", "teacache".into()), ("threshold", self.threshold.into()), ("residual", self.residual.into())],
        )
    }

    fn is_dynamic(&self) -> bool {
        true
    }

    fn check(&self, model: &Denoiser, _guidance: f64) -> Result<()> {
        step_cache::indicator(model, Rule::TeaCache, self.residual, &self.to_string()).map(|_| ())
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        step_cache::run(ctx, latents, observe, Rule::TeaCache, self.threshold, self.residual, &self.to_string())
    }
}

impl fmt::Display for TeaCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}
