//! fd-model's build script: the shared rpath setup (`build-support/rpath.rs`), then the C++ shim
//! over libtorch's AOTInductor package loader (`csrc/aoti.cpp`), compiled against the headers of
//! the libtorch tch links (torch-sys exports its lib dir as `DEP_TCH_LIBTORCH_LIB`; the headers
//! are in `../include`). `FD_CXX11_ABI` overrides the C++ ABI flag (default 1, what PyPI torch
//! 2.7+ and tch 0.26's libtorch use).
#[path = "../../build-support/rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
    println!("cargo:rerun-if-changed=csrc/aoti.cpp");
    println!("cargo:rerun-if-env-changed=FD_CXX11_ABI");
    let lib = std::path::PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports its libtorch lib dir (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib.parent().expect("libtorch lib dir has a parent");
    let abi = std::env::var("FD_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("csrc/aoti.cpp")
        .compile("fd_aoti");
}
