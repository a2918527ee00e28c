//! Device selection: `cpu`, `cuda`, `cuda:N`.
//!
//! The PyPI libtorch is a CUDA build, but the linker's `--as-needed` drops `libtorch_cuda.so`
//! because no symbol of it is referenced, and then libtorch reports no CUDA. When a CUDA device is
//! requested we therefore load `libtorch_cuda.so` (beside the libtorch_cpu this process loaded) with
//! RTLD_GLOBAL before the first CUDA query, which registers libtorch's CUDA backend.

use std::sync::OnceLock;

use tch::Device;

use crate::{Error, Result};

/// Where tch's libtorch lived at build time (set by the shared build script; the binary's rpath).
pub const LIBTORCH_LIB: &str = env!("FD_LIBTORCH_LIB");

/// The directory of the `libtorch_cpu.so` this process actually loaded (read from
/// `/proc/self/maps`), so a binary run against another libtorch through `LD_LIBRARY_PATH` loads the
/// CUDA backend and reports the version from there; the build-time directory when it cannot be read.
pub fn libtorch_dir() -> String {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        let loaded = std::fs::read_to_string("/proc/self/maps").ok().and_then(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|path| path.ends_with("/libtorch_cpu.so"))
                .and_then(|path| std::path::Path::new(path).parent().map(|d| d.display().to_string()))
        });
        loaded.unwrap_or_else(|| LIBTORCH_LIB.to_string())
    })
    .clone()
}

/// The loaded libtorch's version as the PyPI wheel records it (`torch/version.py` beside `lib/`),
/// e.g. `2.13.0+cu130`; `None` for a libtorch without that file.
pub fn libtorch_version() -> Option<String> {
    let dir = libtorch_dir();
    let text = std::fs::read_to_string(std::path::Path::new(&dir).join("../version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// `DIR (VERSION)` of the loaded libtorch, for `fd info` and run records.
pub fn libtorch_summary() -> String {
    let dir = libtorch_dir();
    match libtorch_version() {
        Some(v) => format!("{dir} ({v})"),
        None => dir,
    }
}

fn libtorch_file(name: &str) -> String {
    let dir = libtorch_dir();
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Open one of libtorch's own libraries (`name` in its lib dir) globally, once per process
/// (`cell` remembers the outcome): its static initialisers run against the already-loaded
/// libtorch_cpu, and its symbols become visible to libraries loaded later. Returns the path
/// loaded, or why it could not be.
fn open_global(
    cell: &'static OnceLock<std::result::Result<String, String>>,
    name: &str,
) -> std::result::Result<String, String> {
    cell.get_or_init(|| {
        let path = libtorch_file(name);
        // SAFETY: libtorch's own library, whose initialisers only register with the loaded
        // libtorch_cpu; the handle is leaked on purpose so it stays loaded for the process's life.
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

static CUDA_LOAD: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// Load libtorch's CUDA backend (`libtorch_cuda.so`, which registers the CUDA backend) once.
pub fn load_cuda_backend() -> std::result::Result<String, String> {
    open_global(&CUDA_LOAD, "libtorch_cuda.so")
}

static LIBTORCH_LOAD: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// Load `libtorch.so` (libtorch's thin top-level library, which fd's binaries do not link) once:
/// the shared object inside an AOTInductor package names it as a dependency, and the dynamic
/// loader finds it among the loaded libraries, not on a path.
pub fn load_libtorch() -> std::result::Result<String, String> {
    open_global(&LIBTORCH_LOAD, "libtorch.so")
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
    let path = libtorch_file("libtorch_cpu.so");
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
