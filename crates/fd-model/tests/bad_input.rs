//! Bad input gets a clear error naming the file (or input) and what was expected; never a panic.

use std::path::{Path, PathBuf};

use fd_model::tch::{Kind, Tensor};
use fd_model::{Denoiser, LoadOptions};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// A writable copy of the tiny model.
fn copy_tiny() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(tiny()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn load_err(dir: &Path, verify: bool) -> String {
    let opts = LoadOptions { verify_hashes: verify, ..Default::default() };
    Denoiser::load(dir, &opts).expect_err("load should fail").to_string()
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn missing_folder() {
    let e = load_err(Path::new("/nonexistent/model"), true);
    assert!(e.contains("/nonexistent/model") && e.contains("model folder not found"), "{e}");
}

#[test]
fn missing_graph_file() {
    let d = copy_tiny();
    std::fs::remove_file(d.path().join("unet.pt")).unwrap();
    let e = load_err(d.path(), true);
    assert!(e.contains("unet.pt") && e.contains("graph file missing"), "{e}");
    let d = copy_tiny();
    std::fs::remove_file(d.path().join("cond_encoder.pt")).unwrap();
    let e = load_err(d.path(), true);
    assert!(e.contains("cond_encoder.pt") && e.contains("`cond_encoder`"), "{e}");
}

#[test]
fn corrupted_graph_fails_hash_check() {
    let d = copy_tiny();
    let p = d.path().join("unet.pt");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&p, bytes).unwrap();
    let e = load_err(d.path(), true);
    assert!(e.contains("unet.pt") && e.contains("SHA-256 mismatch"), "{e}");
}

#[test]
fn corrupted_graph_without_hash_check_is_a_load_error() {
    let d = copy_tiny();
    let p = d.path().join("unet.pt");
    std::fs::write(&p, b"this is not a torchscript archive").unwrap();
    let e = load_err(d.path(), false);
    assert!(e.contains("unet.pt") && e.contains("not a loadable TorchScript graph"), "{e}");
}

#[test]
fn unknown_schema_version() {
    let d = copy_tiny();
    edit_manifest(d.path(), |v| v["schema_version"] = 99.into());
    let e = load_err(d.path(), true);
    assert!(
        e.contains("manifest.json") && e.contains("schema_version 99") && e.contains("reads versions 1 to 2"),
        "{e}"
    );
}

#[test]
fn manifest_not_json_or_missing_fields() {
    let d = copy_tiny();
    std::fs::write(d.path().join("manifest.json"), "{ not json").unwrap();
    let e = load_err(d.path(), true);
    assert!(e.contains("manifest.json") && e.contains("not JSON"), "{e}");
    let d = copy_tiny();
    edit_manifest(d.path(), |v| {
        v["graphs"].as_object_mut().unwrap().remove("encoder");
    });
    let e = load_err(d.path(), true);
    assert!(e.contains("required graph `encoder`"), "{e}");
    let d = copy_tiny();
    edit_manifest(d.path(), |v| v["dtype"] = "int8".into());
    let e = load_err(d.path(), true);
    assert!(e.contains("dtype `int8`"), "{e}");
}

#[test]
fn manifest_shapes_disagreeing_with_graph() {
    let d = copy_tiny();
    edit_manifest(d.path(), |v| v["mid_shape"] = serde_json::json!([999, 8, 8]));
    let m = Denoiser::load(d.path(), &LoadOptions::default()).unwrap();
    let x = Tensor::zeros([1, 4, 16, 16], (Kind::Float, m.device));
    let c = m.encode_classes(&[0]).unwrap().into();
    let e = m.forward(&x, &Tensor::from_slice(&[10.0f32]), &c).unwrap_err().to_string();
    assert!(e.contains("encoder features: mid") && e.contains("999"), "{e}");
}

#[test]
fn wrong_input_shape_and_channels() {
    let m = Denoiser::load(tiny(), &LoadOptions::default()).unwrap();
    let c = m.encode_classes(&[0]).unwrap().into();
    let t = Tensor::from_slice(&[10.0f32]);
    let e = m.forward(&Tensor::zeros([1, 3, 16, 16], (Kind::Float, m.device)), &t, &c).unwrap_err().to_string();
    assert!(e.contains("sample") && e.contains("[B, 4, 16, 16]") && e.contains("[1, 3, 16, 16]"), "{e}");
    let e = m.forward(&Tensor::zeros([1, 4, 20, 16], (Kind::Float, m.device)), &t, &c).unwrap_err().to_string();
    assert!(e.contains("[B, 4, 16, 16]"), "{e}");
    let e = m.forward(&Tensor::zeros([2, 4, 16, 16], (Kind::Float, m.device)), &t, &c).unwrap_err().to_string();
    assert!(e.contains("timesteps batch size"), "{e}");
    let bad_cond = Tensor::zeros([1, 5, 16], (Kind::Float, m.device));
    let e = m
        .forward(&Tensor::zeros([1, 4, 16, 16], (Kind::Float, m.device)), &t, &bad_cond.into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cond") && e.contains("[1, 3, 16]"), "{e}");
}

#[test]
fn bad_classes_and_devices() {
    let m = Denoiser::load(tiny(), &LoadOptions::default()).unwrap();
    let e = m.encode_classes(&[7]).unwrap_err().to_string();
    assert!(e.contains("class id 7"), "{e}");
    let e = m.class_id("delta").unwrap_err().to_string();
    assert!(e.contains("unknown class `delta`") && e.contains("alpha"), "{e}");
    assert_eq!(m.class_id("Beta").unwrap(), 1);
    assert!(m.encode_prompts(&["a cat"]).unwrap_err().to_string().contains("not text-conditioned"));
    let e = fd_model::parse_device("tpu").unwrap_err().to_string();
    assert!(e.contains("device `tpu`") && e.contains("cuda:N"), "{e}");
}

#[test]
fn cuda_requested_without_gpu_is_a_clear_error() {
    // On a GPU machine this must succeed instead; both outcomes are checked.
    match fd_model::parse_device("cuda") {
        Ok(dev) => assert!(fd_model::tch::Cuda::is_available(), "got {dev:?} without CUDA"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("device `cuda`") && e.contains("CUDA requested"), "{e}");
        }
    }
}

#[test]
fn model_kind_and_split_are_checked() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 7] = [
        ("`frames` is for kind unet3d", |v| v["frames"] = 3.into()),
        ("must be [C, F, H, W] for kind unet3d", |v| v["kind"] = "unet3d".into()),
        ("unknown variant `unet9d`", |v| v["kind"] = "unet9d".into()),
        ("kind dit needs `split`", |v| v["kind"] = "dit".into()),
        ("`split` is for transformer kinds", |v| v["split"] = serde_json::json!({"encoder_blocks": 1, "blocks": 2})),
        ("split.encoder_blocks 2 outside 1..2", |v| {
            v["kind"] = "dit".into();
            v["split"] = serde_json::json!({"encoder_blocks": 2, "blocks": 2});
        }),
        ("guidance_channels 9 outside 1..=4", |v| v["guidance_channels"] = 9.into()),
    ];
    for (want, edit) in cases {
        let d = copy_tiny();
        edit_manifest(d.path(), edit);
        let e = load_err(d.path(), false);
        assert!(e.contains("manifest.json") && e.contains(want), "{want}: {e}");
    }
}

#[test]
fn teacache_entry_is_checked() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 4] = [
        ("`teacache` and its indicator graph (`teacache_probe`, or a DiT's `stepcache_embed`) must be given together", |v| {
            v["teacache"] = serde_json::json!({"coefficients": [1.0, 0.0]})
        }),
        ("come all together, on a DiT", |v| v["graphs"]["stepcache_embed"] = v["graphs"]["encoder"].clone()),
        ("expected finite numbers", |v| {
            v["teacache"] = serde_json::json!({"coefficients": []});
            v["graphs"]["teacache_probe"] = v["graphs"]["encoder"].clone();
        }),
        ("missing field `coefficients`", |v| v["teacache"] = serde_json::json!({"fit": null})),
    ];
    for (want, edit) in cases {
        let d = copy_tiny();
        edit_manifest(d.path(), edit);
        let e = load_err(d.path(), false);
        assert!(e.contains("manifest.json") && e.contains(want), "{want}: {e}");
    }
}
