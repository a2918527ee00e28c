//! The CLI on every model family's tiny random-init export (experiments/tests/make_families.py,
//! which `just test` runs first): SDXL and ControlNet runs end to end, and each bad input the
//! families add reported with what is missing, before any file is written.

mod common;

use common::{fd, fixture};

fn families() -> std::path::PathBuf {
    fixture("FD_FAMILIES", "families")
}

fn model(name: &str) -> String {
    families().join(name).join("model").display().to_string()
}

fn prompts(dir: &std::path::Path) -> String {
    let p = dir.join("prompts.txt");
    std::fs::write(&p, "a cat\na photograph of an astronaut riding a horse\n").unwrap();
    p.display().to_string()
}

#[test]
fn sdxl_samples_with_prompts_and_info_says_what_it_needs() {
    let d = tempfile::tempdir().unwrap();
    let (p, o) = (prompts(d.path()), d.path().join("o").display().to_string());
    let (ok, out, err) = fd(&["info", &model("sdxl")]);
    assert!(ok, "{err}");
    assert!(out.contains("family sdxl") && out.contains("2 tokenizer(s)") && out.contains("text_time"), "{out}");
    let args = ["sample", "--model", &model("sdxl"), "--scheduler", "euler", "--steps", "4", "--n", "2", "--cfg", "5"];
    let (ok, _, err) = fd(&[&args[..], &["--keys", "uniform:2", "--out", &o]].concat());
    assert!(!ok && err.contains("is text-conditioned: pass --prompts FILE"), "{err}");
    assert!(!std::path::Path::new(&o).exists(), "nothing written on error");
    let (ok, _, err) = fd(&[&args[..], &["--keys", "uniform:2", "--prompts", &p, "--out", &o]].concat());
    assert!(ok, "{err}");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("o/run.json")).unwrap()).unwrap();
    assert_eq!(run["conditions"][1], "a photograph of an astronaut riding a horse");
}

/// Without `--scheduler` a run uses the export's own scheduler (as its diffusers pipeline does:
/// Euler for SDXL, DDPM for IF), says so and records it; the same run with the flag named is
/// byte-identical.
#[test]
fn the_sampler_defaults_to_the_exports_own() {
    let d = tempfile::tempdir().unwrap();
    let p = prompts(d.path());
    for (family, name, class) in [("sdxl", "euler", "EulerDiscreteScheduler"), ("if", "ddpm", "DDPMScheduler")] {
        let run = |out: &str, extra: &[&str]| {
            let o = d.path().join(out).display().to_string();
            let args = ["sample", "--model", &model(family), "--steps", "3", "--n", "1", "--cfg", "2", "--prompts", &p];
            fd(&[&args[..], extra, &["--out", &o]].concat())
        };
        let (ok, _, err) = run(&format!("{family}-default"), &[]);
        assert!(ok, "{err}");
        assert!(err.contains(&format!("note: sampler {name}: the export's {class}")), "{family}: {err}");
        let (ok, _, err) = run(&format!("{family}-named"), &["--scheduler", name]);
        assert!(ok && !err.contains("note: sampler"), "{family}: {err}");
        let read = |out: &str, f: &str| std::fs::read(d.path().join(out).join(f)).unwrap();
        let rec: serde_json::Value = serde_json::from_slice(&read(&format!("{family}-default"), "run.json")).unwrap();
        assert_eq!(rec["sampler"]["name"], name, "{family}");
        assert_eq!(
            read(&format!("{family}-default"), "samples.safetensors"),
            read(&format!("{family}-named"), "samples.safetensors"),
            "{family}"
        );
    }
}

#[test]
fn controlnet_runs_need_their_condition_images() {
    let d = tempfile::tempdir().unwrap();
    let (p, o) = (prompts(d.path()), d.path().join("o").display().to_string());
    let control = families().join("controlnet/control.png").display().to_string();
    let cn = model("controlnet");
    let base = ["sample", "--model", &cn, "--steps", "4", "--n", "2", "--cfg", "3", "--prompts", &p, "--out", &o];
    let (ok, _, err) = fd(&base);
    assert!(!ok && err.contains("has a ControlNet: pass --control IMAGE_OR_DIR"), "{err}");
    let small = d.path().join("small.png");
    image::DynamicImage::new_rgb8(8, 8).save(&small).unwrap();
    let (ok, _, err) = fd(&[&base[..], &["--control", small.to_str().unwrap()]].concat());
    assert!(!ok && err.contains("small.png") && err.contains("size 8x8"), "{err}");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, _, err) = fd(&[&base[..], &["--control", empty.to_str().unwrap()]].concat());
    assert!(!ok && err.contains("no .png images"), "{err}");
    let (ok, _, err) = fd(&["sample", "--model", &model("sd2"), "--prompts", &p, "--control", &control, "--out", &o]);
    assert!(!ok && err.contains("has no ControlNet"), "{err}");
    assert!(!std::path::Path::new(&o).exists(), "nothing written on error");
    let (ok, _, err) =
        fd(&[&base[..], &["--keys", "uniform:2", "--control", &control, "--control-scale", "0.5"]].concat());
    assert!(ok, "{err}");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("o/run.json")).unwrap()).unwrap();
    let c = &run["conditions"][0];
    assert_eq!(c["prompt"], "a cat");
    assert_eq!(c["control"]["sha256"].as_str().unwrap().len(), 64, "{c}");
    let counts = serde_json::to_string(&run).unwrap();
    assert!(counts.contains("controlnet"), "the ControlNet's calls are counted: {counts}");
}

#[test]
fn a_prompt_model_without_its_text_encoder_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("sdxl");
    common::copy_dir(&families().join("sdxl/model"), &m);
    std::fs::remove_file(m.join("cond_encoder.pt")).unwrap();
    let (ok, _, err) = fd(&["info", m.to_str().unwrap(), "--format", "torchscript"]);
    assert!(!ok && err.contains("cond_encoder.pt: graph file missing") && err.contains("`cond_encoder`"), "{err}");
    // the fixture's text encoders also have AOTInductor packages, which `--format auto` runs: the
    // TorchScript file is not read then, the package must be there
    let (ok, _, err) = fd(&["info", m.to_str().unwrap()]);
    assert!(ok, "the package runs the text encoder: {err}");
    std::fs::remove_file(m.join("cond_encoder.pt2")).unwrap();
    let (ok, _, err) = fd(&["info", m.to_str().unwrap()]);
    assert!(!ok && err.contains("cond_encoder.pt2: graph file missing") && err.contains("`cond_encoder`"), "{err}");
    std::fs::remove_file(m.join("tokenizer_2.json")).unwrap();
    let (ok, _, err) = fd(&["info", m.to_str().unwrap()]);
    assert!(!ok && err.contains("tokenizer_2.json"), "{err}");
}

/// A DiT end to end: `fd info` names the kind and its split, key-step plans and `fd drift` run
/// (drift layers named by block), UNet-only plans are refused before anything is written.
#[test]
fn dit_runs_key_step_plans_and_refuses_unet_only_ones() {
    let d = tempfile::tempdir().unwrap();
    let dit = model("dit");
    let (ok, out, err) = fd(&["info", &dit]);
    assert!(ok, "{err}");
    assert!(
        out.contains("dit: encoder = patch embedding + blocks 0..2") && out.contains("block02 [16, 4, 4]"),
        "{out}"
    );
    let o = d.path().join("o").display().to_string();
    let base = ["sample", "--model", &dit, "--steps", "6", "--n", "2", "--cfg", "4", "--classes", "207,360"];
    let (ok, _, err) = fd(&[&base[..], &["--keys", "deepcache:2", "--out", &o]].concat());
    assert!(!ok && err.contains("is a dit model") && err.contains("DeepCache"), "{err}");
    let (ok, _, err) = fd(&[&base[..], &["--keys", "tgate:3", "--out", &o]].concat());
    assert!(!ok && err.contains("dit model") && err.contains("2-D UNet"), "{err}");
    let (ok, _, err) = fd(&[&base[..], &["--keys", "fbcache:0.1:residual", "--out", &o]].concat());
    assert!(!ok && err.contains("drop `:residual`"), "{err}");
    let (ok, _, err) = fd(&[&base[..], &["--keys", "50ls+partial:0", "--out", &o]].concat());
    assert!(!ok && err.contains("`+partial:0`") && err.contains("2-D UNet") && err.contains("dit model"), "{err}");
    assert!(!std::path::Path::new(&o).exists(), "nothing written on error");
    let (ok, _, err) = fd(&[&base[..], &["--keys", "0,1,3", "--out", &o]].concat());
    assert!(ok, "{err}");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("o/run.json")).unwrap()).unwrap();
    assert_eq!(run["counts"]["calls"]["encoder"], 3, "{run}");
    let tc = d.path().join("tc").display().to_string();
    let (ok, out, err) = fd(&[&base[..], &["--keys", "teacache:0.2", "--out", &tc]].concat());
    assert!(ok, "{err}");
    // the summary counts the DiT's computed blocks (not 0.0 UNet steps), as run.json does
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("tc/run.json")).unwrap()).unwrap();
    let computed = run["counts"]["rows"]["stepcache_rest"].as_u64().unwrap() as f64 / 4.0;
    assert!(computed > 0.0 && out.contains(&format!("{computed:.1} UNet steps per sample of 6")), "{out}");
    let dr = d.path().join("drift").display().to_string();
    let (ok, _, err) = fd(&["drift", "--model", &dit, "--steps", "6", "--n", "2", "--classes", "207", "--out", &dr]);
    assert!(ok, "{err}");
    let csv = std::fs::read_to_string(d.path().join("drift/drift.csv")).unwrap();
    assert!(csv.contains(",encoder,block02,") && csv.contains(",decoder,block03,"), "{csv}");
}

/// A text-to-video model: `--frames` is required and must equal the exported count; each video is
/// written as a film strip, one PNG per frame and a GIF.
#[test]
fn t2v_writes_frames_and_checks_the_frame_count() {
    let d = tempfile::tempdir().unwrap();
    let (p, o) = (prompts(d.path()), d.path().join("o").display().to_string());
    let t2v = model("t2v");
    let (ok, out, err) = fd(&["info", &t2v]);
    assert!(ok && out.contains("unet3d") && out.contains("3 frames per video"), "{out}{err}");
    let base = ["sample", "--model", &t2v, "--steps", "4", "--n", "2", "--cfg", "5", "--prompts", &p, "--out", &o];
    let (ok, _, err) = fd(&base);
    assert!(!ok && err.contains("is a video model (3 frames): pass --frames 3"), "{err}");
    let (ok, _, err) = fd(&[&base[..], &["--frames", "8"]].concat());
    assert!(!ok && err.contains("--frames 8") && err.contains("exported for 3 frames"), "{err}");
    assert!(!std::path::Path::new(&o).exists(), "nothing written on error");
    let (ok, _, err) = fd(&[&base[..], &["--frames", "3", "--keys", "0,2"]].concat());
    assert!(ok, "{err}");
    let strip = image::open(d.path().join("o/000001.png")).unwrap();
    assert_eq!((strip.width(), strip.height()), (3 * 16, 16), "3 frames of 16x16 side by side");
    let frame = image::open(d.path().join("o/000001_f02.png")).unwrap();
    assert_eq!((frame.width(), frame.height()), (16, 16));
    assert!(d.path().join("o/000000.gif").is_file());
    let sd2 = model("sd2");
    let o2 = format!("{o}2");
    let (ok, _, err) = fd(&["sample", "--model", &sd2, "--prompts", &p, "--frames", "3", "--out", &o2]);
    assert!(!ok && err.contains("is an image model"), "{err}");
}
