//! `fd eval fid | clip | consistency`: metrics of a sample folder (fd_run::evaluate), written
//! beside it as `fid.json`, `clip_score.json`, `consistency.json`.

use std::path::Path;

use anyhow::Result;
use fd_eval::score::KidOptions;
use fd_model::io::write_json;

/// Lock a run folder while its metrics and feature caches are written. A plain image folder is
/// not fd's, so no lock file goes there (its cache and metric files are written by rename, so
/// two evaluations cannot leave a torn file); a missing folder is the metric's error to report.
fn lock(dir: &Path, what: &str) -> Result<Option<fd_run::lock::FolderLock>> {
    Ok(if dir.is_dir() && fd_run::evaluate::is_run_folder(dir) {
        Some(fd_run::lock::FolderLock::acquire(dir, what)?)
    } else {
        None
    })
}

pub fn fid(dir: &Path, reference: &str, inception: Option<&Path>, kid: KidOptions, device: &str) -> Result<()> {
    let path = inception.map(Path::to_path_buf).unwrap_or_else(fd_eval::inception::default_path);
    let inc = fd_eval::inception::Inception::load(&path, fd_model::parse_device(device)?)?;
    let _lock = lock(dir, "fd eval fid")?;
    let bar = super::bar(0, "Inception features");
    let res = fd_run::evaluate::folder_fid(dir, reference, &inc, kid, &bar)?;
    bar.finish_and_clear();
    write_json(&dir.join("fid.json"), &res)?;
    match &res.kid {
        Some(k) => say!(
            "FID {:.3} (N={} vs {reference} N={}) | KID {:.5} ± {:.5} ({} subsets of {})",
            res.fid,
            res.n,
            res.n_ref,
            k.mean,
            k.std,
            k.subsets,
            k.subset_size
        ),
        None => say!("FID {:.3} (N={} vs {reference} N={})", res.fid, res.n, res.n_ref),
    }
    Ok(())
}

pub fn clip(dir: &Path, clip_dir: &Path, device: &str) -> Result<()> {
    let clip = fd_eval::clip::Clip::load(clip_dir, fd_model::parse_device(device)?)?;
    let _lock = lock(dir, "fd eval clip")?;
    let res = fd_run::evaluate::folder_clip(&clip, dir)?;
    write_json(&dir.join("clip_score.json"), &res)?;
    say!(
        "CLIP-S {:.4} | torchmetrics {:.2} (N={}, {}, {})",
        res.clip_s,
        res.torchmetrics,
        res.n,
        res.clip_model,
        res.preprocessing
    );
    Ok(())
}

pub fn consistency(dir: &Path, classifier: &Path, device: &str) -> Result<()> {
    let clf = fd_eval::consistency::Classifier::load(classifier, fd_model::parse_device(device)?)?;
    let _lock = lock(dir, "fd eval consistency")?;
    let res = fd_run::evaluate::folder_consistency(&clf, dir)?;
    let out = dir.join("consistency.json");
    write_json(&out, &res)?;
    say!("class consistency {:.4} over N={} ({})", res.consistency, res.n, out.display());
    for c in &res.per_class {
        say!("  class {:>2}: {:.3} (n={})", c.class, c.consistency, c.n);
    }
    Ok(())
}
