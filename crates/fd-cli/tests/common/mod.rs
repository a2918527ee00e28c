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
