//! The graph format is invisible above fd-model: the tiny fixture with AOTInductor packages for
//! its UNet graphs (`experiments/tests/make_aoti.py`, which `just test` runs first) gives the
//! same samples as its TorchScript graphs within 1e-5 for every kind of plan, the run records
//! which format ran, and a package compiled for another device, torch release or batch range is
//! refused naming the graph before anything is sampled.

use std::path::{Path, PathBuf};

use fd_model::{Denoiser, FormatChoice, GraphFormat};
use fd_run::spec::{cycle_conditions, ModelSpec, PlanOptions, SamplingOptions};
use fd_sched::decode::DecodeMode;

fn tiny_aoti() -> PathBuf {
    std::env::var_os("FD_TINY_AOTI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures/tiny-aoti"))
}

fn dit_aoti() -> PathBuf {
    std::env::var_os("FD_DIT_AOTI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures/dit-aoti"))
}

fn fmnist_aoti() -> PathBuf {
    std::env::var_os("FD_FMNIST_AOTI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures/fmnist-aoti"))
}

fn load(dir: &Path, format: GraphFormat) -> fd_run::Result<Denoiser> {
    ModelSpec::new(dir, "cpu", false)?.with_format(format).load()
}

fn samples(model: &Denoiser, keys: &str, decode: DecodeMode) -> tch::Tensor {
    let conds = cycle_conditions(model, None, None, 3).unwrap();
    let plan = PlanOptions { steps: 8, keys: keys.parse().unwrap(), decode, ..Default::default() };
    let spec = SamplingOptions { plan, guidance: 2.0, ..Default::default() }.resolve(model, &conds, 3).unwrap();
    spec.generate(model, &[11, 12, 13], &conds).unwrap().images
}

/// Each plan's samples on `ts` (TorchScript) and `ao` (packages) agree within `tol` x (1 + scale).
fn assert_same_samples(ts: &Denoiser, ao: &Denoiser, plans: &[(&str, DecodeMode)], tol: f64) {
    for &(keys, decode) in plans {
        let (a, b) = (samples(ts, keys, decode), samples(ao, keys, decode));
        let err = (&a - &b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]);
        assert!(err <= tol * (1.0 + scale), "{keys} ({decode:?}): max |TorchScript - AOTInductor| = {err:e}");
    }
}

#[test]
fn packages_give_the_torchscript_samples() {
    let dir = tiny_aoti();
    let (ts, ao) = (load(&dir, GraphFormat::Torchscript).unwrap(), load(&dir, GraphFormat::Aoti).unwrap());
    assert_eq!(ao.graphs_loaded.1, 4, "time_embed, encoder, decoder, decoder_analysis run from packages");
    assert_eq!(ts.graphs_loaded.1, 0);
    let plans = [
        ("none", DecodeMode::Parallel),
        ("uniform:3", DecodeMode::Parallel),
        ("uniform:3", DecodeMode::Sequential),
        ("0,1,5+forecast:1", DecodeMode::Parallel),
        ("deepcache:2:1", DecodeMode::Parallel),
        ("adaptive:0.05", DecodeMode::Parallel),
    ];
    assert_same_samples(&ts, &ao, &plans, 1e-5);
}

/// A DiT exported with `--format aoti` (packages compiled at export from the eager modules, the
/// step-cache and PAB graphs included): every DiT method's plans.
#[test]
fn dit_packages_give_the_torchscript_samples() {
    let dir = dit_aoti();
    let (ts, ao) = (load(&dir, GraphFormat::Torchscript).unwrap(), load(&dir, GraphFormat::Aoti).unwrap());
    assert_eq!(
        ao.graphs_loaded.1, 13,
        "the loop's, the analysis, the class-id, the VAE, the step-cache and the PAB graphs run from packages"
    );
    let plans = [
        ("none", DecodeMode::Parallel),
        ("uniform:3", DecodeMode::Parallel),
        ("uniform:3", DecodeMode::Sequential),
        ("0,1,5+forecast:1", DecodeMode::Parallel),
        ("teacache:0.1", DecodeMode::Auto),
        ("fbcache:0.1", DecodeMode::Auto),
        ("magcache:0.1", DecodeMode::Auto),
        ("taylorseer:2:2:2", DecodeMode::Auto),
        ("pab:2:0:1000", DecodeMode::Auto),
        ("fastercache:3", DecodeMode::Auto),
    ];
    assert_same_samples(&ts, &ao, &plans, 1e-5);
}

/// The default model with every graph the converter compiles (`--graphs all`: the loop's, DeepCache's
/// cache_branch_id 0, TeaCache's probe, T-GATE's four): each peer method's plan gives the TorchScript
/// samples. A trained model's per-call differences (a few 1e-6, printed by convert_aoti.py) grow over the steps, hence 1e-4.
#[test]
fn default_model_method_graphs_give_the_torchscript_samples() {
    let dir = fmnist_aoti();
    let (ts, ao) = (load(&dir, GraphFormat::Torchscript).unwrap(), load(&dir, GraphFormat::Aoti).unwrap());
    assert_eq!(ao.graphs_loaded.1, 12, "4 loop + 3 DeepCache + 1 TeaCache + 4 T-GATE graphs from packages");
    let plans = ["50ls", "deepcache:3:0", "teacache:0.1", "fbcache:0.1", "tgate:5"].map(|k| (k, DecodeMode::Auto));
    assert_same_samples(&ts, &ao, &plans, 1e-4);
}

/// The default models ship packages of their loop graphs, compiled for any AVX2 x86-64 CPU
/// (`-march=x86-64-v3`; the DiT's from weights recovered from its frozen graphs, its weightless
/// time embedding left TorchScript): `auto`, fd's default, runs them on such a CPU and gives the
/// TorchScript samples within 1e-4 (the diffusers reference: crates/fd-sched/tests/default_model.rs).
#[test]
fn the_default_models_ship_packages_that_auto_runs() {
    for (name, want) in [("fmnist", &["decoder", "encoder", "time_embed"][..]), ("fmnist-dit", &["decoder", "encoder"])]
    {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name);
        let m = fd_model::Manifest::load(&dir).unwrap();
        let packaged: Vec<&str> =
            m.graphs.iter().filter(|(_, g)| !g.packages.is_empty()).map(|(k, _)| k.as_str()).collect();
        assert_eq!(packaged, want, "{name}");
        for p in m.graphs.values().flat_map(|g| &g.packages) {
            let isa = (p.cpu_capability.as_deref(), p.march.as_deref());
            assert_eq!(isa, (Some("AVX2"), Some("x86-64-v3")), "{name}: {}", p.file);
        }
        if !fd_model::aoti::cpu_compatible("AVX2", &fd_model::aoti::cpu_capability()) {
            eprintln!("skipped: this CPU runs {} kernels, the packages need AVX2", fd_model::aoti::cpu_capability());
            return;
        }
        let auto = ModelSpec::new(&dir, "cpu", false).unwrap().with_format(FormatChoice::Auto).load().unwrap();
        let got = (auto.format, auto.graphs_loaded.1, auto.format_note.as_deref());
        assert_eq!(got, (GraphFormat::Aoti, want.len(), None), "{name}");
        let ts = load(&dir, GraphFormat::Torchscript).unwrap();
        let plans = [("none", DecodeMode::Auto), ("50ls", DecodeMode::Parallel), ("uniform:2", DecodeMode::Sequential)];
        assert_same_samples(&ts, &auto, &plans, 1e-4);
        // the identity of a TorchScript run does not change with the packages the model gained
        let id = |m: &Denoiser| serde_json::to_value(fd_run::records::ModelIdentity::of(m)).unwrap();
        let mut bare = m.clone();
        bare.graphs.values_mut().for_each(|g| g.packages.clear());
        assert_eq!(id(&ts)["manifest"], bare.identity(GraphFormat::Torchscript), "{name}");
        assert_ne!(id(&auto)["manifest"], id(&ts)["manifest"], "{name}");
    }
}

/// The rows of one experiment run one format: `auto` runs AOTInductor only when the experiment's
/// model and every row's own model ship packages that run here for every graph a sampling run can
/// call (the tiny DiT exported with `--format aoti` does; the default model, whose DeepCache,
/// TeaCache and T-GATE graphs are TorchScript, does not), whichever rows a process runs.
#[test]
fn an_experiment_runs_one_format_for_all_its_rows() {
    use fd_run::experiment::{resolve_format, ExperimentConfig};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (fmnist, tiny) = (root.join("models/fmnist"), root.join("crates/fd-model/tests/fixtures/tiny"));
    let cfg = |model: &Path, row_model: Option<&Path>| -> ExperimentConfig {
        let mut rows = vec![serde_json::json!({"label": "a", "keys": "none"})];
        if let Some(m) = row_model {
            rows.push(serde_json::json!({"label": "b", "keys": "50ls", "model": m}));
        }
        serde_json::from_value(serde_json::json!({"name": "x", "model": model, "rows": rows})).unwrap()
    };
    let cpu = tch::Device::Cpu;
    let auto = |c: &ExperimentConfig| resolve_format(c, FormatChoice::Auto, cpu).unwrap();
    assert_eq!(auto(&cfg(&dit_aoti(), None)), (GraphFormat::Aoti, None));
    let (f, why) = auto(&cfg(&dit_aoti(), Some(&tiny)));
    let why = why.unwrap_or_default();
    assert_eq!(f, GraphFormat::Torchscript);
    assert!(why.contains("TorchScript runs every row") && why.contains("fixtures/tiny"), "{why}");
    if fd_model::aoti::cpu_compatible("AVX2", &fd_model::aoti::cpu_capability()) {
        let (f, why) = auto(&cfg(&fmnist, None));
        let why = why.unwrap_or_default();
        assert_eq!(f, GraphFormat::Torchscript);
        assert!(why.contains("times its rows on one format") && why.contains("`teacache_probe`"), "{why}");
        assert!(!why.contains("decoder_analysis"), "drift's graphs are not a sampling run's: {why}");
    }
    let fixed = resolve_format(&cfg(&fmnist, Some(&tiny)), GraphFormat::Aoti.into(), cpu).unwrap();
    assert_eq!(fixed, (GraphFormat::Aoti, None), "a named format is taken as named");
}

#[test]
fn cpu_packages_run_on_the_same_or_a_wider_isa() {
    assert!(fd_model::aoti::cpu_compatible("AVX2", "AVX512"));
    assert!(fd_model::aoti::cpu_compatible("AVX512", "AVX512"));
    assert!(!fd_model::aoti::cpu_compatible("AVX512", "AVX2"));
    assert!(!fd_model::aoti::cpu_compatible("SVE256", "AVX512"));
    assert!(!fd_model::aoti::cpu_capability().is_empty());
}

#[test]
fn the_run_records_the_format_and_a_changed_format_is_another_run() {
    let dir = tiny_aoti();
    let ts = load(&dir, GraphFormat::Torchscript).unwrap();
    let ao = load(&dir, GraphFormat::Aoti).unwrap();
    let id = |m: &Denoiser| serde_json::to_value(fd_run::records::ModelIdentity::of(m)).unwrap();
    assert_eq!(id(&ao)["format"], "aoti");
    assert!(id(&ts).get("format").is_none(), "TorchScript identities stay as they were");
    assert_ne!(id(&ts), id(&ao));
}

fn copy_with(dir: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    let m = to.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A change to a manifest.
type Edit = fn(&mut serde_json::Value);

#[test]
fn foreign_packages_are_refused_naming_the_graph() {
    let d = tempfile::tempdir().unwrap();
    let cases: [(&str, Edit, &str); 4] = [
        ("device", |v| v["graphs"]["encoder"]["packages"][0]["device"] = "cuda".into(), "compiled for cuda"),
        ("isa", |v| v["graphs"]["encoder"]["packages"][0]["cpu_capability"] = "SVE256".into(), "with SVE256 kernels"),
        ("torch", |v| v["graphs"]["encoder"]["packages"][0]["torch"] = "2.9.1+cpu".into(), "compiled by torch 2.9.1"),
        ("sha", |v| v["graphs"]["encoder"]["packages"][0]["sha256"] = "00".into(), "SHA-256 mismatch"),
    ];
    for (name, edit, want) in cases {
        let to = d.path().join(name);
        copy_with(&tiny_aoti(), &to, edit);
        let e = load(&to, GraphFormat::Aoti).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("encoder"), "{name}: {e}");
        // TorchScript does not read the packages
        load(&to, GraphFormat::Torchscript).unwrap();
        // `auto` runs TorchScript where a package cannot run here, saying which and why; an
        // altered package file is an error whatever the format
        let auto = ModelSpec::new(&to, "cpu", false).unwrap().with_format(FormatChoice::Auto).load();
        if name == "sha" {
            let e = auto.unwrap_err().to_string();
            assert!(e.contains("SHA-256 mismatch"), "{name}: {e}");
        } else {
            let m = auto.unwrap();
            let why = m.format_note.clone().unwrap_or_default();
            assert_eq!(m.format, GraphFormat::Torchscript, "{name}");
            assert_eq!(m.graphs_loaded.1, 0, "{name}: no graph runs from a package");
            assert!(
                why.contains("TorchScript runs") && why.contains("`encoder`") && why.contains(want),
                "{name}: {why}"
            );
        }
    }
    // the same folder untouched: `auto` runs the packages, silently
    let m = ModelSpec::new(&tiny_aoti(), "cpu", false).unwrap().with_format(FormatChoice::Auto).load().unwrap();
    assert_eq!((m.format, m.format_note.is_none()), (GraphFormat::Aoti, true));
    // a batch range the run exceeds: an error naming the graph at the first call
    let to = d.path().join("range");
    copy_with(&tiny_aoti(), &to, |v| {
        let p = &mut v["graphs"]["decoder"]["packages"];
        p.as_array_mut().unwrap().truncate(1);
        p[0]["batch"] = serde_json::json!([2, 2]);
    });
    let m = load(&to, GraphFormat::Aoti).unwrap();
    let conds = cycle_conditions(&m, None, None, 3).unwrap();
    let plan = PlanOptions { steps: 4, keys: "none".parse().unwrap(), ..Default::default() };
    let spec = SamplingOptions { plan, guidance: 2.0, ..Default::default() }.resolve(&m, &conds, 3).unwrap();
    let e = spec.generate(&m, &[1, 2, 3], &conds).unwrap_err().to_string();
    assert!(e.contains("graph `decoder`") && e.contains("6 batch rows") && e.contains("2..=2"), "{e}");
    // a model without packages
    let e = load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fd-model/tests/fixtures/tiny"), GraphFormat::Aoti)
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no AOTInductor packages") && e.contains("convert_aoti.py"), "{e}");
}
