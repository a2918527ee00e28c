//! The command line: clap types only. Flags become library objects once, in
//! [`SamplingFlags::options`] / [`SamplingFlags::model`] (ripgrep's `HiArgs::from_low_args`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fd_run::spec::{ModelSpec, PlanOptions, SamplingOptions};
use fd_sched::decode::DecodeMode;
use fd_sched::PlanSpec;

#[derive(Parser, Debug)]
#[command(name = "fd", version, about = "Faster Diffusion (encoder propagation) harness")]
pub struct Cli {
    /// error, warn, info (default: progress bars and run summaries), debug (per batch), trace.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: log::LevelFilter,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Print a model folder's manifest summary, parameter / FLOP split and the device.
    Info {
        /// Model folder (manifest.json + graphs).
        model: PathBuf,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Graph format to load: auto, torchscript or aoti (as `fd sample --format`).
        #[arg(long, default_value = "auto")]
        format: fd_model::FormatChoice,
    },
    /// Generate samples with a sampler and a key-step plan; writes PNGs, grid.png and run.json.
    Sample(Box<SampleArgs>),
    /// Time several plans side by side in one process (interleaved repeats, median), with the
    /// FLOPs-bound speedup each plan implies; writes bench.json and bench.md.
    Bench(Box<BenchArgs>),
    /// Feature drift of every encoder / decoder layer across steps (the paper's Fig. 3): CSV +
    /// summary JSON; optionally choose drift-calibrated key steps and save them as a plan file.
    Drift(Box<DriftArgs>),
    /// Evaluate a sample folder written by `fd sample`.
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Combine the folders of a sharded run (`fd sample --shard i/n`) into one, as if one process
    /// had generated them (cached Inception features travel along).
    Merge {
        /// Output folder (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Replace the fd run already in --out.
        #[arg(long)]
        overwrite: bool,
        /// Shard folders (all n of them).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
    /// Finished runs of the same samples side by side: UNet s/image, speedup over the first run,
    /// GFLOPs/image and class consistency, printed and written to --out as compare.md / .json and
    /// one labelled figure compare.png (each run's grid under its caption).
    Compare {
        /// Folder for compare.md, compare.json and compare.png.
        #[arg(long)]
        out: PathBuf,
        /// Row labels, comma separated, one per run (default: each run's plan).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Judge of class consistency [default: classifier.pt in the first run's model folder, if any].
        #[arg(long)]
        classifier: Option<PathBuf>,
        /// cpu, cuda or cuda:N (for the judge).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// UNet s/image and speedups from this `fd bench` report (bench.json: the runs' plans, in
        /// their order, timed side by side in one process) instead of each run's own process.
        #[arg(long, value_name = "BENCH_JSON")]
        timings: Option<PathBuf>,
        /// Run folders (`fd sample --out`); the first is the reference of the speedups.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
    /// Run an experiment config (experiments/configs/*.json): every row sampled (resumable),
    /// evaluated (FID, KID, consistency / CLIP-S, GFLOPs, s/image) and written as one table.
    Experiment(Box<ExperimentArgs>),
}

/// The sampling flags `fd sample`, `fd bench` and `fd drift` share.
#[derive(Args, Debug)]
pub struct SamplingFlags {
    /// Model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Sampler: ddim, ddpm, dpm, dpm++ or euler [default: the export's own scheduler, as its
    /// diffusers pipeline runs it (ddim where fd has no equivalent); said on stderr].
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub scheduler: Option<String>,
    /// Number of sampler steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Classifier-free guidance scale (1: conditional only; below 1 is an error) [default: 1 for
    /// `fd sample`, 3 for `fd bench` and `fd drift`].
    #[arg(long)]
    pub cfg: Option<f64>,
    /// Class names or ids, comma separated, cycled over the samples (default: all classes).
    #[arg(long, conflicts_with = "prompts")]
    pub classes: Option<String>,
    /// File with one prompt per line, cycled over the samples (needed for text-conditioned
    /// models; class-conditioned ones cycle their classes).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// ControlNet condition image (PNG), or a folder of them (sorted by name, cycled over the
    /// samples as the prompts are); needed by models exported with a ControlNet. Each must have
    /// the model's pixel size (no resize) and 1 or 3 channels.
    #[arg(long, value_name = "IMAGE_OR_DIR")]
    pub control: Option<PathBuf>,
    /// ControlNet conditioning scale (diffusers' controlnet_conditioning_scale).
    #[arg(long, default_value_t = 1.0)]
    pub control_scale: f64,
    /// Frames per video (text-to-video models; must equal the frame count the model was exported
    /// for). Each sample is written as a film strip PNG, one PNG per frame and a GIF.
    #[arg(long)]
    pub frames: Option<i64>,
    /// Base seed; sample i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Graph format: auto (the AOTInductor packages the model ships when they run on this
    /// device, torch release and CPU; TorchScript otherwise, with a note saying why), torchscript,
    /// or aoti (the packages the manifest lists, TorchScript for graphs without one;
    /// experiments/export/convert_aoti.py compiles them).
    #[arg(long, default_value = "auto")]
    pub format: fd_model::FormatChoice,
    /// Bit-identical samples whatever the batch size or decoding mode: UNet graphs run one row
    /// at a time and libtorch's deterministic algorithms are on (slower; see docs/runs.md).
    #[arg(long)]
    pub deterministic: bool,
}

/// How a plan runs (`fd sample`).
#[derive(Args, Debug)]
pub struct PlanFlags {
    /// The plan: encoder propagation's key steps or a peer caching method (the full grammar is in
    /// --help, generated from the method table).
    #[arg(long, default_value = "none", value_parser = parse_plan, long_help = plan_help())]
    pub keys: PlanSpec,
    /// How a group's decoders run: auto (the fastest on this device: uncapped parallel on CUDA;
    /// on a CPU sequential or a row cap, from a short measurement cached per machine, model and
    /// batch), parallel (the paper's: a group's steps in one call) or sequential (a call per step).
    #[arg(long, default_value = "auto", value_parser = parse_decode)]
    pub decode: DecodeMode,
    /// Same as --decode parallel.
    #[arg(long, conflicts_with_all = ["decode", "sequential"])]
    pub parallel: bool,
    /// Same as --decode sequential.
    #[arg(long, conflicts_with = "decode")]
    pub sequential: bool,
    /// Cap on rows per decoder call (0 = none); with --decode auto, a cap means parallel.
    #[arg(long, default_value_t = 0, conflicts_with = "sequential")]
    pub max_decoder_batch: usize,
    /// Prior noise injection C@TAU[:before|:after], e.g. 0.003@0.5.
    #[arg(long)]
    pub inject: Option<String>,
    /// Calibration samples for --keys auto:K / auto:threshold=X.
    #[arg(long, default_value_t = 8)]
    pub calibration_n: usize,
}

fn parse_plan(s: &str) -> Result<PlanSpec, String> {
    s.parse().map_err(|e: fd_sched::Error| e.to_string())
}

/// `--keys`' long help: one entry per method of the table ([`PlanSpec::help`]).
fn plan_help() -> String {
    format!("The plan, one of: {}.", PlanSpec::help())
}

fn parse_decode(s: &str) -> Result<DecodeMode, String> {
    s.parse().map_err(|e: fd_sched::Error| e.to_string())
}

impl PlanFlags {
    /// --decode, or the mode --parallel / --sequential name.
    pub fn decode(&self) -> DecodeMode {
        match (self.parallel, self.sequential) {
            (true, _) => DecodeMode::Parallel,
            (_, true) => DecodeMode::Sequential,
            _ => self.decode,
        }
    }
}

impl SamplingFlags {
    /// The model to open.
    pub fn model(&self) -> fd_run::Result<ModelSpec> {
        Ok(ModelSpec::new(&self.model, &self.device, self.deterministic)?.with_format(self.format))
    }

    /// Open the model; says on stderr why `--format auto` runs TorchScript when the model ships
    /// packages that cannot run here.
    pub fn load(&self) -> fd_run::Result<fd_model::Denoiser> {
        let model = self.model()?.load()?;
        if let Some(why) = &model.format_note {
            note!("{why}");
        }
        Ok(model)
    }

    /// The one conversion from flags to sampling options; `default_cfg` is the command's default
    /// guidance, `plan` the plan flags where the command has them (else the baseline).
    pub fn options(&self, plan: Option<&PlanFlags>, default_cfg: f64) -> SamplingOptions {
        let d = SamplingOptions::default();
        SamplingOptions {
            plan: PlanOptions {
                sampler: self.scheduler.clone().unwrap_or_default(),
                steps: self.steps,
                eta: self.eta,
                keys: plan.map_or(d.plan.keys, |p| p.keys.clone()),
                decode: plan.map_or(DecodeMode::Auto, PlanFlags::decode),
                max_decoder_batch: plan.map_or(0, |p| p.max_decoder_batch),
                inject: plan.and_then(|p| p.inject.clone()),
            },
            guidance: self.cfg.unwrap_or(default_cfg),
            calibration_n: plan.map_or(d.calibration_n, |p| p.calibration_n),
            control_scale: self.control_scale,
            frames: self.frames,
        }
    }

    /// The conditions of `n` samples: prompts / classes cycled, paired with `--control` images.
    pub fn conditions(&self, model: &fd_model::Denoiser, n: usize) -> fd_run::Result<Vec<fd_model::Condition>> {
        let conds = fd_run::spec::cycle_conditions(model, self.prompts.as_deref(), self.classes.as_deref(), n)?;
        fd_run::spec::with_control(model, conds, self.control.as_deref())
    }
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub sampling: SamplingFlags,
    #[command(flatten)]
    pub plan: PlanFlags,
    /// Number of samples.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out: finished batches are kept (byte-identical to an uninterrupted run).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Delete the run in --out and start over.
    #[arg(long)]
    pub overwrite: bool,
    /// Generate only the i-th of n contiguous blocks of batches (0-based), e.g. --shard 0/4;
    /// combine the shard folders with `fd merge`.
    #[arg(long)]
    pub shard: Option<String>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub sampling: SamplingFlags,
    /// Plans, comma separated; the first is the reference. `KEYS` (decoding auto, as `fd sample`),
    /// `KEYS@par` (uncapped parallel), `KEYS@seq` (sequential) or `KEYS@capR` (parallel, at most R
    /// rows per decoder call), e.g. none,50ls,50ls@par,50ls@seq,deepcache:3.
    #[arg(long, default_value = "none,50ls,50ls@par,50ls@seq")]
    pub plans: String,
    /// Prior noise injection for the non-baseline plans (C@TAU), as in `fd sample`.
    #[arg(long)]
    pub inject: Option<String>,
    /// Samples per timed run (one batch).
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Timed repeats per plan (interleaved across plans; the median is reported). While a plan's
    /// repeats spread more than --max-spread, more rounds run (up to 3x, within 300 s).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// The largest (median - min) / min of a plan's repeats that counts as a clean timing; a
    /// plan still above it is marked disturbed in bench.md and bench.json.
    #[arg(long, default_value_t = 0.25)]
    pub max_spread: f64,
    /// Run every plan once, untimed, before the timed repeats (--warmup false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub warmup: bool,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct DriftArgs {
    #[command(flatten)]
    pub sampling: SamplingFlags,
    /// Samples (classes cycled).
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// Choose key steps from the encoder drift profile: auto:K (optimal, K key steps) or
    /// auto:threshold=X; saved to OUT/plan.json (use with --keys OUT/plan.json).
    #[arg(long)]
    pub save_plan: Option<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Experiment config (JSON).
    pub config: PathBuf,
    /// Override the config's samples per row.
    #[arg(long)]
    pub n: Option<usize>,
    /// Override the config's model folder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Override the config's prompt file (text-conditioned models).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Override the config's FID reference (named set or .npz).
    #[arg(long)]
    pub r#ref: Option<String>,
    /// CLIP towers for CLIP score.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Override the config's classifier-free guidance scale.
    #[arg(long)]
    pub cfg: Option<f64>,
    /// Results folder (default results/<name>/<date>-<machine>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sample folders (default out/experiments/<name>/N<n>); rerunning resumes them.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Only these rows (labels, comma separated).
    #[arg(long)]
    pub only: Option<String>,
    /// Rows whose run equals a row of another experiment under DIR (laid out
    /// DIR/<name>/N<n>/<row>) adopt its finished samples (default: out/experiments unless --work
    /// is given).
    #[arg(long, value_name = "DIR", conflicts_with = "no_reuse")]
    pub reuse_from: Option<PathBuf>,
    /// Sample every row here, adopting nothing from other experiments.
    #[arg(long)]
    pub no_reuse: bool,
    /// Regenerate every row's samples instead of resuming.
    #[arg(long)]
    pub overwrite: bool,
    /// Row-by-row graph calls + libtorch deterministic algorithms (as `fd sample --deterministic`).
    #[arg(long)]
    pub deterministic: bool,
    /// Graph format every row runs: auto, torchscript or aoti (as `fd sample --format`; auto
    /// is decided for each model the rows use).
    #[arg(long, default_value = "auto")]
    pub format: fd_model::FormatChoice,
    /// Inception extractor (default: $FD_CACHE/assets/fid_inception_default_1.pt).
    #[arg(long)]
    pub inception: Option<PathBuf>,
    /// cpu, cuda or cuda:N (with --slurm: what every task uses; `cuda` with --gpus 1).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run one step of the experiment, as the jobs of --slurm do: all (sample, evaluate and
    /// tabulate every row), reference (the named reference set's features), sample (one shard of
    /// each row, with --shard), finish (merge each row's --shards, evaluate and record it) or table
    /// (the table of the recorded rows).
    #[arg(long, default_value = "all", value_parser = ["all", "reference", "sample", "finish", "table"])]
    pub stage: String,
    /// The shard `i/n` of each row that `--stage sample` samples (0 <= i < n).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Sampling shards per row (--slurm, --stage finish, --status) [default: the config's
    /// `slurm.shards`, 4].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Submit the rows not evaluated yet to Slurm: per row a job array of sampling shards and a
    /// dependent job that merges and evaluates it, then a job writing the table (scripts, logs and
    /// job ids under <results>/slurm/). Submitting again submits only what is missing.
    #[arg(long, conflicts_with_all = ["overwrite", "status", "shard"])]
    pub slurm: bool,
    /// Where the experiment stands: per row evaluated, sampled, or shards done / running /
    /// missing, with the job ids of the latest --slurm submission.
    #[arg(long, conflicts_with_all = ["overwrite", "shard"])]
    pub status: bool,
    /// Slurm partition of every job [default: the config's `slurm.partition`, else the cluster's].
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Slurm account of every job [default: the config's `slurm.account`, else yours].
    #[arg(long, requires = "slurm")]
    pub account: Option<String>,
    /// GPUs per task (`--gres=gpu:N`; use with --device cuda) [default: the config's, 0].
    #[arg(long, requires = "slurm")]
    pub gpus: Option<usize>,
    /// CPUs per task [default: the config's, else Slurm's].
    #[arg(long, requires = "slurm")]
    pub cpus_per_task: Option<usize>,
    /// Time limit of every task, e.g. 04:00:00 [default: the config's, else the partition's].
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// A further sbatch option for every job (repeatable), e.g. --sbatch-arg=--qos=high.
    #[arg(long, requires = "slurm", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum EvalCmd {
    /// FID and KID of a sample folder against a reference set or .npz statistics.
    Fid {
        /// Folder written by `fd sample` (samples.safetensors) or a folder of PNGs.
        #[arg(long)]
        samples: PathBuf,
        /// Reference: a named set (fmnist-test; features cached under $FD_CACHE/fid) or a .npz
        /// with mu/sigma (FID only).
        #[arg(long, default_value = "fmnist-test")]
        r#ref: String,
        /// Inception extractor (default: $FD_CACHE/assets/fid_inception_default_1.pt).
        #[arg(long)]
        inception: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        kid_subsets: usize,
        #[arg(long, default_value_t = 1000)]
        kid_subset_size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// CLIP score (CLIP-S and torchmetrics' 100*cos) of a text-conditioned sample folder.
    Clip {
        /// Folder written by `fd sample --prompts` (samples.safetensors + run.json).
        #[arg(long)]
        samples: PathBuf,
        /// CLIP towers exported by experiments/export/export_clip.py.
        #[arg(long)]
        clip: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Class consistency: share of samples the judge classifies as the requested class.
    Consistency {
        /// Folder written by `fd sample` (samples.safetensors + run.json).
        #[arg(long)]
        samples: PathBuf,
        /// TorchScript classifier (logits over the model's classes).
        #[arg(long, default_value = "models/fmnist/classifier.pt")]
        classifier: PathBuf,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}
