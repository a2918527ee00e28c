//! `fd bench`: several plans timed side by side in one process (interleaved repeats, median),
//! each with the FLOPs-bound speedup it implies; `bench.json` ([`BenchReport`]) and `bench.md`.
//!
//! A timing a busy machine disturbed is said, not printed as a clean number: rounds repeat until
//! every plan's spread ((median - min) / min of its repeats: how far the typical repeat is from the
//! fastest, which a burst of other work moves and ordinary jitter does not) is within [`BenchOptions::max_spread`]
//! or the round or time budget is spent; a plan still above it is flagged `disturbed`, and the load
//! average before and after the bench is recorded and flagged when other processes used the CPUs.

use std::path::Path;

use fd_model::io::{write_atomic, write_json};
use fd_model::{Condition, Denoiser, GraphFormat};
use fd_sched::decode::{DecodeChoice, DecodeMode};
use fd_sched::{Injection, SamplingSpec};
use serde::{Deserialize, Serialize};

use crate::error::{io, ResultExt};
use crate::machine::{command, Machine};
use crate::spec::SamplingOptions;
use crate::{Error, Result};

/// One bench entry: a label as `--plans` spells it, the sampling it times and the graph format
/// that runs it.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub label: String,
    pub spec: SamplingSpec,
    pub format: GraphFormat,
}

/// The model a bench times, loaded once per graph format its plans ask for.
#[derive(Debug)]
pub struct BenchModels {
    pub torchscript: Denoiser,
    /// Loaded when a plan asks for `#aoti`.
    pub aoti: Option<Denoiser>,
}

impl BenchModels {
    /// The model loaded in `format`.
    pub fn get(&self, format: GraphFormat) -> Result<&Denoiser> {
        match format {
            GraphFormat::Torchscript => Ok(&self.torchscript),
            GraphFormat::Aoti => self.aoti.as_ref().ok_or_else(|| {
                Error::Input("--plans: a `#aoti` plan needs the model loaded with its AOTInductor packages".into())
            }),
        }
    }

    /// Whether `plans` (as `--plans` spells them) ask for AOTInductor packages.
    pub fn wants_aoti(plans: &str) -> bool {
        plans.split(',').any(|e| e.trim().ends_with("#aoti"))
    }
}

/// Parse `--plans`: comma separated `KEYS` (decoding `auto`, as `fd sample` defaults to),
/// `KEYS@par` (the paper's uncapped parallel decoding), `KEYS@seq` (sequential decoders) or
/// `KEYS@capR` (parallel, at most R rows per decoder call), each optionally followed by
/// `#torchscript` or `#aoti` (the graph format that runs it; default `format`), each resolved
/// like `fd sample` resolves `base` with those keys and that decoding mode for one batch of `n`
/// samples. The injection of `base` applies to every plan but the baseline.
pub fn parse_plans(
    plans: &str,
    base: &SamplingOptions,
    models: &BenchModels,
    conds: &[Condition],
    n: usize,
    format: GraphFormat,
) -> Result<Vec<BenchPlan>> {
    plans
        .split(',')
        .map(|entry| {
            let entry = entry.trim();
            let (plan, format) = match entry.split_once('#') {
                Some((p, f)) => {
                    (p, f.parse::<GraphFormat>().map_err(|e| Error::Input(format!("--plans `{entry}`: {e}")))?)
                }
                None => (entry, format),
            };
            let model = models.get(format)?;
            let (keys, mode) = plan.split_once('@').unwrap_or((plan, "auto"));
            let mut o = base.clone();
            let keys = keys.parse().ctx(format!("--plans `{entry}`"))?;
            (o.plan.keys, o.plan.decode, o.plan.max_decoder_batch) = (keys, DecodeMode::Auto, 0);
            match mode {
                "auto" => {}
                "par" => o.plan.decode = DecodeMode::Parallel,
                "seq" => o.plan.decode = DecodeMode::Sequential,
                m if m.starts_with("cap") => {
                    o.plan.decode = DecodeMode::Parallel;
                    o.plan.max_decoder_batch = m[3..]
                        .parse()
                        .ok()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| Error::Input(format!("--plans `{entry}`: capR needs a number >= 1")))?
                }
                m => {
                    return Err(Error::Input(format!(
                        "--plans `{entry}`: unknown mode `{m}` (expected par, seq or capR)"
                    )))
                }
            }
            let mut spec = o.resolve(model, conds, n).ctx(format!("--plans `{entry}`"))?;
            if spec.plan.is_baseline() {
                spec.exec.injection = None;
            }
            // the label says the format whenever it is not TorchScript
            let label = if format == GraphFormat::Aoti && !entry.contains('#') {
                format!("{entry}#aoti")
            } else {
                entry.to_string()
            };
            Ok(BenchPlan { label, spec, format })
        })
        .collect::<Result<Vec<_>>>()
        .and_then(|list| {
            // `none,none#aoti` with AOTInductor the default (`--format auto` on a model that ships
            // packages) would time one plan twice under two labels
            for (i, p) in list.iter().enumerate() {
                if list[..i].iter().any(|q| q.label == p.label) {
                    return Err(Error::Input(format!(
                        "--plans: `{}` is timed twice (a plan without `#FORMAT` runs the default format, {} here): name each plan's format (`KEYS#torchscript`, `KEYS#aoti`) or pass --format",
                        p.label,
                        format.as_str()
                    )));
                }
            }
            Ok(list)
        })
}

/// The middle value; for an even count, the mean of the two middle ones.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One timed plan of a [`BenchReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    /// As `--plans` spells it.
    pub plan: String,
    /// The resolved plan, every parameter given (written as its label).
    pub keys: fd_sched::PlanSpec,
    pub parallel: bool,
    pub max_decoder_batch: usize,
    /// How the decoding mode was decided.
    pub decode: DecodeChoice,
    pub injection: Option<Injection>,
    /// UNet-loop seconds per image of every timed repeat.
    pub s_per_image: Vec<f64>,
    pub median_s_per_image: f64,
    /// The fastest repeat (what the plan costs when nothing else runs).
    #[serde(default)]
    pub min_s_per_image: f64,
    /// (median - min) / min of the repeats.
    #[serde(default)]
    pub spread: f64,
    /// The spread stayed above [`BenchOptions::max_spread`]: the timing was disturbed.
    #[serde(default)]
    pub disturbed: bool,
    /// Median of the first plan / median of this plan.
    pub speedup: f64,
    pub gflops_per_image: f64,
    /// GFLOPs of the first plan / GFLOPs of this plan.
    pub flops_bound_speedup: f64,
    /// The graph format that ran it (absent in reports from before the field: TorchScript).
    #[serde(default)]
    pub format: GraphFormat,
    /// Which graphs ran from packages and which on TorchScript when the plan used both
    /// ([`fd_model::mixed_formats`]): its speed compares formats as well as methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixed_formats: Option<String>,
}

/// `bench.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub command: Vec<String>,
    pub model: String,
    pub scheduler: String,
    pub steps: usize,
    pub cfg: f64,
    /// Samples per timed run (one batch).
    pub n: usize,
    /// Timed rounds run (at least the requested repeats; more while a spread was large).
    pub repeats: usize,
    pub warmup: bool,
    pub machine: Machine,
    pub rows: Vec<BenchRow>,
    /// The largest spread a clean row may have.
    #[serde(default)]
    pub max_spread: f64,
    /// 1-minute load average (`/proc/loadavg`) before and after the timed rounds.
    #[serde(default)]
    pub load: Option<(f64, f64)>,
    /// Why the timings cannot be trusted as clean numbers (empty: nothing seen).
    #[serde(default)]
    pub disturbed: Vec<String>,
}

/// How the bench runs.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Timed repeats per plan, interleaved across plans (at least; see `max_spread`).
    pub repeats: usize,
    /// Run every plan once, untimed, before the timed repeats.
    pub warmup: bool,
    /// A plan whose spread ((median - min) / min of its repeats) is above this gets more rounds,
    /// and is flagged disturbed if it stays above. Default 0.25 (on this project's shared 2-core
    /// VMs the repeats of a quiet bench differ by up to ~20% between their median and fastest).
    pub max_spread: f64,
    /// At most this many rounds in all. Default 3 x repeats.
    pub max_repeats: usize,
    /// No new round after this many seconds of timed rounds. Default 300.
    pub budget_s: f64,
}

impl BenchOptions {
    /// `repeats` rounds at least, up to 3 x as many within 300 s while a spread is above 25%.
    pub fn new(repeats: usize, warmup: bool) -> Self {
        Self { repeats, warmup, max_spread: 0.25, max_repeats: 3 * repeats, budget_s: 300.0 }
    }
}

/// (median - min) / min: how much slower the typical repeat is than the fastest.
pub fn spread(v: &[f64]) -> f64 {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    if v.len() < 2 || lo <= 0.0 {
        0.0
    } else {
        (median(v) - lo) / lo
    }
}

/// The 1-minute load average, where the system says it (Linux).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Time `plans` on one batch (`seeds`, `conds`): an optional untimed warm-up of every plan, then
/// `repeats` interleaved rounds; the first plan is the reference of the speedups.
pub fn run(
    models: &BenchModels,
    plans: &[BenchPlan],
    seeds: &[u64],
    conds: &[Condition],
    opts: BenchOptions,
    progress: &indicatif::ProgressBar,
) -> Result<BenchReport> {
    if seeds.is_empty() || opts.repeats == 0 || plans.is_empty() {
        return Err(Error::Input("--n, --repeats and --plans must each give at least one".into()));
    }
    let n = seeds.len();
    // Warm-up, untimed: every plan once at the timed batch size, so first-use costs (allocator
    // growth, cuDNN algorithm choice per new shape, lazy init) stay out of the timed repeats. On an
    // H200 without it, one repeat of a plan took 4.7 s against a median of 0.42.
    if opts.warmup {
        for p in plans {
            p.spec.generate(models.get(p.format)?, seeds, conds)?;
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
    let mut gflops = vec![0.0; plans.len()];
    progress.set_length((opts.repeats * plans.len()) as u64);
    let load_before = load_average();
    let t0 = std::time::Instant::now();
    let max_rounds = opts.max_repeats.max(opts.repeats);
    let mut rounds = 0;
    let mut mixed: Vec<Option<String>> = vec![None; plans.len()];
    loop {
        for (k, p) in plans.iter().enumerate() {
            let model = models.get(p.format)?;
            let before = model.graph_calls();
            let out = p.spec.generate(model, seeds, conds)?;
            mixed[k] = fd_model::mixed_formats(&before, &model.graph_calls());
            times[k].push(out.timings.total_s / n as f64);
            gflops[k] = out.counts.gflops_per_image(model, n);
            progress.inc(1);
        }
        rounds += 1;
        if rounds < opts.repeats {
            continue;
        }
        let noisy = times.iter().any(|t| spread(t) > opts.max_spread);
        if !noisy || rounds >= max_rounds || t0.elapsed().as_secs_f64() > opts.budget_s {
            break;
        }
        // another round: the repeats so far disagree by more than max_spread
        progress.inc_length(plans.len() as u64);
    }
    let load_after = load_average();
    let med: Vec<f64> = times.iter().map(|t| median(t)).collect();
    let mut disturbed = Vec::new();
    let cores = crate::machine::Machine::current(models.torchscript.device).cores as f64;
    if let (Some(a), Some(b)) = (load_before, load_after) {
        // the bench itself keeps about one run queue busy per torch thread it uses
        let own = tch::get_num_threads().max(1) as f64;
        if a.max(b) > cores.max(own) + 0.5 {
            disturbed.push(format!(
                "load average {a:.2} before, {b:.2} after on {cores} cores: other processes were using the CPUs"
            ));
        }
    }
    let noisy: Vec<String> = plans
        .iter()
        .zip(&times)
        .filter(|(_, t)| spread(t) > opts.max_spread)
        .map(|(p, t)| format!("`{}` ({:.0}%)", p.label, 100.0 * spread(t)))
        .collect();
    if !noisy.is_empty() {
        disturbed.push(format!(
            "after {rounds} rounds the repeats of {} still spread more than {:.0}%",
            noisy.join(", "),
            100.0 * opts.max_spread
        ));
    }
    let rows = plans
        .iter()
        .enumerate()
        .map(|(k, p)| BenchRow {
            plan: p.label.clone(),
            keys: p.spec.plan.spec.filled(),
            parallel: p.spec.exec.decode.parallel,
            max_decoder_batch: p.spec.exec.decode.max_decoder_batch,
            decode: p.spec.exec.decode.clone(),
            injection: p.spec.exec.injection,
            s_per_image: times[k].clone(),
            median_s_per_image: med[k],
            min_s_per_image: times[k].iter().copied().fold(f64::INFINITY, f64::min),
            spread: spread(&times[k]),
            disturbed: spread(&times[k]) > opts.max_spread,
            speedup: med[0] / med[k],
            gflops_per_image: gflops[k],
            flops_bound_speedup: gflops[0] / gflops[k],
            format: p.format,
            mixed_formats: mixed[k].clone(),
        })
        .collect();
    let first = &plans[0].spec;
    let model = &models.torchscript;
    Ok(BenchReport {
        command: command(),
        model: model.manifest.name.clone(),
        scheduler: first.sampler.name().into(),
        steps: first.steps(),
        cfg: first.exec.guidance,
        n,
        repeats: rounds,
        warmup: opts.warmup,
        machine: Machine::current(model.device),
        rows,
        max_spread: opts.max_spread,
        load: load_before.zip(load_after),
        disturbed,
    })
}

impl BenchReport {
    /// `bench.md`: the table with the speedup over the first plan and against its FLOPs bound.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut md = format!(
            "# Sampling benchmark\n\nModel `{}`, {} {} steps, CFG {}, batch {} (N per run), median of {} interleaved repeats{}, one process.\nMachine: {} ({} cores, {} torch threads), device {}.\nCommand: `{}`\n\n| plan | decoding | s/image (UNet loop) | min | spread | speedup | GFLOPs/image | FLOPs-bound speedup | speedup / FLOPs-bound |\n|---|---|---|---|---|---|---|---|---|\n",
            self.model,
            self.scheduler,
            self.steps,
            self.cfg,
            self.n,
            self.repeats,
            if self.warmup { " after an untimed warm-up run of each plan" } else { " (no warm-up)" },
            m.cpu,
            m.cores,
            m.torch_threads,
            m.device,
            self.command.join(" ")
        );
        for r in &self.rows {
            md += &format!(
                "| `{}`{} | {} | {:.4} | {:.4} | {:.0}%{} | {:.2}x | {:.3} | {:.2}x | {:.2} |\n",
                r.plan,
                if r.mixed_formats.is_some() { " (mixed formats)" } else { "" },
                r.decode.summary(),
                r.median_s_per_image,
                r.min_s_per_image,
                100.0 * r.spread,
                if r.disturbed { " **disturbed**" } else { "" },
                r.speedup,
                r.gflops_per_image,
                r.flops_bound_speedup,
                r.speedup / r.flops_bound_speedup
            );
        }
        md += &format!(
            "\nspread = (median - min) / min of a plan's repeats; above {:.0}% a plan gets more rounds (up to 3x the \
             repeats, 300 s) and is marked disturbed if it stays above.\n",
            100.0 * self.max_spread
        );
        if let Some((a, b)) = self.load {
            md += &format!("Load average: {a:.2} before, {b:.2} after.\n");
        }
        for r in self.rows.iter().filter(|r| r.mixed_formats.is_some()) {
            md += &format!(
                "\n`{}` mixed graph formats: {}; its speed compares formats as well as methods (`--format torchscript` \
                 times every graph alike).\n",
                r.plan,
                r.mixed_formats.as_deref().unwrap_or_default()
            );
        }
        if !self.disturbed.is_empty() {
            md += &format!(
                "\n**Timing disturbed**: {}. These speedups are not clean numbers: rerun on a quiet machine \
                 (`uptime` near 0 before it starts).\n",
                self.disturbed.join("; ")
            );
        }
        md
    }

    /// Write `bench.json` and `bench.md` into `out` (created).
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(io(out)).ctx(format!("--out {}", out.display()))?;
        write_json(&out.join("bench.json"), self)?;
        write_atomic(&out.join("bench.md"), self.markdown().as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_minus_min_over_min() {
        assert_eq!(spread(&[1.0]), 0.0);
        assert!((spread(&[1.0, 1.05, 1.02]) - 0.02).abs() < 1e-12);
        // a burst in one repeat of three leaves the median alone; in two of three, it shows
        assert!((spread(&[1.0, 10.0, 1.1]) - 0.1).abs() < 1e-12);
        assert!((spread(&[1.0, 10.0, 9.0]) - 8.0).abs() < 1e-12);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
