//! TaylorSeer (Liu et al. 2025, "From Reusing to Forecasting"; diffusers'
//! `TaylorSeerCacheConfig`; `taylorseer:N[:B[:O[:DTYPE]]]` with diffusers' names and defaults:
//! `cache_interval` N, `disable_cache_before_step` B = 3, `max_order` O = 1,
//! `taylor_factors_dtype` bf16) on a DiT. The first B steps and then every N-th step (step i with
//! (i - B - 1) mod N = 0) run the transformer blocks; each computed step refreshes the Taylor
//! factors of the blocks' output tokens (order 0: the tokens; order j + 1: the divided
//! difference of order j against the previous computed step's, up to O; stored in DTYPE). The
//! other steps forecast the tokens as sum_j factor_j x d^j / j! (d = steps since the last
//! computed one) and run only the final layer, at their own timestep. This is diffusers' hook with
//! `cache_identifiers` = every transformer block (its default identifiers match no module of a
//! diffusers DiT): each block's output is forecast, so the last block's forecast is the output.
//! The schedule is fixed by N and B: every sample computes the same steps.

use tch::{Kind, Tensor};

use super::{
    refuse, refuse_hooks, require_dit, CachingMethod, DitGraphs, Family, MethodInfo, MethodRecord, Observer, Plan,
    PlanSpec,
};
use crate::step::{CallCounts, StepCtx};
use crate::{Error, Result};
use fd_model::Denoiser;

pub static INFO: MethodInfo = MethodInfo {
    name: "taylorseer",
    syntax: "taylorseer:N[:B[:O[:DTYPE]]]",
    source: file!(),
    help: "TaylorSeer (diffusers' TaylorSeerCacheConfig): on a DiT, run the blocks on the first B steps (default 3) \
           and every N-th step after, forecast their output tokens in between by a Taylor series of order O \
           (default 1) over the computed steps, factors stored in DTYPE (bf16, f16 or f32; default bf16)",
    families: &[Family { name: "taylorseer", rgb: (230, 120, 40) }],
    parse: |body| Ok(PlanSpec::TaylorSeer(body.parse()?)),
    offered: |m| (m.manifest.kind == fd_model::ModelKind::Dit && m.has_stepcache()).then(|| "taylorseer".to_string()),
    record: ("taylorseer", &["cache_interval", "disable_cache_before_step", "max_order", "taylor_factors_dtype"]),
};

/// diffusers' `TaylorSeerCacheConfig.disable_cache_before_step` default.
pub const DEFAULT_BEFORE: usize = 3;
/// diffusers' `TaylorSeerCacheConfig.max_order` default.
pub const DEFAULT_ORDER: usize = 1;
/// diffusers' `TaylorSeerCacheConfig.taylor_factors_dtype` default.
pub const DEFAULT_DTYPE: FactorDtype = FactorDtype::Bf16;

/// The dtype the Taylor factors are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorDtype {
    Bf16,
    F16,
    F32,
}

impl FactorDtype {
    fn name(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::Bf16 => Kind::BFloat16,
            Self::F16 => Kind::Half,
            Self::F32 => Kind::Float,
        }
    }
}

/// A TaylorSeer plan; a parameter left out (None) takes diffusers' default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaylorSeer {
    /// `cache_interval`: a computed step every N steps after the first B.
    pub cache_interval: usize,
    /// `disable_cache_before_step`: the leading steps that always compute. Default 3.
    pub before: Option<usize>,
    /// `max_order`: the Taylor series' highest order. Default 1.
    pub max_order: Option<usize>,
    /// `taylor_factors_dtype`. Default bf16.
    pub dtype: Option<FactorDtype>,
}

impl std::str::FromStr for TaylorSeer {
    type Err = Error;

    fn from_str(body: &str) -> Result<Self> {
        let expected = "expected taylorseer:N[:B[:O[:DTYPE]]] (N = cache_interval >= 1, B = disable_cache_before_step \
                        >= 1, O = max_order >= 0, DTYPE = bf16, f16 or f32)";
        let parts: Vec<&str> = body.split(':').collect();
        if parts.len() > 4 || parts.iter().any(|p| p.is_empty()) {
            return Err(refuse("", expected));
        }
        let int = |s: &str, name: &str, min: usize| match s.parse::<usize>() {
            Ok(v) if v >= min => Ok(v),
            _ => Err(refuse("", format!("{name} `{s}`: must be an integer >= {min}"))),
        };
        let cache_interval = int(parts[0], "cache_interval", 1)?;
        // at least one computed step before the first forecast
        let before = parts.get(1).map(|s| int(s, "disable_cache_before_step", 1)).transpose()?;
        let max_order = parts.get(2).map(|s| int(s, "max_order", 0)).transpose()?;
        let dtype = match parts.get(3).copied() {
            None => None,
            Some("bf16") => Some(FactorDtype::Bf16),
            Some("f16") => Some(FactorDtype::F16),
            Some("f32") => Some(FactorDtype::F32),
            Some(other) => {
                return Err(refuse("", format!("taylor_factors_dtype `{other}`: expected bf16, f16 or f32")))
            }
        };
        Ok(Self { cache_interval, before, max_order, dtype })
    }
}

impl TaylorSeer {
    fn b(&self) -> usize {
        self.before.unwrap_or(DEFAULT_BEFORE)
    }

    fn order(&self) -> usize {
        self.max_order.unwrap_or(DEFAULT_ORDER)
    }

    fn dtype(&self) -> FactorDtype {
        self.dtype.unwrap_or(DEFAULT_DTYPE)
    }

    /// Which of `n` steps run the blocks, as diffusers' `TaylorSeerCacheHook` decides.
    pub fn schedule(&self, n: usize) -> Vec<bool> {
        let (b, k) = (self.b() as i64, self.cache_interval as i64);
        (0..n as i64).map(|i| i < b || (i - b - 1).rem_euclid(k) == 0).collect()
    }

    fn check_model(&self, model: &Denoiser) -> Result<()> {
        let why = "fd runs TaylorSeer on a DiT's block stack (diffusers' hook targets transformer blocks)";
        require_dit(model, &self.to_string(), why, DitGraphs::StepCache)
    }
}

/// The Taylor factors of one tensor: order 0 first, stored in the plan's dtype.
struct Factors {
    factors: Vec<Tensor>,
    last: usize,
}

impl Factors {
    /// diffusers' `TaylorSeerState.update`: divided differences against the previous factors.
    fn update(prev: Option<Factors>, features: &Tensor, step: usize, order: usize, dtype: Kind) -> Factors {
        let mut new = vec![features.shallow_clone()];
        if let Some(p) = &prev {
            let delta = (step - p.last) as f64;
            for j in 0..order {
                let Some(pj) = p.factors.get(j) else { break };
                let next = (&new[j] - pj.to_kind(features.kind())) / delta;
                new.push(next);
            }
        }
        Factors { factors: new.into_iter().map(|f| f.to_kind(dtype)).collect(), last: step }
    }

    /// diffusers' `TaylorSeerState.predict` at `step`, in `kind`.
    fn predict(&self, step: usize, kind: Kind) -> Tensor {
        let d = (step - self.last) as f64;
        let mut out = self.factors[0].zeros_like().to_kind(kind);
        let mut fact = 1.0;
        for (j, f) in self.factors.iter().enumerate() {
            if j > 0 {
                fact *= j as f64;
            }
            out += f.to_kind(kind) * (d.powi(j as i32) / fact);
        }
        out
    }
}

impl CachingMethod for TaylorSeer {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut std::fmt::Formatter<'_>, full: bool) -> std::fmt::Result {
        write!(f, "taylorseer:{}", self.cache_interval)?;
        let given = |v: Option<usize>, d: usize| if full { Some(v.unwrap_or(d)) } else { v };
        let (b, o) = (given(self.before, DEFAULT_BEFORE), given(self.max_order, DEFAULT_ORDER));
        let t = if full { Some(self.dtype()) } else { self.dtype };
        // a later parameter prints the earlier ones (the grammar is positional)
        if let Some(t) = t {
            write!(f, ":{}:{}:{}", b.unwrap_or(DEFAULT_BEFORE), o.unwrap_or(DEFAULT_ORDER), t.name())
        } else if let Some(o) = o {
            write!(f, ":{}:{o}", b.unwrap_or(DEFAULT_BEFORE))
        } else if let Some(b) = b {
            write!(f, ":{b}")
        } else {
            Ok(())
        }
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::params(
            INFO.record.0,
            &[
                ("cache_interval", self.cache_interval.into()),
                ("disable_cache_before_step", self.b().into()),
                ("max_order", self.order().into()),
                ("taylor_factors_dtype", self.dtype().name().into()),
            ],
        )
    }

    fn is_dynamic(&self) -> bool {
        true
    }

    fn summary(&self, plan: &Plan, counts: &CallCounts, samples: usize, branches: usize) -> String {
        super::step_cache::summary(plan, counts, samples, branches)
    }

    fn check(&self, model: &Denoiser, _guidance: f64) -> Result<()> {
        self.check_model(model)
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "taylorseer", false)?;
        self.check_model(ctx.model)?;
        let schedule = self.schedule(ctx.timesteps.len());
        run_schedule(ctx, latents, &schedule, self.order(), self.dtype())
    }
}

/// TaylorSeer's loop on a DiT's step-cache graphs: the steps `schedule` marks run the blocks and
/// refresh the Taylor factors (up to `order`, stored in `dtype`) of their output tokens; the others
/// forecast them; every step runs the final layer. Also `KEYS+taylorseer` (the key steps compute).
pub(crate) fn run_schedule(
    ctx: &mut StepCtx<'_, '_>,
    mut latents: Tensor,
    schedule: &[bool],
    order: usize,
    dtype: FactorDtype,
) -> Result<Tensor> {
    let mut factors: Option<Factors> = None;
    for (i, &compute) in schedule.iter().enumerate() {
        let emb = ctx.time_embed(i)?;
        let states = ctx.cond2.states.shallow_clone();
        let tokens = match factors.take() {
            Some(f) if !compute => {
                let t = f.predict(i, Kind::Float);
                factors = Some(f);
                t
            }
            prev => {
                let x_in = ctx.model_input(&latents, i);
                let h0 = ctx.stepcache("stepcache_embed", &x_in, &emb, &states)?.swap_remove(0);
                let h1 = ctx.stepcache("stepcache_first", &h0, &emb, &states)?.swap_remove(0);
                let hl = ctx.stepcache("stepcache_rest", &h1, &emb, &states)?.swap_remove(0);
                factors = Some(Factors::update(prev, &hl, i, order, dtype.kind()));
                hl
            }
        };
        let pred = ctx.stepcache("stepcache_head", &tokens, &emb, &states)?.swap_remove(0);
        latents = ctx.scheduler_step(pred, i, latents)?;
    }
    Ok(latents)
}

impl std::fmt::Display for TaylorSeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write(f, false)
    }
}
