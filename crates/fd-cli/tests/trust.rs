//! Run folders you can trust (each case of the hostile-user report, now a clear error or a correct
//! result): a run's identity, one writer per folder, validation before output, metrics computed
//! only from verified samples, one-line errors for libtorch failures.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{copy_dir, fd, repo_path, snapshot, stats_npz};

fn tiny() -> String {
    repo_path("crates/fd-model/tests/fixtures/tiny")
}

fn fmnist() -> String {
    repo_path("models/fmnist")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small run of `model` (PNGs written for the default model); `--n 4` unless `extra` sets it.
fn sample_of(model: &str, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["sample", "--model", model, "--steps", "4", "--cfg", "2", "--batch", "2"];
    if !extra.contains(&"--n") {
        args.extend(["--n", "4"]);
    }
    args.extend(["--out", s(out)]);
    args.extend(extra);
    fd(&args)
}

/// A small run of the default model.
fn sample(out: &Path, extra: &[&str]) -> (bool, String, String) {
    sample_of(&fmnist(), out, extra)
}

/// `fd eval consistency` with the committed judge.
fn consistency(run: &Path) -> (bool, String, String) {
    fd(&["eval", "consistency", "--samples", s(run), "--classifier", &repo_path("models/fmnist/classifier.pt")])
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn resume_never_takes_a_part_of_another_run() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, clean) = (d.path().join("a"), d.path().join("b"), d.path().join("clean"));
    assert!(sample(&a, &["--seed", "0"]).0);
    assert!(sample(&clean, &["--seed", "100"]).0);
    let (ok, _, err) = sample(&b, &["--seed", "100"]);
    assert!(ok, "{err}");
    // a part (and its PNGs) copied in from the seed-0 run, and a swapped + a corrupted PNG
    std::fs::copy(a.join("parts/000000-000002.json"), b.join("parts/000000-000002.json")).unwrap();
    std::fs::copy(a.join("parts/000000-000002.safetensors"), b.join("parts/000000-000002.safetensors")).unwrap();
    std::fs::copy(a.join("000000.png"), b.join("000000.png")).unwrap();
    std::fs::copy(b.join("000003.png"), b.join("000002.png")).unwrap();
    std::fs::write(b.join("000003.png"), b"not a png").unwrap();
    let (ok, out, err) = sample(&b, &["--seed", "100", "--resume"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 batches resumed, 1 computed"), "{out}");
    for f in ["samples.safetensors", "000000.png", "000001.png", "000002.png", "000003.png"] {
        assert_eq!(read(&b.join(f)), read(&clean.join(f)), "{f} differs from a clean seed-100 run");
    }
}

#[test]
fn a_second_writer_is_refused_naming_the_holder() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let model = fmnist();
    let mut a = Command::new(env!("CARGO_BIN_EXE_fd"))
        .args(["sample", "--model", &model, "--steps", "50", "--cfg", "3", "--n", "400", "--batch", "4"])
        .args(["--out", s(&out), "--log-level", "error", "--decode", "sequential"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // the first writer holds the lock once its parts folder exists (a loaded machine can take minutes)
    while !out.join("parts").is_dir() && t0.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(out.join("parts").is_dir(), "the first writer did not start within 600 s");
    let (ok, _, err) = sample(&out, &["--overwrite"]);
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(!ok && err.contains(&format!("pid {}", a.id())) && err.contains("fd sample"), "{err}");
    // the holder is gone: the lock went with it
    let (ok, _, err) = sample(&out, &["--overwrite"]);
    assert!(ok, "{err}");
}

#[test]
fn folders_that_are_not_ours_are_never_written() {
    let d = tempfile::tempdir().unwrap();
    // a user's folder with a 000000.png
    let user = d.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("000000.png"), b"my photo").unwrap();
    let (ok, _, err) = sample(&user, &[]);
    assert!(!ok && err.contains("holds no fd run"), "{err}");
    assert_eq!(read(&user.join("000000.png")), b"my photo");
    // merge --out onto an existing run: refused before anything is written
    let (sh0, sh1, run) = (d.path().join("sh0"), d.path().join("sh1"), d.path().join("run"));
    assert!(sample(&sh0, &["--shard", "0/2"]).0 && sample(&sh1, &["--shard", "1/2"]).0);
    assert!(sample(&run, &["--seed", "9"]).0);
    let before = snapshot(&run);
    let (ok, _, err) = fd(&["merge", "--out", s(&run), s(&sh0), s(&sh1)]);
    assert!(!ok && err.contains("already holds a run"), "{err}");
    assert_eq!(snapshot(&run), before, "merge changed the existing run");
    let (ok, _, err) = fd(&["merge", "--out", s(&run), "--overwrite", s(&sh0), s(&sh1)]);
    assert!(ok, "{err}");
    // --overwrite with a smaller --n: no PNG of the old run is left
    let (ok, _, err) = sample(&run, &["--overwrite", "--n", "2"]);
    assert!(ok, "{err}");
    assert!(!run.join("000002.png").exists() && !run.join("000003.png").exists());
}

#[test]
fn a_changed_model_is_another_run() {
    let d = tempfile::tempdir().unwrap();
    let model2 = d.path().join("model2");
    copy_dir(Path::new(&fmnist()), &model2);
    let m = model2.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&read(&m)).unwrap();
    v["cond"]["class_names"][0] = "shirt-ish".into(); // graphs unchanged, conditioning changed
    std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = d.path().join("run");
    assert!(sample(&out, &["--shard", "0/2"]).0);
    let (ok, _, err) = sample_of(s(&model2), &out, &["--shard", "0/2", "--resume"]);
    assert!(!ok && err.contains("differs in: model"), "{err}");
    // shards of the two models do not merge
    let other = d.path().join("other");
    let (ok, _, err) = sample_of(s(&model2), &other, &["--shard", "1/2"]);
    assert!(ok, "{err}");
    let (ok, _, err) = fd(&["merge", "--out", s(&d.path().join("m")), s(&out), s(&other)]);
    assert!(!ok && err.contains("differs in: model"), "{err}");
    assert!(!d.path().join("m").exists(), "merge wrote before failing");
}

#[test]
fn metrics_use_only_verified_samples() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    assert!(sample(&run, &[]).0);
    let (ok, out, err) = consistency(&run);
    assert!(ok, "{err}");
    let line = out.lines().next().unwrap().to_string();
    // a stray part and overwritten samples.safetensors change nothing
    std::fs::copy(run.join("parts/000000-000002.json"), run.join("parts/000004-000006.json")).unwrap();
    std::fs::copy(run.join("parts/000000-000002.safetensors"), run.join("parts/000004-000006.safetensors")).unwrap();
    std::fs::write(run.join("samples.safetensors"), read(&run.join("parts/000000-000002.safetensors"))).unwrap();
    let (ok, out2, err) = consistency(&run);
    assert!(ok, "{err}");
    assert_eq!(out2.lines().next().unwrap(), line);
    let npz = stats_npz(d.path());
    let (ok, out, err) = fd(&["eval", "fid", "--samples", s(&run), "--ref", &npz]);
    assert!(ok && out.contains("N=4 "), "{out} {err}");
    // a part whose images were replaced is refused, naming the file
    std::fs::copy(run.join("parts/000002-000004.safetensors"), run.join("parts/000000-000002.safetensors")).unwrap();
    let (ok, _, err) = consistency(&run);
    assert!(!ok && err.contains("000000-000002.safetensors") && err.contains("do not match"), "{err}");
}

#[test]
fn bad_values_fail_before_any_file_is_written() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("never");
    let plan = d.path().join("plan.json");
    std::fs::write(&plan, r#"{"name": "p", "keys": [0, 1], "steps": 3}"#).unwrap();
    let zero = d.path().join("zero");
    copy_dir(Path::new(&tiny()), &zero);
    let m = zero.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&read(&m)).unwrap();
    v["scheduler"]["num_train_timesteps"] = 0.into();
    std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let method = d.path().join("method");
    copy_dir(Path::new(&tiny()), &method);
    let m = method.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&read(&m)).unwrap();
    v["graphs"]["decoder"]["method"] = "no_such_method".into();
    std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let (t, o) = (tiny(), s(&out).to_string());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sample", "--model", &t, "--n", "18446744073709551615", "--out", &o], "at most"),
        (vec!["sample", "--model", &t, "--seed", "18446744073709551615", "--n", "2", "--out", &o], "overflows"),
        (vec!["sample", "--model", s(&zero), "--out", &o], "num_train_timesteps"),
        (vec!["sample", "--model", &t, "--cfg", "0.5", "--out", &o], "guidance 0.5"),
        (vec!["sample", "--model", &t, "--cfg", "NaN", "--out", &o], "guidance NaN"),
        (vec!["sample", "--model", &t, "--keys", "deepcache:2:7", "--out", &o], "deepcache"),
        (vec!["sample", "--model", &t, "--keys", "teacache:0.1", "--out", &o], "add_teacache.py"),
        (vec!["sample", "--model", &t, "--keys", "uniform:2+partial:7", "--out", &o], "add_deepcache.py"),
        (vec!["sample", "--model", &t, "--keys", "tgate:2", "--cfg", "2", "--out", &o], "add_tgate.py"),
        (vec!["sample", "--model", &t, "--steps", "5", "--keys", s(&plan), "--out", &o], "made for 3 steps"),
        (vec!["sample", "--model", s(&method), "--steps", "3", "--out", &o], "no_such_method"),
        (vec!["eval", "fid", "--samples", &o, "--ref", "x.npz", "--kid-subsets", "0"], "never"),
    ];
    for (args, want) in &cases {
        let (ok, _, err) = fd(args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.lines().count() <= 2, "{args:?}: not a short error: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    // a wrong graph method names the graph, its file and the method; a wrong classifier its file
    let (_, _, err) = fd(&["sample", "--model", s(&method), "--steps", "3", "--out", &o]);
    assert!(err.contains("graph `decoder`") && err.contains("unet.pt"), "{err}");
    let run = d.path().join("run");
    assert!(sample(&run, &[]).0);
    let (ok, _, err) = fd(&["eval", "consistency", "--samples", s(&run), "--classifier", &(tiny() + "/unet.pt")]);
    assert!(!ok && err.contains("unet.pt") && err.lines().count() <= 2, "{err}");
    let (ok, _, err) = fd(&["eval", "consistency", "--samples", s(&run), "--classifier", s(&m)]);
    assert!(!ok && err.contains("--classifier") && err.lines().count() <= 2, "{err}");
}
