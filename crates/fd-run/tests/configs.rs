//! The committed experiment configs load and validate, and a row's decoding is named the current
//! way (`decode`), with a clear error for the old `sequential` flag or an unknown mode.

use std::path::PathBuf;

use fd_run::experiment::ExperimentConfig;
use fd_sched::decode::DecodeMode;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/configs")
}

#[test]
fn committed_configs_load_and_rows_decode_auto_unless_named() {
    let mut n = 0;
    for e in std::fs::read_dir(configs()).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if p.extension().is_some_and(|x| x == "json") && text.contains("\"rows\"") {
            ExperimentConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "{n} experiment configs");
    let t1 = ExperimentConfig::load(&configs().join("table1.json")).unwrap();
    assert!(t1.rows.iter().all(|r| r.plan.decode == DecodeMode::Auto));
    let inj = ExperimentConfig::load(&configs().join("ablate_injection.json")).unwrap();
    let modes: Vec<DecodeMode> = inj.rows.iter().map(|r| r.plan.decode).collect();
    assert!(modes.contains(&DecodeMode::Parallel) && modes.contains(&DecodeMode::Sequential), "{modes:?}");

    let d = tempfile::tempdir().unwrap();
    let bad = |row: &str| {
        let p = d.path().join("x.json");
        std::fs::write(&p, format!(r#"{{"name": "x", "n": 4, "rows": [{{"label": "a", "keys": "50ls", {row}}}]}}"#))
            .unwrap();
        ExperimentConfig::load(&p).unwrap_err().to_string()
    };
    let e = bad(r#""sequential": true"#);
    assert!(e.contains("unknown field `sequential`"), "{e}");
    let e = bad(r#""decode": "fast""#);
    assert!(e.contains("x.json") && e.contains("fast"), "{e}");
    // sizes and seeds from a config go through the flags' checks (no allocation failure, no overflow)
    let top = |fields: &str| {
        let p = d.path().join("y.json");
        std::fs::write(&p, format!(r#"{{"name": "y", {fields}, "rows": [{{"label": "a"}}]}}"#)).unwrap();
        ExperimentConfig::load(&p).unwrap_err().to_string()
    };
    let e = top(r#""n": 18446744073709551615"#);
    assert!(e.contains("y.json") && e.contains("at most 100000000"), "{e}");
    let e = top(r#""n": 4, "calibration_n": 1000000000000"#);
    assert!(e.contains("calibration_n = 1000000000000"), "{e}");
    let e = top(r#""n": 4, "seed": 18446744073709551614"#);
    assert!(e.contains("overflows a 64-bit seed"), "{e}");
    // names that would leave the results / work folders, or name none
    let named = |name: &str, label: &str| {
        let p = d.path().join("z.json");
        let cfg = serde_json::json!({"name": name, "n": 4, "rows": [{"label": label}]});
        std::fs::write(&p, cfg.to_string()).unwrap();
        ExperimentConfig::load(&p).map(|_| ()).map_err(|e| e.to_string())
    };
    for name in ["..", "", "/tmp/x", "a/b", "é", &"x".repeat(101)] {
        let e = named(name, "a").unwrap_err();
        assert!(e.contains("expected a folder name"), "{name}: {e}");
    }
    for label in ["..", "", "é", "..."] {
        let e = named("z", label).unwrap_err();
        assert!(e.contains("needs a letter or digit"), "{label}: {e}");
    }
    named("table1_if-2.x", "DDPM + ours (authors' DiT set)").unwrap();
}

/// Fields added for new model families (SDXL, IF, ControlNet) stay out of the records of runs
/// that do not use them, so the identity of every run made before them is unchanged (resume and
/// merge keep accepting those folders): every committed `run.json` under results/ is recomputed.
#[test]
fn run_identities_from_before_the_new_families_are_unchanged() {
    let v = serde_json::to_value(fd_sched::ExecOptions::default()).unwrap();
    assert_eq!(v, serde_json::json!({"parallel": true, "max_decoder_batch": 0, "guidance": 1.0, "injection": null}));
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "run.json") {
                out.push(p);
            }
        }
    }
    let mut runs = Vec::new();
    walk(&configs().join("../../results"), &mut runs);
    let mut checked = 0;
    for p in runs {
        let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let Some(id) = run["identity"].as_str() else { continue };
        let cfg: fd_run::records::RunConfig = serde_json::from_value(run.clone()).unwrap();
        assert_eq!(cfg.identity(), id, "{}", p.display());
        checked += 1;
    }
    assert!(checked >= 8, "{checked} committed runs checked");
}
