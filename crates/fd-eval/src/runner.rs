//! Where samples are generated to disk: the one runner behind `fd sample`, `fd experiment` and
//! sharded runs (`--shard i/n`, `fd merge`).
//!
//! Work is cut into *parts* at fixed global indices (`start = k * batch`). Each part is written as
//! it completes, every file via temp + rename: `parts/SSSSSS-EEEEEE.safetensors` (raw images),
//! the PNGs, then `parts/SSSSSS-EEEEEE.json` (seeds, conditions, timings, call counts, SHA-1 of the
//! raw images) — the record last, so a part counts as done only when all of it is on disk. With
//! [`Existing::Resume`] every part whose record and images check out is skipped; because a part is
//! always recomputed whole, with the same seeds and batch, a resumed run is byte-identical to an
//! uninterrupted one. `config.json` pins what the run is (model hashes, sampler, plan, options,
//! conditions, seed, batch, shard); resuming under a different configuration is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fd_model::UNetModel;
use fd_sched::{CallCounts, Condition, ExecOptions, Plan, Timings};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::Tensor;

use crate::{images, Error, Result};

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
    pub fn parts(&self, n: usize, batch: usize) -> Vec<std::ops::Range<usize>> {
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
    pub model_dir: &'a Path,
    /// Sampler name (`fd_sched::SCHEDULERS`).
    pub sampler: &'a str,
    pub steps: usize,
    pub eta: f64,
    pub plan: &'a Plan,
    pub opts: &'a ExecOptions,
    /// One condition per sample (all `n` samples, not only this shard's).
    pub conds: &'a [Condition],
    /// Sample i uses seed + i.
    pub seed: u64,
    pub batch: usize,
    pub shard: Shard,
    pub out: &'a Path,
    pub existing: Existing,
    /// Write one PNG per sample (1- or 3-channel outputs).
    pub pngs: bool,
}

/// The record of one finished part (`parts/SSSSSS-EEEEEE.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartRecord {
    pub start: usize,
    pub end: usize,
    pub seeds: Vec<u64>,
    pub timings: Timings,
    pub counts: CallCounts,
    pub cond_s: f64,
    pub vae_s: f64,
    /// Wall time of the whole part (conditioning + UNet loop + VAE + writing).
    pub wall_s: f64,
    /// SHA-1 of the raw images' bytes (little-endian f32), checked before a part is trusted.
    pub images_sha1: String,
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
    fn from_records(records: &[PartRecord], computed: usize, resumed: usize) -> Self {
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
    fn timing_json(&self, note: &str) -> (Value, Value) {
        let t = &self.timings;
        (
            json!({ "time_embed": t.time_embed_s, "encoder": t.encoder_s, "decoder": t.decoder_s, "scheduler": t.scheduler_s,
                "unet_loop": t.total_s, "cond_encoder": self.cond_s, "vae": self.vae_s, "total": self.wall_s }),
            json!({ "unet_loop": self.unet_s_per_image(), "total": self.total_s_per_image(), "note": note }),
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

pub fn part_stem(r: &std::ops::Range<usize>) -> String {
    format!("{:06}-{:06}", r.start, r.end)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Write bytes via a temp file + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp); // never leave a partial file behind
        return Err(Error::Io { path: path.to_path_buf(), source: e });
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Write named tensors as safetensors via a temp file + rename. Tensors are made contiguous (and
/// moved to the CPU) first: safetensors stores dense buffers only, and a VAE decoder's output, for
/// one, is a strided view.
pub fn write_tensors_atomic(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let dense: Vec<(&str, Tensor)> =
        tensors.iter().map(|(k, t)| (*k, t.to_device(tch::Device::Cpu).contiguous())).collect();
    if let Err(e) = Tensor::write_safetensors(&dense, &tmp) {
        let _ = std::fs::remove_file(&tmp); // never leave a partial file behind
        return Err(Error::Format { path: path.to_path_buf(), msg: format!("cannot write: {e}") });
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// SHA-1 of a tensor's bytes (contiguous CPU f32 copy).
pub fn tensor_sha1(t: &Tensor) -> Result<String> {
    let v = Vec::<f32>::try_from(&t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).flatten(0, -1))?;
    let mut h = sha1_smol::Sha1::new();
    for x in v {
        h.update(&x.to_le_bytes());
    }
    Ok(h.digest().to_string())
}

/// Read one named tensor from a safetensors file.
pub fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
    let items = Tensor::read_safetensors(path).map_err(|e| Error::Format { path: path.into(), msg: e.to_string() })?;
    items
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::Format { path: path.into(), msg: format!("no `{name}` tensor") })
}

fn condition_json(c: &Condition) -> Value {
    match c {
        Condition::Class(i) => json!(i),
        Condition::Prompt(p) => json!(p),
    }
}

impl SampleRun<'_> {
    /// What the run is; a folder is resumed only under an equal configuration.
    pub fn config(&self) -> Value {
        let m = &self.model.manifest;
        json!({
            "model": { "name": m.name, "graphs_sha256": m.graphs.iter().map(|(k, g)| (k.clone(), g.sha256.clone())).collect::<BTreeMap<_, _>>() },
            "sampler": { "name": self.sampler, "steps": self.steps, "eta": self.eta, "config": m.scheduler },
            "plan": { "keys": self.plan.label(), "method": self.plan.method, "key_steps": self.plan.key_steps },
            "exec": self.opts,
            "deterministic": self.model.row_by_row,
            "conditions": self.conds.iter().map(condition_json).collect::<Vec<_>>(),
            "n": self.conds.len(), "seed": self.seed, "seeds": "seed + sample index", "batch": self.batch,
            "shard": self.shard,
        })
    }

    fn parts_dir(&self) -> PathBuf {
        self.out.join("parts")
    }

    /// A finished part's record, if its files are present and its images match the recorded hash.
    fn finished(&self, r: &std::ops::Range<usize>) -> Option<PartRecord> {
        let stem = part_stem(r);
        let rec: PartRecord =
            serde_json::from_str(&std::fs::read_to_string(self.parts_dir().join(format!("{stem}.json"))).ok()?).ok()?;
        let imgs = read_tensor(&self.parts_dir().join(format!("{stem}.safetensors")), "samples").ok()?;
        let ok = rec.start == r.start
            && rec.end == r.end
            && imgs.size().first() == Some(&(r.len() as i64))
            && tensor_sha1(&imgs).ok()? == rec.images_sha1
            && (!self.pngs || r.clone().all(|i| self.out.join(format!("{i:06}.png")).is_file()));
        ok.then_some(rec)
    }

    /// Prepare the folder according to [`Existing`]; returns how many parts were already done.
    fn prepare(&self, parts: &[std::ops::Range<usize>]) -> Result<()> {
        let cfg_path = self.out.join("config.json");
        let config = self.config();
        if cfg_path.is_file() {
            let old: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?)
                .map_err(|e| Error::Format { path: cfg_path.clone(), msg: format!("not JSON: {e}") })?;
            match self.existing {
                Existing::Fail => {
                    return Err(Error::Input(format!(
                        "--out {} already holds a run: pass --resume to continue it or --overwrite to start over",
                        self.out.display()
                    )))
                }
                Existing::Resume if old != config => {
                    let differs: Vec<String> = config
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, v)| old.get(k.as_str()) != Some(v))
                        .map(|(k, _)| k.clone())
                        .collect();
                    return Err(Error::Input(format!(
                        "--resume: {} was written by a different run (differs in: {}); use another --out or --overwrite",
                        cfg_path.display(),
                        differs.join(", ")
                    )));
                }
                Existing::Resume => {}
                Existing::Overwrite => self.clear(parts)?,
            }
        }
        std::fs::create_dir_all(self.parts_dir()).map_err(io(&self.parts_dir()))?;
        write_atomic(&cfg_path, serde_json::to_string_pretty(&config)?.as_bytes())
    }

    fn clear(&self, parts: &[std::ops::Range<usize>]) -> Result<()> {
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
        let make = || fd_sched::build_scheduler(self.sampler, &self.model.manifest.scheduler, self.steps, self.eta);
        make().map_err(|e| Error::Input(e.to_string()))?;
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
                    self.generate(r, &make)?;
                }
                let rec = self.generate_part(r, &make)?;
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
    fn generate(
        &self,
        r: &std::ops::Range<usize>,
        make: &dyn Fn() -> fd_sched::Result<Box<dyn fd_sched::Scheduler>>,
    ) -> Result<(Vec<u64>, fd_sched::BatchOutput)> {
        let seeds: Vec<u64> = r.clone().map(|i| self.seed + i as u64).collect();
        let out = fd_sched::generate_batch(self.model, make, self.plan, self.opts, &seeds, &self.conds[r.clone()])
            .map_err(|e| Error::Input(e.to_string()))?;
        Ok((seeds, out))
    }

    fn generate_part(
        &self,
        r: &std::ops::Range<usize>,
        make: &dyn Fn() -> fd_sched::Result<Box<dyn fd_sched::Scheduler>>,
    ) -> Result<PartRecord> {
        let t0 = std::time::Instant::now();
        let (seeds, out) = self.generate(r, make)?;
        let stem = part_stem(r);
        write_tensors_atomic(&self.parts_dir().join(format!("{stem}.safetensors")), &[("samples", &out.images)])?;
        if self.pngs {
            let u8s = images::to_u8(&out.images);
            for (k, i) in r.clone().enumerate() {
                images::save_png(&u8s.get(k as i64), &self.out.join(format!("{i:06}.png")))?;
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
        write_atomic(&self.parts_dir().join(format!("{stem}.json")), serde_json::to_string_pretty(&rec)?.as_bytes())?;
        Ok(rec)
    }

    /// Assemble `samples.safetensors` (this shard's samples in index order) and the summary.
    fn finish(
        &self,
        parts: &[std::ops::Range<usize>],
        records: &[PartRecord],
        computed: usize,
        resumed: usize,
    ) -> Result<RunSummary> {
        let imgs = parts
            .iter()
            .map(|r| read_tensor(&self.parts_dir().join(format!("{}.safetensors", part_stem(r))), "samples"))
            .collect::<Result<Vec<_>>>()?;
        let all = Tensor::cat(&imgs, 0);
        write_tensors_atomic(&self.out.join("samples.safetensors"), &[("samples", &all)])?;
        let mut s = RunSummary::from_records(records, computed, resumed);
        s.gflops_per_image = s.counts.gflops_per_image(self.model, s.n);
        if self.pngs {
            let cols = self.model.manifest.cond.num_classes.unwrap_or(8).clamp(1, 10).min(s.n as i64);
            let grid = images::grid(&all.narrow(0, 0, (s.n as i64).min(cols * 8)), cols);
            images::save_png(&images::to_u8(&grid).get(0), &self.out.join("grid.png"))?;
        }
        Ok(s)
    }
}

/// Indices of a sample folder written by the runner (`run.json` `indices`), or 0..n.
pub fn folder_indices(dir: &Path, n: usize) -> Vec<usize> {
    std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["indices"].as_array().map(|a| a.iter().filter_map(Value::as_u64).map(|i| i as usize).collect()))
        .filter(|v: &Vec<usize>| v.len() == n)
        .unwrap_or_else(|| (0..n).collect())
}

/// Machine description for run records.
pub fn machine(device: tch::Device) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "torch_threads": tch::get_num_threads(),
        "device": fd_model::device::describe(device),
        "hostname": std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim(),
    })
}

/// Short machine tag for result folders: `2core-x86_64` on CPU, `cuda-16core-x86_64` on a GPU.
pub fn machine_tag(device: tch::Device) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu = format!("{cores}core-{}", std::env::consts::ARCH);
    if device.is_cuda() {
        format!("cuda-{cpu}")
    } else {
        cpu
    }
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, no calendar dependency).
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl SampleRun<'_> {
    /// The `run.json` of a finished run: its configuration, what was measured, machine, versions.
    pub fn record(&self, s: &RunSummary) -> Value {
        let mut v = self.config();
        let conds: Vec<Value> = s.indices.iter().map(|&i| condition_json(&self.conds[i])).collect();
        let o = v.as_object_mut().expect("config is an object");
        o.insert("command".into(), json!(std::env::args().collect::<Vec<_>>()));
        o.insert("model_dir".into(), json!(self.model_dir));
        // this folder's samples (a shard holds a subset of the run's indices)
        o.insert("conditions".into(), json!(conds));
        o.insert("indices".into(), json!(s.indices));
        o.insert("n_folder".into(), json!(s.n));
        let (timings, per_image) =
            s.timing_json("sums of per-part timings; total = conditioning + UNet loop + VAE + writing");
        o.insert("timings_s".into(), timings);
        o.insert("s_per_image".into(), per_image);
        o.insert("parts".into(), json!({ "computed": s.parts_computed, "resumed": s.parts_resumed }));
        o.insert("counts".into(), json!(s.counts));
        o.insert(
            "gflops_per_image".into(),
            json!({ "value": s.gflops_per_image, "convention": "torch.utils.flop_counter (2 x MACs), UNet graphs only, CFG batch doubling included" }),
        );
        o.insert("machine".into(), machine(self.model.device));
        o.insert(
            "versions".into(),
            json!({ "fd": env!("CARGO_PKG_VERSION"), "libtorch": fd_model::device::libtorch_summary() }),
        );
        v
    }

    /// [`SampleRun::run`] and write `run.json` (last: a folder with `run.json` is complete).
    pub fn run_and_record(&self, progress: &indicatif::ProgressBar) -> Result<(RunSummary, Value)> {
        let s = self.run(progress)?;
        let rec = self.record(&s);
        write_atomic(&self.out.join("run.json"), serde_json::to_string_pretty(&rec)?.as_bytes())?;
        Ok((s, rec))
    }
}

/// Combine finished shard folders of one run (`--shard i/n`, same configuration otherwise) into
/// one folder, as if one process had generated them: parts (with their cached Inception
/// features), PNGs, `samples.safetensors` in index order, `run.json` with summed timings and
/// counts. Missing shards, unfinished shards and configuration mismatches are errors.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<Value> {
    if shards.is_empty() {
        return Err(Error::Input("fd merge: no shard folders given".into()));
    }
    let read = |p: &Path| -> Result<Value> {
        let t = std::fs::read_to_string(p).map_err(io(p))?;
        serde_json::from_str(&t).map_err(|e| Error::Format { path: p.into(), msg: format!("not JSON: {e}") })
    };
    let mut base: Option<Value> = None;
    let mut seen = Vec::new();
    let mut runs = Vec::new();
    for d in shards {
        let run_path = d.join("run.json");
        if !run_path.is_file() {
            return Err(Error::Input(format!("{}: not a finished sampling run (no run.json)", d.display())));
        }
        let mut cfg = read(&d.join("config.json"))?;
        let shard: Shard = serde_json::from_value(cfg["shard"].clone())
            .map_err(|e| Error::Format { path: d.join("config.json"), msg: format!("bad `shard`: {e}") })?;
        cfg["shard"] = json!(Shard::default());
        match &base {
            None => base = Some(cfg),
            Some(b) if *b != cfg => {
                return Err(Error::Input(format!(
                    "{}: configuration differs from {} (only `shard` may differ)",
                    d.display(),
                    shards[0].display()
                )))
            }
            Some(_) => {}
        }
        if seen.iter().any(|s: &Shard| s.index == shard.index) {
            return Err(Error::Input(format!("{}: shard {}/{} given twice", d.display(), shard.index, shard.count)));
        }
        seen.push(shard);
        runs.push(read(&run_path)?);
    }
    let cfg = base.expect("at least one shard");
    let count = seen[0].count;
    if seen.iter().any(|s| s.count != count) {
        return Err(Error::Input("fd merge: shards of different counts (i/n with different n)".into()));
    }
    let missing: Vec<String> =
        (0..count).filter(|i| !seen.iter().any(|s| s.index == *i)).map(|i| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!("fd merge: shards {} are missing", missing.join(", "))));
    }
    let pd = out.join("parts");
    std::fs::create_dir_all(&pd).map_err(io(&pd))?;
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    for d in shards {
        for dir in [d.join("parts"), d.to_path_buf()] {
            let rd = std::fs::read_dir(&dir).map_err(io(&dir))?;
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().to_string();
                let is_part = dir.ends_with("parts") && !name.ends_with(".tmp");
                let is_png = name.ends_with(".png") && name != "grid.png" && name.len() == 10;
                if is_part || is_png {
                    let to = if is_part { pd.join(&name) } else { out.join(&name) };
                    files.push((e.path(), to));
                }
            }
        }
    }
    for (from, to) in &files {
        let mut tmp = to.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::copy(from, &tmp).map_err(io(from))?;
        std::fs::rename(&tmp, to).map_err(io(to))?;
    }
    write_atomic(&out.join("config.json"), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    // parts in index order -> samples.safetensors
    let mut stems: Vec<String> = std::fs::read_dir(&pd)
        .map_err(io(&pd))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(String::from))
        .collect();
    stems.sort();
    let mut imgs = Vec::new();
    let mut records = Vec::new();
    for s in &stems {
        let rec: PartRecord = serde_json::from_value(read(&pd.join(format!("{s}.json")))?)
            .map_err(|e| Error::Format { path: pd.join(format!("{s}.json")), msg: e.to_string() })?;
        let t = read_tensor(&pd.join(format!("{s}.safetensors")), "samples")?;
        if tensor_sha1(&t)? != rec.images_sha1 {
            return Err(Error::Format {
                path: pd.join(format!("{s}.safetensors")),
                msg: "images do not match their record".into(),
            });
        }
        records.push(rec);
        imgs.push(t);
    }
    let summary = RunSummary::from_records(&records, 0, records.len());
    let indices = &summary.indices;
    let n_total = cfg["n"].as_u64().unwrap_or(0) as usize;
    if *indices != (0..n_total).collect::<Vec<_>>() {
        return Err(Error::Input(format!(
            "fd merge: the shards hold {} of the run's {n_total} samples",
            indices.len()
        )));
    }
    let all = Tensor::cat(&imgs, 0);
    write_tensors_atomic(&out.join("samples.safetensors"), &[("samples", &all)])?;
    let gflops: f64 = runs
        .iter()
        .map(|r| r["gflops_per_image"]["value"].as_f64().unwrap_or(0.0) * r["n_folder"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        / n_total as f64;
    let mut run = cfg.clone();
    let o = run.as_object_mut().expect("config is an object");
    o.insert("command".into(), json!(std::env::args().collect::<Vec<_>>()));
    o.insert("merged_from".into(), json!(shards));
    o.insert("indices".into(), json!(indices));
    o.insert("n_folder".into(), json!(n_total));
    let (timings, per_image) = summary.timing_json("sums over shards (processes may have run on different machines)");
    o.insert("timings_s".into(), timings);
    o.insert("s_per_image".into(), per_image);
    o.insert("counts".into(), json!(summary.counts));
    o.insert("gflops_per_image".into(), json!({ "value": gflops }));
    o.insert("machine".into(), json!(runs.iter().map(|r| r["machine"].clone()).collect::<Vec<_>>()));
    write_atomic(&out.join("run.json"), serde_json::to_string_pretty(&run)?.as_bytes())?;
    Ok(run)
}
