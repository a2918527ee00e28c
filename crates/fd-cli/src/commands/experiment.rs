//! `fd experiment CONFIG`: rows sampled, evaluated and tabulated (fd_run::experiment), in this
//! process (`--stage`) or as Slurm jobs (`--slurm`, fd_run::slurm); `--status` says where it stands.

use std::path::PathBuf;

use anyhow::Result;
use fd_run::experiment::{run_stage, ExperimentConfig, ExperimentOptions, Stage};
use fd_run::runner::{Existing, Shard};
use fd_run::slurm::{Submitted, TaskFlags};

use crate::args::ExperimentArgs;

pub fn run(a: &ExperimentArgs) -> Result<()> {
    let mut cfg = ExperimentConfig::load(&a.config)?;
    if let Some(n) = a.n {
        cfg.n = n;
    }
    if let Some(m) = &a.model {
        cfg.model = m.clone();
        // rows that name their own model (a variant of the configured default) do not apply to
        // another model: skipped, and said
        let (own, keep): (Vec<_>, Vec<_>) = cfg.rows.drain(..).partition(|r| r.model.is_some());
        for r in &own {
            note!(
                "row `{}` skipped: it names its own model {} (not --model {})",
                r.label,
                r.model.as_ref().map_or(String::new(), |p| p.display().to_string()),
                m.display()
            );
        }
        cfg.rows = keep;
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
    let slurm = &mut cfg.slurm;
    if let Some(k) = a.shards {
        slurm.shards = k;
    }
    if let Some(p) = &a.partition {
        slurm.partition = Some(p.clone());
    }
    if let Some(p) = &a.account {
        slurm.account = Some(p.clone());
    }
    if let Some(g) = a.gpus {
        slurm.gpus = g;
    }
    if let Some(c) = a.cpus_per_task {
        slurm.cpus_per_task = Some(c);
    }
    if let Some(t) = &a.time {
        slurm.time = Some(t.clone());
    }
    slurm.sbatch_args.extend(a.sbatch_arg.iter().cloned());
    cfg.validate().map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    if let Some(dir) = a.reuse_from.as_ref().filter(|d| !d.is_dir()) {
        anyhow::bail!(
            "--reuse-from {}: not a folder (expected experiments' work folders, e.g. out/experiments)",
            dir.display()
        );
    }
    let device = fd_model::parse_device(&a.device)?;
    let results_dir = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(&cfg.name).join(format!(
            "{}-{}",
            fd_run::machine::today(),
            fd_run::machine::machine_tag(device)
        ))
    });
    let work_dir =
        a.work.clone().unwrap_or_else(|| PathBuf::from("out/experiments").join(&cfg.name).join(format!("N{}", cfg.n)));
    let opt = ExperimentOptions {
        work_dir,
        results_dir: results_dir.clone(),
        device,
        existing: if a.overwrite { Existing::Overwrite } else { Existing::Resume },
        inception: a.inception.clone().unwrap_or_else(fd_eval::inception::default_path),
        only: a.only.as_deref().map(|s| s.split(',').map(|x| x.trim().to_string()).collect()).unwrap_or_default(),
        deterministic: a.deterministic,
        format: a.format,
        progress: log::max_level() >= log::LevelFilter::Info,
        // rows identical to another experiment's (under the default work layout) reuse its samples
        reuse_root: if a.no_reuse {
            None
        } else {
            a.reuse_from.clone().or_else(|| a.work.is_none().then(|| PathBuf::from("out/experiments")))
        },
    };
    if a.status {
        say!("{}", fd_run::slurm::status(&cfg, &opt)?.trim_end());
        return Ok(());
    }
    // what `--format auto` runs, decided over every model the rows use: said before anything runs
    if let (_, Some(why)) = fd_run::experiment::resolve_format(&cfg, opt.format, opt.device)? {
        note!("{why}");
    }
    if a.slurm {
        if a.stage != "all" {
            anyhow::bail!("--slurm submits every stage; leave out --stage {}", a.stage);
        }
        let task = TaskFlags { fd: std::env::current_exe()?, device: a.device.clone() };
        match fd_run::slurm::submit(&cfg, &opt, &task)? {
            Submitted::Nothing => say!(
                "nothing to submit: every row of {} is evaluated in {} (`--stage table` rewrites the table)",
                a.config.display(),
                results_dir.display()
            ),
            Submitted::Jobs(s) => {
                let dir = fd_run::slurm::slurm_dir(&results_dir);
                if let Some(r) = &s.reference_job {
                    say!("reference `{}`: job {r}", cfg.reference);
                }
                for r in &s.rows {
                    match &r.sample_job {
                        Some(j) => say!(
                            "{}: sampling job {j} (array tasks {:?} of {} shards), finish job {}",
                            r.label,
                            r.shards,
                            s.shards,
                            r.finish_job
                        ),
                        None => say!("{}: sampled; finish job {}", r.label, r.finish_job),
                    }
                }
                say!("table: job {}", s.table_job);
                say!(
                    "scripts and logs: {}; progress: fd experiment {} --out {} --status",
                    dir.display(),
                    a.config.display(),
                    results_dir.display()
                );
            }
        }
        return Ok(());
    }
    let stage = match a.stage.as_str() {
        "reference" => Stage::Reference,
        "sample" => Stage::Sample(Shard::parse(
            a.shard.as_deref().ok_or_else(|| anyhow::anyhow!("--stage sample needs --shard I/N"))?,
        )?),
        "finish" => Stage::Finish { shards: cfg.slurm.shards },
        "table" => Stage::Table,
        _ => Stage::All,
    };
    if a.shard.is_some() && !matches!(stage, Stage::Sample(_)) {
        anyhow::bail!("--shard applies to --stage sample (an experiment's shards: --slurm --shards K)");
    }
    if a.overwrite && stage != Stage::All {
        anyhow::bail!("--overwrite applies to a whole experiment (--stage all), not to --stage {}", a.stage);
    }
    let t0 = std::time::Instant::now();
    let rows = run_stage(&cfg, &opt, stage)?;
    if matches!(stage, Stage::All | Stage::Table) {
        say!("{}", std::fs::read_to_string(results_dir.join("table.md"))?.trim_end());
        say!("{} rows in {:.1} min -> {}", rows.len(), t0.elapsed().as_secs_f64() / 60.0, results_dir.display());
    }
    Ok(())
}
