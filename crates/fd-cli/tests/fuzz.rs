//! Fuzz-style robustness of the CLI: generated bad flag values, broken manifests and damaged run
//! folders thrown at `fd` with a fixed seed and a bounded count (`FD_FUZZ_N`, default 40;
//! `just fuzz-cli` runs more, `FD_FUZZ_SEED` picks another sequence). Every command must end
//! without a panic; a command built with an invalid value must fail with an `error:` message; a
//! finished run folder, a user's folder and a file behind a symlinked lock are never changed by a
//! command that fails, and a refused experiment leaves no folder. The cases: bad flag values, broken
//! manifests, damaged run folders, hostile folder states (a foreign `config.json`, a symlinked
//! `.fd-lock`, a merge into its own input), bad experiment configs (labels, names, sizes) and plans
//! generated from the method table (`fd_sched::methods::METHODS`: each method's grammar with
//! invalid parameters and modifiers).

mod common;

use std::path::{Path, PathBuf};

use common::{copy_dir, repo_path, snapshot};

/// splitmix64: a fixed, documented sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

/// Flags of `fd sample` with values that are always invalid for the tiny model at 6 steps.
const BAD_SAMPLE_FLAGS: &[(&str, &[&str])] = &[
    ("--steps", &["0", "-1", "3.5", "abc", "", "1001", "18446744073709551616"]),
    ("--n", &["0", "-1", "abc", "18446744073709551615", "1e3"]),
    ("--batch", &["0", "-5", "x", "18446744073709551615"]),
    ("--cfg", &["0.5", "-1", "NaN", "inf", "1e309", "abc", ""]),
    ("--eta", &["2", "-0.1", "NaN"]),
    (
        "--keys",
        &[
            "50lx",
            "uniform:0",
            "0,0",
            "1,2",
            "deepcache:0",
            "deepcache:2:9",
            "decoder-prop:",
            "auto:0",
            "auto:threshold=x",
            "/nonexistent/plan.json",
            "0,99",
            "",
        ],
    ),
    ("--inject", &["x", "0.1@2", "NaN@0.5", "0.003@0.5:sideways", "@"]),
    ("--scheduler", &["heun", "", "DDIM"]),
    ("--shard", &["1/0", "5/3", "a/b", "-1/3", "3/3"]),
    ("--device", &["cuda:99", "tpu", "", "cuda:x"]),
    ("--classes", &["99", "delta", ",", ""]),
    ("--prompts", &["/nonexistent/prompts.txt"]),
    ("--max-decoder-batch", &["-1", "x"]),
];

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A change to a manifest.
type Edit = fn(&mut serde_json::Value);

/// Copies of the tiny model with one manifest field broken.
fn bad_models(root: &Path) -> Vec<PathBuf> {
    let edits: &[(&str, Edit)] = &[
        ("no-schema", |v| {
            v.as_object_mut().unwrap().remove("schema_version");
        }),
        ("train0", |v| v["scheduler"]["num_train_timesteps"] = 0.into()),
        ("train-str", |v| v["scheduler"]["num_train_timesteps"] = "x".into()),
        ("beta", |v| v["scheduler"]["beta_start"] = 2.0.into()),
        ("null-id", |v| v["cond"]["null_id"] = 99.into()),
        ("dtype", |v| v["dtype"] = "int8".into()),
        ("size0", |v| v["sample_size"] = serde_json::json!([0, 0])),
        ("no-file", |v| v["graphs"]["decoder"]["file"] = "missing.pt".into()),
        ("sha", |v| v["graphs"]["encoder"]["sha256"] = "00".into()),
        ("method", |v| v["graphs"]["time_embed"]["method"] = "nope".into()),
        ("skips", |v| v["skip_shapes"] = serde_json::json!([[1, 2]])),
    ];
    edits
        .iter()
        .map(|(name, f)| {
            let dir = root.join(format!("model-{name}"));
            copy_dir(Path::new(&repo_path("crates/fd-model/tests/fixtures/tiny")), &dir);
            let m = dir.join("manifest.json");
            let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
            f(&mut v);
            std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
            dir
        })
        .collect()
}

/// Copies of a finished run with one record or file damaged.
fn bad_folders(root: &Path, run: &Path) -> Vec<PathBuf> {
    let damage: &[(&str, &str, &[u8])] = &[
        ("run-trunc", "run.json", b"{\"n\": 2"),
        ("run-type", "run.json", b"{\"n_folder\": \"two\"}"),
        ("config-garbage", "config.json", b"\x00\x01garbage"),
        ("part-garbage", "parts/000000-000002.json", b"[]"),
        ("images-garbage", "parts/000000-000002.safetensors", b"not safetensors"),
        ("samples-garbage", "samples.safetensors", b"x"),
    ];
    damage
        .iter()
        .map(|(name, file, bytes)| {
            let dir = root.join(format!("folder-{name}"));
            copy_dir(run, &dir);
            std::fs::write(dir.join(file), bytes).unwrap();
            dir
        })
        .collect()
}

/// Invalid plans generated from the method table: each method's name with parameters no method
/// accepts (not a number, NaN, inf, negative, empty, too many), and encoder propagation's
/// modifiers (from its syntax, `KEYS[+forecast:K|+partial:ID]`) with the same values, doubled or
/// unknown.
fn bad_plans() -> Vec<String> {
    const BAD: [&str; 7] = ["x", "NaN", "inf", "-1", "", "1e309", "1:1:1:1:1:1"];
    let mut out = Vec::new();
    for m in fd_sched::methods::METHODS.iter() {
        if m.name == "keys" {
            let mods = m.syntax.split_once('[').map_or("", |(_, r)| r.trim_end_matches(']'));
            for modifier in mods.split('|') {
                let name = modifier.split([':', '[']).next().unwrap();
                out.extend(BAD.iter().map(|b| format!("uniform:2{name}:{b}")));
                out.push(format!("uniform:2{name}:1{name}:1"));
            }
            out.push("uniform:2+unknown:1".into());
            continue;
        }
        out.extend(BAD.iter().map(|b| format!("{}:{b}", m.name)));
        out.push(format!("{}+partial:0", m.syntax.split(':').next().unwrap()));
    }
    out
}

/// A change to an experiment config.
type ConfigEdit = dyn Fn(&mut serde_json::Value);

/// Experiment configs with one invalid field each (the rest of the config is valid: checked).
fn bad_experiments(root: &Path, tiny: &str) -> Vec<PathBuf> {
    let base = serde_json::json!({
        "name": "fuzz", "model": tiny, "n": 4, "batch": 2, "guidance": 2.0,
        "rows": [{"label": "base", "keys": "none", "steps": 6}, {"label": "ours", "keys": "uniform:2", "steps": 6}]
    });
    let good = root.join("experiment-good.json");
    std::fs::write(&good, serde_json::to_vec_pretty(&base).unwrap()).unwrap();
    fd_run::experiment::ExperimentConfig::load(&good).unwrap_or_else(|e| panic!("the fuzz base config: {e}"));
    let u64max = serde_json::json!(u64::MAX);
    let edits: Vec<(&str, Box<ConfigEdit>)> = vec![
        ("name-dotdot", Box::new(|v| v["name"] = "..".into())),
        ("name-abs", Box::new(|v| v["name"] = "/tmp/fd-fuzz-abs".into())),
        ("name-sep", Box::new(|v| v["name"] = "a/b".into())),
        ("name-empty", Box::new(|v| v["name"] = "".into())),
        ("label-dotdot", Box::new(|v| v["rows"][1]["label"] = "..".into())),
        ("label-empty", Box::new(|v| v["rows"][1]["label"] = "".into())),
        ("label-twice", Box::new(|v| v["rows"][1]["label"] = "base".into())),
        ("n-huge", Box::new(move |v| v["n"] = u64max.clone())),
        ("n-zero", Box::new(|v| v["n"] = 0.into())),
        ("n-string", Box::new(|v| v["n"] = "four".into())),
        ("batch-zero", Box::new(|v| v["batch"] = 0.into())),
        ("seed-overflow", Box::new(|v| v["seed"] = serde_json::json!(u64::MAX - 1))),
        ("calibration-huge", Box::new(|v| v["calibration_n"] = serde_json::json!(u64::MAX))),
        ("keys-bad", Box::new(|v| v["rows"][1]["keys"] = "tgate:0".into())),
        ("sampler-bad", Box::new(|v| v["rows"][1]["sampler"] = "heun".into())),
        ("reference-bad", Box::new(|v| v["reference"] = "nope".into())),
        ("guidance-nan", Box::new(|v| v["guidance"] = "NaN".into())),
        ("rows-empty", Box::new(|v| v["rows"] = serde_json::json!([]))),
    ];
    edits
        .iter()
        .map(|(name, f)| {
            let mut v = base.clone();
            f(&mut v);
            let p = root.join(format!("experiment-{name}.json"));
            std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
            p
        })
        .collect()
}

#[test]
fn generated_bad_input_never_panics_and_never_touches_finished_outputs() {
    let n: usize = std::env::var("FD_FUZZ_N").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let seed: u64 = std::env::var("FD_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(2026);
    let mut rng = Rng(seed);
    let d = tempfile::tempdir().unwrap();
    let tiny = repo_path("crates/fd-model/tests/fixtures/tiny");
    let finished = d.path().join("finished");
    let base = ["--model", &tiny, "--steps", "6", "--n", "2", "--batch", "2"];
    let (ok, _, err) = common::fd(&[&["sample"][..], &base[..], &["--out", &s(&finished)]].concat());
    assert!(ok, "{err}");
    let npz = d.path().join("ref.npz");
    std::fs::write(&npz, b"not an npz").unwrap();
    let models = bad_models(d.path());
    let folders = bad_folders(d.path(), &finished);
    let plans = bad_plans();
    let experiments = bad_experiments(d.path(), &tiny);
    // hostile folder states: a user's folder holding a foreign config.json, a copy of the finished
    // run whose lock file is a symlink to a user's file
    let user = d.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("config.json"), br#"{"_class_name": "UNet2DModel"}"#).unwrap();
    std::fs::write(user.join("000007.png"), b"my image").unwrap();
    let (victim, linked) = (d.path().join("victim.txt"), d.path().join("linked"));
    std::fs::write(&victim, b"precious").unwrap();
    copy_dir(&finished, &linked);
    let _ = std::fs::remove_file(linked.join(".fd-lock"));
    std::os::unix::fs::symlink(&victim, linked.join(".fd-lock")).unwrap();
    let user_before = snapshot(&user);
    let before = snapshot(&finished);
    for case in 0..n {
        let fresh = s(&d.path().join(format!("out{case}")));
        let fin = s(&finished);
        // (arguments, must fail)
        let (args, must_fail): (Vec<String>, bool) = match rng.next() % 8 {
            // sample with one or two invalid flags, into a fresh folder or onto the finished run
            0 | 1 => {
                let mut a: Vec<String> = ["sample"].iter().chain(&base).map(|x| x.to_string()).collect();
                for _ in 0..=(rng.next() % 2) {
                    let (flag, values) = rng.pick(BAD_SAMPLE_FLAGS);
                    a.extend([flag.to_string(), rng.pick(values).to_string()]);
                }
                let out = if rng.next().is_multiple_of(2) { fresh.clone() } else { fin.clone() };
                a.extend(["--out".into(), out]);
                if rng.next().is_multiple_of(2) {
                    a.push(rng.pick(&["--resume", "--overwrite"]).to_string());
                }
                (a, true)
            }
            // a broken model
            2 => {
                let m = s(rng.pick(&models[..]).as_path());
                // (`fd info` only loads: a broken graph method shows when the graph is called)
                let cmd = ["sample", "--model", &m, "--steps", "6", "--n", "2", "--out", &fresh];
                (cmd.iter().map(|x| x.to_string()).collect(), true)
            }
            // metrics and merge of damaged folders (a resume may legitimately repair them)
            3 => {
                let f = s(rng.pick(&folders[..]).as_path());
                // (must fail?) metrics of the finished run with a bad reference / judge must fail;
                // a damaged folder may still be merged or evaluated when the damage is in a file
                // fd does not trust (samples.safetensors): no panic, and an error if it fails
                let npz = npz.to_str().unwrap();
                let cmds: [(Vec<&str>, bool); 5] = [
                    (vec!["eval", "fid", "--samples", &f, "--ref", "/nonexistent/ref.npz"], true),
                    (vec!["eval", "consistency", "--samples", &f], false),
                    (vec!["merge", "--out", &fresh, &f], false),
                    (vec!["eval", "fid", "--samples", &fin, "--ref", npz], true),
                    (vec!["eval", "consistency", "--samples", &fin, "--classifier", &tiny], true),
                ];
                let (c, must) = rng.pick(&cmds);
                (c.iter().map(|x| x.to_string()).collect(), *must)
            }
            // a hostile folder state: every command must be refused
            5 => {
                let (u, l) = (s(&user), s(&linked));
                let cmds: [Vec<&str>; 7] = [
                    vec!["--out", &u],
                    vec!["--out", &u, "--resume"],
                    vec!["--out", &u, "--overwrite"],
                    vec!["--out", &l, "--overwrite"],
                    vec!["merge", "--overwrite", "--out", &fin, &fin],
                    vec!["merge", "--overwrite", "--out", &u, &fin],
                    vec!["merge", "--overwrite", "--out", &l, &fin, &l],
                ];
                let c = rng.pick(&cmds);
                let a = if c[0] == "merge" { c.clone() } else { [&["sample"][..], &base[..], &c[..]].concat() };
                (a.iter().map(|x| x.to_string()).collect(), true)
            }
            // an experiment config with one invalid field
            6 => {
                let cfg = s(rng.pick(&experiments[..]).as_path());
                let (res, work) = (s(&d.path().join(format!("res{case}"))), s(&d.path().join(format!("work{case}"))));
                (["experiment", &cfg, "--out", &res, "--work", &work].iter().map(|x| x.to_string()).collect(), true)
            }
            // a plan generated from the method table with invalid parameters
            7 => {
                let plan = rng.pick(&plans).clone();
                let a = [&["sample"][..], &base[..], &["--keys", &plan, "--out", &fresh]].concat();
                (a.iter().map(|x| x.to_string()).collect(), true)
            }
            // resume of a damaged folder: may succeed (parts are recomputed), must not panic
            _ => {
                let f = s(rng.pick(&folders[..]).as_path());
                let a = [&["sample"][..], &base[..], &["--out", &f, "--resume"]].concat();
                (a.iter().map(|x| x.to_string()).collect(), false)
            }
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fd")).args(&argv).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(code.is_some() && code != Some(101) && !err.contains("panicked"), "case {case} {argv:?}: {err}");
        if must_fail {
            assert!(!out.status.success(), "case {case} {argv:?} succeeded");
        }
        if !out.status.success() {
            assert!(err.contains("error:"), "case {case} {argv:?}: no error message: {err}");
        }
        assert!(snapshot(&finished) == before, "case {case} {argv:?} changed the finished run");
        assert!(snapshot(&user) == user_before, "case {case} {argv:?} changed the user's folder");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "case {case} {argv:?} wrote through the symlink");
        if must_fail {
            for made in [format!("out{case}"), format!("res{case}"), format!("work{case}")] {
                assert!(!d.path().join(&made).exists(), "case {case} {argv:?} failed but wrote {made}");
            }
        }
    }
}
