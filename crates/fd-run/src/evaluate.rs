//! Metrics of a sample folder. A run folder (written by [`crate::runner`]) is read through its
//! records: its images come from its parts (each part's Inception features cached beside it) and
//! its requested classes / prompts from `run.json`. Any other folder (PNGs, a bare
//! `samples.safetensors`) is evaluated as a plain image set (FID only).

use std::path::{Path, PathBuf};

use fd_eval::clip::{Clip, ClipScore};
use fd_eval::consistency::{class_consistency, Classifier, Consistency};
use fd_eval::features::{cache_tag, chunks_fid, folder_chunks, FidResult, KidOptions};
use fd_eval::inception::Inception;
use fd_model::io::read_tensor;
use fd_model::Condition;
use tch::Tensor;

use crate::records::RunRecord;
use crate::runner::part_stem;
use crate::{Error, Result};

/// Whether `dir` is a sampling run folder (config.json + parts/).
pub fn is_run_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("parts").is_dir()
}

/// The finished run in `dir`: its `run.json`, checked (an unfinished run is an error saying how
/// to finish it).
pub fn finished_run(dir: &Path) -> Result<RunRecord> {
    if is_run_folder(dir) && !dir.join("run.json").is_file() {
        return Err(Error::Folder {
            path: dir.to_path_buf(),
            msg: "the sampling run has not finished (no run.json); resume it with `fd sample ... --resume`".into(),
        });
    }
    RunRecord::load(dir)
}

/// The image chunks of a sample folder and where each chunk's features are cached: a run folder's
/// parts (listed by `run.json`: a stray file in `parts/` is not counted), else chunks of a plain
/// folder.
pub fn sample_chunks(dir: &Path, tag: &str) -> Result<Vec<(Tensor, PathBuf)>> {
    if !is_run_folder(dir) {
        return Ok(folder_chunks(dir, tag)?);
    }
    let run = finished_run(dir)?;
    let parts = dir.join("parts");
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < run.indices.len() {
        // parts are contiguous runs of indices of at most `batch` samples, starting at k * batch
        let start = run.indices[i];
        let end = (start - start % run.config.batch.max(1) + run.config.batch).min(run.config.n);
        let stem = part_stem(&(start..end));
        let imgs = read_tensor(&parts.join(format!("{stem}.safetensors")), "samples")?;
        chunks.push((imgs, parts.join(format!("{stem}.{tag}.safetensors"))));
        i += end - start;
    }
    Ok(chunks)
}

/// FID / KID of a sample folder against `reference` (see [`fd_eval::features::chunks_fid`]).
pub fn folder_fid(
    dir: &Path,
    reference: &str,
    inception: &Inception,
    kid: KidOptions,
    progress: &indicatif::ProgressBar,
) -> Result<FidResult> {
    let chunks = sample_chunks(dir, &cache_tag(inception))?;
    Ok(chunks_fid(dir, chunks, reference, inception, kid, progress)?)
}

/// Class consistency of a run folder: the requested classes from its `run.json`, the images from
/// `samples.safetensors`.
pub fn folder_consistency(classifier: &Classifier, dir: &Path) -> Result<Consistency> {
    let run = finished_run(dir)?;
    let requested: Vec<i64> = run
        .config
        .conditions
        .iter()
        .map(|c| match c {
            Condition::Class(i) => Some(*i),
            Condition::Prompt(_) => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Folder {
            path: dir.join("run.json"),
            msg: "`conditions` must list class ids (a class-conditional run)".into(),
        })?;
    let images = read_tensor(&dir.join("samples.safetensors"), "samples")?;
    Ok(class_consistency(classifier, &images, &requested)?)
}

/// CLIP score of a run folder: the prompts from its `run.json`, the images from
/// `samples.safetensors`.
pub fn folder_clip(clip: &Clip, dir: &Path) -> Result<ClipScore> {
    let run = finished_run(dir)?;
    let prompts: Vec<&str> = run
        .config
        .conditions
        .iter()
        .map(|c| match c {
            Condition::Prompt(p) => Some(p.as_str()),
            Condition::Class(_) => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Folder {
            path: dir.join("run.json"),
            msg: "`conditions` must list prompts (a text-conditioned run)".into(),
        })?;
    let images = read_tensor(&dir.join("samples.safetensors"), "samples")?;
    Ok(clip.score(&images, &prompts)?)
}
