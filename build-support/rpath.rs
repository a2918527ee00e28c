//! Shared build script: gives every binary, test and bench of the crate an rpath to the libtorch
//! directory tch linked against (torch's lib dir inside the fd venv), so nothing needs
//! LD_LIBRARY_PATH. It also exposes that directory to the code as `FD_LIBTORCH_LIB` (used to locate
//! libtorch_cuda.so when a CUDA device is requested).
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=FD_LIBTORCH_LIB={dir}");
    } else {
        println!("cargo:rustc-env=FD_LIBTORCH_LIB=");
    }
}
