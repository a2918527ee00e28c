//! Experiments as data: a JSON file (`experiments/configs/*.json`) lists rows (sampler, steps,
//! plan, decoding mode, injection); each row is sampled with the [`crate::runner`] (resumable),
//! evaluated (FID + KID, class consistency or CLIP score, GFLOPs, seconds per image), recorded as
//! `rows/<row>/row.json` and the table written from the recorded rows. `just reproduce-table1`,
//! `just ablate-keysteps` and the other ablations are all this one code path with different configs.
//!
//! One process runs everything ([`Stage::All`]), or a cluster runs the steps as separate jobs
//! ([`Stage`], [`crate::slurm`]): the reference once, each row's shards, each row's merge +
//! evaluation, the table. Both write the same folders and the same table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fd_eval::score::{FidResult, KidOptions};
use fd_model::io::{write_atomic, write_json};
use fd_model::{CondKind, Denoiser};
use fd_sched::{Injection, SamplerSpec};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::error::{io, ResultExt};
use crate::machine::{command, Machine, Versions};
use crate::records::{RowMetrics, RunRecord};
use crate::runner::{part_stem, Existing, RunSummary, SampleRun, Shard};
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
    /// How `fd experiment --slurm` cuts the experiment into jobs ([`crate::slurm::SlurmConfig`]).
    /// Default: 4 shards per row, no GPU, the cluster's default partition, account and time limit.
    #[serde(default, skip_serializing_if = "crate::slurm::SlurmConfig::is_default")]
    pub slurm: crate::slurm::SlurmConfig,
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
        self.slurm.validate()?;
        // sizes and seeds through the same checks as the flags (a huge `n` is an error, not an
        // allocation failure)
        use crate::runner::MAX_SAMPLES;
        if self.n > MAX_SAMPLES || self.batch > MAX_SAMPLES || self.calibration_n > MAX_SAMPLES {
            return Err(format!(
                "n = {}, batch = {}, calibration_n = {}: at most {MAX_SAMPLES} each",
                self.n, self.batch, self.calibration_n
            ));
        }
        if self.seed.checked_add(self.n as u64 - 1).is_none() {
            return Err(format!("seed {} with n = {}: seed + sample index overflows a 64-bit seed", self.seed, self.n));
        }
        // folder names from user data: the experiment's name (results/<name>/, out/experiments/<name>/)
        // and each row's slug stay single, portable path components
        if !is_folder_name(&self.name) {
            return Err(format!(
                "name `{}`: expected a folder name (1 to {MAX_NAME} letters, digits, `.`, `_` or `-`, with a letter or digit; not `.` or `..`)",
                self.name
            ));
        }
        let mut seen = BTreeMap::new();
        for row in &self.rows {
            if !is_folder_name(&row.slug()) {
                return Err(format!(
                    "row label `{}`: needs a letter or digit (its folder name would be `{}`; at most {MAX_NAME} characters)",
                    row.label,
                    row.slug()
                ));
            }
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

/// The longest experiment name or row folder name.
const MAX_NAME: usize = 100;

/// A single portable path component: ASCII letters, digits, `.`, `_`, `-`, at least one letter or
/// digit (so never `.` or `..`), at most [`MAX_NAME`] characters.
fn is_folder_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && s.chars().any(|c| c.is_ascii_alphanumeric())
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
    /// Which compiled form runs every row's graphs (`fd experiment --format`; `auto` is decided
    /// for each model the rows use).
    pub format: fd_model::FormatChoice,
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

/// Which part of an experiment a process runs (`fd experiment --stage`): everything, or one of the
/// steps a cluster runs as separate jobs ([`crate::slurm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Sample, evaluate and record every selected row, then write the table (the default).
    All,
    /// The named reference set's Inception features (cached under `$FD_CACHE/fid`), computed
    /// once before the rows need them; nothing to do for an `.npz` reference.
    Reference,
    /// One shard of each selected row, sampled into `<work>/<row>.shards/<i>-of-<n>/`
    /// (resumable; nothing to do for a row already sampled).
    Sample(Shard),
    /// Each selected row's shards (this many) merged into `<work>/<row>/`, then evaluated and
    /// recorded; an error naming the row and its unfinished shards when one is missing.
    Finish { shards: usize },
    /// The table and plots of the recorded rows; an error naming the rows not recorded.
    Table,
}

/// Run every row (resuming finished parts), evaluate, and write the table ([`Stage::All`]).
/// Returns the rows this process evaluated.
pub fn run_experiment(cfg: &ExperimentConfig, opt: &ExperimentOptions) -> Result<Vec<RowResult>> {
    run_stage(cfg, opt, Stage::All)
}

/// Run one stage of the experiment (see [`Stage`]); returns the rows this process evaluated.
///
/// The steps of [`Stage::All`]: open the experiment's model and the rows' own models
/// ([`Models::load`]), load the judges ([`Judges::load`]), check every selected row's plan before
/// anything is written, then per row sample ([`sample_row`]), evaluate ([`Judges::evaluate`]) and
/// record ([`record_row`]), the table rewritten from the recorded rows after each row
/// ([`write_recorded`]).
pub fn run_stage(cfg: &ExperimentConfig, opt: &ExperimentOptions, stage: Stage) -> Result<Vec<RowResult>> {
    cfg.validate().map_err(Error::Input)?;
    // the reference is checked before any row is sampled against it
    fd_eval::reference::check_reference(&cfg.reference).ctx(format!("reference `{}`", cfg.reference))?;
    let rows = selected_rows(cfg, opt)?;
    match stage {
        Stage::Reference => return reference(cfg, opt).map(|()| Vec::new()),
        Stage::Table => {
            let _results_lock = crate::lock::FolderLock::acquire(&opt.results_dir, "fd experiment --stage table")?;
            let (recorded, missing) = write_recorded(cfg, opt)?;
            if !missing.is_empty() {
                return Err(Error::Input(format!(
                    "table written with {} of {} rows; not recorded yet: {} (evaluate them with `--only`, or submit \
                     again with `--slurm`: on a cluster their finish jobs failed or did not run, see their logs)",
                    recorded.len(),
                    cfg.rows.len(),
                    missing.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")
                )));
            }
            return Ok(recorded);
        }
        Stage::Sample(s) => check_shards(cfg, s.count)?,
        Stage::Finish { shards } => check_shards(cfg, shards)?,
        Stage::All => {}
    }
    let models = Models::load(cfg, opt)?;
    // every row's plan is checked before anything is written (auto:K rows are calibrated later)
    for row in &rows {
        if row.plan.keys.auto_rule().is_none() {
            models.spec(cfg, row)?;
        }
    }
    let style = indicatif::ProgressStyle::with_template("{msg:40} {bar:30} {pos}/{len} [{elapsed} < {eta}]")?;
    let bar_for = |k: usize, row: &RowSpec, what: &str| {
        crate::progress::bar(cfg.n as u64, opt.progress).with_style(style.clone()).with_message(format!(
            "[{}/{}] {}{what}",
            k + 1,
            rows.len(),
            row.label
        ))
    };
    if let Stage::Sample(shard) = stage {
        for (k, row) in rows.iter().enumerate() {
            let bar = bar_for(k, row, &format!(" shard {}/{}", shard.index, shard.count));
            sample_shard(cfg, opt, &models, row, shard, &bar)?;
            bar.finish_and_clear();
        }
        return Ok(Vec::new());
    }
    let judges = Judges::load(cfg, opt)?;
    let _results_lock = match stage {
        Stage::All => Some(crate::lock::FolderLock::acquire(&opt.results_dir, "fd experiment")?),
        _ => None,
    };
    let mut results = Vec::new();
    for (k, row) in rows.iter().enumerate() {
        let bar = bar_for(k, row, "");
        let sampled = match stage {
            Stage::Finish { shards } => merged_row(cfg, opt, &models, row, shards, &bar)?,
            _ => sample_row(cfg, opt, &models, row, &bar)?,
        };
        let _row_lock = crate::lock::FolderLock::acquire(&sampled.dir, "fd experiment")?;
        bar.set_position(0);
        let metrics = judges.evaluate(cfg, &models, &sampled.dir, &bar)?;
        bar.finish_and_clear();
        results.push(record_row(cfg, opt, row, sampled, metrics)?);
        if stage == Stage::All {
            // the table so far: an interrupted experiment still leaves every finished row written
            write_recorded(cfg, opt)?;
        }
    }
    Ok(results)
}

/// The rows `--only` selects (all when it is empty); an unknown label is an error.
pub fn selected_rows<'a>(cfg: &'a ExperimentConfig, opt: &ExperimentOptions) -> Result<Vec<&'a RowSpec>> {
    if let Some(o) = opt.only.iter().find(|o| !cfg.rows.iter().any(|r| &r.label == *o)) {
        return Err(Error::Input(format!(
            "--only `{o}`: no such row label (labels: {})",
            cfg.rows.iter().map(|r| format!("`{}`", r.label)).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(cfg.rows.iter().filter(|r| opt.only.is_empty() || opt.only.iter().any(|o| o == &r.label)).collect())
}

/// `shards` shards per row: at least 1 and at most one per part.
pub fn check_shards(cfg: &ExperimentConfig, shards: usize) -> Result<()> {
    let parts = cfg.n.div_ceil(cfg.batch.max(1));
    if shards == 0 || shards > parts {
        return Err(Error::Input(format!(
            "--shards {shards}: {} samples in batches of {} make {parts} parts; expected 1 to {parts} shards",
            cfg.n, cfg.batch
        )));
    }
    Ok(())
}

/// [`Stage::Reference`]: the named reference set's features, computed and cached once.
fn reference(cfg: &ExperimentConfig, opt: &ExperimentOptions) -> Result<()> {
    if !fd_eval::reference::NAMED.contains(&cfg.reference.as_str()) {
        log::info!("reference `{}`: statistics given, nothing to compute", cfg.reference);
        return Ok(());
    }
    let inception = fd_eval::inception::Inception::load(&opt.inception, opt.device)?;
    let bar = crate::progress::bar(0, opt.progress);
    let f = fd_eval::reference::reference_features(&cfg.reference, &inception, &bar)?;
    bar.finish_and_clear();
    log::info!("reference `{}`: {} feature rows ready", cfg.reference, f.size()[0]);
    Ok(())
}

/// A row's unsharded sample folder.
pub fn row_dir(opt: &ExperimentOptions, row: &RowSpec) -> PathBuf {
    opt.work_dir.join(row.slug())
}

/// The folder of shard `i/n` of a row: `<work>/<row>.shards/<i>-of-<n>/`.
pub fn shard_dir(opt: &ExperimentOptions, row: &RowSpec, shard: Shard) -> PathBuf {
    opt.work_dir.join(format!("{}.shards", row.slug())).join(format!("{}-of-{}", shard.index, shard.count))
}

/// A sample folder whose run finished (`run.json` is written last).
pub fn is_finished(dir: &Path) -> bool {
    dir.join("run.json").is_file()
}

/// How far a shard is.
#[derive(Debug, Clone)]
pub struct ShardProgress {
    pub finished: bool,
    pub parts_done: usize,
    pub parts_total: usize,
}

/// How far a row is.
#[derive(Debug, Clone)]
pub enum RowProgress {
    /// Recorded in the results folder under the current config.
    Evaluated(Box<RowResult>),
    /// Its unsharded folder is finished (sampled in one process, merged, or adopted).
    Sampled,
    /// Each shard's progress.
    Shards(Vec<ShardProgress>),
}

/// Where `row` stands, its samples cut into `shards` shards.
pub fn row_progress(
    cfg: &ExperimentConfig,
    opt: &ExperimentOptions,
    row: &RowSpec,
    shards: usize,
) -> Result<RowProgress> {
    if let Some(r) = recorded_row(cfg, opt, row)? {
        return Ok(RowProgress::Evaluated(Box::new(r)));
    }
    if is_finished(&row_dir(opt, row)) {
        return Ok(RowProgress::Sampled);
    }
    Ok(RowProgress::Shards(
        (0..shards)
            .map(|index| {
                let shard = Shard { index, count: shards };
                let dir = shard_dir(opt, row, shard);
                let parts = shard.parts(cfg.n, cfg.batch);
                let done =
                    parts.iter().filter(|r| dir.join("parts").join(format!("{}.json", part_stem(r))).is_file()).count();
                ShardProgress { finished: is_finished(&dir), parts_done: done, parts_total: parts.len() }
            })
            .collect(),
    ))
}

/// [`Stage::Sample`]: one shard of `row` into its shard folder, resumed; parts an identical run
/// already holds (the row's own unsharded folder, or another experiment's row under the reuse
/// root) are adopted first. Nothing to do when the row is already sampled.
fn sample_shard(
    cfg: &ExperimentConfig,
    opt: &ExperimentOptions,
    models: &Models,
    row: &RowSpec,
    shard: Shard,
    bar: &ProgressBar,
) -> Result<()> {
    if is_finished(&row_dir(opt, row)) {
        log::info!(
            "row `{}`: already sampled in {}; shard {}/{} has nothing to do",
            row.label,
            row_dir(opt, row).display(),
            shard.index,
            shard.count
        );
        return Ok(());
    }
    let spec = models.spec(cfg, row)?;
    let dir = shard_dir(opt, row, shard);
    let run = models.run(cfg, row, &spec, shard, &dir, Existing::Resume);
    let config = run.config();
    // parts of this shard an identical unsharded run already holds: the row's own folder, then
    // another experiment's row under the reuse root
    let own = row_dir(opt, row);
    let k = crate::reuse::adopt_from(&own, &dir, &config)?;
    let donor = match &opt.reuse_root {
        Some(root) => crate::reuse::adopt_parts(root, &dir, &config)?,
        None => None,
    };
    for (from, k) in [(own, k)].into_iter().chain(donor).filter(|(_, k)| *k > 0) {
        log::info!(
            "row `{}` shard {}/{}: {k} finished part(s) adopted from {} (same run)",
            row.label,
            shard.index,
            shard.count,
            from.display()
        );
    }
    run.run_and_record(bar).ctx(format!("row `{}` shard {}/{}", row.label, shard.index, shard.count))?;
    Ok(())
}

/// [`Stage::Finish`]: `row`'s shards merged into its folder (unless it is already sampled), then
/// resumed there, which verifies every part again. A shard that is not finished is an error naming
/// the row, the shard and how far it got.
fn merged_row(
    cfg: &ExperimentConfig,
    opt: &ExperimentOptions,
    models: &Models,
    row: &RowSpec,
    shards: usize,
    bar: &ProgressBar,
) -> Result<SampledRow> {
    let dir = row_dir(opt, row);
    if !is_finished(&dir) {
        let RowProgress::Shards(progress) = row_progress(cfg, opt, row, shards)? else {
            unreachable!("a row that is not sampled has shards")
        };
        let missing: Vec<String> = progress
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.finished)
            .map(|(i, p)| format!("shard {i} ({}/{} parts)", p.parts_done, p.parts_total))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Input(format!(
                "row `{}`: {} of {shards} not finished: {} (in {}); submit again (`fd experiment CONFIG --slurm`) \
                 to sample what is missing",
                row.label,
                missing.len(),
                missing.join(", "),
                opt.work_dir.join(format!("{}.shards", row.slug())).display()
            )));
        }
        let folders: Vec<PathBuf> =
            (0..shards).map(|index| shard_dir(opt, row, Shard { index, count: shards })).collect();
        crate::merge::merge(&folders, &dir, Existing::Overwrite)
            .ctx(format!("row `{}`: merging its shards", row.label))?;
        log::info!("row `{}`: {shards} shards merged into {}", row.label, dir.display());
    }
    let spec = models.spec(cfg, row)?;
    let run = models.run(cfg, row, &spec, Shard::default(), &dir, Existing::Resume);
    // every part verified again; the merged record (machines of every shard) is kept
    let summary = run.run(bar).ctx(format!("row `{}`", row.label))?;
    if summary.parts_computed > 0 {
        return Err(Error::Folder {
            path: dir,
            msg: format!("row `{}`: {} part(s) were missing after the merge", row.label, summary.parts_computed),
        });
    }
    let record = crate::records::RunRecord::load(&dir)?;
    Ok(SampledRow { dir, spec, summary, record })
}

/// The experiment's model, the rows' own models (e.g. a ToMe export of the same weights, each
/// loaded once and checked to condition its samples the same way) and the samples' conditions.
struct Models {
    main: Denoiser,
    by_dir: BTreeMap<PathBuf, Denoiser>,
    conds: Vec<fd_model::Condition>,
}

/// The one graph format every row of `cfg` runs: `format`, with `auto` decided over the
/// experiment's model and every row's own model together, so that the rows of one table run one
/// format whichever of them a process runs (`--only`, a Slurm task); and why `auto` runs
/// TorchScript when a model lists packages. An experiment compares its rows' speeds, so `auto`
/// picks AOTInductor only when every model ships packages that run here for every graph a
/// sampling run can call (all but `full` and drift's analysis graphs, and graphs of no FLOPs):
/// a method whose own graphs ran on TorchScript beside a packaged baseline would be timed on
/// another format. `--format aoti` runs the packages there are (each row's run.json then says
/// which graphs ran in which format).
pub fn resolve_format(
    cfg: &ExperimentConfig,
    format: fd_model::FormatChoice,
    device: tch::Device,
) -> Result<(fd_model::GraphFormat, Option<String>)> {
    use fd_model::{FormatChoice, GraphFormat};
    if let FormatChoice::Fixed(f) = format {
        return Ok((f, None));
    }
    let mut dirs: Vec<&PathBuf> = vec![&cfg.model];
    for d in cfg.rows.iter().filter_map(|r| r.model.as_ref()) {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let (mut packaged, mut bare) = (false, None);
    for dir in dirs {
        let m = fd_model::Manifest::load(dir)?;
        match FormatChoice::Auto.resolve(&m, device) {
            (GraphFormat::Aoti, _) => {
                let missing: Vec<String> = m
                    .graphs
                    .iter()
                    .filter(|(_, g)| g.packages.is_empty() && g.flops > 0)
                    .filter(|(k, _)| !matches!(k.as_str(), "full" | "decoder_analysis" | "encoder_analysis"))
                    .map(|(k, _)| format!("`{k}`"))
                    .collect();
                if !missing.is_empty() {
                    return Ok((
                        GraphFormat::Torchscript,
                        Some(format!(
                            "TorchScript runs every row: an experiment times its rows on one format, and model {}'s graphs {} have no AOTInductor package (--format aoti runs the packages there are)",
                            dir.display(),
                            missing.join(", ")
                        )),
                    ));
                }
                packaged = true
            }
            (_, Some(why)) => return Ok((GraphFormat::Torchscript, Some(format!("{why} (model {})", dir.display())))),
            (_, None) => bare = Some(dir),
        }
    }
    Ok(match (packaged, bare) {
        (true, None) => (GraphFormat::Aoti, None),
        (true, Some(dir)) => (
            GraphFormat::Torchscript,
            Some(format!(
                "TorchScript runs every row: model {} lists no AOTInductor packages, and the rows of one experiment run one format",
                dir.display()
            )),
        ),
        (false, _) => (GraphFormat::Torchscript, None),
    })
}

impl Models {
    fn load(cfg: &ExperimentConfig, opt: &ExperimentOptions) -> Result<Self> {
        let (format, _) = resolve_format(cfg, opt.format, opt.device)?;
        let open = |dir: &Path| {
            ModelSpec {
                dir: dir.to_path_buf(),
                device: opt.device,
                deterministic: opt.deterministic,
                format: format.into(),
            }
            .load()
        };
        let conditions = |m: &Denoiser| -> Result<Vec<fd_model::Condition>> {
            let c = cycle_conditions(m, cfg.prompts.as_deref(), None, cfg.n)?;
            crate::spec::with_control(m, c, cfg.control.as_deref())
        };
        let main = open(&cfg.model)?;
        let conds = conditions(&main)?;
        let mut by_dir = BTreeMap::new();
        for row in &cfg.rows {
            let Some(dir) = &row.model else { continue };
            if by_dir.contains_key(dir) || !(opt.only.is_empty() || opt.only.iter().any(|o| o == &row.label)) {
                continue;
            }
            let m = open(dir).ctx(format!("row `{}`: model", row.label))?;
            if conditions(&m)? != conds {
                return Err(Error::Input(format!(
                    "row `{}`: model {} conditions its samples differently from {} (rows must share conditions)",
                    row.label,
                    dir.display(),
                    cfg.model.display()
                )));
            }
            by_dir.insert(dir.clone(), m);
        }
        Ok(Self { main, by_dir, conds })
    }

    /// The model a row samples with.
    fn of(&self, row: &RowSpec) -> &Denoiser {
        row.model.as_ref().map_or(&self.main, |d| &self.by_dir[d])
    }
}

/// What judges a row's samples: the Inception extractor (FID / KID), the class-consistency
/// classifier (the config's, or the one beside the model) and the CLIP towers, when given.
struct Judges {
    inception: fd_eval::inception::Inception,
    classifier: Option<fd_eval::consistency::Classifier>,
    clip: Option<fd_eval::clip::Clip>,
}

/// A row's metrics.
struct Metrics {
    fid: FidResult,
    consistency: Option<f64>,
    clip_s: Option<f64>,
}

impl Judges {
    fn load(cfg: &ExperimentConfig, opt: &ExperimentOptions) -> Result<Self> {
        let classifier = match &cfg.classifier {
            Some(p) => Some(p.clone()),
            None => Some(cfg.model.join("classifier.pt")).filter(|p| p.is_file()),
        }
        .map(|p| fd_eval::consistency::Classifier::load(&p, opt.device))
        .transpose()?;
        let clip = cfg.clip.as_ref().map(|p| fd_eval::clip::Clip::load(p, opt.device)).transpose()?;
        let inception = fd_eval::inception::Inception::load(&opt.inception, opt.device)?;
        Ok(Self { inception, classifier, clip })
    }

    /// FID / KID against the reference, class consistency (class models) and CLIP score of the
    /// run in `dir`, each also written beside the samples (`fid.json`, `consistency.json`,
    /// `clip_score.json`).
    fn evaluate(&self, cfg: &ExperimentConfig, models: &Models, dir: &Path, bar: &ProgressBar) -> Result<Metrics> {
        let fid = crate::evaluate::folder_fid(dir, &cfg.reference, &self.inception, KidOptions::default(), bar)?;
        write_json(&dir.join("fid.json"), &fid)?;
        let consistency = match &self.classifier {
            Some(c) if models.main.manifest.cond.kind == CondKind::Class => {
                let r = crate::evaluate::folder_consistency(c, dir)?;
                write_json(&dir.join("consistency.json"), &r)?;
                Some(r.consistency)
            }
            _ => None,
        };
        let clip_s = match &self.clip {
            Some(c) => {
                let prompts: Vec<String> = models.conds.iter().map(fd_model::Condition::text).collect();
                let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
                let imgs = crate::evaluate::VerifiedRun::load(dir)?.images()?;
                let r = c.score(&imgs, &p)?;
                write_json(&dir.join("clip_score.json"), &r)?;
                Some(r.clip_s)
            }
            None => None,
        };
        Ok(Metrics { fid, consistency, clip_s })
    }
}

/// A row's sampled run: its folder, how it was sampled, and what the run measured.
struct SampledRow {
    dir: PathBuf,
    spec: fd_sched::SamplingSpec,
    summary: RunSummary,
    record: RunRecord,
}

impl Models {
    /// `row`'s sampling resolved against its model (every stage samples or verifies it this way).
    fn spec(&self, cfg: &ExperimentConfig, row: &RowSpec) -> Result<fd_sched::SamplingSpec> {
        row.sampling(cfg).resolve(self.of(row), &self.conds, cfg.batch.min(cfg.n)).ctx(format!("row `{}`", row.label))
    }

    /// The runner of `row`'s samples (`shard` of them) into `out`.
    fn run<'a>(
        &'a self,
        cfg: &ExperimentConfig,
        row: &RowSpec,
        spec: &'a fd_sched::SamplingSpec,
        shard: Shard,
        out: &'a Path,
        existing: Existing,
    ) -> SampleRun<'a> {
        SampleRun {
            model: self.of(row),
            spec,
            conds: &self.conds,
            seed: cfg.seed,
            batch: cfg.batch,
            shard,
            out,
            existing,
        }
    }
}

/// Sample `row` into its work folder (finished parts resumed; with `--reuse-from`, an identical
/// run's finished parts adopted first).
fn sample_row(
    cfg: &ExperimentConfig,
    opt: &ExperimentOptions,
    models: &Models,
    row: &RowSpec,
    bar: &ProgressBar,
) -> Result<SampledRow> {
    let spec = models.spec(cfg, row)?;
    let dir = row_dir(opt, row);
    let run = models.run(cfg, row, &spec, Shard::default(), &dir, opt.existing);
    if let (Some(root), Existing::Resume) = (&opt.reuse_root, opt.existing) {
        if let Some((donor, k)) = crate::reuse::adopt_parts(root, &dir, &run.config())? {
            log::info!("row `{}`: {k} finished part(s) adopted from {} (same run)", row.label, donor.display());
        }
    }
    let (summary, record) = run.run_and_record(bar)?;
    Ok(SampledRow { dir, spec, summary, record })
}

/// The row's table entry; its run record (with the metrics), sample grid and row file
/// ([`RowFile`], written last) under `results/.../rows/<row>/`.
fn record_row(
    cfg: &ExperimentConfig,
    opt: &ExperimentOptions,
    row: &RowSpec,
    sampled: SampledRow,
    m: Metrics,
) -> Result<RowResult> {
    let SampledRow { dir, spec, summary, mut record } = sampled;
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
        fid: m.fid.fid,
        kid: m.fid.kid.as_ref().map(|k| k.mean),
        kid_std: m.fid.kid.as_ref().map(|k| k.std),
        consistency: m.consistency,
        clip_s: m.clip_s,
        gflops_per_image: summary.gflops_per_image,
        unet_s_per_image: summary.unet_s_per_image(),
        total_s_per_image: total,
        ftc: m.consistency.or(m.clip_s).filter(|c| *c > 0.0).map(|c| m.fid.fid * total / c),
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
    record.metrics = Some(RowMetrics { fid: m.fid, consistency: m.consistency, clip_s: m.clip_s });
    write_json(&rd.join("run.json"), &record)?;
    fd_model::io::copy_atomic(&dir.join("grid.png"), &rd.join("grid.png"))?;
    let file = RowFile { row: row_value(row)?, settings: settings(cfg)?, result: res.clone() };
    write_json(&row_file(opt, row), &file)?;
    Ok(res)
}

/// `rows/<row>/row.json`: a row's table entry with the row spec and the experiment settings it
/// was computed under. The table takes a row only while both still equal the config's, so a row
/// recorded under another N, model, reference or plan is never mixed in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowFile {
    /// The row's spec, as the config holds it.
    pub row: serde_json::Value,
    /// The experiment's settings that every row shares ([`settings`]).
    pub settings: serde_json::Value,
    pub result: RowResult,
}

/// A row spec as JSON (compared as values, so field order does not matter).
fn row_value(row: &RowSpec) -> Result<serde_json::Value> {
    serde_json::to_value(row).map_err(|e| Error::Input(format!("row `{}`: {e}", row.label)))
}

/// The config's settings every row's numbers depend on: all but the name, title, rows, plot and
/// cluster settings.
fn settings(cfg: &ExperimentConfig) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(cfg).map_err(|e| Error::Input(format!("experiment config: {e}")))?;
    if let Some(m) = v.as_object_mut() {
        for k in ["name", "title", "rows", "pareto", "slurm"] {
            m.remove(k);
        }
    }
    Ok(v)
}

fn row_file(opt: &ExperimentOptions, row: &RowSpec) -> PathBuf {
    opt.results_dir.join("rows").join(row.slug()).join("row.json")
}

/// The recorded result of `row`, when its row file exists and was computed under this config (a
/// row file from another config is left out and said; one that does not parse is an error).
pub fn recorded_row(cfg: &ExperimentConfig, opt: &ExperimentOptions, row: &RowSpec) -> Result<Option<RowResult>> {
    let p = row_file(opt, row);
    if !p.is_file() {
        return Ok(None);
    }
    let f: RowFile = fd_model::io::read_json(&p)?;
    if f.row != row_value(row)? || f.settings != settings(cfg)? || f.result.label != row.label {
        log::warn!("{}: recorded under another config (row or settings differ); not in the table", p.display());
        return Ok(None);
    }
    Ok(Some(f.result))
}

/// Write the table (and plots) of every row recorded under this config, in config order; returns
/// them and the labels of the rows not recorded.
fn write_recorded(cfg: &ExperimentConfig, opt: &ExperimentOptions) -> Result<(Vec<RowResult>, Vec<String>)> {
    let (mut rows, mut missing) = (Vec::new(), Vec::new());
    for r in &cfg.rows {
        match recorded_row(cfg, opt, r)? {
            Some(x) => rows.push(x),
            None => missing.push(r.label.clone()),
        }
    }
    if !rows.is_empty() {
        let model = fd_model::manifest::Manifest::load(&cfg.model)?.name;
        write_table(cfg, opt, &model, &rows)?;
        if cfg.pareto {
            pareto(cfg, opt, &rows)?;
        }
    }
    Ok((rows, missing))
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

/// One column of an experiment's table: its header in `table.md` and its name in `table.csv`
/// (either may be absent), and how a row fills it. A metric is added to the tables here, once.
struct Column {
    /// `table.md` header and cell.
    md: Option<(&'static str, MdCell)>,
    /// `table.csv` name and value.
    csv: Option<(&'static str, CsvValue)>,
}

/// A row's `table.md` cell, given the row it is compared with.
type MdCell = fn(&RowResult, Option<&RowResult>) -> String;

/// A row's `table.csv` value.
type CsvValue = fn(&RowResult) -> String;

/// A `table.md`-only column of the change of `f` against the row's baseline.
macro_rules! delta {
    ($header:literal, $f:expr) => {
        Column { md: Some(($header, |r, b| b.map_or(String::new(), |b| pct($f(r), $f(b))))), csv: None }
    };
}

fn csv_opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| x.to_string())
}

/// The columns of `table.md` and `table.csv`, in order.
const COLUMNS: &[Column] = &[
    Column { md: Some(("row", |r, _| r.label.clone())), csv: Some(("row", |r| r.label.clone())) },
    Column { md: Some(("sampler", |r, _| r.sampler.clone())), csv: Some(("sampler", |r| r.sampler.clone())) },
    Column { md: Some(("T", |r, _| r.steps.to_string())), csv: Some(("steps", |r| r.steps.to_string())) },
    Column { md: Some(("plan", |r, _| format!("`{}`", r.plan))), csv: Some(("plan", |r| r.plan.clone())) },
    Column {
        md: None,
        csv: Some(("key_steps", |r| r.key_steps.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(" "))),
    },
    Column { md: None, csv: Some(("parallel", |r| r.parallel.to_string())) },
    Column { md: Some(("decoding", |r, _| r.decode.clone())), csv: Some(("decode", |r| r.decode.clone())) },
    Column {
        md: None,
        csv: Some(("injection", |r| r.injection.map(|i| format!("{}@{}", i.strength, i.tau)).unwrap_or_default())),
    },
    Column { md: None, csv: Some(("n", |r| r.n.to_string())) },
    Column { md: Some(("FID", |r, _| format!("{:.2}", r.fid))), csv: Some(("fid", |r| r.fid.to_string())) },
    Column {
        md: Some(("KID", |r, _| match (r.kid, r.kid_std) {
            (Some(k), Some(s)) => format!("{k:.4} ± {s:.4}"),
            _ => "-".into(),
        })),
        csv: Some(("kid", |r| csv_opt(r.kid))),
    },
    Column { md: None, csv: Some(("kid_std", |r| csv_opt(r.kid_std))) },
    Column {
        md: Some(("consistency", |r, _| opt_fmt(r.consistency, 3))),
        csv: Some(("consistency", |r| csv_opt(r.consistency))),
    },
    Column { md: Some(("CLIP-S", |r, _| opt_fmt(r.clip_s, 3))), csv: Some(("clip_s", |r| csv_opt(r.clip_s))) },
    Column {
        md: Some(("GFLOPs/img", |r, _| format!("{:.2}", r.gflops_per_image))),
        csv: Some(("gflops_per_image", |r| r.gflops_per_image.to_string())),
    },
    Column {
        md: Some(("UNet s/img", |r, _| format!("{:.4}", r.unet_s_per_image))),
        csv: Some(("unet_s_per_image", |r| r.unet_s_per_image.to_string())),
    },
    Column {
        md: Some(("total s/img", |r, _| format!("{:.4}", r.total_s_per_image))),
        csv: Some(("total_s_per_image", |r| r.total_s_per_image.to_string())),
    },
    Column { md: Some(("FTC", |r, _| opt_fmt(r.ftc, 3))), csv: Some(("ftc", |r| csv_opt(r.ftc))) },
    Column {
        md: Some(("vs", |r, _| r.baseline.clone().unwrap_or_default())),
        csv: Some(("baseline", |r| r.baseline.clone().unwrap_or_default())),
    },
    Column { md: None, csv: Some(("family", |r| r.family.clone())) },
    Column { md: None, csv: Some(("parts_resumed", |r| r.parts_resumed.to_string())) },
    delta!("ΔGFLOPs", |x: &RowResult| x.gflops_per_image),
    delta!("ΔUNet s", |x: &RowResult| x.unet_s_per_image),
    delta!("Δtotal s", |x: &RowResult| x.total_s_per_image),
    delta!("ΔFID", |x: &RowResult| x.fid),
];

/// `| a | b | ... |` and a newline.
fn md_line<S: AsRef<str>>(cells: impl Iterator<Item = S>) -> String {
    let cells: Vec<String> = cells.map(|c| c.as_ref().to_string()).collect();
    format!("| {} |\n", cells.join(" | "))
}

/// Write `table.md`, `table.csv` and `experiment.json` ([`COLUMNS`]).
fn write_table(cfg: &ExperimentConfig, opt: &ExperimentOptions, model: &str, rows: &[RowResult]) -> Result<()> {
    let by_label: BTreeMap<&str, &RowResult> = rows.iter().map(|r| (r.label.as_str(), r)).collect();
    let m = Machine::current(opt.device);
    let md_cols: Vec<_> = COLUMNS.iter().filter_map(|c| c.md).collect();
    let csv_cols: Vec<_> = COLUMNS.iter().filter_map(|c| c.csv).collect();
    let mut md = format!(
        "# {}\n\nModel `{}` ({}), N = {} per row (same seeds and conditions in every row), CFG {}, FID/KID vs `{}` \
         ({}). Machine: {} ({} cores, {} torch threads), device {}.\n\
         Command: `{}`\n\n",
        if cfg.title.is_empty() { &cfg.name } else { &cfg.title },
        model,
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
    md += &md_line(md_cols.iter().map(|(h, _)| *h));
    md += &format!("|{}\n", "---|".repeat(md_cols.len()));
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
    csv.write_record(csv_cols.iter().map(|(name, _)| *name))?;
    for r in rows {
        let base = r.baseline.as_deref().and_then(|b| by_label.get(b)).copied();
        md += &md_line(md_cols.iter().map(|(_, cell)| cell(r, base)));
        csv.write_record(csv_cols.iter().map(|(_, value)| value(r)))?;
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
