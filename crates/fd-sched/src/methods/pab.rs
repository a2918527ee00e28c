//! Pyramid Attention Broadcast (Zhao et al. 2024, PAB; diffusers'
//! `PyramidAttentionBroadcastConfig`; `pab:N[:LO:HI]` with diffusers' names:
//! `spatial_attention_block_skip_range` N, `spatial_attention_timestep_skip_range` (LO, HI),
//! default (100, 800)) on a DiT. Every block's self-attention computes on the first step, on steps
//! whose timestep lies outside the open range (LO, HI) and on every N-th step; the other steps
//! reuse (broadcast) each block's last attention output, while the rest of each block (adaLN,
//! gates, feed-forward) runs. The schedule depends on the step and its timestep only: every layer
//! and every sample computes on the same steps. Graphs `pab_capture` / `pab_reuse` (`pab.pt`) run
//! the blocks from `stepcache_embed`'s h0; `stepcache_head` the final layer.

use tch::Tensor;

use super::{
    refuse, refuse_hooks, require_dit, CachingMethod, DitGraphs, Family, MethodInfo, MethodRecord, Observer, Plan,
    PlanSpec,
};
use crate::step::{CallCounts, StepCtx};
use crate::{Error, Result};
use fd_model::Denoiser;

pub static INFO: MethodInfo = MethodInfo {
    name: "pab",
    syntax: "pab:N[:LO:HI]",
    source: file!(),
    help: "Pyramid Attention Broadcast (diffusers' PyramidAttentionBroadcastConfig): on a DiT, compute every block's \
           self-attention every N-th step and reuse it in between, while the timestep lies inside (LO, HI) \
           (default 100, 800)",
    families: &[Family { name: "pab", rgb: (90, 150, 60) }],
    parse: |body| Ok(PlanSpec::Pab(body.parse()?)),
    offered: |m| m.has_pab().then(|| "pab".to_string()),
    record: ("pab", &["spatial_attention_block_skip_range", "spatial_attention_timestep_skip_range"]),
};

/// diffusers' `PyramidAttentionBroadcastConfig.spatial_attention_timestep_skip_range` default.
pub const DEFAULT_RANGE: (f64, f64) = (100.0, 800.0);

/// A PAB plan (spatial self-attention: a DiT has neither temporal nor cross-attention).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pab {
    /// `spatial_attention_block_skip_range`: attention computes every N-th step.
    pub skip_range: usize,
    /// `spatial_attention_timestep_skip_range`: (LO, HI), open; None: diffusers' (100, 800).
    pub timestep_range: Option<(f64, f64)>,
}

impl std::str::FromStr for Pab {
    type Err = Error;

    fn from_str(body: &str) -> Result<Self> {
        let expected = "expected pab:N[:LO:HI] (N = spatial_attention_block_skip_range >= 2, LO < HI timesteps)";
        let parts: Vec<&str> = body.split(':').collect();
        if !(parts.len() == 1 || parts.len() == 3) {
            return Err(refuse("", expected));
        }
        let skip_range = match parts[0].parse::<usize>() {
            Ok(n) if n >= 2 => n,
            _ => {
                return Err(refuse(
                    "",
                    format!("spatial_attention_block_skip_range `{}`: must be an integer >= 2", parts[0]),
                ))
            }
        };
        let timestep_range = if parts.len() == 3 {
            let num = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
            match (num(parts[1]), num(parts[2])) {
                (Some(lo), Some(hi)) if lo < hi => Some((lo, hi)),
                _ => {
                    return Err(refuse(
                        "",
                        format!(
                            "spatial_attention_timestep_skip_range `{}:{}`: expected two timesteps LO < HI",
                            parts[1], parts[2]
                        ),
                    ))
                }
            }
        } else {
            None
        };
        Ok(Self { skip_range, timestep_range })
    }
}

impl Pab {
    fn range(&self) -> (f64, f64) {
        self.timestep_range.unwrap_or(DEFAULT_RANGE)
    }

    /// Which steps compute attention, as diffusers' `PyramidAttentionBroadcastHook` decides: the
    /// first, those outside LO < t < HI, and every N-th.
    pub fn schedule(&self, timesteps: &[f64]) -> Vec<bool> {
        let (lo, hi) = self.range();
        timesteps.iter().enumerate().map(|(i, &t)| i == 0 || !(lo < t && t < hi) || i % self.skip_range == 0).collect()
    }

    fn check_model(&self, model: &Denoiser) -> Result<()> {
        let why = "fd runs PAB on a DiT's self-attention (its hook broadcasts a transformer's attention layers)";
        require_dit(model, &self.to_string(), why, DitGraphs::Pab)
    }
}

impl CachingMethod for Pab {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut std::fmt::Formatter<'_>, full: bool) -> std::fmt::Result {
        write!(f, "pab:{}", self.skip_range)?;
        match (self.timestep_range, full) {
            (Some((lo, hi)), _) => write!(f, ":{lo}:{hi}"),
            (None, true) => write!(f, ":{}:{}", DEFAULT_RANGE.0, DEFAULT_RANGE.1),
            (None, false) => Ok(()),
        }
    }

    fn record(&self) -> MethodRecord {
        let (lo, hi) = self.range();
        MethodRecord::params(
            INFO.record.0,
            &[
                ("spatial_attention_block_skip_range", self.skip_range.into()),
                ("spatial_attention_timestep_skip_range", serde_json::json!([lo, hi])),
            ],
        )
    }

    fn is_dynamic(&self) -> bool {
        true
    }

    fn summary(&self, plan: &Plan, counts: &CallCounts, samples: usize, branches: usize) -> String {
        let per = (samples.max(1) * branches) as f64;
        format!(
            "attention computed on {:.1} of {} steps per sample",
            counts.rows("pab_capture") as f64 / per,
            plan.num_steps
        )
    }

    fn check(&self, model: &Denoiser, _guidance: f64) -> Result<()> {
        self.check_model(model)
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        mut latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "pab", false)?;
        self.check_model(ctx.model)?;
        let schedule = self.schedule(ctx.timesteps);
        let mut cache: Vec<Tensor> = vec![];
        for (i, &compute) in schedule.iter().enumerate() {
            let x_in = ctx.model_input(&latents, i);
            let emb = ctx.time_embed(i)?;
            let states = ctx.cond2.states.shallow_clone();
            let h0 = ctx.stepcache("stepcache_embed", &x_in, &emb, &states)?.swap_remove(0);
            let hl = if compute || cache.is_empty() {
                let mut out = ctx.stepcache("pab_capture", &h0, &emb, &states)?;
                cache = out.split_off(1);
                out.swap_remove(0)
            } else {
                ctx.stepcache_with("pab_reuse", &h0, &emb, &states, &cache)?.swap_remove(0)
            };
            let pred = ctx.stepcache("stepcache_head", &hl, &emb, &states)?.swap_remove(0);
            latents = ctx.scheduler_step(pred, i, latents)?;
        }
        Ok(latents)
    }
}

impl std::fmt::Display for Pab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write(f, false)
    }
}
