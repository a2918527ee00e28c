//! AOTInductor packages: a graph compiled by `torch.export` + `torch._inductor.aoti_compile_and_package`
//! into a `.pt2` file, run through fd's C++ shim (`csrc/aoti.cpp`) over libtorch's
//! `AOTIModelPackageLoader`. Tensors cross as the `at::Tensor*` handles tch uses: inputs are
//! borrowed, outputs become tch tensors without a copy.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn fd_aoti_torch_version() -> *const c_char;
    fn fd_aoti_cpu_capability() -> *mut c_char;
    fn fd_aoti_load(path: *const c_char, device_index: c_int, err: *mut *mut c_char) -> *mut c_void;
    fn fd_aoti_free(handle: *mut c_void);
    fn fd_aoti_free_str(s: *mut c_char);
    fn fd_aoti_run(
        handle: *mut c_void,
        inputs: *const *const C_tensor,
        n: usize,
        outs: *mut *mut *mut C_tensor,
        n_outs: *mut usize,
        err: *mut *mut c_char,
    ) -> c_int;
    fn fd_aoti_free_array(arr: *mut *mut C_tensor);
    fn fd_aoti_metadata(handle: *mut c_void, err: *mut *mut c_char) -> *mut c_char;
}

/// The version of the libtorch headers the shim was compiled against (the libtorch tch links),
/// e.g. `2.13.0`.
pub fn torch_version() -> &'static str {
    // SAFETY: a static NUL-terminated string in the shim.
    unsafe { CStr::from_ptr(fd_aoti_torch_version()) }.to_str().unwrap_or("?")
}

/// The vector ISA libtorch's CPU kernels use on this machine (`AVX512`, `AVX2`, `DEFAULT`, ...).
pub fn cpu_capability() -> String {
    // SAFETY: a string the shim allocated, taken over once.
    unsafe { take_str(fd_aoti_cpu_capability()) }
}

/// Whether a CPU package compiled where libtorch's capability was `compiled` runs here, where it
/// is `here`: the same ISA, or (x86) a wider one here than there.
pub fn cpu_compatible(compiled: &str, here: &str) -> bool {
    const X86: [&str; 3] = ["DEFAULT", "AVX2", "AVX512"];
    let rank = |c: &str| X86.iter().position(|x| *x == c);
    compiled == here || matches!((rank(compiled), rank(here)), (Some(a), Some(b)) if a <= b)
}

/// Why package `p` cannot run on `device` with this build (`None`: it can): compiled for another
/// device, by another torch release, or on a CPU with a vector ISA this one lacks.
pub fn package_mismatch(p: &crate::PackageEntry, device: tch::Device) -> Option<String> {
    if (p.device == "cuda") != device.is_cuda() {
        let here = if let tch::Device::Cuda(i) = device { format!("cuda:{i}") } else { "cpu".into() };
        return Some(format!("compiled for {}, asked to run on {here}", p.device));
    }
    if let (false, Some(c)) = (device.is_cuda(), &p.cpu_capability) {
        let here = cpu_capability();
        if !cpu_compatible(c, &here) {
            return Some(format!("compiled on a CPU with {c} kernels, this CPU runs {here}"));
        }
    }
    let here = torch_version();
    (p.torch.split('+').next() != Some(here))
        .then(|| format!("compiled by torch {}, this build links libtorch {here}", p.torch))
}

impl crate::FormatChoice {
    /// The format that runs `manifest`'s graphs on `device`, and, when `auto` runs TorchScript
    /// although the model lists packages, why (the first package that cannot run here).
    /// `auto` never picks a format that would fail to load for a reason decided here; a package
    /// listed but missing or altered is still an error at load, whichever format was asked for.
    pub fn resolve(self, manifest: &crate::Manifest, device: tch::Device) -> (crate::GraphFormat, Option<String>) {
        use crate::GraphFormat::{Aoti, Torchscript};
        match self {
            crate::FormatChoice::Fixed(f) => (f, None),
            crate::FormatChoice::Auto => {
                let mut listed =
                    manifest.graphs.iter().flat_map(|(g, e)| e.packages.iter().map(move |p| (g, p))).peekable();
                if listed.peek().is_none() {
                    return (Torchscript, None);
                }
                match listed.find_map(|(g, p)| Some((g, package_mismatch(p, device)?))) {
                    None => (Aoti, None),
                    Some((g, why)) => (
                        Torchscript,
                        Some(format!("TorchScript runs: the AOTInductor package of `{g}` ({why}); compile packages for this machine with experiments/export/convert_aoti.py (`just convert-aoti` for the default model)")),
                    ),
                }
            }
        }
    }
}

/// Take over a message the shim allocated.
///
/// # Safety
/// `p` is null or a string from the shim, not freed before.
unsafe fn take_str(p: *mut c_char) -> String {
    if p.is_null() {
        return "unknown error".into();
    }
    // SAFETY: per the contract, a NUL-terminated string the shim allocated.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: freed once, by the allocator that made it.
    unsafe { fd_aoti_free_str(p) };
    s
}

/// One loaded package.
#[derive(Debug)]
pub struct Package {
    handle: NonNull<c_void>,
    pub path: PathBuf,
}

impl Package {
    /// Load `path` for `device` (a CUDA device by index; the CPU otherwise). The error is
    /// libtorch's message.
    pub fn load(path: &Path, device: tch::Device) -> Result<Self, String> {
        crate::device::load_libtorch()?;
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| "path holds a NUL byte".to_string())?;
        let index = match device {
            tch::Device::Cuda(i) => i as c_int,
            _ => -1,
        };
        let mut err = std::ptr::null_mut();
        // SAFETY: a valid C string and out-pointer; the shim catches every C++ exception.
        let h = unsafe { fd_aoti_load(c.as_ptr(), index, &mut err) };
        match NonNull::new(h) {
            Some(handle) => Ok(Self { handle, path: path.to_path_buf() }),
            // SAFETY: the shim set `err` on failure.
            None => Err(unsafe { take_str(err) }),
        }
    }

    /// Run on `inputs`; the outputs in the package's (flattened) order.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let ptrs: Vec<*const C_tensor> = inputs.iter().map(|t| t.as_ptr()).collect();
        let (mut outs, mut n, mut err) = (std::ptr::null_mut(), 0usize, std::ptr::null_mut());
        // SAFETY: `ptrs` are live tensor handles borrowed for the call; the out-pointers are valid.
        let rc = unsafe { fd_aoti_run(self.handle.as_ptr(), ptrs.as_ptr(), ptrs.len(), &mut outs, &mut n, &mut err) };
        if rc != 0 {
            // SAFETY: the shim set `err` on failure.
            return Err(unsafe { take_str(err) });
        }
        // SAFETY: on success `outs` holds `n` new tensor handles the caller owns, in a malloc'd array.
        let res = (0..n).map(|i| unsafe { Tensor::from_ptr(*outs.add(i)) }).collect();
        // SAFETY: the array itself (not its handles, now owned by the tensors) is freed once.
        unsafe { fd_aoti_free_array(outs) };
        Ok(res)
    }

    /// The package's metadata (`AOTI_DEVICE_KEY`, ...).
    pub fn metadata(&self) -> Result<BTreeMap<String, String>, String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: a live handle; the shim catches C++ exceptions.
        let p = unsafe { fd_aoti_metadata(self.handle.as_ptr(), &mut err) };
        if p.is_null() {
            // SAFETY: the shim set `err` on failure.
            return Err(unsafe { take_str(err) });
        }
        // SAFETY: a string the shim allocated.
        let text = unsafe { take_str(p) };
        Ok(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

impl Drop for Package {
    fn drop(&mut self) {
        // SAFETY: the handle came from fd_aoti_load and is freed once.
        unsafe { fd_aoti_free(self.handle.as_ptr()) }
    }
}
