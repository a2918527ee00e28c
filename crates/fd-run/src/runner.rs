//! Where samples are generated to disk: the one runner behind `fd sample`, `fd experiment` and
//! sharded runs (`--shard i/n`, [`crate::merge`]).
//!
//! Work is cut into *parts* at fixed global indices (`start = k * batch`). Each part is written as
//! it completes, every file via temp + rename: `parts/SSSSSS-EEEEEE.safetensors` (raw images),
//! the PNGs, then the [`PartRecord`] `parts/SSSSSS-EEEEEE.json` — the record last, so a part
//! counts as done only when all of it is on disk. With [`Existing::Resume`] every part whose
//! record and images check out is skipped; because a part is always recomputed whole, with the
//! same seeds and batch, a resumed run is byte-identical to an uninterrupted one. The
//! [`RunConfig`] in `config.json` pins what the run is; resuming under a different one is an error.

use std::ops::Range;
use std::path::{Path, PathBuf};

use fd_model::io::{file_sha256, read_json, read_tensor, tensor_sha1, write_json, write_tensors};
use fd_model::{Condition, Denoiser};
use fd_sched::{CallCounts, SamplingSpec, Timings};
use serde::Serialize;
use tch::Tensor;

use crate::error::io;
use crate::lock::FolderLock;
use crate::machine::{command, Machine, Versions};
pub use crate::records::Shard;
use crate::records::{
    Gflops, Machines, ModelIdentity, PartRecord, PartsCount, PerImage, PlanRecord, RunConfig, RunRecord, SamplerRecord,
    TimingsRecord,
};
use crate::{Error, Result};

/// What to do when the output folder already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (nothing already computed is lost by accident).
    Fail,
    /// Continue it: skip finished parts (the configuration must match).
    Resume,
    /// Delete its parts and outputs and start over.
    Overwrite,
}

/// One sampling run to a folder.
#[derive(Debug)]
pub struct SampleRun<'a> {
    pub model: &'a Denoiser,
    /// Sampler, plan and execution options, resolved once.
    pub spec: &'a SamplingSpec,
    /// One condition per sample (all `n` samples, not only this shard's).
    pub conds: &'a [Condition],
    /// Sample i uses seed + i.
    pub seed: u64,
    pub batch: usize,
    pub shard: Shard,
    pub out: &'a Path,
    pub existing: Existing,
}

/// Summary of a finished run (what `run.json` records).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub n: usize,
    pub indices: Vec<usize>,
    pub parts_computed: usize,
    pub parts_resumed: usize,
    pub timings: Timings,
    pub counts: CallCounts,
    pub cond_s: f64,
    pub vae_s: f64,
    /// Sum of part wall times.
    pub wall_s: f64,
    pub gflops_per_image: f64,
    /// SHA-1 of the folder's images in index order (`samples.safetensors`).
    pub samples_sha1: String,
    /// Which graphs this run's computed parts called from AOTInductor packages and which on
    /// TorchScript, when they used both ([`fd_model::mixed_formats`]); its timings then compare
    /// formats as well as methods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_formats: Option<String>,
}

impl RunSummary {
    /// Sums of finished parts' records (in index order); `gflops_per_image` is left for the caller.
    pub(crate) fn from_records(records: &[PartRecord], computed: usize, resumed: usize) -> Self {
        let mut s = RunSummary {
            n: records.iter().map(|r| r.end - r.start).sum(),
            indices: records.iter().flat_map(|r| r.start..r.end).collect(),
            parts_computed: computed,
            parts_resumed: resumed,
            timings: Timings::default(),
            counts: CallCounts::default(),
            cond_s: 0.0,
            vae_s: 0.0,
            wall_s: 0.0,
            gflops_per_image: 0.0,
            samples_sha1: String::new(),
            mixed_formats: None,
        };
        for rec in records {
            s.timings.add(&rec.timings);
            s.counts.merge(&rec.counts);
            s.cond_s += rec.cond_s;
            s.vae_s += rec.vae_s;
            s.wall_s += rec.wall_s;
        }
        s
    }

    /// `timings_s` and `s_per_image` of run.json.
    pub(crate) fn timing_records(&self, note: &str) -> (TimingsRecord, PerImage) {
        let t = &self.timings;
        (
            TimingsRecord {
                time_embed: t.time_embed_s,
                encoder: t.encoder_s,
                decoder: t.decoder_s,
                scheduler: t.scheduler_s,
                controlnet: t.controlnet_s,
                unet_loop: t.total_s,
                cond_encoder: self.cond_s,
                vae: self.vae_s,
                total: self.wall_s,
            },
            PerImage { unet_loop: self.unet_s_per_image(), total: self.total_s_per_image(), note: note.into() },
        )
    }

    /// UNet loop seconds per image.
    pub fn unet_s_per_image(&self) -> f64 {
        self.timings.total_s / self.n.max(1) as f64
    }

    /// Whole-pipeline seconds per image (conditioning + UNet loop + VAE + writing).
    pub fn total_s_per_image(&self) -> f64 {
        self.wall_s / self.n.max(1) as f64
    }
}

/// `SSSSSS-EEEEEE`, the file stem of a part.
pub fn part_stem(r: &Range<usize>) -> String {
    format!("{:06}-{:06}", r.start, r.end)
}

/// The files of a part: raw images and record.
pub(crate) fn part_files(dir: &Path, r: &Range<usize>) -> (PathBuf, PathBuf) {
    let stem = part_stem(r);
    let parts = dir.join("parts");
    (parts.join(format!("{stem}.safetensors")), parts.join(format!("{stem}.json")))
}

/// Read part `r` of the run folder `dir` and prove it belongs to the run `config` (whose
/// [`RunConfig::identity`] is `identity`): its record parses and names this identity, the part's
/// range, the seeds and conditions the run gives those samples, and its images match their hash.
pub fn read_verified_part(
    dir: &Path,
    r: &Range<usize>,
    config: &RunConfig,
    identity: &str,
) -> Result<(PartRecord, Tensor)> {
    let (imgs_path, rec_path) = part_files(dir, r);
    let rec: PartRecord = read_json(&rec_path)?;
    let bad = |msg: &str| Error::Folder { path: rec_path.clone(), msg: msg.to_string() };
    if rec.identity != identity {
        return Err(bad("part of another run (its identity differs from config.json's)"));
    }
    let seeds: Vec<u64> = r.clone().map(|i| config.seed.wrapping_add(i as u64)).collect();
    if rec.start != r.start || rec.end != r.end || rec.seeds != seeds {
        return Err(bad("range or seeds differ from what the run gives these samples"));
    }
    if config.conditions.get(r.clone()) != Some(&rec.conditions[..]) {
        return Err(bad("conditions differ from the run's"));
    }
    let imgs = read_tensor(&imgs_path, "samples")?;
    if imgs.size().first() != Some(&(r.len() as i64)) || tensor_sha1(&imgs)? != rec.images_sha1 {
        return Err(Error::Folder { path: imgs_path, msg: "images do not match their part record".into() });
    }
    Ok((rec, imgs))
}

/// The [`RunConfig`] of a run of `spec` on `model`.
pub fn run_config(
    model: &Denoiser,
    spec: &SamplingSpec,
    conds: &[Condition],
    seed: u64,
    batch: usize,
    shard: Shard,
) -> RunConfig {
    RunConfig {
        fd_run: crate::records::RUN_FORMAT,
        model: ModelIdentity::of(model),
        sampler: SamplerRecord {
            name: spec.sampler.name().into(),
            steps: spec.steps(),
            eta: spec.sampler.eta(),
            config: model.manifest.scheduler.clone(),
        },
        plan: PlanRecord {
            keys: spec.plan.spec.filled(),
            method: spec.plan.spec.record(),
            key_steps: spec.plan.key_steps.clone(),
        },
        exec: spec.exec.clone(),
        deterministic: model.row_by_row,
        conditions: conds.to_vec(),
        n: conds.len(),
        seed,
        seeds: "seed + sample index".into(),
        batch,
        shard,
    }
}

/// Files fd writes directly in a run folder, besides `NNNNNN.png`, `parts/` and `features/`.
pub const RUN_FILES: [&str; 7] =
    ["config.json", "samples.safetensors", "run.json", "grid.png", "fid.json", "consistency.json", "clip_score.json"];

/// Whether `name` is a per-sample PNG fd writes (`NNNNNN.png`).
pub fn is_sample_png(name: &str) -> bool {
    name.len() == 10 && name.ends_with(".png") && name[..6].bytes().all(|b| b.is_ascii_digit())
}

/// What a folder holds, as far as writing a run there is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderState {
    /// Missing, or empty but for fd's lock file.
    Empty,
    /// An fd run: its `config.json` is fd's record ([`run_record`]).
    Run,
    /// Something else: the first entry found, and why it is not an fd run.
    Foreign(String),
}

/// The fd run record `dir/config.json`, if the file is one: it parses as a [`RunConfig`] (a
/// dozen typed fields; runs of this build also carry the [`crate::records::RUN_FORMAT`] marker).
/// `Ok(None)`: no such file; `Err(reason)`: a `config.json` that is not fd's (a diffusers model
/// folder's, say), in words.
pub fn run_record(dir: &Path) -> std::result::Result<Option<RunConfig>, String> {
    let path = dir.join("config.json");
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    if !path.is_file() || path.is_symlink() {
        return Err("`config.json` is not a regular file".into());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("`config.json` unreadable: {e}"))?;
    fd_model::io::parse_json::<RunConfig>(&path, &text).map(Some).map_err(|e| {
        let e = match e {
            fd_model::Error::Record { msg, .. } => msg,
            other => other.to_string(),
        };
        format!("`config.json` is not an fd run record: {}", e.split(" at line").next().unwrap_or(&e))
    })
}

/// The state of `dir` (read only). A folder is a run only on proof ([`run_record`]), never on
/// the mere presence of a file named `config.json`.
pub fn folder_state(dir: &Path) -> Result<FolderState> {
    if !dir.exists() {
        return Ok(FolderState::Empty);
    }
    match run_record(dir) {
        Ok(Some(_)) => return Ok(FolderState::Run),
        Err(why) => return Ok(FolderState::Foreign(why)),
        Ok(None) => {}
    }
    let rd = std::fs::read_dir(dir).map_err(io(dir))?;
    for e in rd {
        let name = e.map_err(io(dir))?.file_name().to_string_lossy().to_string();
        if name != crate::lock::LOCK_FILE {
            return Ok(FolderState::Foreign(format!("found `{name}`, no fd run record")));
        }
    }
    Ok(FolderState::Empty)
}

/// Remove what fd wrote in a run folder, and only that: `parts/`, `features/`, every `NNNNNN.png`
/// (whatever the run's size) and [`RUN_FILES`].
pub fn clear_run_folder(dir: &Path) -> Result<()> {
    for sub in ["parts", "features"] {
        let p = dir.join(sub);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    let rd = std::fs::read_dir(dir).map_err(io(dir))?;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        if is_sample_png(&name) || RUN_FILES.contains(&name.as_str()) {
            std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
        }
    }
    Ok(())
}

/// Samples a run may hold (a guard against sizes that would overflow or exhaust memory).
pub const MAX_SAMPLES: usize = 100_000_000;

/// Check a run's size and seeds: `1 <= n <= MAX_SAMPLES`, `batch >= 1`, and `seed + n - 1`
/// without overflow.
pub fn check_counts(n: usize, batch: usize, seed: u64) -> Result<()> {
    if n == 0 || batch == 0 {
        return Err(Error::Input("--n and --batch must be >= 1".into()));
    }
    if n > MAX_SAMPLES || batch > MAX_SAMPLES {
        return Err(Error::Input(format!(
            "--n {n}: at most {MAX_SAMPLES} samples per run (use --shard to split work)"
        )));
    }
    if seed.checked_add(n as u64 - 1).is_none() {
        return Err(Error::Input(format!("--seed {seed} with --n {n}: seed + sample index overflows a 64-bit seed")));
    }
    Ok(())
}

/// What can be said of `--out` before a run is resolved (so before an `auto:` calibration or a
/// first batch): it holds something that is no fd run, or a run while neither `--resume` nor
/// `--overwrite` was given. Read only; returns the folder's state. Whether a run there is this
/// run is checked by [`SampleRun::run`] once its configuration is known.
pub fn check_out(out: &Path, existing: Existing) -> Result<FolderState> {
    let state = folder_state(out)?;
    match (&state, existing) {
        (FolderState::Foreign(why), _) => Err(Error::Input(format!(
            "--out {} is not empty and holds no fd run ({why}): fd writes only into a new or empty folder or its own run; use another --out",
            out.display()
        ))),
        (FolderState::Run, Existing::Fail) => Err(Error::Input(format!(
            "--out {} already holds a run: pass --resume to continue it or --overwrite to start over",
            out.display()
        ))),
        _ => Ok(state),
    }
}

/// A part computed in memory, not yet written.
struct Computed {
    seeds: Vec<u64>,
    out: fd_sched::BatchOutput,
    compute_s: f64,
}

impl SampleRun<'_> {
    /// What the run is; a folder is resumed only under an equal configuration.
    pub fn config(&self) -> RunConfig {
        run_config(self.model, self.spec, self.conds, self.seed, self.batch, self.shard)
    }

    /// Whether the run writes one PNG per sample (1- or 3-channel outputs).
    pub fn pngs(&self) -> bool {
        let m = &self.model.manifest;
        matches!(m.vae.as_ref().map_or(m.out_channels, |v| v.out_channels), 1 | 3)
    }

    fn parts_dir(&self) -> PathBuf {
        self.out.join("parts")
    }

    fn png(&self, i: usize) -> PathBuf {
        self.out.join(format!("{i:06}.png"))
    }

    /// Write the PNGs of part `r` from its images; returns their SHA-256. A video model's sample
    /// is a film strip (`NNNNNN.png`, hashed); its frames are also written as `NNNNNN_fJJ.png` and
    /// an animated `NNNNNN.gif` (derived from the strip, rewritten with it).
    fn write_pngs(&self, r: &Range<usize>, images: &Tensor) -> Result<Vec<String>> {
        let u8s = fd_eval::images::to_u8(images);
        let frames = self.model.frames_of(images);
        r.clone()
            .enumerate()
            .map(|(k, i)| {
                fd_eval::images::save_png(&u8s.get(k as i64), &self.png(i))?;
                if let Some(fr) = &frames {
                    let fr = fd_eval::images::to_u8(&fr.get(k as i64));
                    for j in 0..fr.size()[0] {
                        fd_eval::images::save_png(&fr.get(j), &self.out.join(format!("{i:06}_f{j:02}.png")))?;
                    }
                    fd_eval::images::save_gif(&fr, &self.out.join(format!("{i:06}.gif")), 125)?;
                }
                Ok(file_sha256(&self.png(i))?)
            })
            .collect()
    }

    /// A finished part's record, if it proves the part belongs to this run ([`read_verified_part`]).
    /// PNGs that are missing or differ from their recorded hashes are written again from the
    /// verified images.
    fn finished(&self, r: &Range<usize>, config: &RunConfig, identity: &str) -> Option<PartRecord> {
        if !part_files(self.out, r).1.is_file() {
            return None;
        }
        let (rec, imgs) = match read_verified_part(self.out, r, config, identity) {
            Ok(v) => v,
            Err(e) => {
                log::info!("{e}; recomputing the part");
                return None;
            }
        };
        if self.pngs() {
            let intact = rec.png_sha256.len() == r.len()
                && r.clone().zip(&rec.png_sha256).all(|(i, h)| file_sha256(&self.png(i)).ok().as_ref() == Some(h));
            if !intact {
                log::info!(
                    "{}: PNGs of part {} missing or changed; writing them again",
                    self.out.display(),
                    part_stem(r)
                );
                if self.write_pngs(r, &imgs).ok()? != rec.png_sha256 {
                    return None;
                }
            }
        }
        Some(rec)
    }

    /// Check the folder against [`Existing`] without writing anything; returns its state.
    fn check_folder(&self, config: &RunConfig) -> Result<FolderState> {
        let state = check_out(self.out, self.existing)?;
        match (&state, self.existing) {
            (FolderState::Run, Existing::Resume) => {
                let cfg_path = self.out.join("config.json");
                let old: RunConfig = read_json(&cfg_path).map_err(|e| {
                    Error::Input(format!(
                        "--resume: {e}; this run's identity cannot be checked (written by an older fd?): use --overwrite or another --out"
                    ))
                })?;
                if old.fd_run != config.fd_run {
                    return Err(Error::Input(format!(
                        "--resume: {} was written by an older fd (run format {}, this build writes {}): its identity cannot be checked against this build's; use --overwrite or another --out",
                        cfg_path.display(),
                        old.fd_run,
                        config.fd_run
                    )));
                }
                if old != *config {
                    let differs = config.differing_fields(&old);
                    // decoding only: say how to decode as the folder's run did (auto may choose
                    // differently on another machine)
                    let same_else =
                        old.exec.guidance == config.exec.guidance && old.exec.injection == config.exec.injection;
                    let hint = if differs.iter().all(|d| d.starts_with("exec")) && same_else {
                        match (old.exec.decode.parallel, old.exec.decode.max_decoder_batch) {
                            (false, _) => "; it decoded sequentially: resume with --decode sequential".to_string(),
                            (true, 0) => "; it decoded in parallel: resume with --decode parallel".to_string(),
                            (true, cap) => format!(
                                "; it decoded in parallel with at most {cap} rows per call: resume with --decode parallel --max-decoder-batch {cap}"
                            ),
                        }
                    } else {
                        match (&old.model, &config.model) {
                            // the graph format only (`--format auto` decides per machine)
                            (
                                crate::records::ModelIdentity::Derived { format: was, .. },
                                crate::records::ModelIdentity::Derived { format: now, .. },
                            ) if was != now && differs.iter().all(|d| d.starts_with("model.")) => {
                                format!("; it ran on {}: resume with --format {}", was.as_str(), was.as_str())
                            }
                            _ => String::new(),
                        }
                    };
                    return Err(Error::Input(format!(
                        "--resume: {} was written by a different run (differs in: {}){hint}; use another --out or --overwrite",
                        cfg_path.display(),
                        differs.join(", ")
                    )));
                }
                Ok(state)
            }
            _ => Ok(state),
        }
    }

    /// Generate (or resume) every part of this shard, then write `samples.safetensors`,
    /// `grid.png` and return the summary. `progress` gets (done, total) samples.
    ///
    /// Nothing is written before everything that can be checked was: the folder's state, and, for
    /// a new run, the first part itself (computed in memory, so a model or option that fails at
    /// run time fails before the folder is touched). The folder is locked while the run writes.
    pub fn run(&self, progress: &indicatif::ProgressBar) -> Result<RunSummary> {
        self.run_locked(progress).map(|(s, _lock)| s)
    }

    /// [`SampleRun::run`], with what its computed parts called ([`fd_model::mixed_formats`]: the
    /// graphs that ran from packages and on TorchScript when this run used both) in the summary.
    fn run_locked(&self, progress: &indicatif::ProgressBar) -> Result<(RunSummary, FolderLock)> {
        let before = self.model.graph_calls();
        let (mut summary, lock) = self.run_parts(progress)?;
        summary.mixed_formats = fd_model::mixed_formats(&before, &self.model.graph_calls());
        Ok((summary, lock))
    }

    /// [`SampleRun::run`], returning the folder's lock with the summary.
    fn run_parts(&self, progress: &indicatif::ProgressBar) -> Result<(RunSummary, FolderLock)> {
        let n = self.conds.len();
        check_counts(n, self.batch, self.seed)?;
        let parts = self.shard.parts(n, self.batch);
        if parts.is_empty() {
            return Err(Error::Input(format!(
                "--shard {}/{}: no work ({} samples in batches of {} make fewer parts than shards)",
                self.shard.index, self.shard.count, n, self.batch
            )));
        }
        let config = self.config();
        let identity = config.identity();
        let state = self.check_folder(&config)?;
        let resuming = state == FolderState::Run && self.existing == Existing::Resume;
        let mut first = None;
        if !resuming {
            if self.model.device.is_cuda() {
                // One untimed batch before the first timed one: a GPU's first call at each new
                // shape pays for cuDNN's algorithm choice and allocator growth (seen on an H200,
                // SD-1.5 architecture, batch 8: a cold 50ls run timed 1.07 s/image of UNet
                // against 0.82 for the baseline run before it; warmed in `fd bench`, 0.21 vs
                // 0.32). Every part seeds its own noise, so the samples do not change.
                self.compute(&parts[0])?;
            }
            first = Some(self.compute(&parts[0])?);
        }
        let lock = FolderLock::acquire(self.out, "fd sample")?;
        // under the lock: the folder is still what was checked
        if folder_state(self.out)? != state {
            return Err(Error::Input(format!("--out {}: changed by another process meanwhile", self.out.display())));
        }
        if state == FolderState::Run && self.existing == Existing::Overwrite {
            clear_run_folder(self.out)?;
        }
        std::fs::create_dir_all(self.parts_dir()).map_err(io(&self.parts_dir()))?;
        write_json(&self.out.join("config.json"), &config)?;
        let total: usize = parts.iter().map(|r| r.len()).sum();
        progress.set_length(total as u64);
        let (mut computed, mut resumed) = (0, 0);
        let mut records = Vec::with_capacity(parts.len());
        for r in &parts {
            if let Some(rec) = resuming.then(|| self.finished(r, &config, &identity)).flatten() {
                log::debug!("{}: batch {} already done, kept", self.out.display(), part_stem(r));
                records.push(rec);
                resumed += 1;
            } else {
                let c = match first.take() {
                    Some(c) => c,
                    None => self.compute(r)?,
                };
                let rec = self.write_part(r, c, &identity)?;
                log::debug!(
                    "{}: batch {} done in {:.2} s (UNet loop {:.2} s)",
                    self.out.display(),
                    part_stem(r),
                    rec.wall_s,
                    rec.timings.total_s
                );
                records.push(rec);
                computed += 1;
            }
            progress.inc(r.len() as u64);
        }
        if resumed > 0 {
            log::info!("{}: {resumed} batches resumed, {computed} computed", self.out.display());
        }
        Ok((self.finish(&parts, &records, computed, resumed)?, lock))
    }

    /// Samples `r` in memory (sample i seeded with seed + i).
    fn compute(&self, r: &Range<usize>) -> Result<Computed> {
        let t0 = std::time::Instant::now();
        let seeds: Vec<u64> = r.clone().map(|i| self.seed + i as u64).collect();
        let out = self.spec.generate(self.model, &seeds, &self.conds[r.clone()])?;
        Ok(Computed { seeds, out, compute_s: t0.elapsed().as_secs_f64() })
    }

    /// Write a computed part: images, PNGs, then its record (last).
    fn write_part(&self, r: &Range<usize>, c: Computed, identity: &str) -> Result<PartRecord> {
        let t0 = std::time::Instant::now();
        let (imgs_path, rec_path) = part_files(self.out, r);
        write_tensors(&imgs_path, &[("samples", &c.out.images)])?;
        let png_sha256 = if self.pngs() { self.write_pngs(r, &c.out.images)? } else { Vec::new() };
        let rec = PartRecord {
            start: r.start,
            end: r.end,
            seeds: c.seeds,
            timings: c.out.timings,
            counts: c.out.counts,
            cond_s: c.out.cond_s,
            vae_s: c.out.vae_s,
            wall_s: c.compute_s + t0.elapsed().as_secs_f64(),
            images_sha1: tensor_sha1(&c.out.images)?,
            identity: identity.to_string(),
            conditions: self.conds[r.clone()].to_vec(),
            png_sha256,
        };
        write_json(&rec_path, &rec)?;
        Ok(rec)
    }

    /// Assemble `samples.safetensors` (this shard's samples in index order) and the summary.
    fn finish(
        &self,
        parts: &[Range<usize>],
        records: &[PartRecord],
        computed: usize,
        resumed: usize,
    ) -> Result<RunSummary> {
        let imgs =
            parts.iter().map(|r| read_tensor(&part_files(self.out, r).0, "samples")).collect::<Result<Vec<_>, _>>()?;
        let all = Tensor::cat(&imgs, 0);
        write_tensors(&self.out.join("samples.safetensors"), &[("samples", &all)])?;
        let mut s = RunSummary::from_records(records, computed, resumed);
        s.gflops_per_image = s.counts.gflops_per_image(self.model, s.n);
        s.samples_sha1 = tensor_sha1(&all)?;
        if self.pngs() {
            let cols = self.model.manifest.cond.num_classes.unwrap_or(8).clamp(1, 10).min(s.n as i64);
            let grid = fd_eval::images::grid(&all.narrow(0, 0, (s.n as i64).min(cols * 8)), cols);
            fd_eval::images::save_png(&fd_eval::images::to_u8(&grid).get(0), &self.out.join("grid.png"))?;
        }
        Ok(s)
    }

    /// The `run.json` of a finished run: its configuration, what was measured, machine, versions.
    pub fn record(&self, s: &RunSummary) -> RunRecord {
        let mut config = self.config();
        let identity = config.identity();
        // this folder's samples (a shard holds a subset of the run's indices)
        config.conditions = s.indices.iter().map(|&i| self.conds[i].clone()).collect();
        let (timings_s, s_per_image) =
            s.timing_records("sums of per-part timings; total = conditioning + UNet loop + VAE + writing");
        RunRecord {
            config,
            identity,
            decode: Some(self.spec.exec.decode.clone()),
            samples_sha1: s.samples_sha1.clone(),
            command: command(),
            model_dir: Some(self.model.dir.clone()),
            merged_from: None,
            indices: s.indices.clone(),
            n_folder: s.n,
            timings_s,
            s_per_image,
            parts: Some(PartsCount { computed: s.parts_computed, resumed: s.parts_resumed }),
            counts: s.counts.clone(),
            gflops_per_image: Gflops {
                value: s.gflops_per_image,
                convention: Some(
                    "torch.utils.flop_counter (2 x MACs), UNet graphs only, CFG batch doubling included".into(),
                ),
            },
            machine: Machines::One(Machine::current(self.model.device)),
            versions: Some(Versions::current()),
            metrics: None,
            mixed_formats: s.mixed_formats.clone(),
        }
    }

    /// [`SampleRun::run`] and write `run.json` (last: a folder with `run.json` is complete).
    /// The folder stays locked until `run.json` is written.
    pub fn run_and_record(&self, progress: &indicatif::ProgressBar) -> Result<(RunSummary, RunRecord)> {
        let (s, _lock) = self.run_locked(progress)?;
        let rec = self.record(&s);
        write_json(&self.out.join("run.json"), &rec)?;
        Ok((s, rec))
    }
}
