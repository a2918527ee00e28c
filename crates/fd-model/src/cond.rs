//! What a sample is conditioned on, and how a batch of conditions becomes the embeddings the
//! UNet's cross-attention reads (through the model's `cond_encoder` graph).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::manifest::{CondKind, ControlSpec};
use crate::{Denoiser, Error, Result};

/// What one sample is conditioned on. In run records a class is a JSON integer, a prompt a JSON
/// string, and a prompt with a ControlNet condition image `{"prompt": ..., "control": {"path":
/// ..., "sha256": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    Class(i64),
    Prompt(String),
    Controlled { prompt: String, control: ControlImage },
}

/// A ControlNet condition image, identified by its content: loading it checks the hash, so a
/// run never reads an image other than the one its record names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlImage {
    pub path: PathBuf,
    pub sha256: String,
}

impl ControlImage {
    /// Hash `path` now (the image the run will use).
    pub fn new(path: &Path) -> Result<Self> {
        Ok(Self { path: path.to_path_buf(), sha256: crate::io::file_sha256(path)? })
    }

    /// [1, C, H, W] float in [0, 1] (diffusers' ControlNet image processor: no normalisation),
    /// checked against the hash and the model's `control` spec: the size must be the model's
    /// pixel size (no silent resize), grey images are replicated to RGB as diffusers converts
    /// them, images with an alpha channel are refused.
    pub fn load(&self, spec: &ControlSpec) -> Result<Tensor> {
        let err = |msg: String| Error::Control { path: self.path.clone(), msg };
        let bytes = std::fs::read(&self.path).map_err(|source| Error::Io { path: self.path.clone(), source })?;
        let found = crate::io::sha256_hex(&bytes);
        if !found.eq_ignore_ascii_case(&self.sha256) {
            return Err(err(format!("SHA-256 {found} differs from the run's record {} (file replaced)", self.sha256)));
        }
        let img = image::load_from_memory(&bytes).map_err(|e| err(format!("not a readable image: {e}")))?;
        let channels = img.color().channel_count();
        let [h, w] = spec.size;
        if (i64::from(img.height()), i64::from(img.width())) != (h, w) {
            return Err(err(format!(
                "size {}x{} (HxW); the model's ControlNet takes {h}x{w} (resize it first)",
                img.height(),
                img.width()
            )));
        }
        let rgb = match (channels, spec.channels) {
            (1 | 3, 3) => img.to_rgb8().into_raw(),
            (1, 1) => img.to_luma8().into_raw(),
            (c, want) => {
                return Err(err(format!(
                    "{c} channels; the model's ControlNet takes {want} ({})",
                    if c == 4 || c == 2 { "an alpha channel is not dropped silently" } else { "convert it first" }
                )))
            }
        };
        let t = Tensor::from_slice(&rgb).view([h, w, spec.channels]).permute([2, 0, 1]).unsqueeze(0);
        let t = t.to_kind(tch::Kind::Float) / 255.0;
        Ok(if spec.channel_order == "bgr" { t.flip([1]) } else { t })
    }
}

impl Condition {
    /// The prompt, or the class id as text (CLIP score of a class-conditioned run).
    pub fn text(&self) -> String {
        match self {
            Condition::Class(i) => i.to_string(),
            Condition::Prompt(p) | Condition::Controlled { prompt: p, .. } => p.clone(),
        }
    }
}

/// What the UNet graphs read about a batch's conditioning, prepared once per sample and reused at
/// every step: the states cross-attention reads, and (models with added conditioning: SDXL, IF)
/// what the time embedding adds. Rows line up with the batch; cloning is shallow.
#[derive(Debug)]
pub struct Cond {
    /// [B, L, D] (after the model's state projection, if any).
    pub states: Tensor,
    /// [B, E], added to the time embedding before its activation; None for plain UNets.
    pub extra: Option<Tensor>,
    /// ControlNet condition images [B, C, H, W] in [0, 1]; None without a ControlNet.
    pub control: Option<Tensor>,
}

impl Clone for Cond {
    fn clone(&self) -> Self {
        Self {
            states: self.states.shallow_clone(),
            extra: self.extra.as_ref().map(Tensor::shallow_clone),
            control: self.control.as_ref().map(Tensor::shallow_clone),
        }
    }
}

impl From<Tensor> for Cond {
    /// Plain UNets: the states are all there is.
    fn from(states: Tensor) -> Self {
        Self { states, extra: None, control: None }
    }
}

impl Cond {
    pub fn rows(&self) -> i64 {
        self.states.size()[0]
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Self {
        Self { states: f(&self.states), extra: self.extra.as_ref().map(&f), control: self.control.as_ref().map(&f) }
    }

    /// Rows `index` (int64, any device).
    pub fn index_select(&self, index: &Tensor) -> Self {
        self.map(|t| t.index_select(0, &index.to_device(t.device())))
    }

    /// Concatenate along the batch (an optional part is kept when every part has it).
    pub fn cat(parts: &[&Cond]) -> Self {
        let states = Tensor::cat(&parts.iter().map(|p| &p.states).collect::<Vec<_>>(), 0);
        let cat_opt = |get: fn(&Cond) -> Option<&Tensor>| {
            parts
                .iter()
                .map(|p| get(p))
                .collect::<Option<Vec<_>>>()
                .filter(|_| !parts.is_empty())
                .map(|e| Tensor::cat(&e, 0))
        };
        Self { states, extra: cat_opt(|c| c.extra.as_ref()), control: cat_opt(|c| c.control.as_ref()) }
    }

    pub fn to_device(&self, device: Device) -> Self {
        self.map(|t| t.to_device(device))
    }
}

impl Denoiser {
    /// The prepared conditioning of a batch: class ids (or class names given as prompts)
    /// through the class embedding, prompts through the tokenizer(s) and text encoder(s), then
    /// the model's `cond_prepare` graph where it has one.
    pub fn encode_conditions(&self, conds: &[Condition]) -> Result<Cond> {
        match self.manifest.cond.kind {
            CondKind::Class => {
                let ids = conds
                    .iter()
                    .map(|c| match c {
                        Condition::Class(i) => Ok(*i),
                        Condition::Prompt(p) => self.class_id(p),
                        Condition::Controlled { .. } => Err(Error::Cond(format!(
                            "model `{}` is class-conditioned and has no ControlNet",
                            self.manifest.name
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.encode_classes(&ids).map(Cond::from)
            }
            CondKind::Text => {
                let prompts = conds
                    .iter()
                    .map(|c| match c {
                        Condition::Prompt(p) | Condition::Controlled { prompt: p, .. } => Ok(p.as_str()),
                        Condition::Class(_) => Err(Error::Cond("a text-conditioned model needs prompts".into())),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut cond = self.encode_prompts(&prompts)?;
                cond.control = self.control_images(conds)?;
                Ok(cond)
            }
            CondKind::Embedding => Err(Error::Cond("model takes raw embeddings; use the library API".into())),
        }
    }
}

impl Denoiser {
    /// The condition images of a batch: every sample needs one when the model has a ControlNet,
    /// none may have one otherwise.
    fn control_images(&self, conds: &[Condition]) -> Result<Option<Tensor>> {
        let images: Vec<&ControlImage> = conds
            .iter()
            .filter_map(|c| if let Condition::Controlled { control, .. } = c { Some(control) } else { None })
            .collect();
        match (&self.manifest.control, images.len()) {
            (None, 0) => Ok(None),
            (None, _) => Err(Error::Cond(format!(
                "model `{}` has no ControlNet: condition images cannot be used (export it with --controlnet)",
                self.manifest.name
            ))),
            (Some(_), 0) => Err(Error::Cond(format!(
                "model `{}` has a ControlNet: every sample needs a condition image (--control IMAGE_OR_DIR)",
                self.manifest.name
            ))),
            (Some(_), n) if n != conds.len() => Err(Error::Cond(format!(
                "{n} of {} samples have a condition image; every sample needs one",
                conds.len()
            ))),
            (Some(spec), _) => {
                let ts = images.iter().map(|i| i.load(spec)).collect::<Result<Vec<_>>>()?;
                Ok(Some(Tensor::cat(&ts, 0).to_device(self.device)))
            }
        }
    }
}
