//! CLIP score on a tiny random-init CLIP (transformers CLIPModel from config, real CLIP BPE vocab),
//! exported by experiments/export/export_clip.py; references from experiments/tests/make_clip_tiny.py
//! (which `just test` runs first; FD_CLIP_TINY overrides the folder).

use std::collections::HashMap;
use std::path::PathBuf;

use fd_eval::clip::Clip;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    std::env::var_os("FD_CLIP_TINY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures/clip-tiny"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

#[test]
fn clip_embeddings_and_scores_match_transformers() {
    let root = root();
    assert!(
        root.join("stamp").is_file(),
        "{}: run `python experiments/tests/make_clip_tiny.py {}`",
        root.display(),
        root.display()
    );
    let clip = Clip::load(&root.join("model"), Device::Cpu).unwrap();
    let r: HashMap<String, Tensor> =
        Tensor::read_safetensors(root.join("reference.safetensors")).unwrap().into_iter().collect();
    let prompts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(root.join("prompts.json")).unwrap()).unwrap();
    let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let pix = clip.preprocess(&r["images"]).unwrap();
    assert!(max_abs(&pix, &r["pixel_values"]) <= 1e-5, "preprocessing differs");
    assert!(max_abs(&clip.image_embeds(&pix).unwrap(), &r["image_embeds"]) <= 1e-4);
    assert!(max_abs(&clip.text_embeds(&p).unwrap(), &r["text_embeds"]) <= 1e-4);
    let s = clip.score(&r["images"], &p).unwrap();
    let cos = Tensor::from_slice(&s.per_sample_cos);
    assert!(max_abs(&cos, &r["cos"]) <= 1e-5);
    let want_s = r["clip_s"].mean(Kind::Double).double_value(&[]);
    let want_tm = r["torchmetrics"].mean(Kind::Double).double_value(&[]);
    assert!((s.clip_s - want_s).abs() <= 1e-5, "CLIP-S {} vs {want_s}", s.clip_s);
    assert!((s.torchmetrics - want_tm).abs() <= 1e-3, "torchmetrics {} vs {want_tm}", s.torchmetrics);
    let e = clip.score(&r["images"], &p[..2]).unwrap_err().to_string();
    assert!(e.contains("images for 2 prompts"), "{e}");
}
