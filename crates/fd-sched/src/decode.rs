//! How a group's decoders are batched: the mode a user asks for ([`DecodeMode`]), and what
//! `auto` decides from the device and the decoder's measured cost per row ([`choose`]).
//!
//! Encoder propagation lets the decoders of every step of a group run as one batched call (the
//! paper's parallel decoding). On a GPU that call fills the device better and is faster. On a CPU
//! the decoder's cost per row *grows* with the rows per call once a call is large (cache misses),
//! so the paper's uncapped batching can be slower than one call per step. `auto` therefore picks,
//! on a CPU, the number of steps per call whose measured cost per row is lowest.

use std::time::Instant;

use fd_model::Denoiser;
use tch::{Kind, Tensor};

use crate::methods::Plan;
pub use crate::options::{DecodeChoice, DecodeMode, RowCost};
use crate::Result;

/// A call with more steps must be at least this much cheaper per row to be chosen; ties go to the
/// smaller call, which needs less memory. The calibration times decoder calls back to back, which
/// flatters larger calls: in the sampling loop, with encoder calls in between, a 200-row call the
/// calibration measured 8% cheaper per row than 100-row calls ran 32% slower (default model, batch
/// 50, 2-core Xeon: `results/bench-sampling/2026-12-03-2core-x86_64-batch50`), so a predicted gain
/// must be large to be believed.
pub const MIN_GAIN: f64 = 0.15;

/// Steps per call measured by [`measure_row_costs`], smallest first.
pub const LADDER: [usize; 4] = [1, 2, 4, 8];

/// The longest run of steps one decoder call could hold for `plan`: its longest group for an
/// encoder-propagation plan, 1 for anything else (every step decodes on its own).
pub fn max_steps_per_call(plan: &Plan) -> usize {
    plan.spec.method().max_steps_per_call(plan)
}

/// Measure the decoder's cost per row at `rows_per_step` x k rows for k in [`LADDER`], going up
/// only while the larger call is cheaper per row by [`MIN_GAIN`] (so a CPU where batching does not
/// pay measures two sizes). Inputs are fixed (seed 0 noise, the unconditional embedding, t = half
/// the training range); each size is run once untimed, then the faster of two timed calls counts.
pub fn measure_row_costs(model: &Denoiser, rows_per_step: usize) -> Result<Vec<RowCost>> {
    let m = &model.manifest;
    let r = rows_per_step as i64;
    let shape: Vec<i64> = std::iter::once(r).chain(m.sample_shape()).collect();
    let x = crate::step::initial_noise(0, &shape).to_device(model.device);
    let t_mid = model_train_steps(model) as f64 / 2.0;
    let c = model.uncond(rows_per_step)?;
    let emb = model.time_embed(&Tensor::full([r], t_mid, (Kind::Float, model.device)), c.extra.as_ref())?;
    let cond = c.states;
    let feats = model.encode(&x, &emb, &cond)?;
    let mut costs: Vec<RowCost> = Vec::new();
    for &k in &LADDER {
        let (f, e, c) = (feats.repeat(k as i64), emb.repeat([k as i64, 1]), cond.repeat([k as i64, 1, 1]));
        let _ = model.decode(&f, &e, &c)?; // untimed: first-use costs of this shape
        let mut best = f64::INFINITY;
        for _ in 0..2 {
            let t0 = Instant::now();
            let out = model.decode(&f, &e, &c)?;
            if let tch::Device::Cuda(i) = model.device {
                tch::Cuda::synchronize(i as i64);
            }
            drop(out);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        let rows = rows_per_step * k;
        let cost = RowCost { steps: k, rows, ms_per_row: best * 1e3 / rows as f64 };
        let pays = costs.last().is_none_or(|prev| cost.ms_per_row < prev.ms_per_row * (1.0 - MIN_GAIN));
        costs.push(cost);
        if !pays {
            break;
        }
    }
    Ok(costs)
}

fn model_train_steps(model: &Denoiser) -> usize {
    model.manifest.scheduler.get("num_train_timesteps").and_then(|v| v.as_u64()).unwrap_or(1000) as usize
}

/// `auto` on a CPU: of the measured sizes that fit the plan's longest group, the one with the
/// lowest cost per row, a larger one winning only by [`MIN_GAIN`]. One step per call is
/// sequential decoding; k > 1 steps is parallel decoding capped at k x `rows_per_step` rows.
pub fn choose(costs: &[RowCost], rows_per_step: usize, max_steps: usize) -> DecodeChoice {
    let fits: Vec<&RowCost> = costs.iter().filter(|c| c.steps <= max_steps.max(1)).collect();
    let mut best = fits.first().copied();
    for c in &fits[1.min(fits.len())..] {
        if best.is_some_and(|b| c.ms_per_row < b.ms_per_row * (1.0 - MIN_GAIN)) {
            best = Some(c);
        }
    }
    let shown: Vec<String> =
        costs.iter().map(|c| format!("{} steps/call {:.3} ms/row", c.steps, c.ms_per_row)).collect();
    let (parallel, cap, what) = match best {
        Some(b) if b.steps > 1 => (true, b.steps * rows_per_step, format!("parallel, {} steps per call", b.steps)),
        _ => (false, 0, "sequential".to_string()),
    };
    DecodeChoice {
        requested: DecodeMode::Auto,
        parallel,
        max_decoder_batch: cap,
        reason: format!("CPU: {what} has the lowest decoder cost per row ({})", shown.join(", ")),
        calibration: costs.to_vec(),
    }
}
