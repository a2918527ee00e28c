//! Experiments as data: a JSON file (`experiments/configs/*.json`) lists rows (sampler, steps,
//! plan, decoding mode, injection); each row is sampled with the [`crate::runner`] (resumable),
//! evaluated (FID + KID, class consistency or CLIP score, GFLOPs, seconds per image) and written
//! as one table. `just reproduce-table1`, `just ablate-keysteps` and the other ablations are all
//! this one code path with different configs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fd_eval::features::{FidResult, KidOptions};
use fd_model::io::{write_atomic, write_json};
use fd_model::{CondKind, UNetModel};
use fd_sched::{Injection, SamplerSpec};
use serde::{Deserialize, Serialize};

use crate::error::{io, ResultExt};
use crate::machine::{command, Machine, Versions};
use crate::records::RowMetrics;
use crate::runner::{Existing, SampleRun, Shard};
use crate::spec::{cycle_conditions, ModelSpec, PlanOptions, SamplingOptions};
use crate::{Error, Result};

fn default_model() -> PathBuf {
    PathBuf::from("models/fmnist")
}
fn default_n() -> usize {
    200
}
fn default_batch() -> usize {
    50
}
fn default_guidance() -> f64 {
    3.0
}
fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

fn default_reference() -> String {
    "fmnist-test".into()
}
fn default_calibration_n() -> usize {
    8
}

/// An experiment: rows evaluated on the same model, seeds and conditions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Results go to `results/<name>/<date>-<machine>/`.
    pub name: String,
    /// Heading of table.md.
    #[serde(default)]
    pub title: String,
    /// Model folder. Default `models/fmnist`.
    #[serde(default = "default_model")]
    pub model: PathBuf,
    /// Samples per row. Default 200.
    #[serde(default = "default_n")]
    pub n: usize,
    /// Samples per batch (one part of the runner). Default 50.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Classifier-free guidance scale. Default 3.
    #[serde(default = "default_guidance")]
    pub guidance: f64,
    /// Base seed; sample i uses seed + i in every row. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// FID reference: a named set (`fmnist-test`) or a `.npz` of mu/sigma (FID only). Default fmnist-test.
    #[serde(default = "default_reference")]
    pub reference: String,
    /// Judge for class consistency. Default `<model>/classifier.pt` when present.
    #[serde(default)]
    pub classifier: Option<PathBuf>,
    /// CLIP towers (experiments/export/export_clip.py) for CLIP score of text-conditioned models.
    #[serde(default)]
    pub clip: Option<PathBuf>,
    /// Prompt file (one per line, cycled) for text-conditioned models.
    #[serde(default)]
    pub prompts: Option<PathBuf>,
    /// ControlNet condition image or folder of PNGs (models exported with a ControlNet), as
    /// `fd sample --control`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<PathBuf>,
    /// ControlNet conditioning scale. Default 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub control_scale: f64,
    /// Frames per video (video models only; their exported frame count). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<i64>,
    /// Calibration samples for `auto:K` plans (seeds 1_000_000 + i, disjoint from the evaluation seeds). Default 8.
    #[serde(default = "default_calibration_n")]
    pub calibration_n: usize,
    /// Draw a Pareto plot (x: GFLOPs/image and s/image; y: FID). Default false.
    #[serde(default)]
    pub pareto: bool,
    pub rows: Vec<RowSpec>,
}

/// One row: a label, a plan (sampler, steps, keys, decoding, injection; fields and defaults of
/// [`PlanOptions`]) and what it is compared with. A field neither knows is an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowSpec {
    /// Row label, unique in the experiment.
    pub label: String,
    #[serde(flatten)]
    pub plan: PlanOptions,
    /// Label of the row this one is compared with (the % change columns).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Family for the Pareto plot colours. Default: the plan's, from the method table
    /// ([`fd_sched::methods::METHODS`]: baseline, ours, auto, deepcache, adaptive, teacache, ...).
    #[serde(default)]
    pub family: Option<String>,
    /// This row's own model folder (default: the experiment's), e.g. the same weights exported
    /// with token merging (`experiments/export/export_tome.py`). Its conditions must equal the
    /// experiment model's. A `--model` override on the command line skips such rows (they name a
    /// model of the configured family) and says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Fields that are not a row's (`deny_unknown_fields` does not combine with `flatten`):
    /// [`ExperimentConfig::validate`] refuses them.
    #[serde(flatten, default, skip_serializing)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl RowSpec {
    fn family(&self) -> String {
        self.family.clone().unwrap_or_else(|| self.plan.keys.family().into())
    }

    /// The row's sampling options under the experiment's guidance and calibration settings.
    pub fn sampling(&self, cfg: &ExperimentConfig) -> SamplingOptions {
        SamplingOptions {
            plan: self.plan.clone(),
            guidance: cfg.guidance,
            calibration_n: cfg.calibration_n,
            control_scale: cfg.control_scale,
            frames: cfg.frames,
        }
    }

    /// Folder-safe name.
    pub fn slug(&self) -> String {
        // `++` is meaningful (DPM-Solver vs DPM-Solver++): keep it as `pp`
        let s: String = self
            .label
            .replace("++", "pp")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
            .collect();
        s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-").to_lowercase()
    }
}

impl ExperimentConfig {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| Error::Folder { path: path.into(), msg: format!("not a valid experiment config: {e}") })?;
        cfg.validate().map_err(|msg| Error::Folder { path: path.into(), msg })?;
        Ok(cfg)
    }

    /// Checks that need no model: labels, baselines, samplers, plans, injection specs, N.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.rows.is_empty() {
            return Err("`rows` is empty".into());
        }
        if self.n < 2 {
            return Err(format!("n = {} but FID needs at least 2 samples", self.n));
        }
        if self.batch == 0 {
            return Err("batch must be >= 1".into());
        }
        let mut seen = BTreeMap::new();
        for row in &self.rows {
            let (r, label) = (&row.plan, &row.label);
            if seen.insert(row.slug(), label).is_some() {
                return Err(format!("row label `{label}` is not unique (as a folder name)"));
            }
            if let Some(k) = row.unknown.keys().next() {
                return Err(format!("row `{label}`: unknown field `{k}`"));
            }
            if !SamplerSpec::NAMES.contains(&r.sampler.as_str()) {
                return Err(format!(
                    "row `{label}`: unknown sampler `{}` (known: {:?})",
                    r.sampler,
                    SamplerSpec::NAMES
                ));
            }
            if r.keys.auto_rule().is_none() {
                r.keys.resolve(r.steps).map_err(|e| format!("row `{label}`: {e}"))?;
            }
            if let Some(i) = &r.inject {
                Injection::parse(i).map_err(|e| format!("row `{label}`: {e}"))?;
            }
        }
        for r in &self.rows {
            if let Some(b) = &r.baseline {
                if !self.rows.iter().any(|x| &x.label == b) {
                    return Err(format!("row `{}`: baseline `{b}` is not a row label", r.label));
                }
            }
        }
        Ok(())
    }
}

/// Where an experiment runs and writes.
#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    /// Sample folders (`<work>/<row slug>/`), resumable; not committed.
    pub work_dir: PathBuf,
    /// `table.md`, `table.csv`, `experiment.json`, `rows/<slug>/{run.json, grid.png}`, plots.
    pub results_dir: PathBuf,
    pub device: tch::Device,
    pub existing: Existing,
    pub inception: PathBuf,
    /// Only the rows with these labels (all when empty).
    pub only: Vec<String>,
    /// Row-by-row graph calls + libtorch deterministic algorithms (see `fd sample --deterministic`).
    pub deterministic: bool,
    /// Show progress (a bar on a terminal, a line every 30 s otherwise; see [`crate::progress`]).
    pub progress: bool,
    /// Other experiments' work folders (`<root>/<experiment>/<N...>/<row>`): a row whose run
    /// configuration equals one of theirs adopts its finished parts ([`crate::reuse`]) when
    /// resuming. None: every row samples its own.
    pub reuse_root: Option<PathBuf>,
}

/// `experiment.json`: the config, where it ran and every evaluated row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentRecord {
    pub config: ExperimentConfig,
    pub command: Vec<String>,
    pub machine: Machine,
    pub versions: Versions,
    pub work_dir: PathBuf,
    pub rows: Vec<RowResult>,
}

/// One evaluated row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowResult {
    pub label: String,
    pub sampler: String,
    pub steps: usize,
    pub plan: String,
    pub key_steps: Vec<usize>,
    pub parallel: bool,
    /// Decoding as run, and how it was decided ([`fd_sched::decode::DecodeChoice::summary`]).
    pub decode: String,
    pub injection: Option<Injection>,
    pub n: usize,
    pub fid: f64,
    pub kid: Option<f64>,
    pub kid_std: Option<f64>,
    pub consistency: Option<f64>,
    pub clip_s: Option<f64>,
    pub gflops_per_image: f64,
    pub unet_s_per_image: f64,
    pub total_s_per_image: f64,
    /// FID x total s/image / consistency (lower is better), the ablation's combined score.
    pub ftc: Option<f64>,
    pub baseline: Option<String>,
    pub parts_resumed: usize,
    pub family: String,
}

/// Run every row (resuming finished parts), evaluate, and write the table. Returns the rows.
pub fn run_experiment(cfg: &ExperimentConfig, opt: &ExperimentOptions) -> Result<Vec<RowResult>> {
    cfg.validate().map_err(Error::Input)?;
    let model = ModelSpec { dir: cfg.model.clone(), device: opt.device, deterministic: opt.deterministic }.load()?;
    let conds = cycle_conditions(&model, cfg.prompts.as_deref(), None, cfg.n)?;
    let conds = crate::spec::with_control(&model, conds, cfg.control.as_deref())?;
    // rows with their own model (e.g. a ToMe export of the same weights), each loaded once
    let mut row_models: BTreeMap<PathBuf, UNetModel> = BTreeMap::new();
    for row in &cfg.rows {
        let Some(dir) = &row.model else { continue };
        if row_models.contains_key(dir) || !(opt.only.is_empty() || opt.only.iter().any(|o| o == &row.label)) {
            continue;
        }
        let m = ModelSpec { dir: dir.clone(), device: opt.device, deterministic: opt.deterministic }
            .load()
            .ctx(format!("row `{}`: model", row.label))?;
        let c = cycle_conditions(&m, cfg.prompts.as_deref(), None, cfg.n)?;
        if crate::spec::with_control(&m, c, cfg.control.as_deref())? != conds {
            return Err(Error::Input(format!(
                "row `{}`: model {} conditions its samples differently from {} (rows must share conditions)",
                row.label,
                dir.display(),
                cfg.model.display()
            )));
        }
        row_models.insert(dir.clone(), m);
    }
    let model_of = |row: &RowSpec| row.model.as_ref().map_or(&model, |d| &row_models[d]);
    let classifier = match &cfg.classifier {
        Some(p) => Some(p.clone()),
        None => Some(cfg.model.join("classifier.pt")).filter(|p| p.is_file()),
    }
    .map(|p| fd_eval::consistency::Classifier::load(&p, opt.device))
    .transpose()?;
    let clip = cfg.clip.as_ref().map(|p| fd_eval::clip::Clip::load(p, opt.device)).transpose()?;
    let inception = fd_eval::inception::Inception::load(&opt.inception, opt.device)?;
    let rows: Vec<&RowSpec> =
        cfg.rows.iter().filter(|r| opt.only.is_empty() || opt.only.iter().any(|o| o == &r.label)).collect();
    if rows.is_empty() {
        return Err(Error::Input(format!("--only {:?}: no such row labels", opt.only)));
    }
    // every row's plan is checked before anything is written (auto:K rows are calibrated later)
    for row in &rows {
        if row.plan.keys.auto_rule().is_none() {
            row.sampling(cfg)
                .resolve(model_of(row), &conds, cfg.batch.min(cfg.n))
                .ctx(format!("row `{}`", row.label))?;
        }
    }
    let _results_lock = crate::lock::FolderLock::acquire(&opt.results_dir, "fd experiment")?;
    let mut results = Vec::new();
    let style = indicatif::ProgressStyle::with_template("{msg:40} {bar:30} {pos}/{len} [{elapsed} < {eta}]")?;
    for (k, row) in rows.iter().enumerate() {
        let row_model = model_of(row);
        let spec =
            row.sampling(cfg).resolve(row_model, &conds, cfg.batch.min(cfg.n)).ctx(format!("row `{}`", row.label))?;
        let dir = opt.work_dir.join(row.slug());
        let bar = crate::progress::bar(cfg.n as u64, opt.progress).with_style(style.clone()).with_message(format!(
            "[{}/{}] {}",
            k + 1,
            rows.len(),
            row.label
        ));
        let run = SampleRun {
            model: row_model,
            spec: &spec,
            conds: &conds,
            seed: cfg.seed,
            batch: cfg.batch,
            shard: Shard::default(),
            out: &dir,
            existing: opt.existing,
        };
        if let (Some(root), Existing::Resume) = (&opt.reuse_root, opt.existing) {
            if let Some((donor, k)) = crate::reuse::adopt_parts(root, &dir, &run.config())? {
                log::info!("row `{}`: {k} finished part(s) adopted from {} (same run)", row.label, donor.display());
            }
        }
        let (summary, mut record) = run.run_and_record(&bar)?;
        let _row_lock = crate::lock::FolderLock::acquire(&dir, "fd experiment")?;
        bar.set_position(0);
        let fid: FidResult =
            crate::evaluate::folder_fid(&dir, &cfg.reference, &inception, KidOptions::default(), &bar)?;
        bar.finish_and_clear();
        write_json(&dir.join("fid.json"), &fid)?;
        let consistency = match &classifier {
            Some(c) if model.manifest.cond.kind == CondKind::Class => {
                let r = crate::evaluate::folder_consistency(c, &dir)?;
                write_json(&dir.join("consistency.json"), &r)?;
                Some(r.consistency)
            }
            _ => None,
        };
        let clip_s = match &clip {
            Some(c) => {
                let prompts: Vec<String> = conds.iter().map(fd_model::Condition::text).collect();
                let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
                let imgs = crate::evaluate::VerifiedRun::load(&dir)?.images()?;
                let r = c.score(&imgs, &p)?;
                write_json(&dir.join("clip_score.json"), &r)?;
                Some(r.clip_s)
            }
            None => None,
        };
        let plan = &spec.plan;
        let total = summary.total_s_per_image();
        let res = RowResult {
            label: row.label.clone(),
            sampler: row.plan.sampler.clone(),
            steps: row.plan.steps,
            plan: if row.plan.keys.auto_rule().is_some() {
                format!("{} = {}", row.plan.keys, plan.label())
            } else {
                plan.label()
            },
            key_steps: plan.key_steps.clone(),
            parallel: spec.exec.decode.parallel,
            decode: spec.exec.decode.summary(),
            injection: spec.exec.injection,
            n: summary.n,
            fid: fid.fid,
            kid: fid.kid.as_ref().map(|k| k.mean),
            kid_std: fid.kid.as_ref().map(|k| k.std),
            consistency,
            clip_s,
            gflops_per_image: summary.gflops_per_image,
            unet_s_per_image: summary.unet_s_per_image(),
            total_s_per_image: total,
            ftc: consistency.or(clip_s).filter(|c| *c > 0.0).map(|c| fid.fid * total / c),
            baseline: row.baseline.clone(),
            parts_resumed: summary.parts_resumed,
            family: row.family(),
        };
        log::info!(
            "{}: FID {:.2} | consistency {} | {:.2} GFLOPs/img | UNet {:.4} s/img | total {:.4} s/img",
            res.label,
            res.fid,
            res.consistency.map_or("-".into(), |c| format!("{c:.3}")),
            res.gflops_per_image,
            res.unet_s_per_image,
            res.total_s_per_image
        );
        let rd = opt.results_dir.join("rows").join(row.slug());
        std::fs::create_dir_all(&rd).map_err(io(&rd))?;
        record.metrics = Some(RowMetrics { fid, consistency, clip_s });
        write_json(&rd.join("run.json"), &record)?;
        fd_model::io::copy_atomic(&dir.join("grid.png"), &rd.join("grid.png"))?;
        results.push(res);
        // the table so far: an interrupted experiment still leaves every finished row written
        write_table(cfg, opt, &model, &results)?;
    }
    if cfg.pareto {
        pareto(cfg, opt, &results)?;
    }
    Ok(results)
}

fn pct(v: f64, base: f64) -> String {
    if base == 0.0 {
        "-".into()
    } else {
        format!("{:+.1}%", 100.0 * (v - base) / base)
    }
}

fn opt_fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// Write `table.md`, `table.csv` and `experiment.json`.
fn write_table(cfg: &ExperimentConfig, opt: &ExperimentOptions, model: &UNetModel, rows: &[RowResult]) -> Result<()> {
    let by_label: BTreeMap<&str, &RowResult> = rows.iter().map(|r| (r.label.as_str(), r)).collect();
    let m = Machine::current(opt.device);
    let mut md = format!(
        "# {}\n\nModel `{}` ({}), N = {} per row (same seeds and conditions in every row), CFG {}, FID/KID vs `{}` \
         ({}). Machine: {} ({} cores, {} torch threads), device {}.\n\
         Command: `{}`\n\n\
         | row | sampler | T | plan | decoding | FID | KID | consistency | CLIP-S | GFLOPs/img | UNet s/img | total s/img | FTC | vs | ΔGFLOPs | ΔUNet s | Δtotal s | ΔFID |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        if cfg.title.is_empty() { &cfg.name } else { &cfg.title },
        model.manifest.name,
        cfg.model.display(),
        cfg.n,
        cfg.guidance,
        cfg.reference,
        fd_eval::inception::PREPROCESSING.split(':').next().unwrap_or(""),
        m.cpu,
        m.cores,
        m.torch_threads,
        m.device,
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let own: Vec<String> = cfg
        .rows
        .iter()
        .filter(|r| by_label.contains_key(r.label.as_str()))
        .filter_map(|r| r.model.as_ref().map(|d| format!("`{}`: {}", r.label, d.display())))
        .collect();
    if !own.is_empty() {
        let at = md.find("Command:").unwrap_or(md.len());
        md.insert_str(at, &format!("Rows with their own model: {}.\n", own.join(", ")));
    }
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record([
        "row",
        "sampler",
        "steps",
        "plan",
        "key_steps",
        "parallel",
        "decode",
        "injection",
        "n",
        "fid",
        "kid",
        "kid_std",
        "consistency",
        "clip_s",
        "gflops_per_image",
        "unet_s_per_image",
        "total_s_per_image",
        "ftc",
        "baseline",
        "family",
        "parts_resumed",
    ])?;
    for r in rows {
        let base = r.baseline.as_deref().and_then(|b| by_label.get(b));
        let d = |f: &dyn Fn(&RowResult) -> f64| base.map_or("".into(), |b| pct(f(r), f(b)));
        md += &format!(
            "| {} | {} | {} | `{}` | {} | {:.2} | {} | {} | {} | {:.2} | {:.4} | {:.4} | {} | {} | {} | {} | {} | {} |\n",
            r.label,
            r.sampler,
            r.steps,
            r.plan,
            r.decode,
            r.fid,
            match (r.kid, r.kid_std) {
                (Some(k), Some(s)) => format!("{k:.4} ± {s:.4}"),
                _ => "-".into(),
            },
            opt_fmt(r.consistency, 3),
            opt_fmt(r.clip_s, 3),
            r.gflops_per_image,
            r.unet_s_per_image,
            r.total_s_per_image,
            opt_fmt(r.ftc, 3),
            r.baseline.as_deref().unwrap_or(""),
            d(&|x| x.gflops_per_image),
            d(&|x| x.unet_s_per_image),
            d(&|x| x.total_s_per_image),
            d(&|x| x.fid),
        );
        let o = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
        csv.write_record([
            r.label.clone(),
            r.sampler.clone(),
            r.steps.to_string(),
            r.plan.clone(),
            r.key_steps.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(" "),
            r.parallel.to_string(),
            r.decode.clone(),
            r.injection.map(|i| format!("{}@{}", i.strength, i.tau)).unwrap_or_default(),
            r.n.to_string(),
            r.fid.to_string(),
            o(r.kid),
            o(r.kid_std),
            o(r.consistency),
            o(r.clip_s),
            r.gflops_per_image.to_string(),
            r.unet_s_per_image.to_string(),
            r.total_s_per_image.to_string(),
            o(r.ftc),
            r.baseline.clone().unwrap_or_default(),
            r.family.clone(),
            r.parts_resumed.to_string(),
        ])?;
    }
    md += "\nFTC = FID x total s/image / consistency (lower is better). Δ columns: change against the row named in `vs`. \
           GFLOPs: torch.utils.flop_counter (2 x MACs) of the UNet graphs actually run, CFG doubling included. \
           s/image: sums of per-batch wall times in one process per row";
    if rows.iter().any(|r| r.parts_resumed > 0) {
        md += "; rows with resumed parts carry timings from the earlier process (see parts_resumed in table.csv)";
    }
    md += ".\n";
    std::fs::create_dir_all(&opt.results_dir).map_err(|source| Error::Io { path: opt.results_dir.clone(), source })?;
    write_atomic(&opt.results_dir.join("table.md"), md.as_bytes())?;
    let bytes = csv.into_inner().map_err(|e| Error::from(csv::Error::from(e.into_error())))?;
    write_atomic(&opt.results_dir.join("table.csv"), &bytes)?;
    let exp = ExperimentRecord {
        config: cfg.clone(),
        command: command(),
        machine: m,
        versions: Versions::current(),
        work_dir: opt.work_dir.clone(),
        rows: rows.to_vec(),
    };
    Ok(write_json(&opt.results_dir.join("experiment.json"), &exp)?)
}

fn pareto(cfg: &ExperimentConfig, opt: &ExperimentOptions, rows: &[RowResult]) -> Result<()> {
    use fd_analysis::plot::{pareto, ParetoPoint};
    let pts = |x: &dyn Fn(&RowResult) -> f64| -> Vec<ParetoPoint> {
        rows.iter()
            .map(|r| ParetoPoint { label: r.label.clone(), family: r.family.clone(), x: x(r), y: r.fid })
            .collect()
    };
    let title = |x: &str| format!("{}: FID (N={}) vs {x}", cfg.name, cfg.n);
    pareto(
        &pts(&|r| r.gflops_per_image),
        &title("GFLOPs/image"),
        "UNet GFLOPs / image",
        "FID",
        &opt.results_dir.join("pareto_gflops"),
    )?;
    pareto(
        &pts(&|r| r.total_s_per_image),
        &title("seconds/image"),
        "s / image (total)",
        "FID",
        &opt.results_dir.join("pareto_time"),
    )?;
    // class adherence can fall where FID does not (T-GATE): its own front, lower = better
    if rows.iter().all(|r| r.consistency.is_some()) {
        let pts: Vec<ParetoPoint> = rows
            .iter()
            .map(|r| ParetoPoint {
                label: r.label.clone(),
                family: r.family.clone(),
                x: r.gflops_per_image,
                y: 1.0 - r.consistency.unwrap_or(0.0),
            })
            .collect();
        pareto(
            &pts,
            &format!("{}: 1 - class consistency (N={}) vs GFLOPs/image", cfg.name, cfg.n),
            "UNet GFLOPs / image",
            "1 - class consistency",
            &opt.results_dir.join("pareto_consistency"),
        )?;
    }
    Ok(())
}
