//! The run-folder contract: every record fd writes beside its artefacts is one of these typed
//! values, and reading it back is [`fd_model::io::read_json`] into the same type (a missing or
//! mistyped field is an error naming the file and the field, never a default).
//!
//! A sampling run folder (`fd sample --out DIR`, an experiment row):
//!
//! | file | record | written |
//! |---|---|---|
//! | `config.json` | [`RunConfig`]: what the run is (marker `fd_run`, [`RUN_FORMAT`]); a folder is resumed only under an equal one, and is an fd run only if this parses | first |
//! | `parts/SSSSSS-EEEEEE.safetensors` | raw images of samples SSSSSS..EEEEEE (`samples`, [B, C, H, W] in [-1, 1]) | per part |
//! | `NNNNNN.png` | one PNG per sample (1- or 3-channel outputs) | per part |
//! | `parts/SSSSSS-EEEEEE.json` | [`PartRecord`]: seeds, timings, counts, SHA-1 of the raw images | last of a part |
//! | `samples.safetensors`, `grid.png` | this folder's samples in index order, a grid | at the end |
//! | `run.json` | [`RunRecord`]: the config plus what was measured | last: the run is complete |
//!
//! Plan files (`fd drift --save-plan`) are [`fd_sched::PlanFile`]; `bench.json` is
//! [`crate::bench::BenchReport`]; an experiment's `experiment.json` is
//! [`crate::experiment::ExperimentRecord`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use fd_model::manifest::{CondSpec, VaeSpec};
use fd_model::Condition;
use fd_sched::{CallCounts, ExecOptions, MethodRecord, Timings};
use serde::{Deserialize, Serialize};

use crate::machine::{Machine, Versions};
use crate::{Error, Result};

/// The model a run used: everything of it that can change an image.
///
/// Runs written since the format marker (`fd_run: 2` in `config.json`) derive it from the model:
/// [`Manifest::identity`](fd_model::Manifest::identity) (the whole manifest as fd read it, every
/// graph's SHA-256 included, less an explicit list of cosmetic fields) and the tokenizer files'
/// SHA-256. Runs written before list the fields they compared ([`ListedModel`]); they are read,
/// verified and evaluated as before, with the identity they were written with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelIdentity {
    Derived {
        name: String,
        /// [`fd_model::Manifest::identity`] for the format that ran.
        manifest: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokenizer_sha256: Option<String>,
        /// The graph format that ran ([`fd_model::GraphFormat`]; AOTInductor packages agree
        /// with TorchScript to about 1e-5, not bit for bit); left out for TorchScript.
        #[serde(default, skip_serializing_if = "is_torchscript")]
        format: fd_model::GraphFormat,
    },
    Listed(Box<ListedModel>),
}

impl ModelIdentity {
    /// The identity of a loaded model.
    pub fn of(model: &fd_model::Denoiser) -> Self {
        ModelIdentity::Derived {
            name: model.manifest.name.clone(),
            manifest: model.manifest.identity(model.format),
            tokenizer_sha256: model.tokenizer_sha256.clone(),
            format: model.format,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ModelIdentity::Derived { name, .. } => name,
            ModelIdentity::Listed(l) => &l.name,
        }
    }
}

/// The model identity of runs written before the format marker: the graphs' SHA-256, the
/// conditioning spec, the tokenizer's SHA-256, dtype, prediction type, VAE scaling, added
/// conditioning, ControlNet image spec and guidance channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedModel {
    pub name: String,
    pub graphs_sha256: BTreeMap<String, String>,
    pub cond: CondSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_sha256: Option<String>,
    pub dtype: String,
    pub prediction_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<VaeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<fd_model::PrepareSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<fd_model::ControlSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_channels: Option<i64>,
}

/// The run-folder format this build writes (`fd_run` in `config.json`): the marker that proves
/// a folder is an fd run (with the record parsing as a [`RunConfig`]). Format 1 (no marker) is
/// what fd wrote before 2026-12-06, with a [`ListedModel`] identity.
pub const RUN_FORMAT: u32 = 2;

fn is_torchscript(f: &fd_model::GraphFormat) -> bool {
    *f == fd_model::GraphFormat::Torchscript
}

fn format_1() -> u32 {
    1
}

fn is_format_1(v: &u32) -> bool {
    *v == 1
}

/// The sampler a run used: name, steps, eta and the manifest's diffusers scheduler config verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerRecord {
    pub name: String,
    pub steps: usize,
    pub eta: f64,
    pub config: serde_json::Value,
}

/// The plan a run used: its label ([`fd_sched::Plan::label`]: every parameter, a plan file's or
/// an `auto:` rule's key steps as their list), its method ([`MethodRecord`]) and key steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// [`fd_sched::PlanSpec::filled`] of the resolved plan (written as its label).
    pub keys: fd_sched::PlanSpec,
    pub method: MethodRecord,
    pub key_steps: Vec<usize>,
}

/// `config.json`: what a run is. Everything that can change an image is here; `--resume` and
/// `fd merge` compare it field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// [`RUN_FORMAT`] (absent, so 1, in runs written before the marker).
    #[serde(default = "format_1", skip_serializing_if = "is_format_1")]
    pub fd_run: u32,
    pub model: ModelIdentity,
    pub sampler: SamplerRecord,
    pub plan: PlanRecord,
    pub exec: ExecOptions,
    /// Row-by-row graph calls + libtorch's deterministic algorithms.
    pub deterministic: bool,
    /// One condition per sample of the whole run (in `run.json`: this folder's samples, in the
    /// order of `indices`).
    pub conditions: Vec<Condition>,
    /// Samples of the whole run (all shards).
    pub n: usize,
    /// Base seed: sample i uses seed + i.
    pub seed: u64,
    /// How seeds are derived (`seed + sample index`).
    pub seeds: String,
    pub batch: usize,
    pub shard: Shard,
}

impl RunConfig {
    /// The run's identity: SHA-256 of this config with the shard left out, so every shard of one
    /// run, and the merged folder, share it. Every part record carries it.
    pub fn identity(&self) -> String {
        let mut c = self.clone();
        c.shard = Shard::default();
        fd_model::io::sha256_hex(serde_json::to_string(&c).expect("a run config serialises").as_bytes())
    }

    /// Where two configs differ, as field paths (`model.manifest.teacache.coefficients`,
    /// `sampler`), for error messages: at most eight, in field order.
    pub fn differing_fields(&self, other: &RunConfig) -> Vec<String> {
        let (a, b) = (serde_json::to_value(self), serde_json::to_value(other));
        let mut out = Vec::new();
        if let (Ok(a), Ok(b)) = (a, b) {
            json_diff(&a, &b, "", &mut out);
        }
        if out.is_empty() {
            out.push("?".into());
        }
        out.truncate(8);
        out
    }
}

/// Paths (dot-joined object keys) at which `a` and `b` differ; arrays and scalars are compared
/// whole. `conditions` are named whole too (one entry per sample would say nothing more).
fn json_diff(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if at != "conditions" => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                json_diff(va, vb, &path, out);
            }
        }
        _ => out.push(at.to_string()),
    }
}

/// `parts/SSSSSS-EEEEEE.json`: the record of one finished part.
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
    /// The run's [`RunConfig::identity`]: a part of another run is never taken for this one's.
    pub identity: String,
    /// One condition per sample of the part.
    pub conditions: Vec<Condition>,
    /// SHA-256 of each sample's PNG file (empty when the run writes no PNGs).
    #[serde(default)]
    pub png_sha256: Vec<String>,
}

/// Seconds per component, summed over parts (`run.json` `timings_s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingsRecord {
    pub time_embed: f64,
    pub encoder: f64,
    pub decoder: f64,
    pub scheduler: f64,
    /// ControlNet seconds (inside `unet_loop`; 0 without a ControlNet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub controlnet: f64,
    pub unet_loop: f64,
    pub cond_encoder: f64,
    pub vae: f64,
    pub total: f64,
}

/// Seconds per image (`run.json` `s_per_image`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerImage {
    pub unet_loop: f64,
    pub total: f64,
    pub note: String,
}

/// How many parts a run computed and how many it resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsCount {
    pub computed: usize,
    pub resumed: usize,
}

/// UNet GFLOPs per image and how they were counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gflops {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convention: Option<String>,
}

/// One machine, or one per shard of a merged run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Machines {
    One(Machine),
    PerShard(Vec<Machine>),
}

/// The metrics an experiment adds to a row's `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowMetrics {
    pub fid: fd_eval::score::FidResult,
    pub consistency: Option<f64>,
    pub clip_s: Option<f64>,
}

/// `run.json`: a finished run folder (written last), its [`RunConfig`] plus what was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub config: RunConfig,
    /// The run's [`RunConfig::identity`] (of `config.json`, which holds all conditions).
    pub identity: String,
    /// How the decoding mode (`exec.parallel`, `exec.max_decoder_batch`) was decided: asked for,
    /// or chosen by `auto` and why (absent in a merge of shards that did not record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<fd_sched::decode::DecodeChoice>,
    /// SHA-1 of `samples.safetensors`' images, as the part records hash them.
    pub samples_sha1: String,
    pub command: Vec<String>,
    /// The model folder as given (absent in merged runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    /// The shard folders a merged run was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<PathBuf>>,
    /// Global sample indices held by this folder (a shard holds a subset), in order.
    pub indices: Vec<usize>,
    /// Samples in this folder.
    pub n_folder: usize,
    pub timings_s: TimingsRecord,
    pub s_per_image: PerImage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartsCount>,
    pub counts: CallCounts,
    pub gflops_per_image: Gflops,
    pub machine: Machines,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Versions>,
    /// Added by `fd experiment` to the copy under `results/.../rows/<row>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RowMetrics>,
    /// Which graphs ran from AOTInductor packages and which on TorchScript, when the run used both
    /// ([`fd_model::mixed_formats`]; its timings then compare formats as well as methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixed_formats: Option<String>,
}

impl RunRecord {
    /// Check the record against itself: as many conditions and indices as samples in the folder.
    pub fn check(&self, path: &std::path::Path) -> crate::Result<()> {
        let bad = |msg: String| crate::Error::Folder { path: path.to_path_buf(), msg };
        if self.indices.len() != self.n_folder || self.config.conditions.len() != self.n_folder {
            return Err(bad(format!(
                "malformed record: n_folder {} but {} indices and {} conditions",
                self.n_folder,
                self.indices.len(),
                self.config.conditions.len()
            )));
        }
        if let Some(&bad_i) = self.indices.iter().find(|&&i| i >= self.config.n) {
            return Err(bad(format!("malformed record: index {bad_i} outside the run's {} samples", self.config.n)));
        }
        Ok(())
    }

    /// Read and check `dir/run.json`.
    pub fn load(dir: &std::path::Path) -> crate::Result<Self> {
        let path = dir.join("run.json");
        if !path.is_file() {
            return Err(crate::Error::Folder {
                path: dir.to_path_buf(),
                msg: "not a finished sampling run (no run.json)".into(),
            });
        }
        let rec: RunRecord = fd_model::io::read_json(&path)?;
        rec.check(&path)?;
        Ok(rec)
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

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
