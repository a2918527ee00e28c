//! Every statistic on synthetic features with known values, and the key-step DP vs brute force.

use fd_analysis::drift::{DriftAccumulator, Side};
use fd_analysis::keysteps::{auto_key_steps, plan_cost, threshold_key_steps};
use tch::{Device, Kind, Tensor};

fn full(shape: [i64; 4], v: f64) -> Tensor {
    Tensor::ones(shape, (Kind::Float, Device::Cpu)) * v
}

#[test]
fn drift_statistics_have_the_known_values() {
    let mut acc = DriftAccumulator::new("synthetic");
    for t in 0..5usize {
        let v = (t + 1) as f64;
        acc.push(t, 1000.0 - t as f64, Side::Encoder, "enc", &full([2, 3, 4, 4], v));
        acc.push(t, 1000.0 - t as f64, Side::Decoder, "dec", &full([2, 3, 4, 4], 10.0 * v));
    }
    let rows = acc.rows();
    let enc: Vec<_> = rows.iter().filter(|r| r.layer == "enc").collect();
    assert!(enc[0].mse.is_nan() && enc[0].rel_change.is_nan());
    for (t, r) in enc.iter().enumerate().skip(1) {
        assert!((r.mse - 1.0).abs() < 1e-12, "mse {}", r.mse);
        assert!((r.rel_change - 1.0 / t as f64).abs() < 1e-12, "rel {}", r.rel_change);
        // channel-mean map is all (t+1) on 4x4 -> Frobenius norm 4 (t+1)
        assert!((r.fnorm - 4.0 * (t + 1) as f64).abs() < 1e-9);
        assert_eq!((r.mse_std, r.fnorm_std, r.n), (0.0, 0.0, 2));
    }
    let s = acc.summary();
    assert!((s.encoder_mean_mse - 1.0).abs() < 1e-12 && (s.decoder_mean_mse - 100.0).abs() < 1e-9);
    assert!((s.mse_ratio - 0.01).abs() < 1e-12);
    // F-norm over steps: 4,8,12,16,20 -> population std 4*sqrt(2); decoder 10x
    assert!((s.encoder_mean_fnorm_std - 4.0 * 2f64.sqrt()).abs() < 1e-9);
    assert!((s.decoder_mean_fnorm_std - 40.0 * 2f64.sqrt()).abs() < 1e-9);
    assert_eq!(s.encoder_drift_profile.len(), 5);
    assert!((s.encoder_drift_profile[2] - 0.5).abs() < 1e-12);

    // per-sample spread: two samples drifting differently (sample-wise MSE 1 and 9)
    let mut acc = DriftAccumulator::new("spread");
    let a = Tensor::cat(&[full([1, 1, 2, 2], 0.0), full([1, 1, 2, 2], 1.0)], 0);
    let step = Tensor::cat(&[full([1, 1, 2, 2], 1.0), full([1, 1, 2, 2], 3.0)], 0);
    acc.push(0, 1.0, Side::Encoder, "x", &a);
    acc.push(1, 0.0, Side::Encoder, "x", &(&a + &step));
    let r = &acc.rows()[1];
    assert!((r.mse - 5.0).abs() < 1e-12);
    assert!((r.mse_std - 4.0).abs() < 1e-12, "population std over the batch of 1 and 9: {}", r.mse_std);
    let d = tempfile::tempdir().unwrap();
    acc.write_csv(&d.path().join("drift.csv")).unwrap();
    let text = std::fs::read_to_string(d.path().join("drift.csv")).unwrap();
    assert!(text.starts_with("run,step,timestep,side,layer,mse,mse_std,fnorm,fnorm_std,rel_change,rel_change_std,n"));
    assert_eq!(text.lines().count(), 3);
}

/// `profile_layers`: the drift profile (what `auto:K` calibrates from) averages the cached
/// features only, while the summary's encoder aggregates cover every observed encoder layer (a
/// DiT's earlier blocks included).
#[test]
fn drift_profile_covers_the_named_layers_only() {
    let run = |profile: Option<&[String]>| {
        let mut acc = DriftAccumulator::new("layers");
        if let Some(p) = profile {
            acc = acc.profile_layers(p);
        }
        for t in 0..3usize {
            let v = (t + 1) as f64;
            // `early` changes by 1/t relative, `cached` not at all
            acc.push(t, 1000.0 - t as f64, Side::Encoder, "early", &full([1, 2, 2, 2], v));
            acc.push(t, 1000.0 - t as f64, Side::Encoder, "cached", &full([1, 2, 2, 2], 5.0));
        }
        acc.summary()
    };
    let all = run(None);
    assert!((all.encoder_drift_profile[1] - 0.5).abs() < 1e-12, "mean of 1 and 0");
    let only = run(Some(&["cached".to_string()]));
    assert_eq!(only.encoder_drift_profile[1], 0.0);
    assert_eq!(only.encoder_drift_profile[2], 0.0);
    assert!((only.encoder_mean_rel_change - all.encoder_mean_rel_change).abs() < 1e-12, "aggregates unchanged");
}

fn brute_force(drift: &[f64], k: usize) -> f64 {
    let n = drift.len();
    let mut best = f64::INFINITY;
    for mask in 0u32..(1 << (n - 1)) {
        if mask.count_ones() as usize != k - 1 {
            continue;
        }
        let keys: Vec<usize> = std::iter::once(0).chain((1..n).filter(|i| mask & (1 << (i - 1)) != 0)).collect();
        best = best.min(plan_cost(drift, &keys));
    }
    best
}

#[test]
fn auto_key_steps_is_optimal_and_starts_at_zero() {
    let drift = [0.0, 1.0, 1.0, 1.0, 10.0, 1.0, 1.0, 0.5, 0.2, 3.0, 0.1, 0.1];
    for k in 1..=6 {
        let keys = auto_key_steps(&drift, k).unwrap();
        assert_eq!(keys.len(), k);
        assert_eq!(keys[0], 0);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let c = plan_cost(&drift, &keys);
        assert!((c - brute_force(&drift, k)).abs() < 1e-9, "k={k}: {keys:?} cost {c}");
    }
    // a large drift jump attracts a key step right there
    assert!(auto_key_steps(&drift, 2).unwrap().contains(&4));
    assert_eq!(auto_key_steps(&drift, drift.len()).unwrap(), (0..drift.len()).collect::<Vec<_>>());
    assert!(auto_key_steps(&drift, 0).is_err() && auto_key_steps(&drift, 99).is_err());
    assert!(auto_key_steps(&[0.0, f64::NAN], 1).is_err());
    assert_eq!(threshold_key_steps(&[0.0, 0.4, 0.4, 0.4, 2.0, 0.1], 1.0), vec![0, 3, 4]);
}
