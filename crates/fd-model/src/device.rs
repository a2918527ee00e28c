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

/// libtorch's deterministic switches, as `torch.use_deterministic_algorithms(True)` +
/// `torch.backends.cudnn.deterministic = True` + `torch.backends.cudnn.benchmark = False` set
/// them (tch exposes none of these, so the `at::Context` setters are called through their
/// exported symbols in libtorch_cpu), and `CUBLAS_WORKSPACE_CONFIG=:4096:8` for deterministic
/// cuBLAS. Call before the first CUDA work. Ops without a deterministic implementation then
/// raise an error instead of running non-deterministically.
pub fn set_deterministic() -> std::result::Result<(), String> {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    let path =
        if LIBTORCH_LIB.is_empty() { "libtorch_cpu.so".to_string() } else { format!("{LIBTORCH_LIB}/libtorch_cpu.so") };
    // SAFETY: libtorch_cpu is already loaded by this process (tch links it); opening it again only
    // bumps its reference count. The symbols are at::globalContext() and non-virtual members of
    // at::Context taking (this, bool[, bool]) under the Itanium C++ ABI used by the PyPI build.
    unsafe {
        let lib = libloading::Library::new(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
        let ctx: libloading::Symbol<unsafe extern "C" fn() -> *mut std::ffi::c_void> =
            lib.get(b"_ZN2at13globalContextEv").map_err(|e| format!("at::globalContext: {e}"))?;
        let algos: libloading::Symbol<unsafe extern "C" fn(*mut std::ffi::c_void, bool, bool)> = lib
            .get(b"_ZN2at7Context26setDeterministicAlgorithmsEbb")
            .map_err(|e| format!("setDeterministicAlgorithms: {e}"))?;
        let flag = |name: &[u8]| -> std::result::Result<
            libloading::Symbol<unsafe extern "C" fn(*mut std::ffi::c_void, bool)>,
            String,
        > { lib.get(name).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(name))) };
        let c = ctx();
        algos(c, true, false);
        flag(b"_ZN2at7Context21setDeterministicCuDNNEb")?(c, true);
        flag(b"_ZN2at7Context17setBenchmarkCuDNNEb")?(c, false);
        flag(b"_ZN2at7Context22setDeterministicMkldnnEb")?(c, true);
        std::mem::forget(lib);
    }
    Ok(())
}
