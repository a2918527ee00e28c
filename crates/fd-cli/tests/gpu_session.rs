//! `just gpu`'s CPU smoke test: `experiments/gpu/gpu_session.py --smoke` runs every section a GPU
//! session runs (tiny widths, float32, few samples, on the CPU) with this build's `fd`, and its report
//! folder says what ran: every section ok but AOTInductor (skipped by name in smoke mode), one
//! `fd bench` table per bench with one row per plan, the sample-by-sample comparisons, the end-to-end
//! PNG checks. It checks the plumbing the GPU session depends on; no timing in it means anything.
//! Needs the venv's `python` (scripts/setup.sh; on PATH through scripts/env.sh, as `just test` runs).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn gpu_session_smoke_runs_every_section_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let out = Command::new("python")
        .current_dir(root())
        .args(["experiments/gpu/gpu_session.py", "--smoke", "--device", "cpu", "--budget", "3000", "--fd"])
        .arg(env!("CARGO_BIN_EXE_fd"))
        .arg("--out")
        .arg(&report)
        .arg("--work")
        .arg(tmp.path().join("work"))
        .arg("--tokenizer")
        .arg(tmp.path().join("tokenizer"))
        .output()
        .expect("python (the venv of scripts/setup.sh, on PATH via scripts/env.sh)");
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "gpu_session.py --smoke failed:\n{log}");

    let summary = json(&report.join("summary.json"));
    let sections = summary["sections"].as_object().unwrap();
    let names: Vec<&str> = sections.keys().map(String::as_str).collect();
    for want in ["env", "default", "sd15", "sdxl", "controlnet", "dit", "t2v", "aoti", "peers", "tome", "determinism"] {
        assert!(names.contains(&want), "section {want} missing from {names:?}");
    }
    for (name, sec) in sections {
        let status = sec["status"].as_str().unwrap();
        if name == "aoti" {
            assert!(status.starts_with("skipped: smoke"), "aoti: {status}");
        } else {
            assert_eq!(status, "ok", "section {name}: {status}\n{log}");
        }
    }
    // Every step ran and succeeded; the error that must happen (no visible GPU) happened.
    for step in summary["steps"].as_array().unwrap() {
        let status = step["status"].as_str().unwrap();
        assert!(status.starts_with("ok"), "step {}: {status}", step["name"]);
    }
    let no_gpu = summary["steps"].as_array().unwrap().iter().find(|s| s["name"] == "no-visible-gpu").unwrap();
    assert!(no_gpu["status"].as_str().unwrap().starts_with("ok (failed as expected"), "{no_gpu}");

    // One table per bench (smoke batches are at most 2; the names say so), one row per plan, with a time.
    let plans = |name: &str| -> usize {
        match name {
            n if n.starts_with("default") => 5,
            "sd15_ddim_b1" | "sd15_ddim_b2" => 5,
            "sd15_dpmpp_b1" | "sdxl_b1" | "sdxl_b2" => 3,
            n if n.starts_with("peers") => 7,
            _ => 2,
        }
    };
    let benches: Vec<String> =
        summary["benches"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_string()).collect();
    for want in [
        "default_n2",
        "sd15_ddim_b1",
        "sd15_ddim_b2",
        "sd15_dpmpp_b1",
        "sdxl_b1",
        "sdxl_b2",
        "controlnet_b1",
        "dit_b1",
        "dit_b2",
        "t2v_b1",
        "peers_b1",
        "tome_b1",
    ] {
        assert!(benches.iter().any(|b| b == want), "bench {want} missing from {benches:?}");
        let b = json(&report.join("bench").join(format!("{want}.json")));
        let rows = b["rows"].as_array().unwrap();
        assert_eq!(rows.len(), plans(want), "{want}: {rows:?}");
        for r in rows {
            let s = r["median_s_per_image"].as_f64().unwrap();
            assert!(s.is_finite() && s > 0.0, "{want} {}: {s}", r["plan"]);
        }
    }
    // The comparisons: a repeat on the same device and batch is bit-identical in --deterministic mode.
    let compare = std::fs::read_to_string(report.join("compare.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = compare.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5, "{compare}"); // no CPU-vs-device rows when the device is the CPU
    let repeat = rows.iter().find(|r| r["run"] == "det-b8-repeat").unwrap();
    assert_eq!(repeat["bit_identical"], true, "{repeat}");
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains("| sd15 | ok |") && md.contains("## sdxl_b2"), "{md}");
}
