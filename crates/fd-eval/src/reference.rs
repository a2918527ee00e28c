//! Reference feature sets for FID/KID, computed once and cached under `$FD_CACHE/fid/` keyed by
//! the extractor's SHA-1 (features as safetensors, statistics as pytorch-fid-style `.npz`).

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::fid::Stats;
use crate::idx::load_fmnist;
use crate::inception::Inception;
use crate::{Error, Result};

/// Cache folder: `$FD_CACHE/fid` (default `~/.cache/fd/fid`).
pub fn cache_dir() -> PathBuf {
    fd_model::io::cache_dir().join("fid")
}

/// Fashion-MNIST test images (10k) as [N, 1, 28, 28] in [-1, 1].
pub fn fmnist_test_images() -> Result<Tensor> {
    let (imgs, _) = load_fmnist("test")?;
    let n = imgs.dims[0] as i64;
    Ok(Tensor::from_slice(&imgs.data).view([n, 1, 28, 28]).to_kind(Kind::Float) / 127.5 - 1.0)
}

/// The named reference sets fd computes itself.
pub const NAMED: [&str; 1] = ["fmnist-test"];

/// Check a reference before anything is sampled against it: a named set fd knows ([`NAMED`]), or a
/// `.npz` of mu / sigma that loads (shapes and values checked by [`Stats::load_npz`]).
pub fn check_reference(reference: &str) -> Result<()> {
    if reference.ends_with(".npz") {
        Stats::load_npz(Path::new(reference)).map(|_| ())
    } else if NAMED.contains(&reference) {
        Ok(())
    } else {
        Err(Error::Input(format!("unknown reference set `{reference}` (known: {}; or pass a .npz)", NAMED.join(", "))))
    }
}

/// Features of a named reference set (`fmnist-test`), from the cache or computed (with progress).
pub fn reference_features(name: &str, inception: &Inception, progress: &indicatif::ProgressBar) -> Result<Tensor> {
    let images = match name {
        "fmnist-test" => fmnist_test_images()?,
        other => {
            return Err(check_reference(other)
                .err()
                .unwrap_or_else(|| Error::Input(format!("`{other}`: not a named reference set"))))
        }
    };
    let path = cache_dir().join(format!("{name}-{}.features.safetensors", &inception.sha1[..12]));
    if let Some(f) = load_cached(&path, images.size()[0])? {
        return Ok(f);
    }
    let n = images.size()[0];
    progress.set_length(n as u64);
    progress.set_message(format!("Inception features of {name}"));
    // Chunk caches make the one-time extraction (10k images, ~17 min on 2 cores) resumable; they
    // are folded into the one features file at the end and removed.
    let chunks = reference_chunks(&images, &path);
    let feats = crate::features::chunked_features(chunks, inception, |done| progress.set_position(done as u64))?;
    fd_model::io::write_tensors(&path, &[("features", &feats)])?;
    Stats::from_features(&feats)?.save_npz(&path.with_extension("").with_extension("stats.npz"))?;
    let _ = std::fs::remove_dir_all(reference_chunk_dir(&path));
    Ok(feats)
}

/// Images per resumable chunk of a reference set's feature extraction.
const REFERENCE_CHUNK: i64 = 1000;

/// Where the per-chunk caches of reference features live while they are being computed:
/// `<cache>/<name>-<sha>.chunks/SSSSSS-EEEEEE.safetensors` (features + the chunk's image SHA-1).
pub fn reference_chunk_dir(features_path: &Path) -> PathBuf {
    features_path.with_extension("").with_extension("chunks")
}

/// The reference images cut into resumable chunks of [`REFERENCE_CHUNK`], each with its cache file.
pub fn reference_chunks(images: &Tensor, features_path: &Path) -> Vec<(Tensor, PathBuf)> {
    let (n, dir) = (images.size()[0], reference_chunk_dir(features_path));
    (0..n)
        .step_by(REFERENCE_CHUNK as usize)
        .map(|s| {
            let e = (s + REFERENCE_CHUNK).min(n);
            (images.narrow(0, s, e - s), dir.join(format!("{s:06}-{e:06}.safetensors")))
        })
        .collect()
}

/// A cached feature file, trusted only when complete and of the expected row count.
fn load_cached(path: &Path, rows: i64) -> Result<Option<Tensor>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |msg: String| Error::Format { path: path.into(), msg: format!("{msg}; delete it to recompute") };
    let items = Tensor::read_safetensors(path).map_err(|e| bad(format!("corrupted feature cache: {e}")))?;
    let f =
        items.into_iter().find(|(k, _)| k == "features").map(|(_, t)| t).ok_or_else(|| bad("no `features`".into()))?;
    if f.size() != [rows, 2048] || f.isfinite().all().int64_value(&[]) == 0 {
        return Err(bad(format!("feature cache has shape {:?}, expected [{rows}, 2048] and finite values", f.size())));
    }
    Ok(Some(f.to_device(Device::Cpu).to_kind(Kind::Double)))
}
