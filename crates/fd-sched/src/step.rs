//! What every method's step loop shares: the step context ([`StepCtx`]: model, scheduler, plan,
//! options, z_T, step noise, timing and counting), the seeded noise functions, the one scheduler
//! step (guidance, prior noise injection, finiteness check) and where a decoder batch is formed
//! ([`StepCtx::decode_steps`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fd_model::{Cond, Denoiser, EncoderFeatures};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::options::{ExecOptions, InjectWhen};
use crate::schedulers::Scheduler;
use crate::{Error, Result};

/// Serialises seeding + drawing on libtorch's global CPU generator (tch exposes no per-call
/// generator), so concurrent callers cannot interleave and get each other's noise.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Initial noise z_T of one sample: torch's CPU generator seeded with `seed`, so it equals
/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` in Python.
pub fn initial_noise(seed: u64, shape: &[i64]) -> Tensor {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    Tensor::randn(shape, (Kind::Float, tch::Device::Cpu))
}

/// Step noise of one sample at step `i` (samplers with stochastic steps).
pub fn step_noise(seed: u64, i: usize, shape: &[i64]) -> Tensor {
    initial_noise(seed.wrapping_mul(1_000_003).wrapping_add(1 + i as u64), shape)
}

pub(crate) fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Wall time of closures, the device synchronised after each.
#[derive(Debug)]
pub(crate) struct Clock {
    pub device: Device,
}

impl Clock {
    pub fn time<T>(&self, acc: &mut f64, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        sync(self.device);
        *acc += Duration::as_secs_f64(&t0.elapsed());
        out
    }
}

/// Wall time per component.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub time_embed_s: f64,
    pub encoder_s: f64,
    pub decoder_s: f64,
    pub scheduler_s: f64,
    pub total_s: f64,
    /// ControlNet (key steps only under encoder propagation; every step in the baseline).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub controlnet_s: f64,
}

impl Timings {
    /// Sum of two runs' timings.
    pub fn add(&mut self, other: &Timings) {
        self.time_embed_s += other.time_embed_s;
        self.encoder_s += other.encoder_s;
        self.decoder_s += other.decoder_s;
        self.scheduler_s += other.scheduler_s;
        self.total_s += other.total_s;
        self.controlnet_s += other.controlnet_s;
    }
}

/// Calls and rows evaluated per graph (a row = one sample in one CFG branch at one step).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallCounts {
    pub calls: BTreeMap<String, usize>,
    pub rows: BTreeMap<String, usize>,
    /// The key steps a `runtime:K` plan chose for this batch (empty for every other plan; a part
    /// record keeps its batch's list, run totals leave it out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_steps: Vec<usize>,
}

impl CallCounts {
    pub(crate) fn add(&mut self, graph: &str, rows: usize) {
        *self.calls.entry(graph.to_string()).or_default() += 1;
        *self.rows.entry(graph.to_string()).or_default() += rows;
    }

    pub fn calls(&self, graph: &str) -> usize {
        self.calls.get(graph).copied().unwrap_or(0)
    }

    pub fn rows(&self, graph: &str) -> usize {
        self.rows.get(graph).copied().unwrap_or(0)
    }

    /// Sum of two runs' counts.
    pub fn merge(&mut self, other: &CallCounts) {
        for (g, n) in &other.calls {
            *self.calls.entry(g.clone()).or_default() += n;
        }
        for (g, n) in &other.rows {
            *self.rows.entry(g.clone()).or_default() += n;
        }
    }

    /// GFLOPs of the UNet work executed per image: rows x per-row FLOPs of each graph
    /// (torch.utils.flop_counter at export, 2 x MACs), CFG batch doubling included.
    pub fn gflops_per_image(&self, model: &Denoiser, images: usize) -> f64 {
        let f: f64 = self.rows.iter().map(|(g, &r)| r as f64 * model.manifest.flops(g) as f64).sum();
        f / images as f64 / 1e9
    }
}

/// What the executor shows an observer at every step.
#[derive(Debug)]
pub struct StepFeatures<'a> {
    pub step: usize,
    pub timestep: f64,
    /// Whether the encoder ran at this step (else `encoder` is the key step's, reused).
    pub is_key: bool,
    /// Encoder features in use ([uncond; cond] rows with CFG).
    pub encoder: &'a EncoderFeatures,
    /// The encoder's layers beyond its features at the key step (a DiT's earlier blocks, from the
    /// `encoder_analysis` graph; empty when the model has none).
    pub encoder_layers: &'a [Tensor],
    /// Every up block's output at this step.
    pub decoder: &'a [Tensor],
}

/// A key step's encoder output: its features (ControlNet residuals added), its time embedding on
/// the [branches x B] batch, and (observed runs of a model with the `encoder_analysis` graph) the
/// encoder's earlier layers.
pub(crate) struct KeyFeatures {
    pub feats: EncoderFeatures,
    pub emb: Tensor,
    pub layers: Vec<Tensor>,
}

/// What every step of a run needs: the model, the scheduler and the plan, the run's options,
/// z_T and step noise, and the accounting every loop adds to.
pub(crate) struct StepCtx<'a, 'n> {
    pub model: &'a Denoiser,
    pub scheduler: &'a mut dyn Scheduler,
    /// The plan's label, for errors.
    pub plan_label: String,
    pub opts: &'a ExecOptions,
    /// z_T (scaled by the scheduler's init_noise_sigma), for prior noise injection.
    pub z_t: &'a Tensor,
    pub step_noise: Option<&'n mut dyn FnMut(usize) -> Tensor>,
    pub clock: Clock,
    pub tm: Timings,
    pub counts: CallCounts,
    /// The batch's conditioning, [uncond; cond] with CFG.
    pub cond2: &'a Cond,
    pub timesteps: &'a [f64],
    /// 2 with classifier-free guidance, else 1.
    pub branches: i64,
    /// Samples in the batch.
    pub b: i64,
}

impl StepCtx<'_, '_> {
    /// Rows of one step: branches x B.
    pub fn rows_per_step(&self) -> usize {
        (self.branches * self.b) as usize
    }

    /// Whether the batch carries ControlNet condition images.
    pub fn controlled(&self) -> bool {
        self.cond2.control.is_some()
    }

    /// The UNet input at step `i`: scaled latents, duplicated for CFG.
    pub fn model_input(&self, latents: &Tensor, i: usize) -> Tensor {
        let x = self.scheduler.scale_model_input(latents, i);
        if self.branches == 2 {
            Tensor::cat(&[&x, &x], 0)
        } else {
            x
        }
    }

    /// Time embedding of step `i` for the [branches x B] batch (with each row's added
    /// conditioning).
    pub fn time_embed(&mut self, i: usize) -> Result<Tensor> {
        let t = Tensor::full([self.branches * self.b], self.timesteps[i], (Kind::Float, self.model.device));
        let (model, extra) = (self.model, self.cond2.extra.as_ref());
        let emb = self.clock.time(&mut self.tm.time_embed_s, || model.time_embed(&t, extra))?;
        self.counts.add("time_embed", (self.branches * self.b) as usize);
        Ok(emb)
    }

    /// The encoder at key step `s` on [uncond; cond] (with `analysis`, and a model that has the
    /// `encoder_analysis` graph, also its earlier layers), then the ControlNet at the key step
    /// only: its residuals join the features before they are reused.
    pub fn encode_key(&mut self, latents: &Tensor, s: usize, analysis: bool) -> Result<KeyFeatures> {
        let model = self.model;
        let x_in = self.model_input(latents, s);
        let emb = self.time_embed(s)?;
        let states = &self.cond2.states;
        let (mut feats, layers) = self.clock.time(&mut self.tm.encoder_s, || {
            if analysis && model.has_encoder_analysis() {
                model.encode_analysis(&x_in, &emb, states)
            } else {
                model.encode(&x_in, &emb, states).map(|f| (f, Vec::new()))
            }
        })?;
        let rows = self.rows_per_step();
        self.counts.add("encoder", rows);
        if self.controlled() {
            let t = Tensor::full([rows as i64], self.timesteps[s], (Kind::Float, model.device));
            let cond2 = self.cond2;
            let res = self.clock.time(&mut self.tm.controlnet_s, || model.controlnet(&x_in, &t, cond2))?;
            self.counts.add("controlnet", rows);
            feats = feats.add_scaled(&res, self.opts.control_scale);
        }
        Ok(KeyFeatures { feats, emb, layers })
    }

    /// The whole UNet (encoder then decoder) on the rows `x` with embeddings `emb` and
    /// conditioning `c`, timed and counted.
    pub fn unet(&mut self, x: &Tensor, emb: &Tensor, c: &Cond) -> Result<Tensor> {
        let model = self.model;
        let rows = x.size()[0] as usize;
        let feats = self.clock.time(&mut self.tm.encoder_s, || model.encode(x, emb, &c.states))?;
        self.counts.add("encoder", rows);
        let out = self.clock.time(&mut self.tm.decoder_s, || model.decode(&feats, emb, &c.states))?;
        self.counts.add("decoder", rows);
        Ok(out)
    }

    /// One of a DiT's step-cache graphs on `x`'s rows, timed (embedding and first block as encoder
    /// time, the rest as decoder time) and counted; its outputs.
    pub fn stepcache(&mut self, graph: &str, x: &Tensor, emb: &Tensor, states: &Tensor) -> Result<Vec<Tensor>> {
        self.stepcache_with(graph, x, emb, states, &[])
    }

    /// [`Self::stepcache`] with extra inputs (a PAB graph's reused attention outputs).
    pub fn stepcache_with(
        &mut self,
        graph: &str,
        x: &Tensor,
        emb: &Tensor,
        states: &Tensor,
        extra: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let model = self.model;
        let slot = if matches!(graph, "stepcache_embed" | "stepcache_first") {
            &mut self.tm.encoder_s
        } else {
            &mut self.tm.decoder_s
        };
        let out = self.clock.time(slot, || model.stepcache_with(graph, x, emb, states, extra))?;
        self.counts.add(graph, x.size()[0] as usize);
        Ok(out)
    }

    /// Guidance, prior noise injection and one scheduler step; checks the latents stay finite.
    pub fn scheduler_step(&mut self, pred: Tensor, i: usize, mut latents: Tensor) -> Result<Tensor> {
        // a learned-variance model (DeepFloyd-IF, DiT) stacks [noise, variance] on channels:
        // guidance applies to the noise part (or its first `guidance_channels`, as the original DiT
        // code), every other channel is the conditional branch's (as the IF / DiT references)
        let c = latents.size()[1];
        let learned = pred.size()[1] == 2 * c;
        // guided when the prediction has both CFG branches (T-GATE's steps after its gate do not)
        let eps = if self.branches == 2 && pred.size()[0] == 2 * self.b {
            let g = self.model.manifest.guidance_channels.unwrap_or(c).min(c);
            let parts = pred.chunk(2, 0);
            let (u, t) = (parts[0].narrow(1, 0, g), parts[1].narrow(1, 0, g));
            let guided = &u + (&t - &u) * self.opts.guidance;
            let rest = pred.size()[1] - g;
            if rest > 0 {
                Tensor::cat(&[guided, parts[1].narrow(1, g, rest)], 1)
            } else {
                guided
            }
        } else {
            pred
        };
        let eps = if learned && !self.scheduler.learned_variance() { eps.narrow(1, 0, c) } else { eps };
        let n_train = self.scheduler.num_train_timesteps() as f64;
        let inject = self.opts.injection.filter(|inj| self.timesteps[i] < inj.tau * n_train);
        let t0 = Instant::now();
        if let Some(inj) = inject.filter(|inj| inj.when == InjectWhen::Before) {
            latents = &latents + self.z_t * inj.strength;
        }
        let noise = if self.scheduler.needs_noise() {
            let name = self.scheduler.name();
            let f = self
                .step_noise
                .as_mut()
                .ok_or_else(|| Error::Sampling(format!("scheduler `{name}` needs step noise")))?;
            Some(f(i).to_device(self.model.device))
        } else {
            None
        };
        latents = self.scheduler.step(&eps, i, &latents, noise.as_ref())?;
        if let Some(inj) = inject.filter(|inj| inj.when == InjectWhen::After) {
            latents = &latents + self.z_t * inj.strength;
        }
        sync(self.model.device);
        self.tm.scheduler_s += t0.elapsed().as_secs_f64();
        if latents.isfinite().all().int64_value(&[]) == 0 {
            return Err(Error::NonFinite { step: i, timestep: self.timesteps[i], plan: self.plan_label.clone() });
        }
        Ok(latents)
    }

    /// Where a decoder batch is formed: for steps `js` of one group, rows laid out
    /// [uncond x k, cond x k] (each block B rows), every row reading the key step's features of
    /// its branch (or, with `per_step`, its own step's features) with its own step's time
    /// embedding. Returns one [branches*B, ...] prediction per step.
    pub fn decode_steps(
        &mut self,
        feats: &EncoderFeatures,
        js: &[usize],
        per_step: Option<&[EncoderFeatures]>,
    ) -> Result<Vec<Tensor>> {
        let (branches, b, k) = (self.branches, self.b, js.len() as i64);
        let mut index = Vec::with_capacity((branches * k * b) as usize);
        let mut ts = Vec::with_capacity(index.capacity());
        for br in 0..branches {
            for &j in js {
                for r in 0..b {
                    index.push(br * b + r);
                    ts.push(self.timesteps[j] as f32);
                }
            }
        }
        let model = self.model;
        let dev = model.device;
        let (f, c) = match per_step {
            Some(per) if k == 1 => (per[0].clone(), self.cond2.clone()),
            Some(per) => {
                let idx = Tensor::from_slice(&index).to_device(dev);
                let parts: Vec<EncoderFeatures> = (0..branches)
                    .flat_map(|br| {
                        let rows = Tensor::arange_start(br * b, (br + 1) * b, (Kind::Int64, dev));
                        per.iter().map(move |p| p.index_select(&rows))
                    })
                    .collect();
                (EncoderFeatures::cat(&parts), self.cond2.index_select(&idx))
            }
            None if k == 1 => (feats.clone(), self.cond2.clone()),
            None => {
                let idx = Tensor::from_slice(&index).to_device(dev);
                (feats.index_select(&idx), self.cond2.index_select(&idx))
            }
        };
        let t = Tensor::from_slice(&ts).to_device(dev);
        let emb = self.clock.time(&mut self.tm.time_embed_s, || model.time_embed(&t, c.extra.as_ref()))?;
        self.counts.add("time_embed", index.len());
        let out = self.clock.time(&mut self.tm.decoder_s, || model.decode(&f, &emb, &c.states))?;
        self.counts.add("decoder", index.len());
        // rows (branch, step jj) -> per step: [uncond B; cond B]
        let blocks = out.chunk(branches * k, 0);
        Ok((0..k as usize)
            .map(|jj| {
                let per_branch: Vec<&Tensor> = (0..branches as usize).map(|br| &blocks[br * k as usize + jj]).collect();
                Tensor::cat(&per_branch, 0)
            })
            .collect())
    }

    /// One step's decoder on the key step's features, as [`StepCtx::decode_steps`] forms it.
    pub fn decode_one(&mut self, feats: &EncoderFeatures, i: usize) -> Result<Tensor> {
        Ok(self.decode_steps(feats, &[i], None)?.swap_remove(0))
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}
