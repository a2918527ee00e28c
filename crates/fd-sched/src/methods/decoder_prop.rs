//! Decoder-only propagation (`decoder-prop:KEYS`), the paper's failed ablation: the decoder's
//! output at the key step is reused by the following non-key steps (only the scheduler runs there).
//! Recomputing the encoder at those steps could not change anything once the decoder is reused,
//! so it is neither run nor charged: cost = key steps x (encoder + decoder).

use std::fmt;

use tch::Tensor;

use super::propagation::for_each_group;
use super::Plan;
use super::{refuse_hooks, CachingMethod, Family, MethodInfo, MethodRecord, Observer, PlanSpec};
use crate::plan::KeySteps;
use crate::step::StepCtx;
use crate::Result;

pub static INFO: MethodInfo = MethodInfo {
    name: "decoder-prop",
    syntax: "decoder-prop:KEYS",
    source: file!(),
    help: "decoder-only propagation, the paper's failed ablation: the key step's noise prediction is \
           reused by its group",
    families: &[Family { name: "decoder-only", rgb: (120, 60, 160) }],
    parse: |body| Ok(PlanSpec::DecoderProp(DecoderProp { keys: KeySteps::parse(body)? })),
    offered: |_| Some("decoder-prop".into()),
    record: ("decoder_propagation", &[]),
};

/// A decoder-only propagation plan: its key steps.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderProp {
    pub keys: KeySteps,
}

impl CachingMethod for DecoderProp {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, _full: bool) -> fmt::Result {
        write!(f, "decoder-prop:{}", self.keys)
    }

    fn record(&self) -> MethodRecord {
        MethodRecord::Name("decoder_propagation".into())
    }

    fn keys(&self) -> Option<KeySteps> {
        Some(self.keys.clone())
    }

    fn decoder_calls(&self, plan: &Plan) -> usize {
        plan.key_steps.len()
    }

    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        plan: &Plan,
        latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "decoder-prop", true)?;
        for_each_group(ctx, plan, latents, false, |ctx, key, steps, mut latents| {
            // the key step's decoder output, reused by every step of the group
            let pred = ctx.decode_one(&key.feats, steps.start)?;
            for i in steps {
                latents = ctx.scheduler_step(pred.shallow_clone(), i, latents)?;
            }
            Ok(latents)
        })
    }
}
