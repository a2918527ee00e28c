//! DeepCache (Ma et al. 2023) as its authors' helper defines it (`DeepCacheSDHelper`,
//! `cache_branch_id` = 3 x block + layer; `deepcache:N[:ID]`): at a full step (every N-th) the
//! whole UNet runs and the input of the first up layer after the cut is kept; at the other steps
//! only conv_in, the down path before the cut and the up layers after it run (sequential by
//! nature). `deepcache-block:N:B` is fd's earlier block-level branch: the whole up block U[n-1-B]
//! and those after it rerun; it equals DeepCache id 3B + (down block B's layer count), and is kept
//! so that records made with it (README rows until 2026-12-02) still read and rerun.

use std::fmt;

use fd_model::Denoiser;
use tch::Tensor;

use super::propagation::for_each_group;
use super::{field, refuse, refuse_hooks, CachingMethod, Family, MethodInfo, MethodRecord, Observer, Plan, PlanSpec};
use crate::plan::KeySteps;
use crate::step::StepCtx;
use crate::Result;

const FAMILY: &[Family] = &[Family { name: "deepcache", rgb: (200, 50, 40) }];

pub static INFO: MethodInfo = MethodInfo {
    name: "deepcache",
    syntax: "deepcache:N[:ID]",
    source: file!(),
    help: "DeepCache: the whole UNet every N steps, only the shallow path before and after the cut of \
           DeepCache's cache_branch_id ID (block ID/3, layer ID%3, default 0) in between",
    families: FAMILY,
    parse: |body| parse(body, false),
    offered: |m| {
        let mut ids: Vec<usize> = m.deepcache_ids().iter().map(|(i, _)| *i).collect();
        ids.sort_unstable();
        (!ids.is_empty()).then(|| {
            let ids: Vec<String> = ids.iter().map(usize::to_string).collect();
            format!("deepcache / fbcache / +partial (cache_branch_id {})", ids.join(", "))
        })
    },
    record: ("deep_cache_id", &["id"]),
};

pub static BLOCK_INFO: MethodInfo = MethodInfo {
    name: "deepcache-block",
    syntax: "deepcache-block:N:B",
    source: file!(),
    help: "DeepCache at fd's earlier block-level branch B (the whole up block U[n-1-B] and those after \
           it rerun)",
    families: FAMILY,
    parse: |body| parse(body, true),
    offered: |_| None,
    record: ("deep_cache", &["branch"]),
};

/// Where DeepCache cuts the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// DeepCache's own `cache_branch_id` (None: not given, the helper's default 0).
    Id(Option<usize>),
    /// fd's earlier block-level branch.
    Block(usize),
}

/// A DeepCache plan: a full step every `interval` steps, cut at `cut`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeepCache {
    pub interval: usize,
    pub cut: Cut,
}

fn parse(body: &str, block: bool) -> Result<PlanSpec> {
    let syntax = if block { "deepcache-block:N:B" } else { "deepcache:N[:ID]" };
    let (n, b) = body.split_once(':').map_or((body, None), |(n, b)| (n, Some(b)));
    let interval: usize = field(n, &format!("a cache interval N >= 1 ({syntax})"))?;
    if interval == 0 {
        return Err(refuse("", "cache interval must be >= 1"));
    }
    let cut = match (block, b) {
        (true, Some(b)) => Cut::Block(field(b, "a block-level branch B >= 0 (deepcache-block:N:B)")?),
        (true, None) => return Err(refuse("", "expected deepcache-block:N:B")),
        (false, b) => Cut::Id(
            b.map(|b| field(b, "DeepCache's cache_branch_id >= 0 (block = ID / 3, layer = ID % 3)")).transpose()?,
        ),
    };
    Ok(PlanSpec::DeepCache(DeepCache { interval, cut }))
}

impl DeepCache {
    /// The model's DeepCache graphs this plan runs (their manifest key), or an error naming what
    /// the model lacks.
    fn graphs(&self, model: &Denoiser) -> Result<String> {
        Ok(match self.cut {
            Cut::Id(id) => model.deepcache_key_for_id(id.unwrap_or(0))?,
            Cut::Block(b) => model.deepcache_key_for_block(b)?,
        })
    }
}

impl CachingMethod for DeepCache {
    fn info(&self) -> &'static MethodInfo {
        match self.cut {
            Cut::Id(_) => &INFO,
            Cut::Block(_) => &BLOCK_INFO,
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, full: bool) -> fmt::Result {
        match self.cut {
            Cut::Id(Some(id)) => write!(f, "deepcache:{}:{id}", self.interval),
            Cut::Id(None) if full => write!(f, "deepcache:{}:0", self.interval),
            Cut::Id(None) => write!(f, "deepcache:{}", self.interval),
            Cut::Block(b) => write!(f, "deepcache-block:{}:{b}", self.interval),
        }
    }

    fn record(&self) -> MethodRecord {
        match self.cut {
            Cut::Id(id) => MethodRecord::params("deep_cache_id", &[("id", id.unwrap_or(0).into())]),
            Cut::Block(b) => MethodRecord::params("deep_cache", &[("branch", b.into())]),
        }
    }

    fn keys(&self) -> Option<KeySteps> {
        Some(KeySteps::Uniform(self.interval))
    }

    fn check(&self, model: &Denoiser, _guidance: f64) -> Result<()> {
        self.graphs(model).map(|_| ())
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        plan: &Plan,
        latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "DeepCache", true)?;
        if ctx.controlled() {
            return Err(crate::Error::Sampling("DeepCache plans do not support ControlNet (its residuals reach the skips the shallow path recomputes); use an encoder-propagation plan".into()));
        }
        let model = ctx.model;
        let key = self.graphs(model)?;
        let graph = |part: &str| fd_model::manifest::deepcache_graph(&key, part);
        let n_shallow = model.deepcache_shallow_skips(&key)?;
        let (cond2, rows) = (ctx.cond2, ctx.rows_per_step());
        let states = &cond2.states;
        for_each_group(ctx, plan, latents, false, |ctx, k, steps, mut latents| {
            // full step: deep part once, cached; shallow path every step of the group
            let s = steps.start;
            let cached = ctx
                .clock
                .time(&mut ctx.tm.decoder_s, || model.deepcache_deep_decode(&key, &k.feats, &k.emb, states))?;
            ctx.counts.add(&graph("deep_decoder"), rows);
            for i in steps {
                let (skips, emb) = if i == s {
                    (k.feats.skips()[..n_shallow].iter().map(Tensor::shallow_clone).collect(), k.emb.shallow_clone())
                } else {
                    let x_in = ctx.model_input(&latents, i);
                    let emb = ctx.time_embed(i)?;
                    let skips = ctx
                        .clock
                        .time(&mut ctx.tm.encoder_s, || model.deepcache_shallow_encode(&key, &x_in, &emb, states))?;
                    ctx.counts.add(&graph("shallow_encoder"), rows);
                    (skips, emb)
                };
                let pred = ctx.clock.time(&mut ctx.tm.decoder_s, || {
                    model.deepcache_shallow_decode(&key, &cached, &skips, &emb, states)
                })?;
                ctx.counts.add(&graph("shallow_decoder"), rows);
                latents = ctx.scheduler_step(pred, i, latents)?;
            }
            Ok(latents)
        })
    }
}
