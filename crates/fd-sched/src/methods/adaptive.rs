//! AdaptiveDiffusion (Ye et al. 2024, UniModal4Reasoning/AdaptiveDiffusion; `adaptive:T[:M]`): the
//! first 4 steps run the UNet; after step i >= 3 the next step reuses the last noise prediction
//! when the latent differences d_i = mean|x_i - x_{i-1}| are locally linear,
//! |(d_i + d_{i-2}) / 2 - d_{i-1}| <= T x d_{i-1}, unless the last M decisions were all skips.
//! Decided per sample (the official pipeline decides on the batch mean; equal at batch 1).

use std::fmt;

use tch::{Device, Kind, Tensor};

use super::{field, refuse, refuse_hooks, CachingMethod, Family, MethodInfo, MethodRecord, Observer, Plan, PlanSpec};
use crate::step::StepCtx;
use crate::Result;

/// The official default of M, the most skips in a row.
pub const DEFAULT_MAX_SKIP: usize = 4;

pub static INFO: MethodInfo = MethodInfo {
    name: "adaptive",
    syntax: "adaptive:T[:M]",
    source: file!(),
    help: "AdaptiveDiffusion: skip a step's UNet when the latent differences are locally linear within \
           T, at most M skips in a row; official 0.01:4",
    families: &[Family { name: "adaptive", rgb: (220, 140, 20) }],
    parse,
    offered: |m| (m.manifest.kind == fd_model::ModelKind::Unet2d).then(|| "adaptive".to_string()),
    record: ("adaptive", &["threshold", "max_skip"]),
};

/// An AdaptiveDiffusion plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    /// T: the local-linearity tolerance, relative to d_{i-1} (official 0.01).
    pub threshold: f64,
    /// M: the most skips in a row (None: not given, [`DEFAULT_MAX_SKIP`]).
    pub max_skip: Option<usize>,
}

impl Adaptive {
    fn max_skip(&self) -> usize {
        self.max_skip.unwrap_or(DEFAULT_MAX_SKIP)
    }
}

fn parse(body: &str) -> Result<PlanSpec> {
    let (t, m) = body.split_once(':').map_or((body, None), |(t, m)| (t, Some(m)));
    let threshold: f64 = field(t, "a threshold T > 0 (adaptive:T[:M], official 0.01)")?;
    let max_skip = m.map(|m| field::<usize>(m, "M, the most skips in a row >= 1 (official 4)")).transpose()?;
    if !(threshold.is_finite() && threshold > 0.0) || max_skip == Some(0) {
        return Err(refuse("", "threshold must be finite and > 0, M >= 1"));
    }
    Ok(PlanSpec::Adaptive(Adaptive { threshold, max_skip }))
}

impl CachingMethod for Adaptive {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, full: bool) -> fmt::Result {
        match self.max_skip {
            Some(m) => write!(f, "adaptive:{}:{m}", self.threshold),
            None if full => write!(f, "adaptive:{}:{}", self.threshold, self.max_skip()),
            None => write!(f, "adaptive:{}", self.threshold),
        }
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::params("adaptive", &[("threshold", self.threshold.into()), ("max_skip", self.max_skip().into())])
    }

    fn is_dynamic(&self) -> bool {
        true
    }

    /// Per sample, the UNet runs at steps 0-3 and whenever the last decision says so; otherwise
    /// the sample's last prediction (both CFG rows) is reused. Only the rows that run are batched
    /// into the UNet call (and counted). Latent differences are float32 means over a sample's
    /// elements, compared in float32, as the official pipeline computes them.
    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        mut latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "adaptive", false)?;
        let (threshold, max_skip) = (self.threshold as f32, self.max_skip());
        let (b, branches) = (ctx.b as usize, ctx.branches);
        let model = ctx.model;
        // per sample: latent differences d_i and run (true) / reuse decisions for the next step
        let mut diffs: Vec<Vec<f32>> = vec![Vec::new(); b];
        let mut runs: Vec<Vec<bool>> = vec![Vec::new(); b];
        let mut prev: Vec<Tensor> = Vec::new(); // latents after the last two steps
        let mut pred: Option<Tensor> = None;
        let row_diff = |a: &Tensor, c: &Tensor| -> Result<Vec<f32>> {
            let d = (a - c).abs().flatten(1, -1).mean_dim(1, false, Kind::Float).to_device(Device::Cpu);
            Ok(Vec::<f32>::try_from(&d)?)
        };
        for i in 0..ctx.timesteps.len() {
            if (2..=3).contains(&i) {
                for (r, d) in row_diff(&prev[prev.len() - 1], &prev[prev.len() - 2])?.into_iter().enumerate() {
                    diffs[r].push(d);
                }
            }
            let run: Vec<i64> =
                (0..b).filter(|&r| i <= 3 || runs[r].last().copied().unwrap_or(true)).map(|r| r as i64).collect();
            if !run.is_empty() {
                // the running samples' rows of the [uncond B; cond B] batch
                let bb = ctx.b;
                let rows: Vec<i64> = (0..branches).flat_map(|br| run.iter().map(move |&r| br * bb + r)).collect();
                let idx = Tensor::from_slice(&rows).to_device(model.device);
                let x_in = ctx.model_input(&latents, i).index_select(0, &idx);
                let c = ctx.cond2.index_select(&idx);
                let t = Tensor::full([rows.len() as i64], ctx.timesteps[i], (Kind::Float, model.device));
                let emb = ctx.clock.time(&mut ctx.tm.time_embed_s, || model.time_embed(&t, c.extra.as_ref()))?;
                ctx.counts.add("time_embed", rows.len());
                let out = ctx.unet(&x_in, &emb, &c)?;
                pred = Some(match pred {
                    Some(p) if rows.len() < p.size()[0] as usize => p.index_copy(0, &idx, &out),
                    _ => out,
                });
            }
            let p = pred.as_ref().expect("step 0 runs every sample").shallow_clone();
            latents = ctx.scheduler_step(p, i, latents)?;
            if i >= 3 {
                let cur = row_diff(&latents, &prev[prev.len() - 1])?;
                for r in 0..b {
                    let (d, m) = (&mut diffs[r], &mut runs[r]);
                    let (prev_d, prev_prev_d) = (d[d.len() - 1], d[d.len() - 2]);
                    d.push(cur[r]);
                    let forced = m.len() > 4 && !m[m.len().saturating_sub(max_skip)..].iter().any(|&x| x);
                    let smooth = ((cur[r] + prev_prev_d) / 2.0 - prev_d).abs() <= prev_d * threshold;
                    m.push(forced || !smooth);
                }
            }
            prev.push(latents.shallow_clone());
            if prev.len() > 2 {
                drop(prev.remove(0));
            }
        }
        Ok(latents)
    }
}
