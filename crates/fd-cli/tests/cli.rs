//! The `fd` binary end to end on the tiny fixture model: outputs written, clear errors and a
//! non-zero exit on bad input (never a panic).

mod common;

use common::fd;

fn tiny() -> String {
    common::repo_path("crates/fd-model/tests/fixtures/tiny")
}

#[test]
fn info_sample_and_drift_write_their_outputs() {
    let (ok, out, err) = fd(&["info", &tiny()]);
    assert!(ok, "{err}");
    assert!(out.contains("tiny-fixture") && out.contains("flops/call") && out.contains("device"), "{out}");
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("s");
    let (ok, out, err) = fd(&[
        "sample",
        "--model",
        &tiny(),
        "--steps",
        "6",
        "--keys",
        "uniform:2",
        "--cfg",
        "2",
        "--n",
        "3",
        "--batch",
        "2",
        "--inject",
        "0.003@0.5",
        "--out",
        o.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("3 samples") && out.contains("GFLOPs/image"), "{out}");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(o.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["plan"]["key_steps"], serde_json::json!([0, 2, 4]));
    assert_eq!(run["conditions"], serde_json::json!([0, 1, 2]));
    // decoding defaults to auto, decided and recorded (on a CPU: from a cached measurement)
    assert_eq!(run["decode"]["requested"], "auto");
    assert_eq!(run["decode"]["parallel"], run["exec"]["parallel"]);
    assert_eq!(run["decode"]["max_decoder_batch"], run["exec"]["max_decoder_batch"]);
    assert!(run["decode"]["calibration"].as_array().is_some_and(|c| !c.is_empty()), "{}", run["decode"]);
    assert!(o.join("samples.safetensors").is_file());
    let o2 = d.path().join("drift");
    let (ok, out, err) = fd(&[
        "drift",
        "--model",
        &tiny(),
        "--steps",
        "6",
        "--n",
        "2",
        "--save-plan",
        "auto:3",
        "--out",
        o2.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("encoder mean MSE"), "{out}");
    for f in ["drift.csv", "summary.json", "fig3.png", "fig3.svg", "plan.json"] {
        assert!(o2.join(f).is_file(), "{f} missing");
    }
    // one sample with a saved plan file, then with a calibrated plan and a modifier
    let sample_with_keys = |keys: &str| {
        let (ok, _, err) = fd(&[
            "sample",
            "--model",
            &tiny(),
            "--steps",
            "6",
            "--keys",
            keys,
            "--n",
            "1",
            "--overwrite",
            "--out",
            o.to_str().unwrap(),
        ]);
        assert!(ok, "{keys}: {err}");
    };
    sample_with_keys(o2.join("plan.json").to_str().unwrap());
    // a calibrated plan takes the plan modifiers: the calibrated key steps, then forecast
    sample_with_keys("auto:3+forecast:1");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(o.join("run.json")).unwrap()).unwrap();
    assert!(run["plan"]["keys"].as_str().is_some_and(|k| k.ends_with("+forecast:1")), "{}", run["plan"]);
    assert_eq!(run["plan"]["key_steps"].as_array().map(Vec::len), Some(3), "{}", run["plan"]);
}

#[test]
fn compare_puts_runs_of_the_same_samples_side_by_side() {
    let model = common::repo_path("models/fmnist");
    let d = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = d.path().join(name);
        let o = out.to_str().unwrap();
        let given = |flag: &str| extra.contains(&flag);
        let mut a = vec!["sample", "--model", &model, "--n", "3", "--batch", "3", "--out", o];
        if !given("--steps") {
            a.extend_from_slice(&["--steps", "4"]);
        }
        if !given("--cfg") {
            a.extend_from_slice(&["--cfg", "2"]);
        }
        a.extend_from_slice(extra);
        let (ok, _, err) = fd(&a);
        assert!(ok, "{err}");
        out
    };
    let (base, fast) = (run("base", &["--keys", "none"]), run("fast", &["--keys", "uniform:2"]));
    let other = run("other", &["--keys", "none", "--seed", "7"]);
    let steps6 = run("steps6", &["--keys", "none", "--steps", "6"]);
    let cfg3 = run("cfg3", &["--keys", "none", "--cfg", "3"]);
    let cmp = d.path().join("cmp");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ok, out, err) = fd(&["compare", "--out", &s(&cmp), "--labels", "plain,fast", &s(&base), &s(&fast)]);
    assert!(ok, "{err}");
    assert!(
        out.contains("| plain | `none` |") && out.contains("| fast | `uniform:2` |") && out.contains("1.00x"),
        "{out}"
    );
    for f in ["compare.md", "compare.json", "compare.png"] {
        assert!(cmp.join(f).is_file(), "{f} missing");
    }
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(cmp.join("compare.json")).unwrap()).unwrap();
    let c = rep["rows"][1]["consistency"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&c), "{rep}");
    assert!(
        rep["rows"][1]["gflops_per_image"].as_f64().unwrap() < rep["rows"][0]["gflops_per_image"].as_f64().unwrap()
    );
    let img = image::open(cmp.join("compare.png")).unwrap();
    assert!(img.width() > img.height(), "two panels side by side");
    // speed from plans timed side by side in one process (fd bench), checked to be the runs' plans
    let bench = d.path().join("bench");
    let (ok, _, err) = fd(&[
        "bench",
        "--model",
        &model,
        "--steps",
        "4",
        "--cfg",
        "2",
        "--n",
        "2",
        "--repeats",
        "2",
        "--plans",
        "none,uniform:2",
        "--out",
        &s(&bench),
    ]);
    assert!(ok, "{err}");
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(bench.join("bench.json")).unwrap()).unwrap();
    for r in b["rows"].as_array().unwrap() {
        let (min, med) = (r["min_s_per_image"].as_f64().unwrap(), r["median_s_per_image"].as_f64().unwrap());
        assert!(min > 0.0 && min <= med && r["spread"].as_f64().unwrap() >= 0.0, "{r}");
    }
    let timed = s(&bench.join("bench.json"));
    let (ok, out, err) = fd(&["compare", "--out", &s(&cmp), "--timings", &timed, &s(&base), &s(&fast)]);
    assert!(ok && out.contains("`fd bench`") && out.contains("side by side in one process"), "{out}{err}");
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(cmp.join("compare.json")).unwrap()).unwrap();
    assert_eq!(rep["rows"][1]["speedup"], b["rows"][1]["speedup"]);
    let (ok, _, err) = fd(&["compare", "--out", &s(&cmp), "--timings", &timed, &s(&fast), &s(&base)]);
    assert!(!ok && err.contains("--timings: plan 1 is `none`, run 1 ran `uniform:2"), "{err}");
    // other samples, or a label per run missing: clear errors, nothing written
    let cmp2 = d.path().join("cmp2");
    let (ok, _, err) = fd(&["compare", "--out", &s(&cmp2), &s(&base), &s(&other)]);
    assert!(!ok && err.contains("not comparable") && err.contains("seed differs"), "{err}");
    // another sampler setting or guidance: the field is named, not a "speedup" between them
    let (ok, _, err) = fd(&["compare", "--out", &s(&cmp2), &s(&base), &s(&steps6)]);
    assert!(!ok && err.contains("steps differs"), "{err}");
    let (ok, _, err) = fd(&["compare", "--out", &s(&cmp2), &s(&base), &s(&cfg3)]);
    assert!(!ok && err.contains("guidance differs"), "{err}");
    let (ok, _, err) = fd(&["compare", "--out", &s(&cmp2), "--labels", "one", &s(&base), &s(&fast)]);
    assert!(!ok && err.contains("1 labels for 2 run folders"), "{err}");
    assert!(!cmp2.exists());
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x");
    let o = out.to_str().unwrap();
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let one = d.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    image::GrayImage::new(8, 8).save(one.join("a.png")).unwrap();
    let badcfg = d.path().join("exp.json");
    std::fs::write(&badcfg, r#"{"name": "x", "n": 1, "rows": [{"label": "a"}]}"#).unwrap();
    // an unknown reference is refused before any row is sampled against it
    let badref = d.path().join("badref.json");
    let cfg = serde_json::json!({"name": "r", "n": 2, "model": tiny(), "reference": "nope", "rows": [{"label": "a", "steps": 2}]});
    std::fs::write(&badref, cfg.to_string()).unwrap();
    let refwork = d.path().join("refwork");
    let (ok, _, err) = fd(&[
        "experiment",
        badref.to_str().unwrap(),
        "--work",
        refwork.to_str().unwrap(),
        "--out",
        refwork.join("res").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("unknown reference set `nope`"), "{err}");
    assert!(!refwork.exists(), "nothing sampled or written");
    let cases: &[(&[&str], &str)] = &[
        (&["sample", "--model", &tiny(), "--cfg", "0.5", "--out", o], "guidance 0.5 is not supported"),
        (&["sample", "--model", &tiny(), "--shard", "3/3", "--out", o], "--shard `3/3`"),
        (&["sample", "--model", &tiny(), "--keys", "0,1,x", "--out", o], "not a step index"),
        (&["sample", "--model", &tiny(), "--keys", "auto:x", "--out", o], "is not an integer"),
        (&["sample", "--model", &tiny(), "--keys", "auto:3+forecast:7", "--out", o], "forecast order 7"),
        (
            &["sample", "--model", &tiny(), "--prompts", empty.to_str().unwrap(), "--out", o],
            "no prompts (file is empty)",
        ),
        (&["eval", "fid", "--samples", one.to_str().unwrap(), "--ref", "x.npz"], "at least 2 images"),
        (&["experiment", badcfg.to_str().unwrap()], "FID needs at least 2 samples"),
        (&["merge", "--out", o, "/nonexistent/shard0"], "not a finished sampling run"),
        (&["info", "/nonexistent/model"], "model folder not found"),
        (&["sample", "--model", &tiny(), "--keys", "1,2", "--out", o], "step 0 must be a key step"),
        (&["sample", "--model", &tiny(), "--keys", "0,99", "--steps", "10", "--out", o], "out of range"),
        (&["sample", "--model", &tiny(), "--scheduler", "heun", "--out", o], "unknown scheduler `heun`"),
        (&["sample", "--model", &tiny(), "--steps", "1001", "--out", o], "1..=1000"),
        (&["sample", "--model", &tiny(), "--classes", "delta", "--out", o], "unknown class `delta`"),
        (&["sample", "--model", &tiny(), "--inject", "0.1", "--out", o], "C@TAU"),
        (&["sample", "--model", &tiny(), "--device", "cuda:7", "--out", o], "device `cuda:7`"),
        (&["sample", "--model", &tiny(), "--n", "0", "--out", o], "--n and --batch must be >= 1"),
        (&["sample", "--model", &tiny(), "--keys", "deepcache:0", "--out", o], "cache interval"),
        (&["eval", "fid", "--samples", "/nonexistent/dir"], "/nonexistent/dir"),
        (&["bench", "--model", &tiny(), "--plans", "none,50ls@fast", "--out", o], "unknown mode `fast`"),
        (&["bench", "--model", &tiny(), "--plans", "none,50ls@cap0", "--out", o], "capR needs a number >= 1"),
        (&["sample", "--model", &tiny(), "--decode", "fast", "--out", o], "expected auto, parallel or sequential"),
        (&["sample", "--model", &tiny(), "--parallel", "--sequential", "--out", o], "cannot be used with"),
        (
            &["sample", "--model", &tiny(), "--sequential", "--max-decoder-batch", "4", "--out", o],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let (ok, _, err) = fd(args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: stderr {err:?} lacks {want:?}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn bench_and_drift_take_prompts_on_a_text_conditioned_model() {
    let m = common::fixture("FD_SD_TINY", "sd-tiny").join("model");
    let m = m.to_str().unwrap();
    let d = tempfile::tempdir().unwrap();
    let prompts = d.path().join("prompts.txt");
    std::fs::write(&prompts, "a cat\n\na photograph of an astronaut riding a horse\n").unwrap();
    let p = prompts.to_str().unwrap();
    let o = d.path().join("o");
    let o = o.to_str().unwrap();
    for cmd in ["bench", "drift"] {
        let (ok, _, err) = fd(&[cmd, "--model", m, "--steps", "4", "--n", "2", "--out", o]);
        assert!(!ok && err.contains("is text-conditioned: pass --prompts FILE"), "{cmd}: {err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
    let (ok, out, err) = fd(&[
        "bench",
        "--model",
        m,
        "--steps",
        "4",
        "--n",
        "2",
        "--repeats",
        "1",
        "--plans",
        "none,uniform:2",
        "--prompts",
        p,
        "--out",
        o,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("uniform:2"), "{out}");
    let (ok, out, err) = fd(&["drift", "--model", m, "--steps", "4", "--n", "2", "--prompts", p, "--out", o]);
    assert!(ok, "{err}");
    assert!(out.contains("encoder mean MSE"), "{out}");
}

/// TeaCache, FBCache and T-GATE through `fd sample` on the committed default model: each runs,
/// records its plan and costs fewer GFLOPs than the baseline of the same samples; T-GATE without
/// guidance is refused before anything is written.
#[test]
fn peer_cache_plans_run_end_to_end_on_the_default_model() {
    let model = common::repo_path("models/fmnist");
    let d = tempfile::tempdir().unwrap();
    let gflops = |keys: &str| -> f64 {
        let out = d.path().join(keys.replace(':', "_"));
        let o = out.to_str().unwrap();
        let a = ["sample", "--model", &model, "--steps", "8", "--cfg", "3", "--n", "2", "--keys", keys, "--out", o];
        let (ok, _, err) = fd(&a);
        assert!(ok, "{keys}: {err}");
        let run: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
        assert!(run.to_string().contains(keys), "{keys} recorded: {run}");
        run["gflops_per_image"]["value"].as_f64().unwrap()
    };
    let base = gflops("none");
    for keys in ["teacache:0.3", "fbcache:0.2", "tgate:3"] {
        let g = gflops(keys);
        assert!(g < base, "{keys}: {g} GFLOPs vs baseline {base}");
    }
    let o = d.path().join("nocfg");
    let (ok, _, err) = fd(&["sample", "--model", &model, "--keys", "tgate:3", "--out", o.to_str().unwrap()]);
    assert!(!ok && err.contains("--cfg > 1"), "{err}");
    assert!(!o.exists(), "nothing written on error");
}

/// `--format auto`, the default: the default model's shipped packages run where they can and
/// `fd info` says so; where one cannot (here: a copy whose manifest says another torch release
/// compiled it), TorchScript runs, `fd info` and `fd sample` say why, and the run records
/// TorchScript. `fd bench` refuses to time one plan twice under the AOTInductor default.
#[test]
fn format_auto_runs_the_shipped_packages_or_says_why_not() {
    let model = common::repo_path("models/fmnist");
    let here = fd_model::aoti::cpu_capability();
    if !fd_model::aoti::cpu_compatible("AVX2", &here) {
        eprintln!("skipped: this CPU runs {here} kernels, the shipped packages need AVX2");
        return;
    }
    let (ok, out, err) = fd(&["info", &model]);
    assert!(ok, "{err}");
    assert!(out.contains("format       AOTInductor runs (--format auto"), "{out}");
    assert!(out.contains("(3 of the") && out.contains("AVX2 kernels"), "{out}");
    let (ok, out, _) = fd(&["info", &model, "--format", "torchscript"]);
    assert!(ok && out.contains("format       TorchScript runs (--format torchscript)"), "{out}");

    let d = tempfile::tempdir().unwrap();
    let edited = d.path().join("model");
    common::copy_dir(std::path::Path::new(&model), &edited);
    let m = edited.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    v["graphs"]["decoder"]["packages"][0]["torch"] = "2.99.0+cpu".into();
    std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let e = edited.to_str().unwrap();
    let (ok, out, err) = fd(&["info", e]);
    assert!(ok, "{err}");
    assert!(out.contains("TorchScript runs: the AOTInductor package of `decoder` (compiled by torch 2.99.0"), "{out}");
    let run = |dir: &str, o: &std::path::Path| {
        let a = ["sample", "--model", dir, "--steps", "4", "--cfg", "3", "--n", "2", "--out", o.to_str().unwrap()];
        let (ok, _, err) = fd(&a);
        assert!(ok, "{err}");
        let run: serde_json::Value = serde_json::from_slice(&std::fs::read(o.join("run.json")).unwrap()).unwrap();
        (run, err)
    };
    let (r, err) = run(e, &d.path().join("ts"));
    assert!(err.contains("note: TorchScript runs: the AOTInductor package of `decoder`"), "{err}");
    assert!(r["model"].get("format").is_none(), "TorchScript recorded: {}", r["model"]);
    let (r, err) = run(&model, &d.path().join("aoti"));
    assert!(!err.contains("TorchScript runs"), "{err}");
    assert_eq!(r["model"]["format"], "aoti", "{}", r["model"]);
    // a run made on TorchScript (the committed results, runs made before the default changed) is
    // resumed on TorchScript: `--resume` under `auto` says how
    let o = d.path().join("resume");
    let a = ["sample", "--model", &model, "--steps", "4", "--cfg", "3", "--n", "2", "--out", o.to_str().unwrap()];
    let (ok, _, err) = fd(&[&a[..], &["--format", "torchscript"]].concat());
    assert!(ok, "{err}");
    let (ok, _, err) = fd(&[&a[..], &["--resume"]].concat());
    assert!(!ok && err.contains("it ran on torchscript: resume with --format torchscript"), "{err}");
    let (ok, _, err) = fd(&[&a[..], &["--resume", "--format", "torchscript"]].concat());
    assert!(ok, "{err}");
    // a plan whose own graph has no package: the run says which graphs ran in which format
    let o = d.path().join("teacache");
    let a = ["sample", "--model", &model, "--steps", "4", "--cfg", "3", "--n", "2", "--keys", "teacache:0.3"];
    let (ok, _, err) = fd(&[&a[..], &["--out", o.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(err.contains("`teacache_probe` on TorchScript: the timings mix graph formats"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(o.join("run.json")).unwrap()).unwrap();
    let mix = r["mixed_formats"].as_str().unwrap();
    assert!(mix.contains("`encoder`") && mix.contains("`teacache_probe` on TorchScript"), "{mix}");
    let (aoti_run, cmp) = (d.path().join("aoti"), d.path().join("cmp"));
    let (ok, _, err) =
        fd(&["compare", "--out", cmp.to_str().unwrap(), aoti_run.to_str().unwrap(), o.to_str().unwrap()]);
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(cmp.join("compare.md")).unwrap();
    assert!(md.contains("**Mixed graph formats**: `teacache:0.3`: "), "{md}");
    let b = d.path().join("bench2");
    let a = ["bench", "--model", &model, "--steps", "4", "--n", "1", "--repeats", "1", "--plans", "none,teacache:0.3"];
    let (ok, _, err) = fd(&[&a[..], &["--out", b.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(b.join("bench.md")).unwrap();
    assert!(md.contains("| `teacache:0.3#aoti` (mixed formats) |") && !md.contains("`none#aoti` (mixed"), "{md}");
    let b = d.path().join("bench");
    let (ok, _, err) = fd(&[
        "bench",
        "--model",
        &model,
        "--steps",
        "2",
        "--n",
        "1",
        "--plans",
        "none,none#aoti",
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("`none#aoti` is timed twice"), "{err}");
    assert!(!b.exists(), "nothing written on error");
}
