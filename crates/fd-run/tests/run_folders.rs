//! The run-folder contract through fd-run as a library (the CLI tests drive the same code through
//! the binary): an interrupted run resumes byte-identical, shards merge to the single run, and a
//! malformed record is an error naming the file and the field.

use std::path::{Path, PathBuf};

use fd_model::{Condition, Denoiser};
use fd_run::runner::{Existing, SampleRun, Shard};
use fd_run::spec::{cycle_conditions, ModelSpec, PlanOptions, SamplingOptions};
use fd_sched::decode::DecodeMode;
use fd_sched::SamplingSpec;

fn load(dir: &str) -> Denoiser {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    ModelSpec::new(&dir, "cpu", false).unwrap().load().unwrap()
}

/// The tiny fixture (4 latent channels, no PNGs).
fn tiny() -> Denoiser {
    load("../fd-model/tests/fixtures/tiny")
}

/// The committed default model (1-channel 28 px images: PNGs are written).
fn fmnist() -> Denoiser {
    load("../../models/fmnist")
}

fn spec(model: &Denoiser, conds: &[Condition]) -> SamplingSpec {
    let plan = PlanOptions {
        steps: 8,
        keys: "uniform:3".parse().unwrap(),
        inject: Some("0.003@0.5".into()),
        ..Default::default()
    };
    let opts = SamplingOptions { plan, guidance: 2.0, ..Default::default() };
    opts.resolve(model, conds, 2).unwrap()
}

/// The run every test makes: seed 3, batches of 2.
fn sample_run<'a>(
    model: &'a Denoiser,
    spec: &'a SamplingSpec,
    conds: &'a [Condition],
    out: &'a Path,
    shard: Shard,
    existing: Existing,
) -> SampleRun<'a> {
    SampleRun { model, spec, conds, seed: 3, batch: 2, shard, out, existing }
}

fn run_to(model: &Denoiser, spec: &SamplingSpec, conds: &[Condition], out: &Path, shard: Shard, existing: Existing) {
    sample_run(model, spec, conds, out, shard, existing).run_and_record(&indicatif::ProgressBar::hidden()).unwrap();
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn interrupted_run_resumes_byte_identical() {
    let model = fmnist();
    let conds = cycle_conditions(&model, None, None, 7).unwrap();
    let spec = spec(&model, &conds);
    let d = tempfile::tempdir().unwrap();
    let (full, cut) = (d.path().join("full"), d.path().join("cut"));
    run_to(&model, &spec, &conds, &full, Shard::default(), Existing::Fail);
    run_to(&model, &spec, &conds, &cut, Shard::default(), Existing::Fail);
    // what a kill leaves: no run.json, the last part's record and images gone, one part's images
    // replaced (its record no longer matches)
    std::fs::remove_file(cut.join("run.json")).unwrap();
    std::fs::remove_file(cut.join("parts/000006-000007.json")).unwrap();
    std::fs::remove_file(cut.join("parts/000006-000007.safetensors")).unwrap();
    std::fs::copy(cut.join("parts/000000-000002.safetensors"), cut.join("parts/000002-000004.safetensors")).unwrap();
    let run = sample_run(&model, &spec, &conds, &cut, Shard::default(), Existing::Resume);
    let (s, rec) = run.run_and_record(&indicatif::ProgressBar::hidden()).unwrap();
    assert_eq!((s.parts_resumed, s.parts_computed), (2, 2));
    assert_eq!(bytes(&full.join("samples.safetensors")), bytes(&cut.join("samples.safetensors")));
    for i in 0..7 {
        let png = format!("{i:06}.png");
        assert_eq!(bytes(&full.join(&png)), bytes(&cut.join(&png)), "{png}");
    }
    // run.json reads back as the record that was written
    let back = fd_run::records::RunRecord::load(&cut).unwrap();
    assert_eq!(back.config, rec.config);
    assert_eq!(back.indices, (0..7).collect::<Vec<_>>());
    // resuming under another configuration is refused, naming what differs
    let plan = PlanOptions { steps: 8, ..Default::default() };
    let other = SamplingOptions { plan, guidance: 2.0, ..Default::default() }.resolve(&model, &conds, 2).unwrap();
    let run = SampleRun { spec: &other, ..run };
    let e = run.run(&indicatif::ProgressBar::hidden()).unwrap_err().to_string();
    assert!(e.contains("differs in: exec.injection") && e.contains("plan.keys"), "{e}");
}

#[test]
fn three_shards_merge_to_the_single_run() {
    let model = tiny();
    let conds = cycle_conditions(&model, None, None, 7).unwrap();
    let spec = spec(&model, &conds);
    let d = tempfile::tempdir().unwrap();
    let one = d.path().join("one");
    run_to(&model, &spec, &conds, &one, Shard::default(), Existing::Fail);
    let shards: Vec<PathBuf> = (0..3).map(|i| d.path().join(format!("shard{i}"))).collect();
    for (i, s) in shards.iter().enumerate() {
        run_to(&model, &spec, &conds, s, Shard { index: i, count: 3 }, Existing::Fail);
    }
    let merged = d.path().join("merged");
    let e = fd_run::merge::merge(&shards[..2], &merged, Existing::Fail).unwrap_err().to_string();
    assert!(e.contains("shards 2/3 are missing"), "{e}");
    let rec = fd_run::merge::merge(&shards, &merged, Existing::Fail).unwrap();
    assert_eq!(rec.n_folder, 7);
    assert_eq!(bytes(&one.join("samples.safetensors")), bytes(&merged.join("samples.safetensors")));
    let back = fd_run::records::RunRecord::load(&merged).unwrap();
    assert_eq!(back.config.conditions, conds);
    assert_eq!(back.merged_from.as_deref(), Some(&shards[..]));
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&bytes(path)).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn malformed_records_are_errors_naming_file_and_field() {
    let model = tiny();
    let conds = cycle_conditions(&model, None, None, 4).unwrap();
    let spec = spec(&model, &conds);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    run_to(&model, &spec, &conds, &out, Shard::default(), Existing::Fail);

    // run.json: a mistyped field, then a missing one
    edit_json(&out.join("run.json"), |v| v["n_folder"] = "four".into());
    let e = fd_run::evaluate::finished_run(&out).unwrap_err().to_string();
    assert!(e.contains("run.json") && e.contains("field `n_folder`"), "{e}");
    edit_json(&out.join("run.json"), |v| {
        v.as_object_mut().unwrap().remove("n_folder");
    });
    let e = fd_run::evaluate::finished_run(&out).unwrap_err().to_string();
    assert!(e.contains("run.json") && e.contains("missing field `n_folder`"), "{e}");

    // config.json on resume: nested field mistyped
    edit_json(&out.join("config.json"), |v| v["sampler"]["steps"] = serde_json::json!(-1));
    let run = sample_run(&model, &spec, &conds, &out, Shard::default(), Existing::Resume);
    let e = run.run(&indicatif::ProgressBar::hidden()).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("not an fd run record") && e.contains("field `sampler.steps`"),
        "{e}"
    );

    // a part record in a merge
    let shard = d.path().join("shard");
    run_to(&model, &spec, &conds, &shard, Shard::default(), Existing::Fail);
    edit_json(&shard.join("parts/000000-000002.json"), |v| v["seeds"] = serde_json::json!(["x"]));
    let e = fd_run::merge::merge(std::slice::from_ref(&shard), &d.path().join("m"), Existing::Fail)
        .unwrap_err()
        .to_string();
    assert!(e.contains("000000-000002.json") && e.contains("field `seeds[0]`"), "{e}");

    // a plan file: malformed, and made for another step count
    let plan = d.path().join("plan.json");
    std::fs::write(&plan, r#"{"name": "x", "keys": [0, 2], "steps": "three"}"#).unwrap();
    let opts = SamplingOptions {
        plan: PlanOptions { steps: 8, keys: plan.display().to_string().parse().unwrap(), ..Default::default() },
        ..Default::default()
    };
    let e = opts.resolve(&model, &conds, 2).unwrap_err().to_string();
    assert!(e.contains("plan.json") && e.contains("field `steps`"), "{e}");
    std::fs::write(&plan, r#"{"name": "x", "keys": [0, 2], "steps": 3}"#).unwrap();
    let e = opts.resolve(&model, &conds, 2).unwrap_err().to_string();
    assert!(e.contains("plan file made for 3 steps, used with 8"), "{e}");
}

#[test]
fn resume_under_another_decoding_says_how_the_folder_decoded() {
    let model = tiny();
    let conds = cycle_conditions(&model, None, None, 4).unwrap();
    let with = |decode: DecodeMode, cap: usize| {
        let plan = PlanOptions {
            steps: 8,
            keys: "uniform:3".parse().unwrap(),
            decode,
            max_decoder_batch: cap,
            ..Default::default()
        };
        SamplingOptions { plan, guidance: 2.0, ..Default::default() }.resolve(&model, &conds, 2).unwrap()
    };
    let (par, seq) = (with(DecodeMode::Parallel, 8), with(DecodeMode::Sequential, 0));
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    run_to(&model, &par, &conds, &out, Shard::default(), Existing::Fail);
    let e = sample_run(&model, &seq, &conds, &out, Shard::default(), Existing::Resume)
        .run(&indicatif::ProgressBar::hidden())
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs in: exec") && e.contains("--decode parallel --max-decoder-batch 8"), "{e}");
}

/// Leaf paths of a JSON value (object keys joined by `.`, array elements by `[i]`).
fn leaves(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                leaves(x, &if at.is_empty() { k.clone() } else { format!("{at}.{k}") }, out)
            }
        }
        serde_json::Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, &format!("{at}[{i}]"), out)
            }
        }
        _ => out.push(at.to_string()),
    }
}

/// The leaf at `path` of `v`, changed: a number + 1 (or x 1.5), a string suffixed, a bool
/// flipped, null / an empty array replaced.
fn change(v: &mut serde_json::Value, path: &str) {
    let mut cur = v;
    for part in path.split('.') {
        let (key, idx) = match part.split_once('[') {
            Some((k, rest)) => {
                (k, rest.split('[').map(|i| i.trim_end_matches(']').parse::<usize>().unwrap()).collect())
            }
            None => (part, vec![]),
        };
        cur = &mut cur[key];
        for i in idx {
            cur = &mut cur[i];
        }
    }
    *cur = match &*cur {
        serde_json::Value::Number(n) if n.is_u64() => (n.as_u64().unwrap() + 1).into(),
        serde_json::Value::Number(n) if n.is_i64() => (n.as_i64().unwrap() + 1).into(),
        serde_json::Value::Number(n) => (n.as_f64().unwrap() * 1.5 + 0.25).into(),
        serde_json::Value::String(s) => format!("{s}x").into(),
        serde_json::Value::Bool(b) => (!b).into(),
        _ => serde_json::json!(1),
    };
}

/// Identity is derived, not listed: every field of the manifest as fd reads it, changed in turn,
/// changes the run's identity, but for the explicit cosmetic list (which changes nothing) and,
/// for a TorchScript run, the AOTInductor packages (which do not run). A change the manifest
/// type cannot hold (an unknown enum name) is no model and is skipped.
#[test]
fn every_manifest_field_is_part_of_the_run_identity() {
    use fd_model::manifest::{Manifest, COSMETIC_FIELDS, COSMETIC_GRAPH_FIELDS};
    use fd_model::GraphFormat;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (mut checked, mut packaged) = (0, 0);
    for dir in ["models/fmnist", "models/fmnist-dit", "crates/fd-model/tests/fixtures/tiny"] {
        let base = Manifest::load(&root.join(dir)).unwrap();
        let value = serde_json::to_value(&base).unwrap();
        let mut paths = Vec::new();
        leaves(&value, "", &mut paths);
        for format in [GraphFormat::Torchscript, GraphFormat::Aoti] {
            let id = base.identity(format);
            for p in &paths {
                let mut v = value.clone();
                change(&mut v, p);
                let Ok(m) = serde_json::from_value::<Manifest>(v) else { continue };
                let top = p.split(['.', '[']).next().unwrap();
                let package = top == "graphs" && p.contains(".packages[");
                let cosmetic = COSMETIC_FIELDS.contains(&top)
                    || (top == "graphs" && COSMETIC_GRAPH_FIELDS.iter().any(|f| p.ends_with(&format!(".{f}"))))
                    || (package && format == GraphFormat::Torchscript);
                assert_eq!(
                    m.identity(format) == id,
                    cosmetic,
                    "{dir}: changing `{p}` under {format:?} (cosmetic: {cosmetic})"
                );
                checked += 1;
                packaged += usize::from(package);
            }
        }
    }
    assert!(checked > 300, "{checked} fields checked");
    assert!(packaged > 10, "the default model's package fields are checked ({packaged})");
}

/// The case of the report: a manifest's TeaCache coefficients edited between two parts of one
/// run. Resume and merge notice, naming the field.
#[test]
fn resume_and_merge_notice_a_changed_method_coefficient() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let d = tempfile::tempdir().unwrap();
    let edited = d.path().join("model");
    std::fs::create_dir_all(&edited).unwrap();
    for e in std::fs::read_dir(root.join("models/fmnist")).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), edited.join(e.file_name())).unwrap();
        }
    }
    edit_json(&edited.join("manifest.json"), |v| {
        let c = v["teacache"]["coefficients"][4].as_f64().unwrap();
        v["teacache"]["coefficients"][4] = (c * 1.01).into();
    });
    let (a, b) = (fmnist(), ModelSpec::new(&edited, "cpu", false).unwrap().load().unwrap());
    let conds = cycle_conditions(&a, None, None, 4).unwrap();
    let with = |m: &Denoiser| {
        let plan = PlanOptions { steps: 8, keys: "teacache:0.2".parse().unwrap(), ..Default::default() };
        SamplingOptions { plan, guidance: 2.0, ..Default::default() }.resolve(m, &conds, 2).unwrap()
    };
    let (sa, sb) = (with(&a), with(&b));
    let (s0, s1) = (d.path().join("s0"), d.path().join("s1"));
    run_to(&a, &sa, &conds, &s0, Shard { index: 0, count: 2 }, Existing::Fail);
    let e = sample_run(&b, &sb, &conds, &s0, Shard { index: 0, count: 2 }, Existing::Resume)
        .run(&indicatif::ProgressBar::hidden())
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs in: model.manifest.teacache.coefficients"), "{e}");
    run_to(&b, &sb, &conds, &s1, Shard { index: 1, count: 2 }, Existing::Fail);
    let e = fd_run::merge::merge(&[s0, s1], &d.path().join("m"), Existing::Fail).unwrap_err().to_string();
    assert!(e.contains("model.manifest.teacache.coefficients"), "{e}");
    assert!(!d.path().join("m").exists());
}
