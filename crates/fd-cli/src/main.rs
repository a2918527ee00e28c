//! `fd`: a thin command-line front end over the fd library crates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use fd_model::{CondKind, LoadOptions, UNetModel};
use fd_sched::{Condition, ExecOptions, Injection, Plan};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "fd", version, about = "Faster Diffusion (encoder propagation) harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
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
    /// Classifier-free guidance scale (<= 1: conditional only).
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
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Plans, comma separated; the first is the reference. `KEYS`, `KEYS@seq` (sequential
    /// decoders) or `KEYS@capR` (at most R rows per decoder call), e.g. none,50ls,50ls@seq,deepcache:3.
    #[arg(long, default_value = "none,50ls,50ls@seq,50ls@cap160")]
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
    let device = fd_model::parse_device(device)?;
    Ok(UNetModel::load(model, &LoadOptions { device, ..Default::default() })?)
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
        fd_model::device::LIBTORCH_LIB,
        fd_model::tch::Cuda::is_available(),
        fd_model::tch::Cuda::cudnn_is_available()
    );
    Ok(())
}

fn conditions(model: &UNetModel, a: &SampleArgs) -> Result<Vec<Condition>> {
    let cycle: Vec<Condition> = if let Some(path) = &a.prompts {
        let text = std::fs::read_to_string(path).with_context(|| format!("--prompts {}", path.display()))?;
        let lines: Vec<Condition> =
            text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| Condition::Prompt(l.into())).collect();
        if lines.is_empty() {
            bail!("--prompts {}: no prompts (file is empty)", path.display());
        }
        lines
    } else if let Some(list) = &a.classes {
        list.split(',').map(|c| Ok(Condition::Class(model.class_id(c)?))).collect::<Result<_>>()?
    } else if model.manifest.cond.kind == CondKind::Class {
        (0..model.manifest.cond.num_classes.unwrap_or(0)).map(Condition::Class).collect()
    } else {
        bail!("model `{}` is text-conditioned: pass --prompts FILE", model.manifest.name);
    };
    Ok((0..a.n).map(|i| cycle[i % cycle.len()].clone()).collect())
}

fn sample_cmd(a: &SampleArgs) -> Result<()> {
    if a.n == 0 || a.batch == 0 {
        bail!("--n and --batch must be >= 1");
    }
    let model = load(&a.model, &a.device)?;
    let plan = Plan::parse(&a.keys, a.steps)?;
    let opts = ExecOptions {
        parallel: !a.sequential,
        max_decoder_batch: a.max_decoder_batch,
        guidance: a.cfg,
        injection: a.inject.as_deref().map(Injection::parse).transpose()?,
    };
    let make = || fd_sched::build_scheduler(&a.scheduler, &model.manifest.scheduler, a.steps, a.eta);
    make()?; // validate before any work
    let conds = conditions(&model, a)?;
    let channels = model.manifest.vae.as_ref().map_or(model.manifest.out_channels, |v| v.out_channels);
    let png = matches!(channels, 1 | 3);
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    let bar = indicatif::ProgressBar::new(a.n as u64).with_message("sampling");
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed} < {eta}]")?);
    let mut all = Vec::new();
    let mut timings = fd_sched::Timings::default();
    let mut counts = fd_sched::CallCounts::default();
    let (mut cond_s, mut vae_s) = (0.0, 0.0);
    let t0 = std::time::Instant::now();
    for start in (0..a.n).step_by(a.batch) {
        let end = (start + a.batch).min(a.n);
        let seeds: Vec<u64> = (start..end).map(|i| a.seed + i as u64).collect();
        let out = fd_sched::generate_batch(&model, &make, &plan, &opts, &seeds, &conds[start..end])?;
        if png {
            let u8s = fd_eval::images::to_u8(&out.images);
            for (k, i) in (start..end).enumerate() {
                fd_eval::images::save_png(&u8s.get(k as i64), &a.out.join(format!("{i:06}.png")))?;
            }
        }
        for (acc, v) in [
            (&mut timings.time_embed_s, out.timings.time_embed_s),
            (&mut timings.encoder_s, out.timings.encoder_s),
            (&mut timings.decoder_s, out.timings.decoder_s),
            (&mut timings.scheduler_s, out.timings.scheduler_s),
            (&mut timings.total_s, out.timings.total_s),
            (&mut cond_s, out.cond_s),
            (&mut vae_s, out.vae_s),
        ] {
            *acc += v;
        }
        counts.merge(&out.counts);
        all.push(out.images);
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    let images = fd_model::tch::Tensor::cat(&all, 0);
    // raw outputs (latents of a latent model without VAE, or images in [-1, 1]) for analysis
    let raw = a.out.join("samples.safetensors");
    let tmp = a.out.join("samples.safetensors.tmp");
    fd_model::tch::Tensor::write_safetensors(&[("samples", &images)], &tmp)?;
    std::fs::rename(&tmp, &raw)?;
    let gflops = counts.gflops_per_image(&model, a.n);
    let run = json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "model": { "dir": a.model, "name": model.manifest.name, "graphs_sha256": model.manifest.graphs.iter().map(|(k, g)| (k.clone(), g.sha256.clone())).collect::<std::collections::BTreeMap<_, _>>() },
        "sampler": { "name": a.scheduler, "steps": a.steps, "eta": a.eta, "config": model.manifest.scheduler },
        "plan": { "keys": plan.label(), "method": plan.method, "key_steps": plan.key_steps, "parallel": opts.parallel, "max_decoder_batch": opts.max_decoder_batch },
        "guidance": a.cfg,
        "injection": opts.injection,
        "conditions": conds.iter().map(|c| match c {
            Condition::Class(i) => json!(i),
            Condition::Prompt(p) => json!(p),
        }).collect::<Vec<_>>(),
        "n": a.n, "batch": a.batch, "seed": a.seed, "seeds": "seed + sample index",
        "timings_s": { "time_embed": timings.time_embed_s, "encoder": timings.encoder_s, "decoder": timings.decoder_s, "scheduler": timings.scheduler_s, "unet_loop": timings.total_s, "cond_encoder": cond_s, "vae": vae_s, "wall": wall },
        "s_per_image": { "unet_loop": timings.total_s / a.n as f64, "wall": wall / a.n as f64 },
        "counts": counts,
        "gflops_per_image": { "value": gflops, "convention": "torch.utils.flop_counter (2 x MACs), UNet graphs only, CFG batch doubling included" },
        "machine": machine(&model),
        "versions": { "fd": env!("CARGO_PKG_VERSION"), "libtorch": fd_model::device::LIBTORCH_LIB },
    });
    if png {
        let cols = model
            .manifest
            .cond
            .num_classes
            .filter(|_| a.classes.is_none() && a.prompts.is_none())
            .unwrap_or(8)
            .min(a.n as i64);
        let grid = fd_eval::images::grid(&images.narrow(0, 0, (a.n as i64).min(cols * 8)), cols);
        fd_eval::images::save_png(&fd_eval::images::to_u8(&grid).get(0), &a.out.join("grid.png"))?;
    } else {
        println!("note: {channels}-channel outputs without a VAE decoder: wrote {} only (no PNGs)", raw.display());
    }
    write_atomic(&a.out.join("run.json"), serde_json::to_string_pretty(&run)?.as_bytes())?;
    println!(
        "{} samples -> {} | plan {} ({} key steps of {}) | {:.3} s/image (UNet loop {:.3}) | {:.3} GFLOPs/image",
        a.n,
        a.out.display(),
        plan.label(),
        plan.key_steps.len(),
        plan.num_steps,
        wall / a.n as f64,
        timings.total_s / a.n as f64,
        gflops
    );
    Ok(())
}

fn drift_cmd(a: &DriftArgs) -> Result<()> {
    let model = load(&a.run.model, &a.run.device)?;
    let classes = model.manifest.cond.num_classes.unwrap_or(1).max(1);
    let conds: Vec<Condition> = (0..a.n).map(|i| Condition::Class(i as i64 % classes)).collect();
    let seeds: Vec<u64> = (0..a.n).map(|i| a.run.seed + i as u64).collect();
    let opts = ExecOptions { guidance: a.run.cfg, parallel: false, ..Default::default() };
    let run = format!("{}-{}{}-cfg{}", model.manifest.name, a.run.scheduler, a.run.steps, a.run.cfg);
    let acc = fd_analysis::measure_drift(&model, &a.run.scheduler, a.run.steps, &opts, &seeds, &conds, &run)?;
    std::fs::create_dir_all(&a.run.out).with_context(|| format!("--out {}", a.run.out.display()))?;
    acc.write_csv(&a.run.out.join("drift.csv"))?;
    let summary = acc.summary();
    write_atomic(&a.run.out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    fd_analysis::plot::fig3(acc.rows(), &summary, &a.run.out.join("fig3"))?;
    println!(
        "{run}: encoder mean MSE {:.4e} / decoder {:.4e} = {:.3} | std(F-norm) encoder {:.4} vs decoder {:.4} | rel. change encoder {:.4} vs decoder {:.4}",
        summary.encoder_mean_mse, summary.decoder_mean_mse, summary.mse_ratio, summary.encoder_mean_fnorm_std,
        summary.decoder_mean_fnorm_std, summary.encoder_mean_rel_change, summary.decoder_mean_rel_change
    );
    if let Some(spec) = &a.save_plan {
        let profile: Vec<f64> =
            summary.encoder_drift_profile.iter().map(|d| if d.is_finite() { *d } else { 0.0 }).collect();
        let keys = match spec.strip_prefix("auto:") {
            Some(t) if t.starts_with("threshold=") => {
                let x: f64 = t["threshold=".len()..].parse().with_context(|| format!("--save-plan `{spec}`"))?;
                fd_analysis::keysteps::threshold_key_steps(&profile, x)
            }
            Some(k) => fd_analysis::keysteps::auto_key_steps(
                &profile,
                k.parse().with_context(|| format!("--save-plan `{spec}`: K"))?,
            )?,
            None => bail!("--save-plan `{spec}`: expected auto:K or auto:threshold=X"),
        };
        let plan = json!({ "name": format!("{spec} from {run}"), "keys": keys, "steps": a.run.steps,
            "cost": fd_analysis::keysteps::plan_cost(&profile, &keys), "calibration": a.run.out.join("summary.json") });
        write_atomic(&a.run.out.join("plan.json"), serde_json::to_string_pretty(&plan)?.as_bytes())?;
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
    let classes = model.manifest.cond.num_classes.unwrap_or(1).max(1);
    let conds: Vec<Condition> = (0..a.n).map(|i| Condition::Class(i as i64 % classes)).collect();
    let seeds: Vec<u64> = (0..a.n).map(|i| a.run.seed + i as u64).collect();
    // warm-up (allocator, lazy init), untimed
    fd_sched::generate_batch(&model, &make, &plans[0].plan, &plans[0].opts, &seeds[..1], &conds[..1])?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
    let mut gflops = vec![0.0; plans.len()];
    let bar = indicatif::ProgressBar::new((a.repeats * plans.len()) as u64).with_message("bench");
    for _ in 0..a.repeats {
        for (k, p) in plans.iter().enumerate() {
            let out = fd_sched::generate_batch(&model, &make, &p.plan, &p.opts, &seeds, &conds)?;
            times[k].push(out.timings.total_s / a.n as f64);
            gflops[k] = out.counts.gflops_per_image(&model, a.n);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let med: Vec<f64> = times.iter_mut().map(median).collect();
    let m = machine(&model);
    let mut md = format!(
        "# Sampling benchmark\n\nModel `{}`, {} {} steps, CFG {}, batch {} (N per run), median of {} interleaved repeats, one process.\nMachine: {} ({} cores, {} torch threads), device {}.\nCommand: `{}`\n\n| plan | s/image (UNet loop) | speedup | GFLOPs/image | FLOPs-bound speedup | speedup / FLOPs-bound |\n|---|---|---|---|---|---|\n",
        model.manifest.name, a.run.scheduler, a.run.steps, a.run.cfg, a.n, a.repeats, m["cpu"], m["cores"], m["torch_threads"], m["device"],
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
        "steps": a.run.steps, "cfg": a.run.cfg, "n": a.n, "repeats": a.repeats, "machine": m, "rows": rows });
    write_atomic(&a.run.out.join("bench.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_atomic(&a.run.out.join("bench.md"), md.as_bytes())?;
    print!("{md}");
    Ok(())
}

/// Write via a temp file + rename, so a crash never leaves a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn fid_cmd(
    dir: &Path,
    reference: &str,
    inception: Option<&Path>,
    kid_opts: (usize, usize, u64),
    device: &str,
) -> Result<()> {
    use fd_eval::fid::{frechet_distance, kid, Stats};
    let images = fd_eval::images::load_sample_folder(dir)?;
    let n = images.size()[0];
    if n < 2 {
        bail!("--samples {}: FID needs at least 2 images, found {n}", dir.display());
    }
    let path = inception.map(Path::to_path_buf).unwrap_or_else(fd_eval::inception::default_path);
    let inc = fd_eval::inception::Inception::load(&path, fd_model::parse_device(device)?)?;
    let bar = indicatif::ProgressBar::new(n as u64).with_message("Inception features of samples");
    let feats = inc.features(&images, 50, |d| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    let gen_stats = Stats::from_features(&feats)?;
    let (fid, kid_res, n_ref) = if reference.ends_with(".npz") {
        let r = Stats::load_npz(Path::new(reference))?;
        (frechet_distance(&gen_stats, &r)?, None, r.n)
    } else {
        let bar = indicatif::ProgressBar::new(0);
        let rf = fd_eval::reference::reference_features(reference, &inc, &bar)?;
        bar.finish_and_clear();
        let r = Stats::from_features(&rf)?;
        let (subsets, size, seed) = kid_opts;
        (frechet_distance(&gen_stats, &r)?, Some(kid(&feats, &rf, subsets, size, seed)?), r.n)
    };
    let res = json!({
        "fid": fid, "kid": kid_res, "kid_seed": kid_opts.2, "n": n, "n_ref": n_ref, "reference": reference,
        "extractor": { "path": inc.path, "sha1": inc.sha1 }, "preprocessing": fd_eval::inception::PREPROCESSING,
        "samples": dir,
    });
    write_atomic(&dir.join("fid.json"), serde_json::to_string_pretty(&res)?.as_bytes())?;
    match &kid_res {
        Some(k) => println!(
            "FID {fid:.3} (N={n} vs {reference} N={n_ref}) | KID {:.5} ± {:.5} ({} subsets of {})",
            k.mean, k.std, k.subsets, k.subset_size
        ),
        None => println!("FID {fid:.3} (N={n} vs {reference} N={n_ref})"),
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
    write_atomic(&dir.join("clip_score.json"), serde_json::to_string_pretty(&res)?.as_bytes())?;
    println!(
        "CLIP-S {:.4} | torchmetrics {:.2} (N={}, {}, {})",
        res.clip_s, res.torchmetrics, res.n, res.clip_model, res.preprocessing
    );
    Ok(())
}

fn consistency_cmd(dir: &Path, classifier: &Path, device: &str) -> Result<()> {
    let run_path = dir.join("run.json");
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&run_path)
            .with_context(|| format!("--samples: cannot read {}", run_path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", run_path.display()))?;
    let requested: Vec<i64> =
        run["conditions"].as_array().and_then(|v| v.iter().map(|c| c.as_i64()).collect()).with_context(|| {
            format!("{}: `conditions` must list class ids (a class-conditional run)", run_path.display())
        })?;
    let raw = dir.join("samples.safetensors");
    let images = fd_model::tch::Tensor::read_safetensors(&raw)
        .with_context(|| format!("--samples: cannot read {}", raw.display()))?
        .into_iter()
        .find(|(k, _)| k == "samples")
        .map(|(_, t)| t)
        .with_context(|| format!("{}: no `samples` tensor", raw.display()))?;
    let clf = fd_eval::consistency::Classifier::load(classifier, fd_model::parse_device(device)?)?;
    let res = fd_eval::consistency::class_consistency(&clf, &images, &requested)?;
    let out = dir.join("consistency.json");
    write_atomic(&out, serde_json::to_string_pretty(&res)?.as_bytes())?;
    println!("class consistency {:.4} over N={} ({})", res.consistency, res.n, out.display());
    for c in &res.per_class {
        println!("  class {:>2}: {:.3} (n={})", c.class, c.consistency, c.n);
    }
    Ok(())
}

/// Machine description for run records.
fn machine(model: &UNetModel) -> serde_json::Value {
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
        "torch_threads": fd_model::tch::get_num_threads(),
        "device": fd_model::device::describe(model.device),
        "hostname": std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim(),
    })
}
