//! `fd`: a thin command-line front end over the fd library crates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use fd_model::{CondKind, LoadOptions, UNetModel};
use fd_sched::{ExecOptions, Injection, Plan};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "fd", version, about = "Faster Diffusion (encoder propagation) harness")]
struct Cli {
    /// error, warn, info (default: progress bars and run summaries), debug (per batch), trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: log::LevelFilter,
    #[command(subcommand)]
    cmd: Cmd,
}

/// A progress bar, shown at --log-level info or more verbose (as plain lines every 30 s when
/// stderr is not a terminal; `fd_eval::progress`).
fn bar(len: u64, msg: &'static str) -> indicatif::ProgressBar {
    fd_eval::progress::bar(len, log::max_level() >= log::LevelFilter::Info).with_message(msg)
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a model folder's manifest summary, parameter / FLOP split and the device.
    Info {
        /// Model folder (manifest.json + graphs).
        model: PathBuf,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
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
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Shard folders (all n of them).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
    /// Run an experiment config (experiments/configs/*.json): every row sampled (resumable),
    /// evaluated (FID, KID, consistency / CLIP-S, GFLOPs, s/image) and written as one table.
    Experiment(Box<ExperimentArgs>),
}

#[derive(Args, Debug)]
struct ExperimentArgs {
    /// Experiment config (JSON).
    config: PathBuf,
    /// Override the config's samples per row.
    #[arg(long)]
    n: Option<usize>,
    /// Override the config's model folder.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Override the config's prompt file (text-conditioned models).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Override the config's FID reference (named set or .npz).
    #[arg(long)]
    r#ref: Option<String>,
    /// CLIP towers for CLIP score.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Override the config's classifier-free guidance scale.
    #[arg(long)]
    cfg: Option<f64>,
    /// Results folder (default results/<name>/<date>-<machine>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sample folders (default out/experiments/<name>/N<n>); rerunning resumes them.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Only these rows (labels, comma separated).
    #[arg(long)]
    only: Option<String>,
    /// Regenerate every row's samples instead of resuming.
    #[arg(long)]
    overwrite: bool,
    /// Row-by-row graph calls + libtorch deterministic algorithms (as `fd sample --deterministic`).
    #[arg(long)]
    deterministic: bool,
    /// Inception extractor (default: $FD_CACHE/assets/fid_inception_default_1.pt).
    #[arg(long)]
    inception: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand, Debug)]
enum EvalCmd {
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
        /// CLIP towers exported by experiments/export_clip.py.
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

#[derive(Args, Debug)]
struct SampleArgs {
    /// Model folder.
    #[arg(long)]
    model: PathBuf,
    /// Sampler.
    #[arg(long, default_value = "ddim")]
    scheduler: String,
    /// Number of sampler steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Key steps: none (baseline), uniform:K, a preset (50ls, ...), a list 0,1,2,5; or the
    /// DeepCache peer method deepcache:N[:B] (full step every N steps, branch B).
    #[arg(long, default_value = "none")]
    keys: String,
    /// Decode each group's steps in one batched call (default) ...
    #[arg(long, overrides_with = "sequential")]
    parallel: bool,
    /// ... or one call per step.
    #[arg(long)]
    sequential: bool,
    /// Cap on rows per decoder call (0 = none).
    #[arg(long, default_value_t = 0)]
    max_decoder_batch: usize,
    /// Prior noise injection C@TAU[:before|:after], e.g. 0.003@0.5.
    #[arg(long)]
    inject: Option<String>,
    /// Classifier-free guidance scale (1: conditional only; below 1 is an error).
    #[arg(long, default_value_t = 1.0)]
    cfg: f64,
    /// Class names or ids, comma separated, cycled over the samples (default: all classes).
    #[arg(long, conflicts_with = "prompts")]
    classes: Option<String>,
    /// File with one prompt per line (text-conditioned models), cycled over the samples.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Number of samples.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Base seed; sample i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue the run in --out: finished batches are kept (byte-identical to an uninterrupted run).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Delete the run in --out and start over.
    #[arg(long)]
    overwrite: bool,
    /// Generate only the i-th of n contiguous blocks of batches (0-based), e.g. --shard 0/4;
    /// combine the shard folders with `fd merge`.
    #[arg(long)]
    shard: Option<String>,
    /// Calibration samples for --keys auto:K / auto:threshold=X.
    #[arg(long, default_value_t = 8)]
    calibration_n: usize,
    /// Bit-identical samples whatever the batch size or decoding mode: UNet graphs run one row
    /// at a time and libtorch's deterministic algorithms are on (slower; see README).
    #[arg(long)]
    deterministic: bool,
}

/// What `fd bench` and `fd drift` share: the model, the sampler and where results go.
#[derive(Args, Debug)]
struct RunArgs {
    /// Model folder.
    #[arg(long)]
    model: PathBuf,
    /// Sampler.
    #[arg(long, default_value = "ddim")]
    scheduler: String,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 3.0)]
    cfg: f64,
    /// Base seed; sample i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// File with one prompt per line, cycled over the samples (needed for text-conditioned
    /// models; class-conditioned ones cycle their classes).
    #[arg(long)]
    prompts: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Plans, comma separated; the first is the reference. `KEYS`, `KEYS@seq` (sequential
    /// decoders) or `KEYS@capR` (at most R rows per decoder call), e.g. none,50ls,50ls@seq,deepcache:3.
    #[arg(long, default_value = "none,50ls,50ls@seq,50ls@cap96")]
    plans: String,
    /// Prior noise injection for the non-baseline plans (C@TAU), as in `fd sample`.
    #[arg(long)]
    inject: Option<String>,
    /// Samples per timed run (one batch).
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Timed repeats per plan (interleaved across plans; the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Run every plan once, untimed, before the timed repeats (--warmup false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    warmup: bool,
}

#[derive(Args, Debug)]
struct DriftArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Samples (classes cycled).
    #[arg(long, default_value_t = 8)]
    n: usize,
    /// Choose key steps from the encoder drift profile: auto:K (optimal, K key steps) or
    /// auto:threshold=X; saved to OUT/plan.json (use with --keys OUT/plan.json).
    #[arg(long)]
    save_plan: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .format_timestamp(None)
        .format_target(false)
        .parse_env("FD_LOG")
        .init();
    let res = match cli.cmd {
        Cmd::Info { model, device } => info(&model, &device),
        Cmd::Sample(a) => sample_cmd(&a),
        Cmd::Bench(a) => bench_cmd(&a),
        Cmd::Drift(a) => drift_cmd(&a),
        Cmd::Eval(EvalCmd::Fid { samples, r#ref, inception, kid_subsets, kid_subset_size, seed, device }) => {
            fid_cmd(&samples, &r#ref, inception.as_deref(), (kid_subsets, kid_subset_size, seed), &device)
        }
        Cmd::Eval(EvalCmd::Clip { samples, clip, device }) => clip_cmd(&samples, &clip, &device),
        Cmd::Eval(EvalCmd::Consistency { samples, classifier, device }) => {
            consistency_cmd(&samples, &classifier, &device)
        }
        Cmd::Merge { out, shards } => merge_cmd(&shards, &out),
        Cmd::Experiment(a) => experiment_cmd(&a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load(model: &Path, device: &str) -> Result<UNetModel> {
    load_with(model, device, false)
}

/// Load a model; `deterministic` turns on row-by-row graph calls and libtorch's deterministic
/// algorithms (before the device is touched).
fn load_with(model: &Path, device: &str, deterministic: bool) -> Result<UNetModel> {
    if deterministic {
        fd_model::device::set_deterministic().map_err(|e| anyhow::anyhow!("--deterministic: {e}"))?;
    }
    let device = fd_model::parse_device(device)?;
    Ok(UNetModel::load(model, &LoadOptions { device, row_by_row: deterministic, ..Default::default() })?)
}

fn info(dir: &Path, device: &str) -> Result<()> {
    let model = load(dir, device)?;
    let m = &model.manifest;
    let p = |k: &str| m.params.get(k).copied().unwrap_or(0);
    let (pe, pd) = (p("encoder") + p("time_embed"), p("decoder"));
    let (fe, fd) = (m.flops("encoder"), m.flops("decoder"));
    println!("model        {} ({})", m.name, dir.display());
    println!(
        "input        [{}, {}, {}] ({}), prediction {}",
        m.in_channels, m.sample_size[0], m.sample_size[1], m.dtype, m.prediction_type
    );
    println!(
        "cond         {:?}: [{}, {}]{}",
        m.cond.kind,
        m.cond.seq_len,
        m.cond.dim,
        match (&m.cond.kind, &m.cond.class_names) {
            (CondKind::Class, Some(n)) => format!(", classes {n:?}"),
            _ => String::new(),
        }
    );
    println!("skips        {} tensors, mid {:?}", m.skip_shapes.len(), m.mid_shape);
    println!("scheduler    {}", m.scheduler);
    println!(
        "params       encoder (incl. time embedding) {:.3}M ({:.1}%), decoder {:.3}M ({:.1}%)",
        pe as f64 / 1e6,
        100.0 * pe as f64 / (pe + pd) as f64,
        pd as f64 / 1e6,
        100.0 * pd as f64 / (pe + pd) as f64
    );
    println!("flops/call   encoder {:.4} GFLOPs ({:.1}%), decoder {:.4} GFLOPs ({:.1}%), time_embed {:.6} GFLOPs (batch 1, 2 x MACs)",
        fe as f64 / 1e9, 100.0 * fe as f64 / (fe + fd) as f64, fd as f64 / 1e9, 100.0 * fd as f64 / (fe + fd) as f64, m.flops("time_embed") as f64 / 1e9);
    println!("graphs       {}", m.graphs.keys().cloned().collect::<Vec<_>>().join(", "));
    println!("device       {}", fd_model::device::describe(model.device));
    println!(
        "libtorch     {} (cuda available: {}, cudnn: {})",
        fd_model::device::libtorch_summary(),
        fd_model::tch::Cuda::is_available(),
        fd_model::tch::Cuda::cudnn_is_available()
    );
    Ok(())
}

fn sample_cmd(a: &SampleArgs) -> Result<()> {
    use fd_eval::runner::{Existing, SampleRun, Shard};
    if a.n == 0 || a.batch == 0 {
        bail!("--n and --batch must be >= 1");
    }
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?.unwrap_or_default();
    let model = load_with(&a.model, &a.device, a.deterministic)?;
    fd_sched::build_scheduler(&a.scheduler, &model.manifest.scheduler, a.steps, a.eta)?; // validate before any work
    let conds = fd_eval::experiment::cycle_conditions(&model, a.prompts.as_deref(), a.classes.as_deref(), a.n)?;
    let plan =
        fd_eval::experiment::resolve_plan(&model, &a.scheduler, a.steps, &a.keys, a.cfg, a.calibration_n, &conds)
            .with_context(|| format!("--keys {}", a.keys))?;
    let opts = ExecOptions {
        parallel: !a.sequential,
        max_decoder_batch: a.max_decoder_batch,
        guidance: a.cfg,
        injection: a.inject.as_deref().map(Injection::parse).transpose()?,
    };
    let channels = model.manifest.vae.as_ref().map_or(model.manifest.out_channels, |v| v.out_channels);
    let run = SampleRun {
        model: &model,
        model_dir: &a.model,
        sampler: &a.scheduler,
        steps: a.steps,
        eta: a.eta,
        plan: &plan,
        opts: &opts,
        conds: &conds,
        seed: a.seed,
        batch: a.batch,
        shard,
        out: &a.out,
        existing: match (a.resume, a.overwrite) {
            (true, _) => Existing::Resume,
            (_, true) => Existing::Overwrite,
            _ => Existing::Fail,
        },
        pngs: matches!(channels, 1 | 3),
    };
    let bar = bar(a.n as u64, "sampling");
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed} < {eta}]")?);
    let (s, _) = run.run_and_record(&bar)?;
    bar.finish_and_clear();
    if !run.pngs {
        println!("note: {channels}-channel outputs without a VAE decoder: wrote samples.safetensors only (no PNGs)");
    }
    println!(
        "{} samples -> {}{} | plan {} ({} key steps of {}) | {:.3} s/image (UNet loop {:.3}) | {:.3} GFLOPs/image{}",
        s.n,
        a.out.display(),
        if shard.count > 1 { format!(" (shard {}/{})", shard.index, shard.count) } else { String::new() },
        plan.label(),
        plan.key_steps.len(),
        plan.num_steps,
        s.total_s_per_image(),
        s.unet_s_per_image(),
        s.gflops_per_image,
        if s.parts_resumed > 0 {
            format!(" | {} batches resumed, {} computed", s.parts_resumed, s.parts_computed)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn merge_cmd(shards: &[PathBuf], out: &Path) -> Result<()> {
    let run = fd_eval::runner::merge(shards, out)?;
    println!(
        "merged {} shards -> {} ({} samples); evaluate with `fd eval fid --samples {}`",
        shards.len(),
        out.display(),
        run["n_folder"],
        out.display()
    );
    Ok(())
}

fn experiment_cmd(a: &ExperimentArgs) -> Result<()> {
    use fd_eval::experiment::{run_experiment, ExperimentConfig, ExperimentOptions};
    let mut cfg = ExperimentConfig::load(&a.config)?;
    if let Some(n) = a.n {
        cfg.n = n;
    }
    if let Some(m) = &a.model {
        cfg.model = m.clone();
    }
    if let Some(p) = &a.prompts {
        cfg.prompts = Some(p.clone());
    }
    if let Some(r) = &a.r#ref {
        cfg.reference = r.clone();
    }
    if let Some(c) = &a.clip {
        cfg.clip = Some(c.clone());
    }
    if let Some(g) = a.cfg {
        cfg.guidance = g;
    }
    cfg.validate().map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    let device = fd_model::parse_device(&a.device)?;
    let results_dir = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(&cfg.name).join(format!(
            "{}-{}",
            fd_eval::runner::today(),
            fd_eval::runner::machine_tag(device)
        ))
    });
    let work_dir =
        a.work.clone().unwrap_or_else(|| PathBuf::from("out/experiments").join(&cfg.name).join(format!("N{}", cfg.n)));
    let opt = ExperimentOptions {
        work_dir,
        results_dir: results_dir.clone(),
        device,
        existing: if a.overwrite { fd_eval::runner::Existing::Overwrite } else { fd_eval::runner::Existing::Resume },
        inception: a.inception.clone().unwrap_or_else(fd_eval::inception::default_path),
        only: a.only.as_deref().map(|s| s.split(',').map(|x| x.trim().to_string()).collect()).unwrap_or_default(),
        deterministic: a.deterministic,
        progress: log::max_level() >= log::LevelFilter::Info,
    };
    let t0 = std::time::Instant::now();
    let rows = run_experiment(&cfg, &opt)?;
    print!("{}", std::fs::read_to_string(results_dir.join("table.md"))?);
    println!("{} rows in {:.1} min -> {}", rows.len(), t0.elapsed().as_secs_f64() / 60.0, results_dir.display());
    Ok(())
}

fn drift_cmd(a: &DriftArgs) -> Result<()> {
    let model = load(&a.run.model, &a.run.device)?;
    let conds = fd_eval::experiment::cycle_conditions(&model, a.run.prompts.as_deref(), None, a.n)?;
    let seeds: Vec<u64> = (0..a.n).map(|i| a.run.seed + i as u64).collect();
    let opts = ExecOptions { guidance: a.run.cfg, parallel: false, ..Default::default() };
    let run = format!("{}-{}{}-cfg{}", model.manifest.name, a.run.scheduler, a.run.steps, a.run.cfg);
    let acc = fd_analysis::measure_drift(&model, &a.run.scheduler, a.run.steps, &opts, &seeds, &conds, &run)?;
    std::fs::create_dir_all(&a.run.out).with_context(|| format!("--out {}", a.run.out.display()))?;
    acc.write_csv(&a.run.out.join("drift.csv"))?;
    let summary = acc.summary();
    fd_eval::runner::write_atomic(&a.run.out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    fd_analysis::plot::fig3(acc.rows(), &summary, &a.run.out.join("fig3"))?;
    println!(
        "{run}: encoder mean MSE {:.4e} / decoder {:.4e} = {:.3} | std(F-norm) encoder {:.4} vs decoder {:.4} | rel. change encoder {:.4} vs decoder {:.4}",
        summary.encoder_mean_mse, summary.decoder_mean_mse, summary.mse_ratio, summary.encoder_mean_fnorm_std,
        summary.decoder_mean_fnorm_std, summary.encoder_mean_rel_change, summary.decoder_mean_rel_change
    );
    if let Some(spec) = &a.save_plan {
        let profile = &summary.encoder_drift_profile;
        let keys = fd_analysis::keysteps::AutoRule::parse(spec)
            .and_then(|r| r.key_steps(profile))
            .with_context(|| format!("--save-plan `{spec}`"))?;
        let plan = json!({ "name": format!("{spec} from {run}"), "keys": keys, "steps": a.run.steps,
            "cost": fd_analysis::keysteps::plan_cost(profile, &keys), "calibration": a.run.out.join("summary.json") });
        fd_eval::runner::write_atomic(&a.run.out.join("plan.json"), serde_json::to_string_pretty(&plan)?.as_bytes())?;
        println!("plan {spec}: key steps {keys:?} -> {}", a.run.out.join("plan.json").display());
    }
    Ok(())
}

/// One bench entry: a plan and how its decoders run.
struct BenchPlan {
    label: String,
    plan: Plan,
    opts: ExecOptions,
}

fn bench_cmd(a: &BenchArgs) -> Result<()> {
    if a.n == 0 || a.repeats == 0 {
        bail!("--n and --repeats must be >= 1");
    }
    let model = load(&a.run.model, &a.run.device)?;
    let injection = a.inject.as_deref().map(Injection::parse).transpose()?;
    let plans = a
        .plans
        .split(',')
        .map(|spec| {
            let spec = spec.trim();
            let (keys, mode) = spec.split_once('@').unwrap_or((spec, "par"));
            let plan = Plan::parse(keys, a.run.steps)?;
            let mut opts = ExecOptions {
                guidance: a.run.cfg,
                injection: if plan.is_baseline() { None } else { injection },
                ..Default::default()
            };
            match mode {
                "par" => {}
                "seq" => opts.parallel = false,
                m if m.starts_with("cap") => {
                    opts.max_decoder_batch =
                        m[3..].parse().with_context(|| format!("--plans `{spec}`: capR needs a number"))?
                }
                m => bail!("--plans `{spec}`: unknown mode `{m}` (expected seq or capR)"),
            }
            Ok(BenchPlan { label: spec.to_string(), plan, opts })
        })
        .collect::<Result<Vec<_>>>()?;
    let make = || fd_sched::build_scheduler(&a.run.scheduler, &model.manifest.scheduler, a.run.steps, 0.0);
    let conds = fd_eval::experiment::cycle_conditions(&model, a.run.prompts.as_deref(), None, a.n)?;
    let seeds: Vec<u64> = (0..a.n).map(|i| a.run.seed + i as u64).collect();
    // Warm-up, untimed: every plan once at the timed batch size, so first-use costs (allocator
    // growth, cuDNN algorithm choice per new shape, lazy init) stay out of the timed repeats. On an
    // H200 without it, one repeat of a plan took 4.7 s against a median of 0.42.
    if a.warmup {
        for p in &plans {
            fd_sched::generate_batch(&model, &make, &p.plan, &p.opts, &seeds, &conds)?;
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
    let mut gflops = vec![0.0; plans.len()];
    let bar = bar((a.repeats * plans.len()) as u64, "bench");
    for _ in 0..a.repeats {
        for (k, p) in plans.iter().enumerate() {
            let out = fd_sched::generate_batch(&model, &make, &p.plan, &p.opts, &seeds, &conds)?;
            times[k].push(out.timings.total_s / a.n as f64);
            gflops[k] = out.counts.gflops_per_image(&model, a.n);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    // the middle value; for an even count, the mean of the two middle ones
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let med: Vec<f64> = times.iter_mut().map(median).collect();
    let m = fd_eval::runner::machine(model.device);
    let mut md = format!(
        "# Sampling benchmark\n\nModel `{}`, {} {} steps, CFG {}, batch {} (N per run), median of {} interleaved repeats{}, one process.\nMachine: {} ({} cores, {} torch threads), device {}.\nCommand: `{}`\n\n| plan | s/image (UNet loop) | speedup | GFLOPs/image | FLOPs-bound speedup | speedup / FLOPs-bound |\n|---|---|---|---|---|---|\n",
        model.manifest.name, a.run.scheduler, a.run.steps, a.run.cfg, a.n, a.repeats,
        if a.warmup { " after an untimed warm-up run of each plan" } else { " (no warm-up)" }, m["cpu"], m["cores"], m["torch_threads"], m["device"],
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let mut rows = Vec::new();
    for (k, p) in plans.iter().enumerate() {
        let speedup = med[0] / med[k];
        let bound = gflops[0] / gflops[k];
        md += &format!(
            "| `{}` | {:.4} | {:.2}x | {:.3} | {:.2}x | {:.2} |\n",
            p.label,
            med[k],
            speedup,
            gflops[k],
            bound,
            speedup / bound
        );
        rows.push(json!({ "plan": p.label, "keys": p.plan.label(), "parallel": p.opts.parallel, "max_decoder_batch": p.opts.max_decoder_batch,
            "injection": p.opts.injection, "s_per_image": times[k], "median_s_per_image": med[k], "speedup": speedup,
            "gflops_per_image": gflops[k], "flops_bound_speedup": bound }));
    }
    std::fs::create_dir_all(&a.run.out).with_context(|| format!("--out {}", a.run.out.display()))?;
    let report = json!({ "command": std::env::args().collect::<Vec<_>>(), "model": model.manifest.name, "scheduler": a.run.scheduler,
        "steps": a.run.steps, "cfg": a.run.cfg, "n": a.n, "repeats": a.repeats, "warmup": a.warmup, "machine": m, "rows": rows });
    fd_eval::runner::write_atomic(&a.run.out.join("bench.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    fd_eval::runner::write_atomic(&a.run.out.join("bench.md"), md.as_bytes())?;
    print!("{md}");
    Ok(())
}

fn fid_cmd(
    dir: &Path,
    reference: &str,
    inception: Option<&Path>,
    kid_opts: (usize, usize, u64),
    device: &str,
) -> Result<()> {
    let path = inception.map(Path::to_path_buf).unwrap_or_else(fd_eval::inception::default_path);
    let inc = fd_eval::inception::Inception::load(&path, fd_model::parse_device(device)?)?;
    let bar = bar(0, "Inception features");
    let (subsets, subset_size, seed) = kid_opts;
    let res = fd_eval::features::folder_fid(
        dir,
        reference,
        &inc,
        fd_eval::features::KidOptions { subsets, subset_size, seed },
        &bar,
    )?;
    bar.finish_and_clear();
    fd_eval::runner::write_atomic(&dir.join("fid.json"), serde_json::to_string_pretty(&res)?.as_bytes())?;
    match &res.kid {
        Some(k) => println!(
            "FID {:.3} (N={} vs {reference} N={}) | KID {:.5} ± {:.5} ({} subsets of {})",
            res.fid, res.n, res.n_ref, k.mean, k.std, k.subsets, k.subset_size
        ),
        None => println!("FID {:.3} (N={} vs {reference} N={})", res.fid, res.n, res.n_ref),
    }
    Ok(())
}

/// `run.json` of a sample folder.
fn read_run(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("--samples: cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn clip_cmd(dir: &Path, clip_dir: &Path, device: &str) -> Result<()> {
    let run = read_run(dir)?;
    let prompts: Vec<String> = run["conditions"]
        .as_array()
        .and_then(|v| v.iter().map(|c| c.as_str().map(String::from)).collect())
        .with_context(|| {
            format!("{}: `conditions` must list prompts (a text-conditioned run)", dir.join("run.json").display())
        })?;
    let images = fd_eval::images::load_sample_folder(dir)?;
    let clip = fd_eval::clip::Clip::load(clip_dir, fd_model::parse_device(device)?)?;
    let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let res = clip.score(&images, &p)?;
    fd_eval::runner::write_atomic(&dir.join("clip_score.json"), serde_json::to_string_pretty(&res)?.as_bytes())?;
    println!(
        "CLIP-S {:.4} | torchmetrics {:.2} (N={}, {}, {})",
        res.clip_s, res.torchmetrics, res.n, res.clip_model, res.preprocessing
    );
    Ok(())
}

fn consistency_cmd(dir: &Path, classifier: &Path, device: &str) -> Result<()> {
    let clf = fd_eval::consistency::Classifier::load(classifier, fd_model::parse_device(device)?)?;
    let res = fd_eval::consistency::folder_consistency(&clf, dir)?;
    let out = dir.join("consistency.json");
    fd_eval::runner::write_atomic(&out, serde_json::to_string_pretty(&res)?.as_bytes())?;
    println!("class consistency {:.4} over N={} ({})", res.consistency, res.n, out.display());
    for c in &res.per_class {
        println!("  class {:>2}: {:.3} (n={})", c.class, c.consistency, c.n);
    }
    Ok(())
}
