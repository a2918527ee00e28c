//! Where a run's decoding mode is decided (`fd_run::spec::decode_choice`): explicit modes as
//! given, `auto` by plan, flags and device, and on a CPU from a measurement cached per machine,
//! model and batch. (One test in this binary: it sets FD_CACHE for the process.)

use std::path::PathBuf;

use fd_run::spec::{cached_row_costs, decode_choice, ModelSpec};
use fd_sched::decode::DecodeMode;
use fd_sched::Plan;

#[test]
fn decode_choice_explicit_auto_and_cached_calibration() {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: the only test of this binary; set before anything reads the environment
    unsafe { std::env::set_var("FD_CACHE", cache.path()) };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fd-model/tests/fixtures/tiny");
    let model = ModelSpec::new(&dir, "cpu", false).unwrap().load().unwrap();
    let plan = Plan::parse("uniform:3", 9).unwrap();
    let base = Plan::parse("none", 9).unwrap();

    // explicit modes, as given (a cap only means something when parallel)
    let c = decode_choice(&model, &plan, DecodeMode::Sequential, 0, 4).unwrap();
    assert!(!c.parallel && c.calibration.is_empty() && c.requested == DecodeMode::Sequential);
    let c = decode_choice(&model, &plan, DecodeMode::Parallel, 8, 4).unwrap();
    assert!(c.parallel && c.max_decoder_batch == 8 && c.summary() == "parallel ≤8 rows", "{c:?}");
    // auto with a cap is parallel with that cap; on a plan without multi-step groups, sequential
    let c = decode_choice(&model, &plan, DecodeMode::Auto, 12, 4).unwrap();
    assert!(c.parallel && c.max_decoder_batch == 12 && c.calibration.is_empty(), "{c:?}");
    let c = decode_choice(&model, &base, DecodeMode::Auto, 0, 4).unwrap();
    assert!(!c.parallel && c.calibration.is_empty(), "{c:?}");
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none(), "nothing measured so far");

    // auto on a CPU: measured once, cached, and the same choice read back
    let first = decode_choice(&model, &plan, DecodeMode::Auto, 0, 4).unwrap();
    assert_eq!(first.requested, DecodeMode::Auto);
    assert!(first.calibration.len() >= 2 && first.calibration[0].rows == 4, "{first:?}");
    assert!(first.calibration.iter().all(|c| c.ms_per_row.is_finite() && c.ms_per_row > 0.0));
    assert!(!first.parallel || first.max_decoder_batch.is_multiple_of(4), "{first:?}");
    let files: Vec<PathBuf> =
        std::fs::read_dir(cache.path().join("decode")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let again = decode_choice(&model, &plan, DecodeMode::Auto, 0, 4).unwrap();
    // the same choice (costs read back from JSON may differ from the measured ones in the last bit)
    assert_eq!(
        (again.parallel, again.max_decoder_batch, &again.reason),
        (first.parallel, first.max_decoder_batch, &first.reason)
    );
    assert_eq!(again.calibration.len(), first.calibration.len());
    for (a, b) in again.calibration.iter().zip(&first.calibration) {
        assert!(a.rows == b.rows && (a.ms_per_row - b.ms_per_row).abs() <= 1e-12 * b.ms_per_row, "{a:?} vs {b:?}");
    }
    assert_eq!(std::fs::read(&files[0]).unwrap(), bytes, "a cached calibration is read, not redone");
    // another batch is another measurement
    let other = cached_row_costs(&model, 2).unwrap();
    assert_eq!(other[0].rows, 2);
    assert_eq!(std::fs::read_dir(cache.path().join("decode")).unwrap().count(), 2);
    // an unreadable cache entry is measured again and replaced
    std::fs::write(&files[0], b"{ not json").unwrap();
    let remeasured = cached_row_costs(&model, 4).unwrap();
    assert_eq!(remeasured[0].rows, 4);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(v["key"]["rows_per_step"], 4);

    // --deterministic (row-by-row graphs): sequential, nothing measured
    let det = ModelSpec::new(&dir, "cpu", true).unwrap().load().unwrap();
    let c = decode_choice(&det, &plan, DecodeMode::Auto, 0, 4).unwrap();
    assert!(!c.parallel && c.calibration.is_empty() && c.reason.contains("--deterministic"), "{c:?}");
}
