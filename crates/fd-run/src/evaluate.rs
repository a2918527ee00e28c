//! Metrics of a sample folder. A run folder (written by [`crate::runner`]) is read through its
//! records: its images come from its parts (each part's Inception features cached beside it) and
//! its requested classes / prompts from `run.json`. Any other folder (PNGs, a bare
//! `samples.safetensors`) is evaluated as a plain image set (FID only). A run folder's metrics are
//! computed only from parts proven to belong to it ([`VerifiedRun`]).

use std::path::{Path, PathBuf};

use fd_eval::clip::{Clip, ClipScore};
use fd_eval::consistency::{class_consistency, Classifier, Consistency};
use fd_eval::features::{cache_tag, folder_chunks};
use fd_eval::inception::Inception;
use fd_eval::score::{chunks_fid, FidResult, KidOptions};
use fd_model::io::{read_json, tensor_sha1};
use fd_model::Condition;
use tch::Tensor;

use crate::records::{RunConfig, RunRecord};
use crate::runner::{part_stem, read_verified_part};
use crate::{Error, Result};

/// Whether `dir` holds a sampling run's records: fd's `config.json`
/// ([`crate::runner::run_record`]) or a `run.json`. Such a folder's metrics come from its verified
/// parts or not at all ([`VerifiedRun`]); any other folder is a plain image set.
pub fn is_run_folder(dir: &Path) -> bool {
    matches!(crate::runner::run_record(dir), Ok(Some(_))) || dir.join("run.json").exists()
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

/// A finished run folder read through its records only: `run.json` and `config.json` agree (same
/// identity, same settings, the folder's conditions are the run's for its indices), and every
/// part `run.json` lists is proven ([`read_verified_part`]). A stray file in `parts/` is never
/// read; `samples.safetensors` and the PNGs are not trusted at all.
#[derive(Debug)]
pub struct VerifiedRun {
    pub record: RunRecord,
    pub config: RunConfig,
    /// (images, part file stem) per part, in index order.
    pub parts: Vec<(Tensor, String)>,
}

impl VerifiedRun {
    pub fn load(dir: &Path) -> Result<Self> {
        let record = finished_run(dir)?;
        if !dir.join("parts").is_dir() {
            return Err(Error::Folder {
                path: dir.to_path_buf(),
                msg:
                    "its verified parts (parts/) are missing: a run's metrics are computed only from them, never from \
                      samples.safetensors or the PNGs; sample the run again (its `fd sample` command into a new --out)"
                        .into(),
            });
        }
        let cfg_path = dir.join("config.json");
        let config: RunConfig = read_json(&cfg_path)?;
        let identity = config.identity();
        let bad = |msg: String| Error::Folder { path: dir.join("run.json"), msg };
        if record.identity != identity {
            return Err(bad("describes another run than config.json (identity differs)".into()));
        }
        // run.json holds config.json with the conditions of this folder's samples
        let mut expected = config.clone();
        expected.conditions = record
            .indices
            .iter()
            .map(|&i| config.conditions.get(i).cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("indices outside config.json's {} samples", config.n)))?;
        if expected != record.config {
            return Err(bad("settings or conditions differ from config.json's".into()));
        }
        let batch = config.batch.max(1);
        let mut parts = Vec::new();
        let mut i = 0;
        while i < record.indices.len() {
            // parts are contiguous runs of at most `batch` samples starting at k * batch
            let start = record.indices[i];
            if start % batch != 0 {
                return Err(bad(format!("index {start} does not start a part of {batch} samples")));
            }
            let r = start..(start + batch).min(config.n);
            if record.indices.get(i..i + r.len()) != Some(&r.clone().collect::<Vec<_>>()[..]) {
                return Err(bad(format!("indices do not cover part {}", part_stem(&r))));
            }
            let (_, imgs) = read_verified_part(dir, &r, &config, &identity)?;
            parts.push((imgs, part_stem(&r)));
            i += r.len();
        }
        Ok(Self { record, config, parts })
    }

    /// The folder's images in index order, from its verified parts.
    pub fn images(&self) -> Result<Tensor> {
        let all = Tensor::cat(&self.parts.iter().map(|(t, _)| t.shallow_clone()).collect::<Vec<_>>(), 0);
        if tensor_sha1(&all)? != self.record.samples_sha1 {
            return Err(Error::Input("the verified parts do not hash to run.json's samples_sha1".into()));
        }
        Ok(all)
    }
}

/// The image chunks of a sample folder and where each chunk's features are cached: a run folder's
/// verified parts, else chunks of a plain folder.
pub fn sample_chunks(dir: &Path, tag: &str) -> Result<Vec<(Tensor, PathBuf)>> {
    if !is_run_folder(dir) {
        return Ok(folder_chunks(dir, tag)?);
    }
    let run = VerifiedRun::load(dir)?;
    Ok(run
        .parts
        .into_iter()
        .map(|(imgs, stem)| (imgs, dir.join("parts").join(format!("{stem}.{tag}.safetensors"))))
        .collect())
}

/// FID / KID of a sample folder against `reference` (see [`fd_eval::score::chunks_fid`]).
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
/// its verified parts.
pub fn folder_consistency(classifier: &Classifier, dir: &Path) -> Result<Consistency> {
    VerifiedRun::load(dir)?.consistency(classifier, dir)
}

impl VerifiedRun {
    /// Class consistency of these samples against the classes their run requested (`dir` names
    /// the folder in errors).
    pub fn consistency(&self, classifier: &Classifier, dir: &Path) -> Result<Consistency> {
        let requested: Vec<i64> = self
            .record
            .config
            .conditions
            .iter()
            .map(|c| match c {
                Condition::Class(i) => Some(*i),
                Condition::Prompt(_) | Condition::Controlled { .. } => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Folder {
                path: dir.join("run.json"),
                msg: "`conditions` must list class ids (a class-conditional run)".into(),
            })?;
        Ok(class_consistency(classifier, &self.images()?, &requested)?)
    }
}

/// CLIP score of a run folder: the prompts from its `run.json`, the images from
/// `samples.safetensors`.
pub fn folder_clip(clip: &Clip, dir: &Path) -> Result<ClipScore> {
    let run = VerifiedRun::load(dir)?;
    let prompts: Vec<&str> = run
        .record
        .config
        .conditions
        .iter()
        .map(|c| match c {
            Condition::Prompt(p) | Condition::Controlled { prompt: p, .. } => Some(p.as_str()),
            Condition::Class(_) => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Folder {
            path: dir.join("run.json"),
            msg: "`conditions` must list prompts (a text-conditioned run)".into(),
        })?;
    Ok(clip.score(&run.images()?, &prompts)?)
}
