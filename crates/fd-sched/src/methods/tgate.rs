//! T-GATE (Liu et al. 2024, HaozheLiu-ST/T-GATE; `tgate:G[:SP[:FI[:W]]]`, official SD defaults
//! SP 5, FI 1, W 2): before the gate step G-1 the CFG batch runs with self-attention reused between
//! its caching steps (W, then every SP-th); at G-1 both attention kinds are cached as the mean of
//! the CFG halves; after it only the unconditional branch runs, without guidance, cross-attention
//! reused, self-attention recomputed every FI-th step (the official tgate_scheduler's decisions).

use std::fmt;

use fd_model::Denoiser;
use tch::{Kind, Tensor};

use super::{field, refuse, refuse_hooks, CachingMethod, Family, MethodInfo, MethodRecord, Observer, Plan, PlanSpec};
use crate::step::CallCounts;
use crate::step::StepCtx;
use crate::Result;

/// The official defaults of SP, FI and W.
pub const DEFAULTS: [usize; 3] = [5, 1, 2];

pub static INFO: MethodInfo = MethodInfo {
    name: "tgate",
    syntax: "tgate:G[:SP[:FI[:W]]]",
    source: file!(),
    help: "T-GATE: cross-attention cached at gate step G-1 and the unconditional branch alone after it; \
           self-attention reused between caching steps (every SP-th after warm-up W before the gate, \
           every FI-th after it); needs --cfg > 1",
    families: &[Family { name: "tgate", rgb: (110, 110, 110) }],
    parse,
    offered: |m| {
        m.manifest
            .tgate
            .as_ref()
            .map(|t| format!("tgate ({} cross- / {} self-attention layers)", t.cross_layers.len(), t.self_layers.len()))
    },
    record: ("t_gate", &["gate_step", "sp_interval", "fi_interval", "warm_up"]),
};

/// A T-GATE plan; a parameter not given is None and takes its official default ([`DEFAULTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TGate {
    /// G: the gate step (1 ..= steps); attention is cached at step G-1.
    pub gate_step: usize,
    /// SP: before the gate, self-attention is recomputed every SP-th step (default 5).
    pub sp_interval: Option<usize>,
    /// FI: after the gate, self-attention is recomputed every FI-th step (default 1).
    pub fi_interval: Option<usize>,
    /// W: warm-up steps that always recompute self-attention (default 2).
    pub warm_up: Option<usize>,
}

impl TGate {
    /// [gate step, SP, FI, W] with the defaults filled in.
    fn steps(&self) -> [usize; 4] {
        [
            self.gate_step,
            self.sp_interval.unwrap_or(DEFAULTS[0]),
            self.fi_interval.unwrap_or(DEFAULTS[1]),
            self.warm_up.unwrap_or(DEFAULTS[2]),
        ]
    }
}

fn parse(body: &str) -> Result<PlanSpec> {
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() > 4 {
        return Err(refuse("", "expected tgate:G[:SP[:FI[:W]]]"));
    }
    let v = parts
        .iter()
        .map(|p| field::<usize>(p, "a step count (tgate:G[:SP[:FI[:W]]])"))
        .collect::<Result<Vec<usize>>>()?;
    let plan = TGate {
        gate_step: v[0],
        sp_interval: v.get(1).copied(),
        fi_interval: v.get(2).copied(),
        warm_up: v.get(3).copied(),
    };
    let [_, sp, fi, _] = plan.steps();
    if sp == 0 || fi == 0 {
        return Err(refuse("", "SP and FI intervals must be >= 1"));
    }
    Ok(PlanSpec::TGate(plan))
}

impl CachingMethod for TGate {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, full: bool) -> fmt::Result {
        let given = [Some(self.gate_step), self.sp_interval, self.fi_interval, self.warm_up];
        let shown = if full { 4 } else { given.iter().rposition(Option::is_some).map_or(1, |i| i + 1) };
        let v = self.steps();
        write!(f, "tgate")?;
        for x in &v[..shown] {
            write!(f, ":{x}")?;
        }
        Ok(())
    }

    fn record(&self) -> MethodRecord {
        let [g, sp, fi, w] = self.steps();
        MethodRecord::params(
            "t_gate",
            &[("gate_step", g.into()), ("sp_interval", sp.into()), ("fi_interval", fi.into()), ("warm_up", w.into())],
        )
    }

    fn check_steps(&self, num_steps: usize) -> Result<()> {
        if !(1..=num_steps).contains(&self.gate_step) {
            return Err(refuse(
                format!("tgate:{}", self.gate_step),
                format!("gate step {} outside 1..={num_steps} (the sampler's steps)", self.gate_step),
            ));
        }
        Ok(())
    }

    fn check(&self, model: &Denoiser, guidance: f64) -> Result<()> {
        let m = &model.manifest;
        let part = format!("tgate:{}", self.gate_step);
        if m.tgate.is_none() {
            return Err(refuse(
                part,
                if m.kind == fd_model::ModelKind::Unet2d {
                    format!(
                        "model `{}` has no T-GATE graphs: add them with `python experiments/add/add_tgate.py --model DIR`",
                        m.name
                    )
                } else {
                    format!(
                        "T-GATE applies to 2-D UNets with cross-attention; model `{}` is a {} model",
                        m.name, m.kind
                    )
                },
            ));
        }
        if guidance <= 1.0 {
            return Err(refuse(
                part,
                "T-GATE needs classifier-free guidance (--cfg > 1): its gate caches the mean of the two branches",
            ));
        }
        Ok(())
    }

    fn is_baseline_shape(&self) -> bool {
        false
    }

    fn summary(&self, plan: &Plan, _counts: &CallCounts, _samples: usize, _branches: usize) -> String {
        format!("gate at step {} of {}", self.gate_step, plan.num_steps)
    }

    /// Which graph runs at each step, which attention outputs it returns are kept, and the switch
    /// to the unconditional branch alone after the gate.
    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        _plan: &Plan,
        mut latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        refuse_hooks(ctx, observe.is_some(), "tgate", false)?;
        let [gate_step, sp_interval, fi_interval, warm_up] = self.steps();
        let model = ctx.model;
        let nc = model.manifest.tgate.as_ref().map_or(0, |t| t.cross_layers.len());
        let (b, rows2) = (ctx.b, (2 * ctx.b) as usize);
        // the unconditional rows [0, B) of [uncond; cond]: the only branch after the gate
        let uncond = ctx.cond2.index_select(&Tensor::arange(b, (Kind::Int64, model.device)));
        let half_mean = |v: &[Tensor]| -> Vec<Tensor> {
            v.iter()
                .map(|t| {
                    let h = t.chunk(2, 0);
                    (&h[0] + &h[1]) / 2.0
                })
                .collect()
        };
        let (mut ca, mut sa): (Vec<Tensor>, Vec<Tensor>) = (Vec::new(), Vec::new());
        for i in 0..ctx.timesteps.len() {
            let pred = if i < gate_step {
                let x_in = ctx.model_input(&latents, i);
                let emb = ctx.time_embed(i)?;
                let states = &ctx.cond2.states;
                let sa_reuse = i + 1 < gate_step && i > warm_up && i % sp_interval != 0;
                if sa_reuse {
                    let out = ctx
                        .clock
                        .time(&mut ctx.tm.decoder_s, || model.tgate("tgate_sa_reuse", &x_in, &emb, states, &sa))?;
                    ctx.counts.add("tgate_sa_reuse", rows2);
                    out.0
                } else {
                    let (out, extra) = ctx
                        .clock
                        .time(&mut ctx.tm.decoder_s, || model.tgate("tgate_capture", &x_in, &emb, states, &[]))?;
                    ctx.counts.add("tgate_capture", rows2);
                    if i + 1 == gate_step {
                        ca = half_mean(&extra[..nc]);
                        sa = half_mean(&extra[nc..]);
                    } else if i >= warm_up {
                        sa = extra[nc..].iter().map(Tensor::shallow_clone).collect();
                    }
                    out
                }
            } else {
                let x_in = ctx.scheduler.scale_model_input(&latents, i);
                let t = Tensor::full([b], ctx.timesteps[i], (Kind::Float, model.device));
                let extra = uncond.extra.as_ref();
                let emb = ctx.clock.time(&mut ctx.tm.time_embed_s, || model.time_embed(&t, extra))?;
                ctx.counts.add("time_embed", b as usize);
                if i % fi_interval == 0 {
                    let (out, extra) = ctx.clock.time(&mut ctx.tm.decoder_s, || {
                        model.tgate("tgate_ca_reuse", &x_in, &emb, &uncond.states, &ca)
                    })?;
                    ctx.counts.add("tgate_ca_reuse", b as usize);
                    sa = extra;
                    out
                } else {
                    let cached: Vec<Tensor> = ca.iter().chain(sa.iter()).map(Tensor::shallow_clone).collect();
                    let (out, _) = ctx.clock.time(&mut ctx.tm.decoder_s, || {
                        model.tgate("tgate_both_reuse", &x_in, &emb, &uncond.states, &cached)
                    })?;
                    ctx.counts.add("tgate_both_reuse", b as usize);
                    out
                }
            };
            latents = ctx.scheduler_step(pred, i, latents)?;
        }
        Ok(latents)
    }
}
