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

/// Nothing destructive touches what it reads: a merge into one of its own inputs, a folder that
/// merely holds a `config.json`, and a lock file that is a symlink are refused, and every file
/// there is byte-identical afterwards.
#[test]
fn destructive_commands_never_touch_what_they_read() {
    let d = tempfile::tempdir().unwrap();
    let (sh0, sh1) = (d.path().join("sh0"), d.path().join("sh1"));
    assert!(sample(&sh0, &["--shard", "0/2"]).0 && sample(&sh1, &["--shard", "1/2"]).0);
    let before = (snapshot(&sh0), snapshot(&sh1));
    for (out, want) in [
        (sh0.clone(), "is one of the folders being merged"),
        (sh0.join("inner"), "lies inside a folder being merged"),
        (d.path().to_path_buf(), "holds a folder being merged"),
    ] {
        let (ok, _, err) = fd(&["merge", "--overwrite", "--out", s(&out), s(&sh0), s(&sh1)]);
        assert!(!ok && err.contains(want), "{}: {err}", out.display());
    }
    let (ok, _, err) = fd(&["merge", "--overwrite", "--out", s(&sh0), s(&sh0)]);
    assert!(!ok && err.contains("is one of the folders being merged"), "{err}");
    assert!(before == (snapshot(&sh0), snapshot(&sh1)), "a refused merge changed its inputs");

    // a diffusers model folder is not an fd run, whatever the flags
    let user = d.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("config.json"), r#"{"_class_name": "UNet2DModel", "sample_size": 28}"#).unwrap();
    std::fs::write(user.join("000007.png"), b"my image").unwrap();
    let mine = snapshot(&user);
    for flags in [&[][..], &["--resume"], &["--overwrite"]] {
        let (ok, _, err) = sample(&user, flags);
        assert!(!ok && err.contains("not an fd run record"), "{flags:?}: {err}");
    }
    let (ok, _, err) = fd(&["merge", "--overwrite", "--out", s(&user), s(&sh0), s(&sh1)]);
    assert!(!ok && err.contains("not an fd run record"), "{err}");
    assert!(snapshot(&user) == mine, "a refused command changed the user's folder");
    assert!(!user.join(".fd-lock").exists());

    // a lock file that is a symlink is never followed
    let victim = d.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let run = d.path().join("run");
    assert!(sample(&run, &[]).0);
    std::fs::remove_file(run.join(".fd-lock")).unwrap();
    std::os::unix::fs::symlink(&victim, run.join(".fd-lock")).unwrap();
    let (ok, _, err) = sample(&run, &["--overwrite"]);
    assert!(!ok && err.contains("symbolic link"), "{err}");
    assert_eq!(read(&victim), b"precious");
    // a plain PNG folder being evaluated gets no lock file at all
    let pngs = d.path().join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for i in 0..4 {
        std::fs::copy(run.join(format!("{i:06}.png")), pngs.join(format!("{i:06}.png"))).unwrap();
    }
    std::os::unix::fs::symlink(&victim, pngs.join(".fd-lock")).unwrap();
    let npz = stats_npz(d.path());
    let (ok, out, err) = fd(&["eval", "fid", "--samples", s(&pngs), "--ref", &npz]);
    assert!(ok && out.contains("N=4 "), "{out} {err}");
    assert_eq!(read(&victim), b"precious");
}

/// Metrics read verified data or nothing: a run folder whose parts are gone is an error saying
/// so, even with another run's `samples.safetensors` and PNGs in it; no metric file is written.
#[test]
fn metrics_never_fall_back_to_unverified_files() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    assert!(sample(&a, &["--seed", "0"]).0 && sample(&b, &["--seed", "50"]).0);
    std::fs::remove_dir_all(a.join("parts")).unwrap();
    std::fs::copy(b.join("samples.safetensors"), a.join("samples.safetensors")).unwrap();
    let npz = stats_npz(d.path());
    let (ok, _, err) = fd(&["eval", "fid", "--samples", s(&a), "--ref", &npz]);
    assert!(!ok && err.contains("parts/) are missing") && err.contains("sample the run again"), "{err}");
    let (ok, _, err) = consistency(&a);
    assert!(!ok && err.contains("parts/) are missing"), "{err}");
    assert!(!a.join("fid.json").exists() && !a.join("consistency.json").exists());
}

/// Every reported number is checked and everything is validated before the expensive step: a
/// one-step drift, a plan rule that cannot fit, a statistics file whose covariance has a negative
/// eigenvalue, an `auto:` plan on a folder that already holds a run.
#[test]
fn numbers_are_checked_and_refusals_come_first() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("drift");
    let m = fmnist();
    let drift = |extra: &[&str]| {
        let mut args = vec!["drift", "--model", &m, "--n", "2", "--out", s(&out)];
        args.extend(extra);
        fd(&args)
    };
    let (ok, _, err) = drift(&["--steps", "1"]);
    assert!(!ok && err.contains("at least 2"), "{err}");
    let (ok, _, err) = drift(&["--steps", "4", "--save-plan", "auto:9"]);
    assert!(!ok && err.contains("do not fit a run of 4 steps"), "{err}");
    assert!(!out.exists(), "a refused drift wrote its folder");
    // symmetric, non-negative variances, an eigenvalue of -1
    let bad = d.path().join("bad.npz");
    let mu = tch::Tensor::zeros([2], (tch::Kind::Double, tch::Device::Cpu));
    let sigma = tch::Tensor::from_slice(&[1.0f64, 2.0, 2.0, 1.0]).view([2, 2]);
    tch::Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], &bad).unwrap();
    let run = d.path().join("run");
    assert!(sample(&run, &[]).0);
    let (ok, _, err) = fd(&["eval", "fid", "--samples", s(&run), "--ref", s(&bad)]);
    assert!(!ok && err.contains("not a covariance"), "{err}");
    assert!(!run.join("fid.json").exists());
    // the folder is checked before the plan is resolved (calibrated): of the two errors this
    // command has (auto:9 cannot fit 4 steps), the folder's comes first
    let before = snapshot(&run);
    let (ok, _, err) = sample(&run, &["--keys", "auto:9"]);
    assert!(!ok && err.contains("already holds a run"), "{err}");
    let (ok, _, err) = sample(&run, &["--keys", "auto:9", "--overwrite"]);
    assert!(!ok && err.contains("do not fit a run of 4 steps"), "{err}");
    assert!(snapshot(&run) == before);
}

/// The process never panics: a closed stdout ends quietly with success, a non-UTF-8 argument is
/// an error before anything is written.
#[test]
fn a_closed_stdout_or_a_non_utf8_argument_is_no_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fd"))
        .args(["info", &fmnist()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before fd prints
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{:?}: {err}", out.status);

    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join(std::ffi::OsStr::from_bytes(b"run-\xff"));
    let out = Command::new(env!("CARGO_BIN_EXE_fd"))
        .args(["sample", "--model", &fmnist(), "--steps", "2", "--n", "2", "--out"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not valid UTF-8") && !err.contains("panicked"), "{err}");
    assert!(!bad.exists());
}
