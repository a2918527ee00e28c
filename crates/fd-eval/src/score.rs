//! Where FID / KID of a sample set is computed: the set's Inception features (cached per chunk,
//! [`crate::features`]) against a reference (a named set, [`crate::reference`], or a `.npz` of
//! mu / sigma), through the formulas of [`crate::fid`].

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::features::chunked_features;
use crate::inception::Inception;
use crate::{Error, Result};

/// FID (and KID against a named reference set) of a sample set.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FidResult {
    pub fid: f64,
    pub kid: Option<crate::fid::Kid>,
    pub kid_seed: u64,
    pub n: usize,
    pub n_ref: usize,
    pub reference: String,
    pub extractor: serde_json::Value,
    pub preprocessing: String,
    pub samples: PathBuf,
}

/// KID options: random subsets, subset size (capped at the smaller set), seed.
#[derive(Debug, Clone, Copy)]
pub struct KidOptions {
    pub subsets: usize,
    pub subset_size: usize,
    pub seed: u64,
}

impl Default for KidOptions {
    /// 100 subsets of 1000 (the KID paper's / torchmetrics' defaults), seed 0.
    fn default() -> Self {
        Self { subsets: 100, subset_size: 1000, seed: 0 }
    }
}

/// Where FID/KID is computed: the features of image `chunks` (cached per chunk, see
/// [`chunked_features`]) of the sample set `samples` against `reference` (a named set, features
/// cached under `$FD_CACHE/fid`, or a `.npz` with mu/sigma: FID only).
pub fn chunks_fid(
    samples: &Path,
    chunks: Vec<(Tensor, PathBuf)>,
    reference: &str,
    inception: &Inception,
    kid_opts: KidOptions,
    progress: &indicatif::ProgressBar,
) -> Result<FidResult> {
    use crate::fid::{frechet_distance, kid, Stats};
    let dir = samples;
    progress.set_length(chunks.iter().map(|(imgs, _)| imgs.size()[0].max(0) as u64).sum());
    progress.set_message(format!("Inception features of {}", dir.display()));
    let feats = chunked_features(chunks, inception, |d| progress.set_position(d as u64))?;
    let n = feats.size()[0] as usize;
    if n < 2 {
        return Err(Error::Input(format!("--samples {}: FID needs at least 2 images, found {n}", dir.display())));
    }
    let gen = Stats::from_features(&feats)?;
    let (fid, kid_res, n_ref) = if reference.ends_with(".npz") {
        let r = Stats::load_npz(Path::new(reference))?;
        (frechet_distance(&gen, &r)?, None, r.n)
    } else {
        let rf = crate::reference::reference_features(reference, inception, progress)?;
        let r = Stats::from_features(&rf)?;
        let k = kid(&feats, &rf, kid_opts.subsets, kid_opts.subset_size, kid_opts.seed)?;
        (frechet_distance(&gen, &r)?, Some(k), r.n)
    };
    Ok(FidResult {
        fid,
        kid: kid_res,
        kid_seed: kid_opts.seed,
        n,
        n_ref,
        reference: reference.to_string(),
        extractor: serde_json::json!({ "path": inception.path, "sha1": inception.sha1 }),
        preprocessing: crate::inception::PREPROCESSING.to_string(),
        samples: dir.to_path_buf(),
    })
}
