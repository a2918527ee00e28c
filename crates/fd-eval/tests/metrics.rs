//! FID / KID / Inception features vs Python references (tests/fixtures/gen_fid.py).

use std::collections::HashMap;
use std::path::PathBuf;

use fd_eval::fid::{frechet_distance, kid, polynomial_mmd, Stats};
use fd_eval::inception::{default_path, Inception};
use tch::{Device, Kind, Tensor};

fn fixtures(name: &str) -> HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Tensor::read_safetensors(p).unwrap().into_iter().collect()
}

#[test]
fn frechet_distance_matches_pytorch_fid_formula() {
    let t = fixtures("frechet.safetensors");
    for case in ["full", "rankdef", "same"] {
        let a = Stats::from_features(&t[&format!("{case}.x")]).unwrap();
        let b = Stats::from_features(&t[&format!("{case}.y")]).unwrap();
        let got = frechet_distance(&a, &b).unwrap();
        let want = t[&format!("{case}.fid")].double_value(&[]);
        let tol = if case == "same" { 1e-9 } else { 1e-6 * want.abs() };
        assert!((got - want).abs() <= tol, "{case}: {got} vs pytorch-fid {want}");
    }
}

#[test]
fn polynomial_mmd_matches_reference_and_kid_is_reproducible() {
    let t = fixtures("frechet.safetensors");
    for case in ["full", "rankdef", "same"] {
        let got = polynomial_mmd(&t[&format!("{case}.x")], &t[&format!("{case}.y")]).unwrap();
        let want = t[&format!("{case}.mmd")].double_value(&[]);
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{case}: {got} vs {want}");
    }
    let (x, y) = (&t["full.x"], &t["full.y"]);
    let k1 = kid(x, y, 10, 100, 7).unwrap();
    let k2 = kid(x, y, 10, 100, 7).unwrap();
    assert_eq!((k1.mean, k1.std), (k2.mean, k2.std));
    assert_eq!(k1.subset_size, 100);
    assert!(k1.mean > 0.1, "different distributions: KID clearly positive, got {}", k1.mean);
    let same = kid(x, x, 10, 100, 7).unwrap();
    assert!(same.mean.abs() < k1.mean / 5.0, "same distribution: KID near 0, got {}", same.mean);
}

#[test]
fn stats_roundtrip_and_bad_inputs() {
    let t = fixtures("frechet.safetensors");
    let a = Stats::from_features(&t["full.x"]).unwrap();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("stats.npz");
    a.save_npz(&p).unwrap();
    let b = Stats::load_npz(&p).unwrap();
    assert_eq!(b.n, 300);
    assert!(frechet_distance(&a, &b).unwrap().abs() < 1e-9);
    // N < 2, mixed dims, corrupted file
    let e = Stats::from_features(&t["full.x"].narrow(0, 0, 1)).unwrap_err().to_string();
    assert!(e.contains("at least 2 samples"), "{e}");
    let c = Stats::from_features(&t["full.x"].narrow(1, 0, 8)).unwrap();
    assert!(frechet_distance(&a, &c).unwrap_err().to_string().contains("dimensions differ"));
    std::fs::write(&p, b"PK\x03\x04 garbage").unwrap();
    let e = Stats::load_npz(&p).unwrap_err().to_string();
    assert!(e.contains("stats.npz"), "{e}");
    let e = Stats::load_npz(&d.path().join("none.npz")).unwrap_err().to_string();
    assert!(e.contains("none.npz") && e.contains("missing"), "{e}");
    let nan = Tensor::full([4, 3], f64::NAN, (Kind::Double, Device::Cpu));
    assert!(Stats::from_features(&nan).unwrap_err().to_string().contains("NaN"));
    // statistics a covariance cannot be: checked before any distance is computed
    let mut bad = Stats::from_features(&t["full.x"]).unwrap();
    let dim = bad.dim();
    bad.sigma[1] += 1.0; // (0, 1) no longer equals (1, 0)
    assert!(frechet_distance(&a, &bad).unwrap_err().to_string().contains("not symmetric"));
    bad.sigma[1] -= 1.0;
    bad.sigma[dim + 1] = -1.0; // a negative variance
    assert!(frechet_distance(&a, &bad).unwrap_err().to_string().contains("negative variance"));
    bad.sigma[dim + 1] = f64::INFINITY;
    assert!(frechet_distance(&bad, &a).unwrap_err().to_string().contains("NaN or Inf"));
    // KID with no subsets is an error, not a NaN
    let x = &t["full.x"];
    assert!(fd_eval::fid::kid(x, x, 0, 10, 0).unwrap_err().to_string().contains("--kid-subsets"));
}

#[test]
fn inception_features_match_fid_helper_pipeline() {
    let path = default_path();
    let inc =
        Inception::load(&path, Device::Cpu).unwrap_or_else(|e| panic!("{e} (run scripts/setup.sh; `just test` does)"));
    let t = fixtures("inception.safetensors");
    for (imgs, feats) in [("gray", "gray_feats"), ("rgb", "rgb_feats")] {
        let got = inc.features(&t[imgs], 8, |_| {}).unwrap();
        let want = t[feats].to_kind(Kind::Double);
        let d = (&got - &want).abs().max().double_value(&[]);
        assert!(d <= 1e-4, "{imgs}: max abs diff {d:e}");
        assert!(want.abs().max().double_value(&[]) > 0.1);
    }
    let e = Inception::load(&PathBuf::from("/nonexistent/inception.pt"), Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/inception.pt") && e.contains("missing"), "{e}");
    let e = inc.preprocess(&Tensor::zeros([1, 2, 8, 8], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
    assert!(e.contains("[N, 1|3, H, W]"), "{e}");
}
