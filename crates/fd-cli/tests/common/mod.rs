//! Helpers shared by the fd-cli integration tests.

use std::path::PathBuf;

/// A generated fixture folder of `just test` (`target/fixtures/NAME`, made by
/// experiments/tests/make_NAME.py), or the folder the environment variable `var` names.
#[allow(dead_code)]
pub fn fixture(var: &str, name: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures").join(name));
    assert!(
        p.join("stamp").is_file(),
        "{}: run experiments/tests/make_{}.py (just test does)",
        p.display(),
        name.replace('-', "_")
    );
    p
}

/// Run the `fd` binary: (success, stdout, stderr).
#[allow(dead_code)]
pub fn fd(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fd")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A committed model folder, by its path from the repository root.
#[allow(dead_code)]
pub fn repo_path(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel).display().to_string()
}

/// Every file below `dir` with its bytes (to prove a command changed nothing).
#[allow(dead_code)]
pub fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != ".fd-lock") {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Copy a folder recursively (a model or run to damage in a test).
#[allow(dead_code)]
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// Reference statistics for FID tests: mu/sigma of 16 pseudo-random 2048-d features in
/// `dir/ref.npz` (made once).
#[allow(dead_code)]
pub fn stats_npz(dir: &std::path::Path) -> String {
    let p = dir.join("ref.npz");
    if !p.is_file() {
        tch::manual_seed(7);
        let f = tch::Tensor::rand([16, 2048], (tch::Kind::Double, tch::Device::Cpu));
        fd_eval::fid::Stats::from_features(&f).unwrap().save_npz(&p).unwrap();
    }
    p.display().to_string()
}
