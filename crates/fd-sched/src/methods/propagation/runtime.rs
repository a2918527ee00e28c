//! Where a group ends: the plan's fixed groups, or run-time key steps (`runtime:K`) decided at
//! each key step from how fast the encoder features change.

use std::ops::Range;

use fd_model::EncoderFeatures;
use tch::{Kind, Tensor};

use crate::methods::Plan;
use crate::plan::KeySteps;
use crate::step::{KeyFeatures, StepCtx};
use crate::Result;

/// The loop every grouped plan shares (encoder propagation, decoder-only propagation, DeepCache):
/// at each key step the encoder runs (with `analysis`, its earlier layers too: [`StepCtx::encode_key`]),
/// the group's end is decided ([`KeySchedule`]), and `group` runs the group's steps from
/// `latents`, returning the latents after its last step.
pub(crate) fn for_each_group(
    ctx: &mut StepCtx<'_, '_>,
    plan: &Plan,
    mut latents: Tensor,
    analysis: bool,
    mut group: impl FnMut(&mut StepCtx<'_, '_>, KeyFeatures, Range<usize>, Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut schedule = KeySchedule::new(plan);
    let mut s = 0;
    while s < plan.num_steps {
        let key = ctx.encode_key(&latents, s, analysis)?;
        let end = schedule.next_end(ctx, s, &key.feats)?;
        latents = group(ctx, key, s..end, latents)?;
        s = end;
    }
    Ok(latents)
}

/// The group ends of a grouped plan (encoder propagation, decoder-only propagation, DeepCache).
#[derive(Debug)]
pub(crate) enum KeySchedule {
    /// The plan's group ends, in order.
    Fixed { ends: Vec<usize>, next: usize },
    /// `runtime:K`: each group's end decided at its key step.
    Runtime(RuntimeKeys),
}

impl KeySchedule {
    pub fn new(plan: &Plan) -> Self {
        match plan.spec.keys() {
            Some(KeySteps::Runtime(k)) => Self::Runtime(RuntimeKeys::new(k, plan.num_steps)),
            _ => Self::Fixed { ends: plan.groups.iter().map(|g| g.end).collect(), next: 0 },
        }
    }

    /// The end (exclusive) of the group that starts at key step `s`, whose encoder features are
    /// `feats`; run-time key steps are recorded in the run's counts.
    pub fn next_end(&mut self, ctx: &mut StepCtx<'_, '_>, s: usize, feats: &EncoderFeatures) -> Result<usize> {
        match self {
            Self::Fixed { ends, next } => {
                let end = ends[*next];
                *next += 1;
                Ok(end)
            }
            Self::Runtime(r) => {
                ctx.counts.key_steps.push(s);
                r.next_key(s, ctx.timesteps, feats)
            }
        }
    }
}

/// Runtime key steps (`runtime:K`): where the next key step is decided, at each key step and
/// before its group's decoders run. Step 0 and step 1 are key steps (a rate needs two); at key step
/// s with the previous key step p, the features' rate of change is
/// r = ||f_s - f_p||_F / ||f_p||_F / (t_p - t_s) (all encoder tensors, all rows, f64 sums);
/// with k passes left and n steps after s, the group is round((n / (k + 1)) x mean(r so far) / r)
/// steps long, at least 1 and leaving a step for each remaining pass: faster-changing features
/// than so far get shorter groups, slower ones longer. With no pass left the group runs to the end.
/// Decided on the whole batch (a sample's image depends on its batch, as AdaptiveDiffusion's
/// official batch-mean rule).
#[derive(Debug)]
pub(crate) struct RuntimeKeys {
    budget: usize,
    used: usize,
    steps: usize,
    prev: Option<(f64, EncoderFeatures)>,
    rates: Vec<f64>,
}

impl RuntimeKeys {
    fn new(budget: usize, steps: usize) -> Self {
        Self { budget, used: 0, steps, prev: None, rates: Vec::new() }
    }

    /// The end (exclusive) of the group that starts at key step `s` with features `feats`.
    fn next_key(&mut self, s: usize, timesteps: &[f64], feats: &EncoderFeatures) -> Result<usize> {
        self.used += 1;
        let after = self.steps - 1 - s;
        let left = self.budget.saturating_sub(self.used);
        let len = if after == 0 || left == 0 {
            after + 1
        } else if let Some((tp, fp)) = &self.prev {
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for (a, b) in feats.tensors.iter().zip(&fp.tensors) {
                num += (a - b).to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
                den += b.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
            }
            let rate = (num.sqrt() / den.sqrt().max(f64::MIN_POSITIVE)) / (tp - timesteps[s]).abs().max(1e-9);
            self.rates.push(rate);
            let mean = self.rates.iter().sum::<f64>() / self.rates.len() as f64;
            let base = after as f64 / (left + 1) as f64;
            let most = (after + 1).saturating_sub(left).max(1);
            let len = if rate > 0.0 && rate.is_finite() { (base * mean / rate).round() } else { most as f64 };
            (len as usize).clamp(1, most)
        } else {
            1
        };
        self.prev = Some((timesteps[s], feats.clone()));
        Ok(s + len)
    }
}
