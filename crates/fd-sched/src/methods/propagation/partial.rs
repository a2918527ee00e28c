//! `+partial:ID`: partial propagation. At a non-key step the shallow encoder of DeepCache id ID
//! (conv_in and the down-path layers before its cut) is recomputed on the step's own latents and
//! its skips replace the key step's; the deeper skips and the mid block are propagated.

use fd_model::{Denoiser, EncoderFeatures};
use tch::Tensor;

use super::Calibrator;
use crate::step::StepCtx;
use crate::Result;

/// The shallow encoder a partial plan recomputes: its DeepCache manifest key and graph name.
#[derive(Debug)]
pub(crate) struct Partial {
    key: String,
    graph: String,
}

impl Partial {
    /// The model's graphs for DeepCache id `id`, or an error naming what it lacks.
    pub fn new(model: &Denoiser, id: usize) -> Result<Self> {
        let key = model.deepcache_key_for_id(id)?;
        let graph = fd_model::manifest::deepcache_graph(&key, "shallow_encoder");
        Ok(Self { key, graph })
    }
}

impl Calibrator for Partial {
    fn update(&mut self, _t: f64, _feats: &EncoderFeatures) {}

    fn approximate(&self, _t: f64, feats: &EncoderFeatures) -> EncoderFeatures {
        feats.clone()
    }

    fn reads_latents(&self) -> bool {
        true
    }

    fn fresh_step(
        &mut self,
        ctx: &mut StepCtx<'_, '_>,
        i: usize,
        latents: &Tensor,
        feats: &EncoderFeatures,
    ) -> Result<Tensor> {
        let model = ctx.model;
        let x_in = ctx.model_input(latents, i);
        let emb = ctx.time_embed(i)?;
        let (cond2, rows) = (ctx.cond2, ctx.rows_per_step());
        let fresh = ctx
            .clock
            .time(&mut ctx.tm.encoder_s, || model.deepcache_shallow_encode(&self.key, &x_in, &emb, &cond2.states))?;
        ctx.counts.add(&self.graph, rows);
        let f = feats.with_skips_replaced(&fresh);
        let out = ctx.clock.time(&mut ctx.tm.decoder_s, || model.decode(&f, &emb, &cond2.states))?;
        ctx.counts.add("decoder", rows);
        Ok(out)
    }
}
