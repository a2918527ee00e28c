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
    assert!(e.contains("differs in: exec, plan") || e.contains("differs in: plan, exec"), "{e}");
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
    assert!(e.contains("config.json") && e.contains("field `sampler.steps`"), "{e}");

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
