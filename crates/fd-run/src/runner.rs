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

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use fd_model::io::{read_json, read_tensor, tensor_sha1, write_json, write_tensors};
use fd_model::{Condition, UNetModel};
use fd_sched::{CallCounts, SamplingSpec, Timings};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::io;
use crate::machine::{command, Machine, Versions};
use crate::records::{
    Gflops, Machines, ModelIdentity, PartRecord, PartsCount, PerImage, PlanRecord, RunConfig, RunRecord, SamplerRecord,
    TimingsRecord,
};
use crate::{Error, Result};

/// `--shard i/n`: this process generates the i-th of n contiguous blocks of parts (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    /// Parse `i/n` with 0 <= i < n (Slurm: `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`).
    pub fn parse(spec: &str) -> Result<Self> {
        let err = || Error::Input(format!("--shard `{spec}`: expected i/n with 0 <= i < n, e.g. 0/4"));
        let (i, n) = spec.split_once('/').ok_or_else(err)?;
        let (index, count) = (i.trim().parse().map_err(|_| err())?, n.trim().parse().map_err(|_| err())?);
        if count == 0 || index >= count {
            return Err(err());
        }
        Ok(Self { index, count })
    }

    /// The part ranges (global sample indices) of this shard, for `n` samples in batches of `batch`.
    pub fn parts(&self, n: usize, batch: usize) -> Vec<Range<usize>> {
        let all: Vec<_> = (0..n).step_by(batch.max(1)).map(|s| s..(s + batch).min(n)).collect();
        let (lo, hi) = (self.index * all.len() / self.count, (self.index + 1) * all.len() / self.count);
        all[lo..hi].to_vec()
    }
}

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
    pub model: &'a UNetModel,
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

/// The [`RunConfig`] of a run of `spec` on `model`.
pub fn run_config(
    model: &UNetModel,
    spec: &SamplingSpec,
    conds: &[Condition],
    seed: u64,
    batch: usize,
    shard: Shard,
) -> RunConfig {
    let m = &model.manifest;
    RunConfig {
        model: ModelIdentity {
            name: m.name.clone(),
            graphs_sha256: m.graphs.iter().map(|(k, g)| (k.clone(), g.sha256.clone())).collect::<BTreeMap<_, _>>(),
        },
        sampler: SamplerRecord {
            name: spec.sampler.name().into(),
            steps: spec.steps(),
            eta: spec.sampler.eta(),
            config: m.scheduler.clone(),
        },
        plan: PlanRecord { keys: spec.plan.label(), method: spec.plan.method, key_steps: spec.plan.key_steps.clone() },
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

    /// A finished part's record, if its files are present and its images match the recorded hash.
    fn finished(&self, r: &Range<usize>) -> Option<PartRecord> {
        let (imgs_path, rec_path) = part_files(self.out, r);
        let rec: PartRecord = read_json(&rec_path).ok()?;
        let imgs = read_tensor(&imgs_path, "samples").ok()?;
        let ok = rec.start == r.start
            && rec.end == r.end
            && imgs.size().first() == Some(&(r.len() as i64))
            && tensor_sha1(&imgs).ok()? == rec.images_sha1
            && (!self.pngs() || r.clone().all(|i| self.out.join(format!("{i:06}.png")).is_file()));
        ok.then_some(rec)
    }

    /// Prepare the folder according to [`Existing`].
    fn prepare(&self, parts: &[Range<usize>]) -> Result<()> {
        let cfg_path = self.out.join("config.json");
        let config = self.config();
        if cfg_path.is_file() {
            match self.existing {
                Existing::Fail => {
                    return Err(Error::Input(format!(
                        "--out {} already holds a run: pass --resume to continue it or --overwrite to start over",
                        self.out.display()
                    )))
                }
                Existing::Resume => {
                    let old: RunConfig = read_json(&cfg_path)?;
                    if old != config {
                        return Err(Error::Input(format!(
                            "--resume: {} was written by a different run (differs in: {}); use another --out or --overwrite",
                            cfg_path.display(),
                            config.differing_fields(&old).join(", ")
                        )));
                    }
                }
                Existing::Overwrite => self.clear(parts)?,
            }
        }
        std::fs::create_dir_all(self.parts_dir()).map_err(io(&self.parts_dir()))?;
        write_json(&cfg_path, &config)?;
        Ok(())
    }

    fn clear(&self, parts: &[Range<usize>]) -> Result<()> {
        let pd = self.parts_dir();
        if pd.is_dir() {
            std::fs::remove_dir_all(&pd).map_err(io(&pd))?;
        }
        for i in parts.iter().flat_map(|r| r.clone()) {
            let _ = std::fs::remove_file(self.out.join(format!("{i:06}.png")));
        }
        for f in ["samples.safetensors", "run.json", "grid.png", "fid.json", "consistency.json", "clip_score.json"] {
            let _ = std::fs::remove_file(self.out.join(f));
        }
        Ok(())
    }

    /// Generate (or resume) every part of this shard, then write `samples.safetensors`,
    /// `grid.png` and return the summary. `progress` gets (done, total) samples.
    pub fn run(&self, progress: &indicatif::ProgressBar) -> Result<RunSummary> {
        let n = self.conds.len();
        if n == 0 || self.batch == 0 {
            return Err(Error::Input("--n and --batch must be >= 1".into()));
        }
        let parts = self.shard.parts(n, self.batch);
        if parts.is_empty() {
            return Err(Error::Input(format!(
                "--shard {}/{}: no work ({} samples in batches of {} make fewer parts than shards)",
                self.shard.index, self.shard.count, n, self.batch
            )));
        }
        std::fs::create_dir_all(self.out).map_err(io(self.out))?;
        self.prepare(&parts)?;
        let total: usize = parts.iter().map(|r| r.len()).sum();
        progress.set_length(total as u64);
        let (mut computed, mut resumed) = (0, 0);
        let mut records = Vec::with_capacity(parts.len());
        for r in &parts {
            if let Some(rec) = (self.existing == Existing::Resume).then(|| self.finished(r)).flatten() {
                log::debug!("{}: batch {} already done, kept", self.out.display(), part_stem(r));
                records.push(rec);
                resumed += 1;
            } else {
                if computed == 0 && self.model.device.is_cuda() {
                    // One untimed batch before the first timed one: a GPU's first call at each new
                    // shape pays for cuDNN's algorithm choice and allocator growth (seen on an H200,
                    // SD-1.5 architecture, batch 8: a cold 50ls run timed 1.07 s/image of UNet
                    // against 0.82 for the baseline run before it; warmed in `fd bench`, 0.21 vs
                    // 0.32). Every part seeds its own noise, so the samples do not change.
                    self.generate(r)?;
                }
                let rec = self.generate_part(r)?;
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
        self.finish(&parts, &records, computed, resumed)
    }

    /// Samples `r` in memory (sample i seeded with seed + i); returns the seeds and the batch.
    fn generate(&self, r: &Range<usize>) -> Result<(Vec<u64>, fd_sched::BatchOutput)> {
        let seeds: Vec<u64> = r.clone().map(|i| self.seed + i as u64).collect();
        let out = self.spec.generate(self.model, &seeds, &self.conds[r.clone()])?;
        Ok((seeds, out))
    }

    fn generate_part(&self, r: &Range<usize>) -> Result<PartRecord> {
        let t0 = std::time::Instant::now();
        let (seeds, out) = self.generate(r)?;
        let (imgs_path, rec_path) = part_files(self.out, r);
        write_tensors(&imgs_path, &[("samples", &out.images)])?;
        if self.pngs() {
            let u8s = fd_eval::images::to_u8(&out.images);
            for (k, i) in r.clone().enumerate() {
                fd_eval::images::save_png(&u8s.get(k as i64), &self.out.join(format!("{i:06}.png")))?;
            }
        }
        let rec = PartRecord {
            start: r.start,
            end: r.end,
            seeds,
            timings: out.timings,
            counts: out.counts,
            cond_s: out.cond_s,
            vae_s: out.vae_s,
            wall_s: t0.elapsed().as_secs_f64(),
            images_sha1: tensor_sha1(&out.images)?,
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
        // this folder's samples (a shard holds a subset of the run's indices)
        config.conditions = s.indices.iter().map(|&i| self.conds[i].clone()).collect();
        let (timings_s, s_per_image) =
            s.timing_records("sums of per-part timings; total = conditioning + UNet loop + VAE + writing");
        RunRecord {
            config,
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
        }
    }

    /// [`SampleRun::run`] and write `run.json` (last: a folder with `run.json` is complete).
    pub fn run_and_record(&self, progress: &indicatif::ProgressBar) -> Result<(RunSummary, RunRecord)> {
        let s = self.run(progress)?;
        let rec = self.record(&s);
        write_json(&self.out.join("run.json"), &rec)?;
        Ok((s, rec))
    }
}
