//! Device selection: `cpu`, `cuda`, `cuda:N`.
//!
//! The PyPI libtorch is a CUDA build, but the linker's `--as-needed` drops `libtorch_cuda.so`
//! because no symbol of it is referenced, and then libtorch reports no CUDA. When a CUDA device is
//! requested we therefore load `libtorch_cuda.so` (from the libtorch tch was built against) with
//! RTLD_GLOBAL before the first CUDA query, which registers libtorch's CUDA backend.

use std::sync::OnceLock;

use tch::Device;

use crate::{Error, Result};

/// Where tch's libtorch lives (set by the shared build script).
pub const LIBTORCH_LIB: &str = env!("FD_LIBTORCH_LIB");

static CUDA_LOAD: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// Load libtorch's CUDA backend once. Returns the library path loaded, or why it could not be.
pub fn load_cuda_backend() -> std::result::Result<String, String> {
    CUDA_LOAD
        .get_or_init(|| {
            let path = if LIBTORCH_LIB.is_empty() {
                "libtorch_cuda.so".to_string()
            } else {
                format!("{LIBTORCH_LIB}/libtorch_cuda.so")
            };
            // SAFETY: loading libtorch's own CUDA library runs its static initialisers, which only
            // register the CUDA backend with the already-loaded libtorch_cpu; the handle is leaked
            // on purpose so the library stays loaded for the life of the process.
            let lib = unsafe {
                libloading::os::unix::Library::open(
                    Some(&path),
                    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                )
            };
            match lib {
                Ok(lib) => {
                    std::mem::forget(lib);
                    Ok(path)
                }
                Err(e) => Err(format!("cannot load {path}: {e}")),
            }
        })
        .clone()
}

/// Parse a device flag (`cpu`, `cuda`, `cuda:N`) and make sure the device is usable.
pub fn parse_device(spec: &str) -> Result<Device> {
    let err = |msg: String| Error::Device { spec: spec.to_string(), msg };
    let s = spec.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| err("expected `cpu`, `cuda` or `cuda:N`".into()))?,
        None => return Err(err("expected `cpu`, `cuda` or `cuda:N`".into())),
    };
    load_cuda_backend().map_err(|e| err(format!("CUDA requested but libtorch's CUDA backend did not load: {e}")))?;
    if !tch::Cuda::is_available() {
        return Err(err("CUDA requested but no CUDA GPU is visible to libtorch on this machine".into()));
    }
    let n = tch::Cuda::device_count() as usize;
    if index >= n {
        return Err(err(format!("only {n} CUDA device(s) visible")));
    }
    Ok(Device::Cuda(index))
}

/// Human-readable device summary for `fd info` and run records.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i} (of {} visible)", tch::Cuda::device_count()),
        other => format!("{other:?}"),
    }
}
