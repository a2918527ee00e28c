//! The one-time reference feature extraction resumes from its per-chunk caches: with every chunk
//! already cached (as after an interruption just before the final file was written) nothing is
//! recomputed, the result is exactly the cached features in order, and the chunks are folded into
//! the features file + statistics. (One test in this binary: it sets FD_CACHE for the process.)

use fd_eval::inception::{default_path, Inception};
use fd_eval::reference::{cache_dir, fmnist_test_images, reference_chunk_dir, reference_chunks, reference_features};
use fd_model::io::{tensor_sha1, write_tensors};
use tch::{Device, Kind, Tensor};

#[test]
fn reference_features_resume_from_chunk_caches() {
    let inc = Inception::load(&default_path(), Device::Cpu).unwrap();
    let d = tempfile::tempdir().unwrap();
    // SAFETY: single-threaded test binary with one test; nothing else reads the environment now.
    unsafe { std::env::set_var("FD_CACHE", d.path()) };
    let path = cache_dir().join(format!("fmnist-test-{}.features.safetensors", &inc.sha1[..12]));
    let chunks = reference_chunk_dir(&path);
    std::fs::create_dir_all(&chunks).unwrap();
    let images = fmnist_test_images().unwrap();
    let n = images.size()[0];
    tch::manual_seed(7);
    let mut expected = Vec::new();
    for (imgs, file) in reference_chunks(&images, &path) {
        let sha = tensor_sha1(&imgs).unwrap();
        let f = Tensor::randn([imgs.size()[0], 2048], (Kind::Float, Device::Cpu));
        write_tensors(&file, &[("features", &f), ("images_sha1", &Tensor::from_slice(sha.as_bytes()))]).unwrap();
        expected.push(f);
    }
    let expected = Tensor::cat(&expected, 0).to_kind(Kind::Double);
    let bar = indicatif::ProgressBar::hidden();
    let got = reference_features("fmnist-test", &inc, &bar).unwrap();
    assert_eq!(got.size(), [n, 2048]);
    // Random stand-in features come back unchanged only if no chunk was recomputed.
    assert!(got.equal(&expected), "features differ from the cached chunks");
    assert!(path.is_file(), "final features file not written");
    assert!(path.with_extension("").with_extension("stats.npz").is_file(), "stats not written");
    assert!(!chunks.exists(), "chunk caches not removed after folding");
    // and the folded file is what a second call returns
    assert!(reference_features("fmnist-test", &inc, &bar).unwrap().equal(&expected));
}
