//! IDX reader (MNIST / Fashion-MNIST format), gzip or plain. Twin of experiments/fmnist_data.py.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Default Fashion-MNIST location (Debian package `dataset-fashion-mnist`); `FD_FMNIST_DIR` overrides.
pub fn fmnist_dir() -> PathBuf {
    std::env::var_os("FD_FMNIST_DIR").map_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"), PathBuf::from)
}

/// An unsigned-byte IDX array.
#[derive(Debug, Clone)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an IDX file of unsigned bytes (`.gz` decompressed on the fly).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let bad = |msg: String| Error::Format { path: path.to_path_buf(), msg };
    if !path.is_file() {
        return Err(bad("file missing (install Debian package dataset-fashion-mnist, or set FD_FMNIST_DIR)".into()));
    }
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("corrupt gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 {
        return Err(bad(format!("truncated IDX header ({} bytes)", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(bad(format!("not an unsigned-byte IDX file (magic {:02x?})", &bytes[..4])));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(bad(format!("expected {n} data bytes for shape {dims:?}, found {}", bytes.len() - header)));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Fashion-MNIST split `train` (60k) or `test` (10k): images [N, 28, 28] u8 and labels.
pub fn load_fmnist(split: &str) -> Result<(IdxArray, Vec<u8>)> {
    let prefix = match split {
        "train" => "train",
        "test" | "t10k" => "t10k",
        other => return Err(Error::Input(format!("unknown Fashion-MNIST split `{other}` (train or test)"))),
    };
    let dir = fmnist_dir();
    let images = read_idx(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")))?;
    let labels = read_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte.gz")))?;
    if images.dims.first() != labels.dims.first() {
        return Err(Error::Format {
            path: dir,
            msg: format!("{:?} images but {:?} labels", images.dims.first(), labels.dims.first()),
        });
    }
    Ok((images, labels.data))
}
