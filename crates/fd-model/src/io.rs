//! The files fd writes and reads back, in one place.
//!
//! Every write goes through a temp file in the same folder and a rename, so a reader (or a
//! resumed run) sees either the old file or the whole new one, never a partial file, and a failed
//! write removes its temp file. JSON records are read into typed structs; a malformed or missing
//! field is an error naming the file and the field's path (`timings_s.total`), never a default.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::Tensor;

use crate::{Error, Result};

/// fd's per-user cache: `$FD_CACHE`, else `~/.cache/fd` (FID reference features, the Inception
/// extractor, decoder calibrations).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/fd"))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Write bytes via a temp file + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    if let Err(source) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp); // never leave a partial file behind
        return Err(Error::Write { path: path.to_path_buf(), source });
    }
    std::fs::rename(&tmp, path).map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// Write a file with a writer that takes a path (csv, plotters): it writes a temp file with the
/// same extension (`fig3.tmp.png`) in the same folder, which is renamed on success and removed on
/// failure.
pub fn write_atomic_with<E: std::fmt::Display>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<()> {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let tmp = match path.extension() {
        Some(ext) => path.with_file_name(format!("{stem}.tmp.{}", ext.to_string_lossy())),
        None => tmp_path(path),
    };
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Record { path: path.to_path_buf(), msg: format!("cannot write: {e}") });
    }
    std::fs::rename(&tmp, path).map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// Copy a file via a temp file + rename.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let tmp = tmp_path(to);
    if let Err(source) = std::fs::copy(from, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io { path: from.to_path_buf(), source });
    }
    std::fs::rename(&tmp, to).map_err(|source| Error::Write { path: to.to_path_buf(), source })
}

/// Write a value as pretty JSON via a temp file + rename.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Record { path: path.to_path_buf(), msg: format!("cannot serialise: {e}") })?;
    write_atomic(path, text.as_bytes())
}

/// Read a JSON record into `T`: a missing file, invalid JSON or a missing / mistyped field is an
/// error naming the file and the field.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_json(path, &text)
}

/// [`read_json`] of text already read from `path`.
pub fn parse_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let msg = if field.is_empty() || field == "." {
            format!("malformed record: {inner}")
        } else {
            format!("malformed record: field `{field}`: {inner}")
        };
        Error::Record { path: path.to_path_buf(), msg }
    })
}

/// Write named tensors as safetensors via a temp file + rename. Tensors are made contiguous (and
/// moved to the CPU) first: safetensors stores dense buffers only, and a VAE decoder's output, for
/// one, is a strided view.
pub fn write_tensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let tmp = tmp_path(path);
    let dense: Vec<(&str, Tensor)> =
        tensors.iter().map(|(k, t)| (*k, t.to_device(tch::Device::Cpu).contiguous())).collect();
    if let Err(e) = Tensor::write_safetensors(&dense, &tmp) {
        let _ = std::fs::remove_file(&tmp); // never leave a partial file behind
        return Err(Error::Record { path: path.to_path_buf(), msg: format!("cannot write: {e}") });
    }
    std::fs::rename(&tmp, path).map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// Every tensor of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        return Err(Error::Io { path: path.to_path_buf(), source: std::io::ErrorKind::NotFound.into() });
    }
    Tensor::read_safetensors(path)
        .map_err(|e| Error::Record { path: path.to_path_buf(), msg: format!("not a safetensors file: {e}") })
}

/// One named tensor from a safetensors file.
pub fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
    read_tensors(path)?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::Record { path: path.to_path_buf(), msg: format!("no `{name}` tensor") })
}

/// SHA-256 of a file's bytes (hex).
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io { path: path.into(), source })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// SHA-256 of bytes (hex).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// SHA-1 of a tensor's values as little-endian f32 (a contiguous CPU copy): the hash part
/// records and feature caches use to prove which images they hold.
pub fn tensor_sha1(t: &Tensor) -> Result<String> {
    let v = Vec::<f32>::try_from(&t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).flatten(0, -1))?;
    let mut h = sha1_smol::Sha1::new();
    for x in v {
        h.update(&x.to_le_bytes());
    }
    Ok(h.digest().to_string())
}
