//! Run specs: what a command asks for, resolved once against the model into the typed objects
//! every later step uses. The CLI's flags and an experiment row both become
//! [`SamplingOptions`]; [`SamplingOptions::resolve`] turns them into one
//! [`fd_sched::SamplingSpec`] (the sampler from the manifest's scheduler config, the plan with
//! `auto:K` calibrated, the execution options), checking every part before anything is sampled.

use std::path::{Path, PathBuf};

use fd_model::{CondKind, Condition, Denoiser, LoadOptions};
use fd_sched::decode::{DecodeChoice, DecodeMode, RowCost};
use fd_sched::{ExecOptions, Injection, KeySteps, Plan, PlanSpec, SamplerSpec, SamplingSpec};
use serde::{Deserialize, Serialize};

use crate::error::ResultExt;
use crate::{Error, Result};

fn default_sampler() -> String {
    "ddim".into()
}
fn default_steps() -> usize {
    50
}
fn default_guidance() -> f64 {
    1.0
}
fn default_calibration_n() -> usize {
    8
}

/// One plan as a user writes it: the sampler and how its steps run (`fd sample`'s plan flags, a
/// row of an experiment config, a `fd bench --plans` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Sampler (`ddim`, `ddpm`, `dpm`, `dpm++`, `euler`). Default ddim in experiment configs; empty
    /// (`fd sample` / `bench` / `drift` without `--scheduler`): the export's own
    /// ([`SamplingOptions::sampler_choice`]).
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Sampler steps. Default 50.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// DDIM eta (0 = deterministic). Default 0.
    #[serde(default)]
    pub eta: f64,
    /// The plan as `--keys` takes it ([`PlanSpec`]: a key-step set for encoder propagation, or a
    /// peer method such as `deepcache:N[:ID]`; written back as the same string). Default none.
    #[serde(default)]
    pub keys: PlanSpec,
    /// How a group's decoders run: `auto` (the fastest on the device at hand, see
    /// [`fd_sched::decode`]), `parallel` (the paper's batched groups) or `sequential`. Default auto.
    #[serde(default)]
    pub decode: DecodeMode,
    /// Cap on rows per decoder call (0 = none); with `auto`, a cap means parallel. Default 0.
    #[serde(default)]
    pub max_decoder_batch: usize,
    /// Prior noise injection `C@TAU[:before|:after]`. Default none.
    #[serde(default)]
    pub inject: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            sampler: default_sampler(),
            steps: default_steps(),
            eta: 0.0,
            keys: PlanSpec::default(),
            decode: DecodeMode::Auto,
            max_decoder_batch: 0,
            inject: None,
        }
    }
}

/// How to sample: a plan and the settings a whole run (or experiment) shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingOptions {
    #[serde(flatten)]
    pub plan: PlanOptions,
    /// Classifier-free guidance scale (1: conditional only; below 1 is an error). Default 1.
    #[serde(default = "default_guidance")]
    pub guidance: f64,
    /// Calibration samples for `auto:K` plans (seeds 1_000_000 + i). Default 8.
    #[serde(default = "default_calibration_n")]
    pub calibration_n: usize,
    /// ControlNet conditioning scale (models exported with a ControlNet). Default 1.
    #[serde(default = "default_guidance", skip_serializing_if = "is_one")]
    pub control_scale: f64,
    /// Frames per video: required by (and must equal) a video model's exported frame count,
    /// refused for image models. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<i64>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            plan: PlanOptions::default(),
            guidance: default_guidance(),
            calibration_n: default_calibration_n(),
            control_scale: 1.0,
            frames: None,
        }
    }
}

impl SamplingOptions {
    /// The execution options these options ask for (validated: guidance >= 1, injection spec);
    /// decoding is parallel until [`SamplingOptions::resolve`] decides it.
    pub fn exec(&self) -> Result<ExecOptions> {
        let exec = ExecOptions {
            guidance: self.guidance,
            injection: self.plan.inject.as_deref().map(Injection::parse).transpose()?,
            control_scale: self.control_scale,
            ..Default::default()
        }
        .decoding(true, self.plan.max_decoder_batch);
        if !self.control_scale.is_finite() {
            return Err(Error::Input(format!("--control-scale: {} is not a finite number", self.control_scale)));
        }
        if !(exec.guidance >= 1.0 && exec.guidance.is_finite()) {
            return Err(Error::Input(format!(
                "--cfg: guidance {} is not supported: use 1 (conditional only) or > 1 (classifier-free guidance)",
                self.guidance
            )));
        }
        Ok(exec)
    }

    /// `--frames` against the model: a video model needs its exported frame count, an image
    /// model takes none.
    pub fn check_frames(&self, model: &Denoiser) -> Result<()> {
        let name = &model.manifest.name;
        match (model.manifest.frames, self.frames) {
            (Some(f), Some(g)) if f == g => Ok(()),
            (Some(f), None) => Err(Error::Input(format!(
                "model `{name}` is a video model ({f} frames): pass --frames {f}"
            ))),
            (Some(f), Some(g)) => Err(Error::Input(format!(
                "--frames {g}: model `{name}` was exported for {f} frames (its temporal layers are traced for them); re-export with export_sd.py --frames {g}"
            ))),
            (None, Some(g)) => Err(Error::Input(format!("--frames {g}: model `{name}` is an image model, not a video model"))),
            (None, None) => Ok(()),
        }
    }

    /// The sampler these options name, configured from the model's manifest; an empty name is
    /// the export's own ([`SamplingOptions::sampler_choice`]).
    pub fn sampler(&self, model: &Denoiser) -> Result<SamplerSpec> {
        let p = &self.plan;
        let (name, _) = self.sampler_choice(model);
        let s = SamplerSpec::from_config(&name, &model.manifest.scheduler, p.eta)?;
        s.build(p.steps).ctx(format!("--scheduler {name} --steps {}", p.steps))?;
        Ok(s)
    }

    /// The sampler's name and, when the options left it to the model (an empty name), how it was
    /// chosen, in words: the export's scheduler (what its diffusers pipeline runs: Euler for SDXL,
    /// DDPM for IF), or `ddim` where fd runs no equivalent of it (PNDM, LMS, ...).
    pub fn sampler_choice(&self, model: &Denoiser) -> (String, Option<String>) {
        let p = &self.plan;
        if !p.sampler.is_empty() {
            return (p.sampler.clone(), None);
        }
        match SamplerSpec::export_default(&model.manifest.scheduler) {
            (Some(name), class) => (
                name.to_string(),
                Some(format!(
                    "sampler {name}: the export's {} (--scheduler to choose another)",
                    class.unwrap_or_default()
                )),
            ),
            (None, Some(class)) => (
                "ddim".to_string(),
                Some(format!(
                    "sampler ddim: the export's {class} is not one fd runs (it runs {}); --scheduler to choose",
                    SamplerSpec::NAMES.join(", ")
                )),
            ),
            (None, None) => (
                "ddim".to_string(),
                Some("sampler ddim: the export names no scheduler class (--scheduler to choose)".into()),
            ),
        }
    }

    /// Resolve against `model` into the run's one [`SamplingSpec`], for batches of `batch`
    /// samples. Sampler, execution options and (for explicit plans) the plan are checked before an
    /// `auto:K` calibration run starts; the decoding mode is decided last ([`decode_choice`]).
    pub fn resolve(&self, model: &Denoiser, conds: &[Condition], batch: usize) -> Result<SamplingSpec> {
        self.check_frames(model)?;
        let sampler = self.sampler(model)?;
        let exec = self.exec()?;
        let keys = &self.plan.keys;
        let plan = resolve_plan(model, &sampler, self.plan.steps, keys, self.guidance, self.calibration_n, conds)
            .ctx(format!("--keys {keys}"))?;
        fd_sched::check_plan(model, &plan, self.guidance).ctx(format!("--keys {keys}"))?;
        let rows_per_step = batch.max(1) * if self.guidance > 1.0 { 2 } else { 1 };
        let decode = decode_choice(model, &plan, self.plan.decode, self.plan.max_decoder_batch, rows_per_step)?;
        Ok(SamplingSpec::new(sampler, plan, exec)?.with_decode(decode))
    }
}

/// Where the decoding mode of a run is decided: an explicit `sequential` / `parallel` (with its
/// cap) as given; `auto` with a cap is parallel with that cap; otherwise `auto` is sequential when
/// no group has more than one step (all modes are the same) or under `--deterministic`
/// (graphs run row by row), uncapped parallel on CUDA, and on a CPU what
/// [`fd_sched::decode::choose`] picks from the decoder's per-row costs (measured once per
/// machine, model and rows per step, then read from the cache: [`cached_row_costs`]).
pub fn decode_choice(
    model: &Denoiser,
    plan: &Plan,
    mode: DecodeMode,
    cap: usize,
    rows_per_step: usize,
) -> Result<DecodeChoice> {
    let max_steps = fd_sched::decode::max_steps_per_call(plan);
    let given = |parallel: bool, why: &str| DecodeChoice::explicit(mode, parallel, cap, why);
    Ok(match mode {
        DecodeMode::Sequential => given(false, "asked for"),
        DecodeMode::Parallel if cap > 0 => given(true, "asked for, with a row cap"),
        DecodeMode::Parallel => given(true, "asked for"),
        DecodeMode::Auto if cap > 0 => given(true, "a row cap was given: parallel with that cap"),
        DecodeMode::Auto if max_steps <= 1 => given(false, "no group decodes more than one step: one call per step"),
        DecodeMode::Auto if model.row_by_row => {
            given(false, "--deterministic runs the graphs row by row: batching decoders gains nothing")
        }
        DecodeMode::Auto if model.device.is_cuda() => {
            given(true, "CUDA: one decoder call per group (the paper's parallel decoding)")
        }
        DecodeMode::Auto => {
            fd_sched::decode::choose(&cached_row_costs(model, rows_per_step)?, rows_per_step, max_steps)
        }
    })
}

/// What a decoder calibration was measured on; the cache is keyed by its hash and the key is
/// compared in full when read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CalibrationKey {
    model: String,
    /// SHA-256 of the graphs the measurement runs.
    graphs_sha256: Vec<String>,
    machine: crate::machine::Machine,
    rows_per_step: usize,
    ladder: Vec<usize>,
}

/// `$FD_CACHE/decode/<hash>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Calibration {
    key: CalibrationKey,
    costs: Vec<RowCost>,
}

/// The decoder's per-row costs at `rows_per_step` on this machine
/// ([`fd_sched::decode::measure_row_costs`], a few seconds), cached under
/// `$FD_CACHE/decode/` so the same machine, model and batch always get the same choice. An
/// unreadable cache entry is measured again and replaced.
pub fn cached_row_costs(model: &Denoiser, rows_per_step: usize) -> Result<Vec<RowCost>> {
    let g = &model.manifest.graphs;
    let key = CalibrationKey {
        model: model.manifest.name.clone(),
        graphs_sha256: ["time_embed", "encoder", "decoder"]
            .iter()
            .map(|n| g.get(*n).map_or_else(String::new, |e| e.sha256.clone()))
            .collect(),
        machine: crate::machine::Machine::current(model.device),
        rows_per_step,
        ladder: fd_sched::decode::LADDER.to_vec(),
    };
    let hash = fd_model::io::sha256_hex(serde_json::to_string(&key).expect("a key serialises").as_bytes());
    let dir = fd_model::io::cache_dir().join("decode");
    let path = dir.join(format!("{}.json", &hash[..16]));
    if path.is_file() {
        match fd_model::io::read_json::<Calibration>(&path) {
            Ok(c) if c.key == key && !c.costs.is_empty() => return Ok(c.costs),
            Ok(_) => log::warn!("{}: calibration of another machine or model; measuring again", path.display()),
            Err(e) => log::warn!("{e}; measuring again"),
        }
    }
    log::info!(
        "measuring the decoder's cost per row at {rows_per_step} rows per step (once per machine, model and batch)"
    );
    let costs = fd_sched::decode::measure_row_costs(model, rows_per_step)?;
    // a cache that cannot be written (read-only home, two processes measuring at once) costs a
    // measurement next time, nothing more: warn and go on
    let saved = std::fs::create_dir_all(&dir)
        .map_err(crate::error::io(&dir))
        .and_then(|_| Ok(fd_model::io::write_json(&path, &Calibration { key, costs: costs.clone() })?));
    if let Err(e) = saved {
        log::warn!("decoder calibration not cached: {e}");
    }
    Ok(costs)
}

/// Resolve `keys` for a sampler ([`PlanSpec::resolve`]); an `auto:K` / `auto:threshold=X` plan is
/// first calibrated on the encoder drift of `calibration_n` samples (seeds 1_000_000 + i, disjoint
/// from evaluation seeds; conditions cycled from `conds`), its modifiers (`+forecast:K`,
/// `+partial:ID`) applied to the calibrated key steps.
pub fn resolve_plan(
    model: &Denoiser,
    sampler: &SamplerSpec,
    steps: usize,
    keys: &PlanSpec,
    guidance: f64,
    calibration_n: usize,
    conds: &[Condition],
) -> Result<Plan> {
    let Some(rule) = keys.auto_rule() else {
        return Ok(keys.resolve(steps)?);
    };
    // the rest of the plan (its modifiers, the model's graphs for them) checked before the
    // (slow) calibration run, on a stand-in key-step list
    let probe = keys.with_keys(KeySteps::List(vec![0]))?.resolve(steps)?;
    fd_sched::check_plan(model, &probe, guidance)?;
    if calibration_n == 0 || conds.is_empty() {
        return Err(Error::Input(format!("`{keys}` needs at least one calibration sample")));
    }
    let seeds: Vec<u64> = (0..calibration_n as u64).map(|i| 1_000_000 + i).collect();
    let cal: Vec<Condition> = (0..seeds.len()).map(|i| conds[i % conds.len()].clone()).collect();
    let (k, _) = fd_analysis::calibrate_key_steps(model, sampler, steps, guidance, &seeds, &cal, rule)?;
    Ok(keys.with_keys(KeySteps::List(k))?.resolve(steps)?)
}

/// The conditions of `n` samples, the one place every command decides them: the lines of
/// `prompts` (one prompt per line), else the `classes` list (names or ids, comma separated),
/// else every class of a class-conditioned model, cycled over the samples. A text-conditioned
/// model without prompts is an error naming `--prompts`.
pub fn cycle_conditions(
    model: &Denoiser,
    prompts: Option<&Path>,
    classes: Option<&str>,
    n: usize,
) -> Result<Vec<Condition>> {
    let cycle: Vec<Condition> = if let Some(p) = prompts {
        let text = std::fs::read_to_string(p).map_err(crate::error::io(p))?;
        let v: Vec<Condition> =
            text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| Condition::Prompt(l.into())).collect();
        if v.is_empty() {
            return Err(Error::Folder { path: p.to_path_buf(), msg: "no prompts (file is empty)".into() });
        }
        v
    } else if let Some(list) = classes {
        list.split(',').map(|c| model.class_id(c).map(Condition::Class).ctx("--classes")).collect::<Result<_>>()?
    } else if model.manifest.cond.kind == CondKind::Class {
        (0..model.manifest.cond.num_classes.unwrap_or(0)).map(Condition::Class).collect()
    } else {
        return Err(Error::Input(format!(
            "model `{}` is text-conditioned: pass --prompts FILE (one prompt per line; `prompts` in an experiment config)",
            model.manifest.name
        )));
    };
    if cycle.is_empty() {
        return Err(Error::Input(format!("model `{}`: no conditions to sample", model.manifest.name)));
    }
    Ok((0..n).map(|i| cycle[i % cycle.len()].clone()).collect())
}

/// Pair conditions with ControlNet condition images: `control` is one PNG image (every sample) or
/// a folder of PNG images (sorted by name, cycled over the samples as prompts are).
/// Each image is hashed (the hash goes into the run record and is checked when it is read) and
/// loaded once here, so a wrong size or channel count is reported before any file is written. A
/// model with a ControlNet needs `control`; a model without one refuses it.
pub fn with_control(model: &Denoiser, conds: Vec<Condition>, control: Option<&Path>) -> Result<Vec<Condition>> {
    let Some(dir) = control else {
        if model.manifest.control.is_some() {
            return Err(Error::Input(format!(
                "model `{}` has a ControlNet: pass --control IMAGE_OR_DIR (its condition images, {}x{} pixels)",
                model.manifest.name,
                model.manifest.control.as_ref().map_or(0, |c| c.size[0]),
                model.manifest.control.as_ref().map_or(0, |c| c.size[1]),
            )));
        }
        return Ok(conds);
    };
    let spec = model.manifest.control.as_ref().ok_or_else(|| {
        Error::Input(format!(
            "--control: model `{}` has no ControlNet (export one with experiments/export/export_sd.py --controlnet DIR)",
            model.manifest.name
        ))
    })?;
    let files: Vec<PathBuf> = if dir.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(crate::error::io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png")))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(Error::Folder { path: dir.to_path_buf(), msg: "--control: no .png images".into() });
        }
        v
    } else if dir.is_file() {
        vec![dir.to_path_buf()]
    } else {
        return Err(Error::Input(format!("--control {}: no such file or folder", dir.display())));
    };
    let images = files
        .iter()
        .map(|f| {
            let img = fd_model::ControlImage::new(f)?;
            let _ = img.load(spec)?; // size, channels, readable: checked before anything is written
            Ok(img)
        })
        .collect::<Result<Vec<_>>>()?;
    conds
        .into_iter()
        .enumerate()
        .map(|(i, c)| match c {
            Condition::Prompt(prompt) => {
                Ok(Condition::Controlled { prompt, control: images[i % images.len()].clone() })
            }
            other => Err(Error::Input(format!("--control needs prompts, got condition {other:?}"))),
        })
        .collect()
}

/// Where and how a model is opened.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Model folder (manifest.json + graphs).
    pub dir: PathBuf,
    pub device: tch::Device,
    /// Row-by-row graph calls + libtorch's deterministic algorithms (bit-identical samples
    /// whatever the batch size or decoding mode; slower).
    pub deterministic: bool,
    /// Which compiled form runs the graphs ([`fd_model::FormatChoice`]; `auto` is decided per
    /// model at load). Default TorchScript.
    pub format: fd_model::FormatChoice,
}

impl ModelSpec {
    /// `device` as the CLI spells it (`cpu`, `cuda`, `cuda:N`); TorchScript graphs.
    pub fn new(dir: &Path, device: &str, deterministic: bool) -> Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            device: fd_model::parse_device(device)?,
            deterministic,
            format: fd_model::GraphFormat::Torchscript.into(),
        })
    }

    /// The same model run in `format` (a [`fd_model::GraphFormat`] or `auto`).
    pub fn with_format(self, format: impl Into<fd_model::FormatChoice>) -> Self {
        Self { format: format.into(), ..self }
    }

    /// The format that runs this model here, and why `auto` runs TorchScript although the model
    /// lists packages ([`fd_model::FormatChoice::resolve`]); reads the manifest only.
    pub fn resolve_format(&self) -> Result<(fd_model::GraphFormat, Option<String>)> {
        Ok(self.format.resolve(&fd_model::Manifest::load(&self.dir)?, self.device))
    }

    /// Load the model; with `deterministic`, libtorch's deterministic switches are set first
    /// (before the device is touched). The one place every command opens a model.
    pub fn load(&self) -> Result<Denoiser> {
        if self.deterministic {
            fd_model::device::set_deterministic().map_err(|e| Error::Input(format!("--deterministic: {e}")))?;
        }
        let opts = LoadOptions {
            device: self.device,
            row_by_row: self.deterministic,
            format: self.format,
            ..Default::default()
        };
        Ok(Denoiser::load(&self.dir, &opts)?)
    }
}

// the default is left out of records, so run identities without a ControlNet are unchanged
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
