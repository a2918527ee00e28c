//! FasterCache (Lv et al. 2024, Vchitect/FasterCache; diffusers' `FasterCacheConfig`;
//! `fastercache:U[:A[:W]]` with diffusers' names and defaults: `unconditional_batch_skip_range`
//! U = 5, `spatial_attention_block_skip_range` A = 2, the attention weight W = 0.5 of its default
//! `attention_weight_callback`; the timestep ranges and frequency weights are diffusers' defaults)
//! on a DiT with classifier-free guidance.
//!
//! CFG cache: a step with its timestep inside (-1, 641), after the first, and not a multiple of U
//! runs the conditional rows only; the unconditional output is the conditional one plus the
//! frequency-domain difference (low and high frequencies of the 2-D FFT, split by a centred disc of
//! radius min(H, W) / 5) measured at the last full step, each part scaled at every such step by
//! 1.1 inside (99, 901) (low) and (-1, 301) (high). Attention cache: on those conditional-only
//! steps every block's self-attention, when the timestep lies inside (-1, 681) and the step is
//! not a multiple of A, is extrapolated from its last two conditional outputs,
//! o_(t-1) + (o_(t-1) - o_(t-2)) x W, instead of computed. Full steps compute everything. The
//! schedule depends on the step and its timestep only, and the FFT is per sample, so every sample
//! gets the same decisions and its own result. Runs on the PAB graphs (attention outputs captured
//! or given) between `stepcache_embed` and `stepcache_head`.

use tch::{Device, Kind, Tensor};

use super::{
    refuse, refuse_hooks, require_dit, CachingMethod, DitGraphs, Family, MethodInfo, MethodRecord, Observer, Plan,
    PlanSpec,
};
use crate::step::{CallCounts, StepCtx};
use crate::{Error, Result};
use fd_model::Denoiser;

pub static INFO: MethodInfo = MethodInfo {
    name: "fastercache",
    syntax: "fastercache:U[:A[:W]]",
    source: file!(),
    help: "FasterCache (diffusers' FasterCacheConfig): on a DiT with CFG, run only the conditional rows except every \
           U-th step, approximating the unconditional output from the last full step's frequency-domain difference, \
           and on those steps extrapolate every block's self-attention except every A-th step (default 2) with \
           weight W (default 0.5)",
    families: &[Family { name: "fastercache", rgb: (200, 170, 30) }],
    parse: |body| Ok(PlanSpec::FasterCache(body.parse()?)),
    offered: |m| m.has_pab().then(|| "fastercache".to_string()),
    record: (
        "fastercache",
        &["unconditional_batch_skip_range", "spatial_attention_block_skip_range", "attention_weight"],
    ),
};

/// diffusers' `spatial_attention_block_skip_range` default.
pub const DEFAULT_ATTENTION_SKIP: usize = 2;
/// The weight diffusers' default `attention_weight_callback` returns.
pub const DEFAULT_ATTENTION_WEIGHT: f64 = 0.5;
/// diffusers' `unconditional_batch_timestep_skip_range`.
pub const UNCOND_RANGE: (f64, f64) = (-1.0, 641.0);
/// diffusers' `spatial_attention_timestep_skip_range`.
pub const ATTENTION_RANGE: (f64, f64) = (-1.0, 681.0);
/// diffusers' `low_frequency_weight_update_timestep_range` and `alpha_low_frequency`.
pub const LOW_FREQUENCY: ((f64, f64), f64) = ((99.0, 901.0), 1.1);
/// diffusers' `high_frequency_weight_update_timestep_range` and `alpha_high_frequency`.
pub const HIGH_FREQUENCY: ((f64, f64), f64) = ((-1.0, 301.0), 1.1);

fn inside((lo, hi): (f64, f64), t: f64) -> bool {
    lo < t && t < hi
}

/// A FasterCache plan; a parameter left out (None) takes diffusers' default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FasterCache {
    /// `unconditional_batch_skip_range`: the unconditional rows run every U-th step.
    pub uncond_skip: usize,
    /// `spatial_attention_block_skip_range`: attention computes every A-th step. Default 2.
    pub attention_skip: Option<usize>,
    /// The attention extrapolation weight. Default 0.5.
    pub attention_weight: Option<f64>,
}

impl std::str::FromStr for FasterCache {
    type Err = Error;

    fn from_str(body: &str) -> Result<Self> {
        let expected = "expected fastercache:U[:A[:W]] (U = unconditional_batch_skip_range >= 2, A = \
                        spatial_attention_block_skip_range >= 2, W = attention weight in [0, 1])";
        let parts: Vec<&str> = body.split(':').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(refuse("", expected));
        }
        let range = |s: &str, name: &str| match s.parse::<usize>() {
            Ok(v) if v >= 2 => Ok(v),
            _ => Err(refuse("", format!("{name} `{s}`: must be an integer >= 2"))),
        };
        let uncond_skip = range(parts[0], "unconditional_batch_skip_range")?;
        let attention_skip = parts.get(1).map(|s| range(s, "spatial_attention_block_skip_range")).transpose()?;
        let attention_weight = match parts.get(2) {
            None => None,
            Some(w) => match w.parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Some(v),
                _ => return Err(refuse("", format!("attention weight `{w}`: must be a number in [0, 1]"))),
            },
        };
        Ok(Self { uncond_skip, attention_skip, attention_weight })
    }
}

impl FasterCache {
    fn a(&self) -> usize {
        self.attention_skip.unwrap_or(DEFAULT_ATTENTION_SKIP)
    }

    fn w(&self) -> f64 {
        self.attention_weight.unwrap_or(DEFAULT_ATTENTION_WEIGHT)
    }

    /// Per step: (the unconditional rows run, attention is computed), as diffusers'
    /// `FasterCacheDenoiserHook` and `FasterCacheBlockHook` decide.
    pub fn schedule(&self, timesteps: &[f64]) -> Vec<(bool, bool)> {
        timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let full = !(i > 0 && inside(UNCOND_RANGE, t) && i % self.uncond_skip != 0);
                // attention is extrapolated only on conditional-only calls (a full batch computes)
                let attend = full || !inside(ATTENTION_RANGE, t) || (i > 0 && i % self.a() == 0);
                (full, attend)
            })
            .collect()
    }

    fn check_model(&self, model: &Denoiser, guidance: f64) -> Result<()> {
        let why = "fd runs FasterCache on a DiT (its hooks cache a transformer's attention and CFG branch)";
        require_dit(model, &self.to_string(), why, DitGraphs::Pab)?;
        if guidance <= 1.0 {
            return Err(refuse(
                self.to_string(),
                "FasterCache's CFG cache approximates the unconditional branch: it needs classifier-free guidance (--cfg > 1)",
            ));
        }
        Ok(())
    }
}

/// The low- and high-frequency parts of `x`'s 2-D FFT (over H, W; shifted so the zero frequency is
/// centred), split by a centred disc of radius min(H, W) / 5: diffusers' `_split_low_high_freq`.
fn split_frequencies(x: &Tensor) -> (Tensor, Tensor) {
    let size = x.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let r = h.min(w) / 5;
    let opts = (Kind::Int64, Device::Cpu);
    let ys = Tensor::arange(h, opts).view([h, 1]);
    let xs = Tensor::arange(w, opts).view([1, w]);
    let d2 = (xs - w / 2).square() + (ys - h / 2).square();
    let low = d2.le(r * r).to_device(x.device());
    let f = x.fft_fft2(None::<&[i64]>, [-2, -1], "backward").fft_fftshift([-2i64, -1].as_slice());
    (&f * &low, &f * low.logical_not())
}

impl CachingMethod for FasterCache {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut std::fmt::Formatter<'_>, full: bool) -> std::fmt::Result {
        write!(f, "fastercache:{}", self.uncond_skip)?;
        let (a, w) = if full { (Some(self.a()), Some(self.w())) } else { (self.attention_skip, self.attention_weight) };
        match (a, w) {
            (_, Some(w)) => write!(f, ":{}:{w}", a.unwrap_or(DEFAULT_ATTENTION_SKIP)),
            (Some(a), None) => write!(f, ":{a}"),
            (None, None) => Ok(()),
        }
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::params(
            INFO.record.0,
            &[
                ("unconditional_batch_skip_range", self.uncond_skip.into()),
                ("spatial_attention_block_skip_range", self.a().into()),
                ("attention_weight", self.w().into()),
            ],
        )
    }

    fn is_dynamic(&self) -> bool {
        true
    }

    fn summary(&self, plan: &Plan, counts: &CallCounts, samples: usize, _branches: usize) -> String {
        // per sample: the final layer runs on 2 rows at a full step, 1 otherwise; the attention
        // graph on 2 rows at a full step, 1 at a conditional-only step that computes attention
        let per = samples.max(1) as f64;
        let full = counts.rows("stepcache_head") as f64 / per - plan.num_steps as f64;
        let cond_attn = counts.rows("pab_capture") as f64 / per - 2.0 * full;
        format!(
            "both CFG branches on {full:.0} of {} steps, the conditional one alone on the others; attention computed on {:.0}",
            plan.num_steps,
            full + cond_attn
        )
    }

    fn check(&self, model: &Denoiser, guidance: f64) -> Result<()> {
        self.check_model(model, guidance)
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        mut latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "fastercache", false)?;
        self.check_model(ctx.model, ctx.opts.guidance)?;
        if ctx.branches != 2 {
            return Err(refuse(self.to_string(), "FasterCache needs the CFG batch ([uncond; cond] rows)"));
        }
        let b = ctx.b;
        let schedule = self.schedule(ctx.timesteps);
        // the last two conditional attention outputs per block, and the frequency deltas
        let (mut older, mut newer): (Vec<Tensor>, Vec<Tensor>) = (vec![], vec![]);
        let mut deltas: Option<(Tensor, Tensor)> = None;
        for (i, &(full, attend)) in schedule.iter().enumerate() {
            let t = ctx.timesteps[i];
            let emb = ctx.time_embed(i)?;
            let states = ctx.cond2.states.shallow_clone();
            let cond_rows = |x: &Tensor| x.narrow(0, b, b);
            let pred = if full || deltas.is_none() {
                let x_in = ctx.model_input(&latents, i);
                let h0 = ctx.stepcache("stepcache_embed", &x_in, &emb, &states)?.swap_remove(0);
                let mut out = ctx.stepcache("pab_capture", &h0, &emb, &states)?;
                let attn: Vec<Tensor> = out.split_off(1).iter().map(cond_rows).collect();
                (older, newer) =
                    (if newer.is_empty() { attn.iter().map(Tensor::shallow_clone).collect() } else { newer }, attn);
                let pred = ctx.stepcache("stepcache_head", &out[0], &emb, &states)?.swap_remove(0);
                let parts = pred.to_kind(Kind::Float).chunk(2, 0);
                let (lu, hu) = split_frequencies(&parts[0]);
                let (lc, hc) = split_frequencies(&parts[1]);
                deltas = Some((lu - lc, hu - hc));
                pred
            } else {
                let x_c = ctx.scheduler.scale_model_input(&latents, i);
                let (emb_c, states_c) = (cond_rows(&emb), cond_rows(&states));
                let h0 = ctx.stepcache("stepcache_embed", &x_c, &emb_c, &states_c)?.swap_remove(0);
                let hl = if attend {
                    let mut out = ctx.stepcache("pab_capture", &h0, &emb_c, &states_c)?;
                    let attn = out.split_off(1);
                    (older, newer) = (newer, attn);
                    out.swap_remove(0)
                } else {
                    let approx: Vec<Tensor> = newer.iter().zip(&older).map(|(n, o)| n + (n - o) * self.w()).collect();
                    let hl = ctx.stepcache_with("pab_reuse", &h0, &emb_c, &states_c, &approx)?.swap_remove(0);
                    (older, newer) = (newer, approx);
                    hl
                };
                let pred_c = ctx.stepcache("stepcache_head", &hl, &emb_c, &states_c)?.swap_remove(0);
                let (low, high) = deltas.take().expect("a full step ran first");
                let weight = |(range, alpha): ((f64, f64), f64)| if inside(range, t) { alpha } else { 1.0 };
                let (low, high) = (low * weight(LOW_FREQUENCY), high * weight(HIGH_FREQUENCY));
                let (lc, hc) = split_frequencies(&pred_c.to_kind(Kind::Float));
                // diffusers' order: (delta_low + low) + (delta_high + high)
                let uncond = ((&low + lc) + (&high + hc)).fft_ifftshift([-2i64, -1].as_slice()).fft_ifft2(
                    None::<&[i64]>,
                    [-2, -1],
                    "backward",
                );
                deltas = Some((low, high));
                Tensor::cat(&[uncond.real().to_kind(pred_c.kind()), pred_c], 0)
            };
            latents = ctx.scheduler_step(pred, i, latents)?;
        }
        Ok(latents)
    }
}

impl std::fmt::Display for FasterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write(f, false)
    }
}
