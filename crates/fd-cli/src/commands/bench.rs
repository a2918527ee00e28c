//! `fd bench`: plans timed side by side in one process (fd_run::bench).

use anyhow::{bail, Result};
use fd_run::bench::{parse_plans, BenchModels, BenchOptions};

use crate::args::BenchArgs;

pub fn run(a: &BenchArgs) -> Result<()> {
    if a.n == 0 || a.repeats == 0 {
        bail!("--n and --repeats must be >= 1");
    }
    if !(a.max_spread.is_finite() && a.max_spread > 0.0) {
        bail!("--max-spread {}: expected a fraction > 0, e.g. 0.10", a.max_spread);
    }
    fd_run::runner::check_counts(a.n, a.n, a.sampling.seed)?;
    let f = &a.sampling;
    let mut opts = f.options(None, 3.0);
    opts.plan.inject = a.inject.clone();
    let spec = f.model()?;
    // the plans' default format: --format, `auto` decided for this model here
    let (format, why) = spec.resolve_format()?;
    if let Some(why) = why {
        note!("{why}");
    }
    let model = spec.clone().with_format(fd_model::GraphFormat::Torchscript).load()?;
    super::sampler(&opts, &model)?;
    opts.exec()?;
    let conds = f.conditions(&model, a.n)?;
    // a plan's `#aoti` (or the AOTInductor default) loads the model once more, from its packages
    let aoti = (format == fd_model::GraphFormat::Aoti || BenchModels::wants_aoti(&a.plans))
        .then(|| spec.with_format(fd_model::GraphFormat::Aoti).load())
        .transpose()?;
    let models = BenchModels { torchscript: model, aoti };
    let plans = parse_plans(&a.plans, &opts, &models, &conds, a.n, format)?;
    let seeds: Vec<u64> = (0..a.n).map(|i| f.seed + i as u64).collect();
    let bar = super::bar(0, "bench");
    let report = fd_run::bench::run(
        &models,
        &plans,
        &seeds,
        &conds,
        BenchOptions { max_spread: a.max_spread, ..BenchOptions::new(a.repeats, a.warmup) },
        &bar,
    )?;
    bar.finish_and_clear();
    report.write(&a.out)?;
    say!("{}", report.markdown().trim_end());
    if !report.disturbed.is_empty() {
        note!("timing disturbed: {}", report.disturbed.join("; "));
    }
    Ok(())
}
