//! Fuzz-style robustness of the CLI: generated bad flag values, broken manifests and damaged run
//! folders thrown at `fd` with a fixed seed and a bounded count (`FD_FUZZ_N`, default 40;
//! `just fuzz-cli` runs more, `FD_FUZZ_SEED` picks another sequence). Every command must end
//! without a panic; a command built with an invalid value must fail with an `error:` message; a
//! finished run folder is never changed by a command that fails.

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
    let before = snapshot(&finished);
    for case in 0..n {
        let fresh = s(&d.path().join(format!("out{case}")));
        let fin = s(&finished);
        // (arguments, must fail)
        let (args, must_fail): (Vec<String>, bool) = match rng.next() % 5 {
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
    }
}
