//! `fd compare`: finished runs side by side (fd_run::compare): a table and one labelled figure.

use std::path::{Path, PathBuf};

use anyhow::Result;

pub fn run(
    runs: &[PathBuf],
    labels: &[String],
    classifier: Option<&Path>,
    device: &str,
    timings: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let judge = match classifier {
        Some(p) => Some(p.to_path_buf()),
        None => runs.first().map(|d| fd_run::compare::default_judge(d)).transpose()?.flatten(),
    };
    let clf = judge.map(|p| fd_eval::consistency::Classifier::load(&p, fd_model::parse_device(device)?)).transpose()?;
    let (report, panels) = fd_run::compare::compare(runs, labels, clf.as_ref(), timings)?;
    let figure = report.write(&panels, out)?;
    say!("{}", report.markdown().trim_end());
    if !report.disturbed.is_empty() {
        note!("timing disturbed: {}", report.disturbed.join("; "));
    }
    if figure {
        say!("figure: {}", out.join("compare.png").display());
    } else {
        say!("no figure: the runs hold latents (no VAE decoder), not images");
    }
    Ok(())
}
