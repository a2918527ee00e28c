//! `fd bench`: plans timed side by side in one process (fd_run::bench).

use anyhow::{bail, Result};
use fd_run::bench::{parse_plans, BenchOptions};

use crate::args::BenchArgs;

pub fn run(a: &BenchArgs) -> Result<()> {
    if a.n == 0 || a.repeats == 0 {
        bail!("--n and --repeats must be >= 1");
    }
    fd_run::runner::check_counts(a.n, a.n, a.sampling.seed)?;
    let f = &a.sampling;
    let mut opts = f.options(None, 3.0);
    opts.plan.inject = a.inject.clone();
    let model = f.model()?.load()?;
    super::sampler(&opts, &model)?;
    opts.exec()?;
    let conds = f.conditions(&model, a.n)?;
    let plans = parse_plans(&a.plans, &opts, &model, &conds, a.n)?;
    let seeds: Vec<u64> = (0..a.n).map(|i| f.seed + i as u64).collect();
    let bar = super::bar(0, "bench");
    let report = fd_run::bench::run(
        &model,
        &plans,
        &seeds,
        &conds,
        BenchOptions { repeats: a.repeats, warmup: a.warmup },
        &bar,
    )?;
    bar.finish_and_clear();
    report.write(&a.out)?;
    say!("{}", report.markdown().trim_end());
    Ok(())
}
