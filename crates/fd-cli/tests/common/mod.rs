//! Helpers shared by the fd-cli integration tests.

use std::path::PathBuf;

/// A generated fixture folder of `just test` (`target/fixtures/NAME`, made by
/// experiments/tests/make_NAME.py), or the folder the environment variable `var` names.
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
