//! Inception features of image sets, cached per chunk so feature extraction resumes after an
//! interruption and sharded runs merge without recomputation (FID / KID are computed from them in
//! [`crate::score`]).
//!
//! The caller cuts the images into chunks, each with its cache file: fd-run cuts a run folder by
//! its parts (`parts/SSSSSS-EEEEEE.inception-<sha>.safetensors` next to each part); any other
//! folder (PNGs, a bare `samples.safetensors`) is cut into chunks of [`CHUNK`] images cached under
//! `features/` ([`folder_chunks`]); reference sets by [`crate::reference`]. Each cache file holds
//! the features and the SHA-1 of the images it was computed from; it is trusted only when that
//! hash matches the images now on disk and the shape is right, and it is written via temp + rename.

use std::path::{Path, PathBuf};

use fd_model::io::{tensor_sha1, write_tensors};
use tch::{Kind, Tensor};

use crate::inception::Inception;
use crate::{images, Error, Result};

/// Images per cache chunk for folders not written by the runner.
pub const CHUNK: i64 = 100;

/// The cache-file tag of an extractor: `inception-<first 12 hex digits of its SHA-1>`.
pub fn cache_tag(inception: &Inception) -> String {
    format!("inception-{}", &inception.sha1[..12.min(inception.sha1.len())])
}

/// The image chunks of a plain sample folder (`samples.safetensors` or PNGs) and where each
/// chunk's features are cached (`features/SSSSSS-EEEEEE.<tag>.safetensors`).
pub fn folder_chunks(dir: &Path, tag: &str) -> Result<Vec<(Tensor, PathBuf)>> {
    let all = images::load_sample_folder(dir)?;
    let n = all.size()[0];
    Ok((0..n)
        .step_by(CHUNK as usize)
        .map(|s| {
            let e = (s + CHUNK).min(n);
            (all.narrow(0, s, e - s), dir.join("features").join(format!("{s:06}-{e:06}.{tag}.safetensors")))
        })
        .collect())
}

/// A cached chunk's features, if the file exists, reads, matches `sha1` and has `rows` rows.
fn cached(path: &Path, sha1: &str, rows: i64) -> Option<Tensor> {
    let items = Tensor::read_safetensors(path).ok()?;
    let get = |k: &str| items.iter().find(|(n, _)| n == k).map(|(_, t)| t.shallow_clone());
    let stored = Vec::<u8>::try_from(&get("images_sha1")?).ok()?;
    let f = get("features")?;
    (stored == sha1.as_bytes() && f.size().first() == Some(&rows) && f.isfinite().all().int64_value(&[]) == 1)
        .then_some(f)
}

/// Features [N, 2048] (f64) of image chunks, each read from its cache file when that holds the
/// features of exactly these images (SHA-1), else computed and cached (temp + rename), so an
/// interrupted extraction resumes at the first missing chunk. One code path for sample folders and
/// reference sets. `progress` receives the number of images done.
pub fn chunked_features(
    chunks: impl IntoIterator<Item = (Tensor, PathBuf)>,
    inception: &Inception,
    mut progress: impl FnMut(usize),
) -> Result<Tensor> {
    let mut out = Vec::new();
    let mut done = 0;
    for (imgs, cache) in chunks {
        let rows = imgs.size()[0];
        let sha = tensor_sha1(&imgs)?;
        let feats = match cached(&cache, &sha, rows) {
            Some(f) => f,
            None => {
                let f = inception.features(&imgs, 50, |d| progress(done + d))?.to_kind(Kind::Float);
                if let Some(parent) = cache.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.into(), source })?;
                }
                let hash = Tensor::from_slice(sha.as_bytes());
                write_tensors(&cache, &[("features", &f), ("images_sha1", &hash)])?;
                f
            }
        };
        done += rows as usize;
        progress(done);
        out.push(feats.to_kind(Kind::Double));
    }
    if out.is_empty() {
        return Ok(Tensor::zeros([0, 2048], (Kind::Double, tch::Device::Cpu)));
    }
    Ok(Tensor::cat(&out, 0))
}
