//! A corrupted or truncated reference feature cache is reported, never trusted.
//! (One test in this binary: it sets FD_CACHE for the process.)

use fd_eval::inception::{default_path, Inception};
use fd_eval::reference::{cache_dir, reference_features};
use tch::Device;

#[test]
fn corrupted_feature_cache_is_an_error_naming_the_file() {
    let inc = Inception::load(&default_path(), Device::Cpu).unwrap();
    let d = tempfile::tempdir().unwrap();
    // SAFETY: single-threaded test binary with one test; nothing else reads the environment now.
    unsafe { std::env::set_var("FD_CACHE", d.path()) };
    std::fs::create_dir_all(cache_dir()).unwrap();
    let path = cache_dir().join(format!("fmnist-test-{}.features.safetensors", &inc.sha1[..12]));
    std::fs::write(&path, b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage").unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let e = reference_features("fmnist-test", &inc, &bar).unwrap_err().to_string();
    assert!(e.contains("features.safetensors") && e.contains("delete it to recompute"), "{e}");
    // a complete file of the wrong shape is refused too
    tch::Tensor::write_safetensors(
        &[("features", &tch::Tensor::zeros([10, 2048], (tch::Kind::Double, Device::Cpu)))],
        &path,
    )
    .unwrap();
    let e = reference_features("fmnist-test", &inc, &bar).unwrap_err().to_string();
    assert!(e.contains("[10, 2048]") && e.contains("[10000, 2048]"), "{e}");
    let e = reference_features("imagenet", &inc, &bar).unwrap_err().to_string();
    assert!(e.contains("unknown reference set `imagenet`"), "{e}");
}
