//! `fd sample`: one sampling run to a folder (resumable, shardable).

use anyhow::Result;
use fd_run::runner::{check_counts, Existing, SampleRun, Shard};

use crate::args::SampleArgs;

pub fn run(a: &SampleArgs) -> Result<()> {
    check_counts(a.n, a.batch, a.sampling.seed)?;
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?.unwrap_or_default();
    let f = &a.sampling;
    let existing = match (a.resume, a.overwrite) {
        (true, _) => Existing::Resume,
        (_, true) => Existing::Overwrite,
        _ => Existing::Fail,
    };
    // the folder's state before loading, calibrating or sampling anything
    fd_run::runner::check_out(&a.out, existing)?;
    let opts = f.options(Some(&a.plan), 1.0);
    let model = f.load()?;
    super::sampler(&opts, &model)?; // before conditions and an auto:K calibration
    let conds = f.conditions(&model, a.n)?;
    let spec = opts.resolve(&model, &conds, a.batch.min(a.n))?;
    let run = SampleRun {
        model: &model,
        spec: &spec,
        conds: &conds,
        seed: f.seed,
        batch: a.batch,
        shard,
        out: &a.out,
        existing,
    };
    let bar = super::bar(a.n as u64, "sampling");
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed} < {eta}]")?);
    let (s, _) = run.run_and_record(&bar)?;
    bar.finish_and_clear();
    if !run.pngs() {
        let m = &model.manifest;
        let channels = m.vae.as_ref().map_or(m.out_channels, |v| v.out_channels);
        say!("note: {channels}-channel outputs without a VAE decoder: wrote samples.safetensors only (no PNGs)");
    }
    let plan = &spec.plan;
    let keys = plan.summary(&s.counts, s.n, if spec.exec.guidance > 1.0 { 2 } else { 1 });
    say!(
        "{} samples -> {}{} | plan {} ({keys}) | {:.3} s/image (UNet loop {:.3}) | {:.3} GFLOPs/image{}",
        s.n,
        a.out.display(),
        if shard.count > 1 { format!(" (shard {}/{})", shard.index, shard.count) } else { String::new() },
        plan.label(),
        s.total_s_per_image(),
        s.unet_s_per_image(),
        s.gflops_per_image,
        if s.parts_resumed > 0 {
            format!(" | {} batches resumed, {} computed", s.parts_resumed, s.parts_computed)
        } else {
            String::new()
        }
    );
    if let Some(mix) = &s.mixed_formats {
        note!("{mix}: the timings mix graph formats (`--format torchscript` runs every graph alike)");
    }
    Ok(())
}
