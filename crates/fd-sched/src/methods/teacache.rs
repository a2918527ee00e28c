//! TeaCache (Liu et al. 2024, ali-vilab/TeaCache; `teacache:T[:residual]`): the first block's
//! timestep-modulated input (graph `teacache_probe`, or a DiT's `stepcache_embed`); its relative
//! L1 change against the previous step, rescaled by the model's fitted polynomial (manifest
//! `teacache`), is accumulated; the step reuses the cache while the sum stays below T, else
//! computes and the sum restarts. The first and last steps always compute. Decided per sample
//! over its CFG rows; the loop is [`super::step_cache`]'s.

use super::step_cache::{self, Rule};
use super::{Family, MethodInfo, PlanSpec};

pub static INFO: MethodInfo = MethodInfo {
    name: "teacache",
    syntax: "teacache:T[:residual]",
    source: file!(),
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

step_cache::step_cache_method!(TeaCache, Rule::TeaCache, INFO);
