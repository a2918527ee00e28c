//! `manifest.json`: what `experiments/export_unet.py` writes next to the graphs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The manifest schema this build reads and `fd_export` writes (`experiments/fd_export/schema.py`;
/// `experiments/tests/test_export.py` fails if the two numbers differ).
pub const SCHEMA_VERSION: u32 = 1;

/// Graphs every model must have.
pub const REQUIRED_GRAPHS: [&str; 3] = ["time_embed", "encoder", "decoder"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub in_channels: i64,
    pub out_channels: i64,
    /// [H, W] of the UNet input (latent size for latent models).
    pub sample_size: [i64; 2],
    pub time_embed_dim: i64,
    /// Per-sample shape [C, H, W] of the mid-block output.
    pub mid_shape: Vec<i64>,
    /// Per-sample shapes [C, H, W] of the skip tensors, in down-path order (conv_in first).
    pub skip_shapes: Vec<Vec<i64>>,
    pub cond: CondSpec,
    /// `epsilon`, `v_prediction` or `sample`.
    pub prediction_type: String,
    /// The diffusers scheduler config (num_train_timesteps, beta_schedule, ...), kept verbatim.
    pub scheduler: serde_json::Value,
    /// `float32` or `float16`.
    pub dtype: String,
    #[serde(default)]
    pub export_device: Option<String>,
    pub graphs: BTreeMap<String, GraphEntry>,
    /// DeepCache graphs per branch id (`deepcache{b}_shallow_encoder` / `_deep_decoder` /
    /// `_shallow_decoder`).
    #[serde(default)]
    pub deepcache: BTreeMap<String, DeepCacheSpec>,
    #[serde(default)]
    pub vae: Option<VaeSpec>,
    pub params: BTreeMap<String, u64>,
    #[serde(default)]
    pub unet_config: serde_json::Value,
    #[serde(default)]
    pub exporter: serde_json::Value,
    #[serde(default)]
    pub training: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphEntry {
    /// TorchScript file in the model folder (several graphs may share one file).
    pub file: String,
    /// Method of that module implementing the graph.
    #[serde(default = "forward")]
    pub method: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// FLOPs of one batch-1 call (torch.utils.flop_counter: 2 x MACs over mm/conv/bmm/SDPA).
    pub flops: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CondKind {
    /// Class ids -> learned token sequence (`null_id` is the unconditional id).
    Class,
    /// Prompts -> tokenizer -> text encoder (Stable Diffusion: CLIP).
    Text,
    /// Raw [B, L, D] embeddings supplied by the caller.
    Embedding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CondSpec {
    pub kind: CondKind,
    pub seq_len: i64,
    pub dim: i64,
    #[serde(default)]
    pub num_classes: Option<i64>,
    #[serde(default)]
    pub null_id: Option<i64>,
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    #[serde(default)]
    pub tokenizer: Option<TokenizerSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerSpec {
    /// tokenizer.json inside the model folder.
    pub file: String,
    /// Padded/truncated length (77 for CLIP).
    pub max_length: usize,
    pub pad_id: u32,
}

/// One DeepCache branch: the shallow path recomputed at cached steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeepCacheSpec {
    /// Number of leading skip tensors the shallow path produces and consumes.
    pub shallow_skips: usize,
    /// Per-sample shape of the cached deep feature (input of up block n-1-b).
    pub cache_shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeSpec {
    pub scaling_factor: f64,
    pub out_channels: i64,
    /// Pixel size / latent size.
    pub upscale: i64,
}

fn forward() -> String {
    "forward".into()
}

impl Manifest {
    /// Read and validate `dir/manifest.json` (schema version, required graphs, shapes, cond spec).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let bad = |msg: String| Error::Manifest { path: path.clone(), msg };
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let found = raw
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad("missing integer field `schema_version`".into()))?;
        if found != u64::from(SCHEMA_VERSION) {
            return Err(Error::SchemaVersion { path, found: found as u32, expected: SCHEMA_VERSION });
        }
        let m: Manifest = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        for g in REQUIRED_GRAPHS {
            if !self.graphs.contains_key(g) {
                return Err(format!("required graph `{g}` not listed under `graphs`"));
            }
        }
        if self.mid_shape.len() != 3 || self.skip_shapes.iter().any(|s| s.len() != 3) {
            return Err("mid_shape and every skip_shapes entry must be [C, H, W]".into());
        }
        if self.skip_shapes.is_empty() {
            return Err("skip_shapes is empty".into());
        }
        if !matches!(self.dtype.as_str(), "float32" | "float16" | "bfloat16") {
            return Err(format!("dtype `{}` not one of float32, float16, bfloat16", self.dtype));
        }
        if !matches!(self.prediction_type.as_str(), "epsilon" | "v_prediction" | "sample") {
            return Err(format!("prediction_type `{}` not one of epsilon, v_prediction, sample", self.prediction_type));
        }
        match self.cond.kind {
            CondKind::Class => {
                let (Some(n), Some(null)) = (self.cond.num_classes, self.cond.null_id) else {
                    return Err("cond.kind=class needs cond.num_classes and cond.null_id".into());
                };
                if let Some(names) = &self.cond.class_names {
                    if names.len() as i64 != n {
                        return Err(format!("cond.class_names has {} names for {n} classes", names.len()));
                    }
                }
                if !(0..=n).contains(&null) {
                    return Err(format!("cond.null_id {null} outside 0..={n}"));
                }
                if !self.graphs.contains_key("cond_encoder") {
                    return Err("cond.kind=class needs a `cond_encoder` graph".into());
                }
            }
            CondKind::Text => {
                if self.cond.tokenizer.is_none() || !self.graphs.contains_key("cond_encoder") {
                    return Err("cond.kind=text needs cond.tokenizer and a `cond_encoder` graph".into());
                }
            }
            CondKind::Embedding => {}
        }
        for (b, spec) in &self.deepcache {
            for part in ["shallow_encoder", "deep_decoder", "shallow_decoder"] {
                if !self.graphs.contains_key(&format!("deepcache{b}_{part}")) {
                    return Err(format!("deepcache branch {b} lists no `deepcache{b}_{part}` graph"));
                }
            }
            if spec.shallow_skips == 0 || spec.shallow_skips > self.skip_shapes.len() {
                return Err(format!(
                    "deepcache branch {b}: shallow_skips {} outside 1..={}",
                    spec.shallow_skips,
                    self.skip_shapes.len()
                ));
            }
        }
        match self.scheduler.get("num_train_timesteps").map(|v| v.as_u64()) {
            None => {}
            Some(Some(n)) if (1..=1_000_000).contains(&n) => {}
            Some(_) => {
                return Err(format!(
                    "scheduler.num_train_timesteps must be an integer in 1..=1000000, got {}",
                    self.scheduler["num_train_timesteps"]
                ))
            }
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if let Some(v) = &self.vae {
            if !positive(v.scaling_factor) || v.upscale < 1 || !(1..=4).contains(&v.out_channels) {
                return Err(format!(
                    "vae: scaling_factor {} / upscale {} / out_channels {} out of range",
                    v.scaling_factor, v.upscale, v.out_channels
                ));
            }
        }
        let dims = [
            self.in_channels,
            self.out_channels,
            self.sample_size[0],
            self.sample_size[1],
            self.cond.seq_len,
            self.cond.dim,
        ];
        if dims.iter().any(|&d| !(1..=1 << 20).contains(&d)) {
            return Err(format!("in/out channels, sample_size and cond seq_len/dim must be positive, got {dims:?}"));
        }
        if self.vae.is_some() != self.graphs.contains_key("vae_decoder") {
            return Err("`vae` and the `vae_decoder` graph must be given together".into());
        }
        Ok(())
    }

    /// FLOPs of one batch-1 call of `graph`, or 0 when the model has no such graph.
    pub fn flops(&self, graph: &str) -> u64 {
        self.graphs.get(graph).map_or(0, |g| g.flops)
    }

    pub fn tch_kind(&self) -> tch::Kind {
        match self.dtype.as_str() {
            "float16" => tch::Kind::Half,
            "bfloat16" => tch::Kind::BFloat16,
            _ => tch::Kind::Float,
        }
    }

    /// Number of training timesteps from the scheduler config (default 1000, as diffusers; checked
    /// to be in 1..=1000000 at load).
    pub fn num_train_timesteps(&self) -> i64 {
        self.scheduler.get("num_train_timesteps").and_then(|v| v.as_i64()).unwrap_or(1000)
    }
}
