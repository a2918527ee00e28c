//! First-Block Cache (ParaAttention; diffusers' `FirstBlockCacheConfig`; `fbcache:T[:residual]`):
//! the first block's output (a UNet's conv_in; a DiT's first transformer block residual) is
//! compared with its value at the last computed step; the step computes when the relative L1
//! change exceeds T. The first step computes. Decided per sample over its CFG rows (diffusers'
//! hook decides once per call over the whole batch); the loop is [`super::step_cache`]'s.

use super::step_cache::{self, Rule};
use super::{Family, MethodInfo, PlanSpec};

pub static INFO: MethodInfo = MethodInfo {
    name: "fbcache",
    syntax: "fbcache:T[:residual]",
    source: file!(),
    help: "First-Block Cache: skip while the first block's output (a UNet's conv_in; a DiT's first transformer \
           block residual) changed by at most T since the last computed step, decided per sample (diffusers' hook \
           decides per batch); on a UNet, :residual reuses output - input",
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

step_cache::step_cache_method!(FbCache, Rule::FbCache, INFO);
