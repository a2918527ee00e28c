//! CLIP score for text-conditioned samples, with CLIP towers users export from their own
//! transformers checkpoint (experiments/export/export_clip.py). Reports CLIP-S (Hessel et al.:
//! 2.5 * max(cos, 0), the paper's ~0.77 scale) and torchmetrics' max(100 * cos, 0).

use std::path::{Path, PathBuf};

use fd_model::manifest::TokenizerSpec;
use fd_model::PromptTokenizer;
use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use crate::{Error, Result};

/// `clip_manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipManifest {
    pub schema_version: u32,
    pub name: String,
    pub image_size: i64,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub max_length: usize,
    pub pad_id: u32,
    pub projection_dim: i64,
    pub preprocessing: String,
    pub sha256: String,
}

/// Loaded CLIP towers + tokenizer.
#[derive(Debug)]
pub struct Clip {
    pub manifest: ClipManifest,
    module: CModule,
    tokenizer: PromptTokenizer,
    device: Device,
    pub dir: PathBuf,
}

/// Scores of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipScore {
    pub n: usize,
    /// Mean of 2.5 * max(cos, 0).
    pub clip_s: f64,
    /// Mean of max(100 * cos, 0) (torchmetrics CLIPScore).
    pub torchmetrics: f64,
    pub per_sample_cos: Vec<f64>,
    pub clip_model: String,
    pub preprocessing: String,
}

impl Clip {
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let mpath = dir.join("clip_manifest.json");
        let text = std::fs::read_to_string(&mpath).map_err(|source| Error::Io { path: mpath.clone(), source })?;
        let manifest: ClipManifest =
            serde_json::from_str(&text).map_err(|e| Error::Format { path: mpath.clone(), msg: e.to_string() })?;
        if manifest.schema_version != 1 {
            return Err(Error::Format {
                path: mpath,
                msg: format!("schema_version {} (expected 1)", manifest.schema_version),
            });
        }
        let path = dir.join("clip.pt");
        let mut module =
            CModule::load_on_device(&path, device).map_err(crate::module_error(&path, "loading the CLIP towers"))?;
        module.set_eval();
        let spec = TokenizerSpec {
            file: "tokenizer.json".into(),
            max_length: manifest.max_length,
            pad_id: manifest.pad_id,
            lowercase: false,
        };
        let tokenizer = PromptTokenizer::load(&dir.join("tokenizer.json"), &spec)
            .map_err(|e| Error::Input(format!("CLIP tokenizer: {e}")))?;
        Ok(Self { manifest, module, tokenizer, device, dir: dir.into() })
    }

    /// `torch-bicubic-aa`: images [B, C, H, W] in [-1, 1] -> normalised pixel values [B, 3, S, S].
    pub fn preprocess(&self, images: &Tensor) -> Result<Tensor> {
        let s = images.size();
        if s.len() != 4 || !(s[1] == 1 || s[1] == 3) {
            return Err(Error::Input(format!("images must be [N, 1|3, H, W], got {s:?}")));
        }
        let size = self.manifest.image_size;
        let x = ((images.to_device(self.device).to_kind(Kind::Float) + 1.0) / 2.0).clamp(0.0, 1.0);
        let x = if s[1] == 1 { x.repeat([1, 3, 1, 1]) } else { x };
        let (h, w) = (s[2] as f64, s[3] as f64);
        let scale = size as f64 / h.min(w);
        let (nh, nw) =
            (((h * scale).round_ties_even() as i64).max(size), ((w * scale).round_ties_even() as i64).max(size));
        let x = x.internal_upsample_bicubic2d_aa([nh, nw], false, None, None);
        let x = x.narrow(2, (nh - size) / 2, size).narrow(3, (nw - size) / 2, size);
        let mean =
            Tensor::from_slice(&self.manifest.mean).to_kind(Kind::Float).view([1, 3, 1, 1]).to_device(self.device);
        let std = Tensor::from_slice(&self.manifest.std).to_kind(Kind::Float).view([1, 3, 1, 1]).to_device(self.device);
        Ok((x - mean) / std)
    }

    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.module.method_ts("encode_image", &[pixel_values.to_device(self.device)]))
            .map_err(crate::module_error(&self.dir.join("clip.pt"), "encode_image"))
    }

    pub fn text_embeds(&self, prompts: &[&str]) -> Result<Tensor> {
        let ids = self.tokenizer.encode_batch(prompts)?;
        tch::no_grad(|| self.module.method_ts("encode_text", &[ids.to_device(self.device)]))
            .map_err(crate::module_error(&self.dir.join("clip.pt"), "encode_text"))
    }

    /// Where CLIP score is computed: cosine of image and prompt embeddings, per sample.
    pub fn score(&self, images: &Tensor, prompts: &[&str]) -> Result<ClipScore> {
        let n = images.size()[0] as usize;
        if n != prompts.len() || n == 0 {
            return Err(Error::Input(format!("{n} images for {} prompts", prompts.len())));
        }
        let mut cos = Vec::with_capacity(n);
        for start in (0..n).step_by(64) {
            let end = (start + 64).min(n);
            let img = self.image_embeds(&self.preprocess(&images.narrow(0, start as i64, (end - start) as i64))?)?;
            let txt = self.text_embeds(&prompts[start..end])?;
            let c = Tensor::cosine_similarity(&img.to_kind(Kind::Double), &txt.to_kind(Kind::Double), -1, 1e-8);
            cos.extend(Vec::<f64>::try_from(&c.to_device(Device::Cpu))?);
        }
        let mean = |f: &dyn Fn(f64) -> f64| cos.iter().map(|&c| f(c)).sum::<f64>() / n as f64;
        Ok(ClipScore {
            n,
            clip_s: mean(&|c| 2.5 * c.max(0.0)),
            torchmetrics: mean(&|c| (100.0 * c).max(0.0)),
            per_sample_cos: cos,
            clip_model: self.manifest.name.clone(),
            preprocessing: self.manifest.preprocessing.clone(),
        })
    }
}
