//! `fd drift`: per-layer feature drift of the plain sampler (the paper's Fig. 3), and optionally
//! a drift-calibrated plan file.

use anyhow::{Context, Result};
use fd_model::io::write_json;
use fd_sched::PlanFile;

use crate::args::DriftArgs;

pub fn run(a: &DriftArgs) -> Result<()> {
    let f = &a.sampling;
    if a.n == 0 {
        anyhow::bail!("--n must be >= 1");
    }
    fd_run::runner::check_counts(a.n, a.n, f.seed)?;
    let opts = f.options(None, 3.0);
    let model = f.load()?;
    let sampler = super::sampler(&opts, &model)?;
    let guidance = opts.exec()?.guidance;
    let rule = a.save_plan.as_deref().map(str::parse::<fd_analysis::keysteps::AutoRule>).transpose();
    let rule = rule.with_context(|| format!("--save-plan `{}`", a.save_plan.as_deref().unwrap_or("")))?;
    if let Some(rule) = rule {
        fd_analysis::keysteps::check_rule(rule, f.steps).with_context(|| format!("--save-plan `{rule}`"))?;
    }
    if a.out.exists() && !a.out.is_dir() {
        anyhow::bail!(
            "--out {}: exists and is not a folder (drift.csv, summary.json, fig3 and plan.json go in it)",
            a.out.display()
        );
    }
    if f.steps < 2 {
        anyhow::bail!("--steps {}: drift compares adjacent steps, so it needs at least 2", f.steps);
    }
    let conds = f.conditions(&model, a.n)?;
    let seeds: Vec<u64> = (0..a.n).map(|i| f.seed + i as u64).collect();
    let run = format!("{}-{}{}-cfg{}", model.manifest.name, sampler.name(), f.steps, guidance);
    let acc = fd_analysis::measure_drift(&model, &sampler, f.steps, guidance, &seeds, &conds, &run)?;
    let summary = acc.summary();
    summary.check_finite()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    acc.write_csv(&a.out.join("drift.csv"))?;
    write_json(&a.out.join("summary.json"), &summary)?;
    fd_analysis::plot::fig3(acc.rows(), &summary, &a.out.join("fig3"))?;
    say!(
        "{run}: encoder mean MSE {:.4e} / decoder {:.4e} = {:.3} | std(F-norm) encoder {:.4} vs decoder {:.4} | rel. change encoder {:.4} vs decoder {:.4}",
        summary.encoder_mean_mse, summary.decoder_mean_mse, summary.mse_ratio, summary.encoder_mean_fnorm_std,
        summary.decoder_mean_fnorm_std, summary.encoder_mean_rel_change, summary.decoder_mean_rel_change
    );
    if let (Some(spec), Some(rule)) = (&a.save_plan, rule) {
        let profile = &summary.encoder_drift_profile;
        let keys =
            fd_analysis::keysteps::rule_key_steps(rule, profile).with_context(|| format!("--save-plan `{spec}`"))?;
        let plan = PlanFile {
            name: format!("{spec} from {run}"),
            cost: Some(fd_analysis::keysteps::plan_cost(profile, &keys)),
            keys,
            steps: f.steps,
            calibration: Some(a.out.join("summary.json")),
        };
        write_json(&a.out.join("plan.json"), &plan)?;
        say!("plan {spec}: key steps {:?} -> {}", plan.keys, a.out.join("plan.json").display());
    }
    Ok(())
}
