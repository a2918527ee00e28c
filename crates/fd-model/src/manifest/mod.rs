//! `manifest.json`: what `experiments/export/export_unet.py` writes next to the graphs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod deepcache;
mod magcache;
mod stepcache;
mod teacache;
mod tgate;

pub use deepcache::{deepcache_graph, DeepCacheSpec};
pub use magcache::MagCacheSpec;
pub use stepcache::{PAB_GRAPHS, STEPCACHE_GRAPHS};
pub use teacache::TeaCacheSpec;
pub use tgate::{TGateSpec, TGATE_GRAPHS};

/// The manifest schema `fd_export` writes (`experiments/fd_export/schema.py`;
/// `experiments/tests/test_export.py` fails if the two numbers differ). This build also reads
/// version 1 (written before 2026-12-02: no `family`, `prepare`, `cond.tokenizer_2`, `vae.dtype`),
/// which means the same as version 2 without them.
pub const SCHEMA_VERSION: u32 = 2;

/// Oldest schema version this build reads.
pub const MIN_SCHEMA_VERSION: u32 = 1;

/// Manifest fields that cannot change an image, left out of a run's identity
/// ([`Manifest::identity`]): the schema number (versions 1 and 2 mean the same where both have a
/// field), the model family label, the parameter counts, the export's device and what wrote the
/// export (script, versions, training log). Everything else is in the identity.
pub const COSMETIC_FIELDS: [&str; 6] = ["schema_version", "family", "params", "export_device", "exporter", "training"];

/// Per-graph fields left out of a run's identity: a graph's FLOP count (it changes reported
/// GFLOPs, never an image).
pub const COSMETIC_GRAPH_FIELDS: [&str; 1] = ["flops"];

/// Graphs every model must have.
pub const REQUIRED_GRAPHS: [&str; 3] = ["time_embed", "encoder", "decoder"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    /// Model family the exporter recognised (`sd1`, `sd2`, `sdxl`, `fmnist`, ...); informational.
    #[serde(default)]
    pub family: Option<String>,
    /// Architecture kind: how the graphs are split and what the encoder features are. Default
    /// `unet2d` (every manifest written before the field).
    #[serde(default, skip_serializing_if = "ModelKind::is_default")]
    pub kind: ModelKind,
    /// Where a transformer is split (DiT): encoder blocks / all blocks. None for UNets (split at the
    /// mid block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitSpec>,
    /// Classifier-free guidance applies to the first N output channels (the original DiT code and
    /// FasterDiffusion-DiT guide 3 of DiT-XL/2's 4 latent channels); the rest come from the
    /// conditional branch. None: every channel of the prediction (diffusers' pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_channels: Option<i64>,
    /// Frames per video of a `unet3d` model (its temporal layers are traced for this count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<i64>,
    pub in_channels: i64,
    pub out_channels: i64,
    /// [H, W] of the UNet input (latent size for latent models).
    pub sample_size: [i64; 2],
    pub time_embed_dim: i64,
    /// Per-sample shape [C, H, W] of the first encoder feature: a UNet's mid-block output, a DiT's
    /// encoder token tensor on its patch grid [D, H/p, W/p].
    pub mid_shape: Vec<i64>,
    /// Per-sample shapes [C, H, W] of a UNet's skip tensors, in down-path order (conv_in first);
    /// empty for a DiT.
    pub skip_shapes: Vec<Vec<i64>>,
    pub cond: CondSpec,
    /// Added conditioning computed once per sample by the `cond_prepare` graph (SDXL's pooled
    /// text embeds + time ids, IF's text embedding / state projection). None: the text states go
    /// to the UNet as they are and the time embedding takes timesteps only.
    #[serde(default)]
    pub prepare: Option<PrepareSpec>,
    /// The model's ControlNet (the `controlnet` graph), if it was exported with one.
    #[serde(default)]
    pub control: Option<ControlSpec>,
    /// Token merging baked into the UNet graphs at export (tomesd settings: ratio, max_downsample,
    /// sx, sy, merge_attn / merge_crossattn / merge_mlp, partition); None without ToMe.
    #[serde(default)]
    pub tome: Option<serde_json::Value>,
    /// `epsilon`, `v_prediction` or `sample`.
    pub prediction_type: String,
    /// The diffusers scheduler config (num_train_timesteps, beta_schedule, ...), kept verbatim.
    pub scheduler: serde_json::Value,
    /// `float32` or `float16`.
    pub dtype: String,
    #[serde(default)]
    pub export_device: Option<String>,
    pub graphs: BTreeMap<String, GraphEntry>,
    /// DeepCache graphs: key `id{N}` for DeepCache's own cache_branch_id N (graphs
    /// `deepcache_id{N}_shallow_encoder` / `_deep_decoder` / `_shallow_decoder`), or a number b for
    /// fd's earlier block-level branch b (graphs `deepcache{b}_...`).
    #[serde(default)]
    pub deepcache: BTreeMap<String, DeepCacheSpec>,
    /// TeaCache's rescaling polynomial for this model; its indicator is the `teacache_probe`
    /// graph (a UNet: experiments/add/add_teacache.py writes both) or a DiT's `stepcache_embed`
    /// ([`STEPCACHE_GRAPHS`], written at export). None: `teacache:T` plans are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacache: Option<TeaCacheSpec>,
    /// MagCache's magnitude ratios for this DiT (experiments/add/add_magcache.py, from its
    /// step-cache graphs). None: `magcache:T` plans are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magcache: Option<MagCacheSpec>,
    /// T-GATE's cached attention layers; its graphs are [`TGATE_GRAPHS`]
    /// (experiments/add/add_tgate.py writes both). None: `tgate:G` plans are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgate: Option<TGateSpec>,
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

/// The architecture kinds fd splits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// diffusers `UNet2DConditionModel`: encoder = conv_in + down blocks + mid block (features: mid,
    /// then the skips), decoder = up blocks + output layers.
    #[default]
    Unet2d,
    /// diffusers `DiTTransformer2DModel`: encoder = patch embedding + the first `split.encoder_blocks`
    /// transformer blocks (feature: their output tokens), decoder = the other blocks + final layer.
    Dit,
    /// diffusers `UNet3DConditionModel` (text-to-video-ms): the UNet split with frames as an extra
    /// axis; sample and features are [B, C, F, h, w], F fixed at export (`frames`).
    Unet3d,
}

impl ModelKind {
    fn is_default(&self) -> bool {
        *self == ModelKind::Unet2d
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ModelKind::Unet2d => "unet2d",
            ModelKind::Dit => "dit",
            ModelKind::Unet3d => "unet3d",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a transformer's blocks are split into encoder and decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    /// Blocks in the encoder (the authors' DiT-XL/2 split: 18).
    pub encoder_blocks: usize,
    /// All transformer blocks of the model (DiT-XL/2: 28).
    pub blocks: usize,
    /// Where the split rule comes from; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
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
    /// The same graph compiled by AOTInductor (`experiments/export/convert_aoti.py`), run
    /// instead of the TorchScript method under [`GraphFormat::Aoti`]: one package per range of
    /// batch rows (a graph whose code branches on the batch size, as diffusers' `Upsample2D` does
    /// at 64 rows, exports as one program per side of the branch), ranges in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageEntry>,
}

/// Which compiled form of the graphs runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphFormat {
    /// TorchScript methods (`*.pt`), every export has them.
    #[default]
    Torchscript,
    /// AOTInductor packages (`*.pt2`) where the manifest lists one for a graph; TorchScript for
    /// the others.
    Aoti,
}

impl GraphFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            GraphFormat::Torchscript => "torchscript",
            GraphFormat::Aoti => "aoti",
        }
    }
}

impl std::str::FromStr for GraphFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "torchscript" => Ok(GraphFormat::Torchscript),
            "aoti" => Ok(GraphFormat::Aoti),
            other => Err(format!("unknown graph format `{other}` (expected torchscript or aoti)")),
        }
    }
}

/// Which format a command asks for (`--format`): a [`GraphFormat`], or `auto`, decided per
/// model by [`FormatChoice::resolve`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FormatChoice {
    /// AOTInductor when the model lists packages and every one of them runs here (this device,
    /// this libtorch release, a CPU with the vector ISA they were compiled for); TorchScript
    /// otherwise. The default of fd's commands.
    #[default]
    Auto,
    /// This format ([`GraphFormat::Aoti`] with a model without packages is an error).
    Fixed(GraphFormat),
}

impl FormatChoice {
    pub fn as_str(&self) -> &'static str {
        match self {
            FormatChoice::Auto => "auto",
            FormatChoice::Fixed(f) => f.as_str(),
        }
    }
}

impl From<GraphFormat> for FormatChoice {
    fn from(f: GraphFormat) -> Self {
        FormatChoice::Fixed(f)
    }
}

impl std::str::FromStr for FormatChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(FormatChoice::Auto),
            _ => s
                .parse()
                .map(FormatChoice::Fixed)
                .map_err(|_| format!("unknown graph format `{s}` (expected auto, torchscript or aoti)")),
        }
    }
}

/// An AOTInductor package of one graph (`torch._inductor.aoti_compile_and_package` of the
/// graph's `torch.export` program, batch dimension dynamic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageEntry {
    /// `.pt2` file in the model folder.
    pub file: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// The graph returns a tuple of tensors (else one tensor).
    pub tuple: bool,
    /// Device the package was compiled for (`cpu` or `cuda`): it runs there only.
    pub device: String,
    /// torch version that compiled it (`2.13.0+cu130`): it runs on that libtorch release only.
    pub torch: String,
    /// Batch rows it accepts, [min, max] (the dynamic dimension's range).
    pub batch: [i64; 2],
    /// A CPU package: the vector ISA of the machine that compiled it (`AVX512`, `AVX2`, ...;
    /// inductor's CPU kernels use that machine's instructions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_capability: Option<String>,
    /// A CPU package: the C++ compiler's `-march` it was built with: `native` (code for the
    /// compiling CPU's model; may use instructions beyond `cpu_capability`'s) or a portable level
    /// such as `x86-64-v3` (every AVX2 x86-64 CPU; the default models' committed packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub march: Option<String>,
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
    /// The second tokenizer of a two-encoder model (SDXL); `cond_encoder` then takes both id
    /// tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_2: Option<TokenizerSpec>,
    /// Width of the pooled text embedding `cond_encoder` also returns (SDXL), else None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled_dim: Option<i64>,
    /// What the unconditional branch of classifier-free guidance is. Default: the empty prompt
    /// (text models) / the null class (class models).
    #[serde(default, skip_serializing_if = "UncondRule::is_default")]
    pub uncond: UncondRule,
}

/// The unconditional input of classifier-free guidance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncondRule {
    /// The empty prompt through the text encoder(s) (SD 1.x / 2.x pipelines), or the null class.
    #[default]
    EmptyPrompt,
    /// Zero text states and zero pooled embeds (SDXL's `force_zeros_for_empty_prompt`).
    Zeros,
}

/// A ControlNet's condition image: `controlnet(sample, timesteps, states, image [B,C,H,W] in
/// [0,1]) -> (mid residual, skip residuals...)`, shaped like the encoder features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlSpec {
    /// Image channels (3 for every published SD ControlNet).
    pub channels: i64,
    /// [H, W] in pixels (the model's image size).
    pub size: [i64; 2],
    /// `rgb` or `bgr` (diffusers' `controlnet_conditioning_channel_order`).
    #[serde(default = "rgb")]
    pub channel_order: String,
}

fn rgb() -> String {
    "rgb".into()
}

impl UncondRule {
    // left out of records when default, so model identities from before the field are unchanged
    fn is_default(&self) -> bool {
        *self == UncondRule::EmptyPrompt
    }
}

/// Inputs and outputs of the `cond_prepare` graph:
/// `(states [B,L,raw_dim], pooled [B,P]?, time_ids [B,6]?) -> (cond [B,L,D], extra [B,E])`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareSpec {
    /// Inputs in call order: `states`, then `pooled` and `time_ids` for SDXL (`text_time`).
    pub inputs: Vec<String>,
    /// diffusers' `addition_embed_type` (`text_time`, `text`) or None (projection only).
    #[serde(default)]
    pub added: Option<String>,
    /// Width of the text states the cond encoder gives.
    pub raw_dim: i64,
    /// Width of `extra`, added to the time embedding (= time_embed_dim).
    pub extra_dim: i64,
    /// The states are projected for attention (`encoder_hid_proj`).
    #[serde(default)]
    pub projects_states: bool,
    /// SDXL micro-conditioning: original size (h, w), crop top-left (y, x), target size (h, w)
    /// in pixels; the pipeline's defaults (image size, no crop) at export.
    #[serde(default)]
    pub time_ids: Option<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerSpec {
    /// tokenizer.json inside the model folder.
    pub file: String,
    /// Padded/truncated length (77 for CLIP).
    pub max_length: usize,
    pub pad_id: u32,
    /// Lowercase and trim prompts first (DeepFloyd-IF's pipeline with clean_caption=False).
    /// Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lowercase: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeSpec {
    pub scaling_factor: f64,
    pub out_channels: i64,
    /// Pixel size / latent size.
    pub upscale: i64,
    /// dtype of the VAE graph when it differs from the UNet's (`float32` for a VAE whose config
    /// says `force_upcast`, SDXL). None: the model's dtype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

fn kind_of(dtype: &str) -> tch::Kind {
    match dtype {
        "float16" => tch::Kind::Half,
        "bfloat16" => tch::Kind::BFloat16,
        _ => tch::Kind::Float,
    }
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
        if !(u64::from(MIN_SCHEMA_VERSION)..=u64::from(SCHEMA_VERSION)).contains(&found) {
            return Err(Error::SchemaVersion { path, found: found as u32, expected: SCHEMA_VERSION });
        }
        let m: Manifest = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    /// Every check of a loaded manifest, section by section; the first problem found, in words.
    fn validate(&self) -> std::result::Result<(), String> {
        self.check_structure()?;
        self.check_kind()?;
        self.check_types()?;
        self.check_cond()?;
        self.check_prepare()?;
        // each caching method's section, beside its spec
        stepcache::validate(self)?;
        tgate::validate(self)?;
        teacache::validate(self)?;
        magcache::validate(self)?;
        deepcache::validate(self)?;
        self.check_numbers()?;
        Ok(())
    }

    /// Checks the required graphs, the feature ranks, frames and guidance channels.
    fn check_structure(&self) -> std::result::Result<(), String> {
        for g in REQUIRED_GRAPHS {
            if !self.graphs.contains_key(g) {
                return Err(format!("required graph `{g}` not listed under `graphs`"));
            }
        }
        let rank = if self.kind == ModelKind::Unet3d { 4 } else { 3 };
        if self.mid_shape.len() != rank || self.skip_shapes.iter().any(|s| s.len() != rank) {
            return Err(format!(
                "mid_shape and every skip_shapes entry must be {} for kind {}",
                if rank == 4 { "[C, F, H, W]" } else { "[C, H, W]" },
                self.kind
            ));
        }
        match (self.kind, self.frames) {
            (ModelKind::Unet3d, Some(f)) if (1..=1024).contains(&f) => {}
            (ModelKind::Unet3d, f) => return Err(format!("kind unet3d needs `frames` in 1..=1024, got {f:?}")),
            (_, Some(_)) => return Err("`frames` is for kind unet3d (a video model)".into()),
            (_, None) => {}
        }
        if let Some(g) = self.guidance_channels.filter(|&g| !(1..=self.in_channels).contains(&g)) {
            return Err(format!("guidance_channels {g} outside 1..={}", self.in_channels));
        }
        Ok(())
    }

    /// Checks what the model kind requires (a UNet's skips, a DiT's split and class conditioning).
    fn check_kind(&self) -> std::result::Result<(), String> {
        match self.kind {
            ModelKind::Unet2d | ModelKind::Unet3d => {
                if self.skip_shapes.is_empty() {
                    return Err("skip_shapes is empty (a unet2d model has skip tensors)".into());
                }
                if self.split.is_some() {
                    return Err("`split` is for transformer kinds (dit); a unet2d splits at its mid block".into());
                }
            }
            ModelKind::Dit => {
                let Some(sp) = &self.split else {
                    return Err("kind dit needs `split` (encoder_blocks, blocks)".into());
                };
                if sp.encoder_blocks == 0 || sp.encoder_blocks >= sp.blocks {
                    return Err(format!(
                        "split.encoder_blocks {} outside 1..{}: the encoder and the decoder need at least one of the {} blocks each",
                        sp.encoder_blocks, sp.blocks, sp.blocks
                    ));
                }
                if !self.skip_shapes.is_empty() {
                    return Err("kind dit has one encoder feature (mid_shape); skip_shapes must be empty".into());
                }
                if !self.deepcache.is_empty()
                    || self.control.is_some()
                    || self.prepare.is_some()
                    || self.tgate.is_some()
                {
                    return Err("kind dit takes no deepcache, tgate, control or prepare entries (UNet-only)".into());
                }
                if self.cond.kind != CondKind::Class || self.cond.seq_len != 1 || self.cond.dim != 1 {
                    return Err("kind dit needs cond.kind=class with seq_len 1 and dim 1 (the class id)".into());
                }
            }
        }
        Ok(())
    }

    /// Checks output channels, dtype and prediction type.
    fn check_types(&self) -> std::result::Result<(), String> {
        if self.out_channels != self.in_channels && self.out_channels != 2 * self.in_channels {
            return Err(format!(
                "out_channels {} must equal in_channels {} (or twice it: a learned variance)",
                self.out_channels, self.in_channels
            ));
        }
        if !matches!(self.dtype.as_str(), "float32" | "float16" | "bfloat16") {
            return Err(format!("dtype `{}` not one of float32, float16, bfloat16", self.dtype));
        }
        if !matches!(self.prediction_type.as_str(), "epsilon" | "v_prediction" | "sample") {
            return Err(format!("prediction_type `{}` not one of epsilon, v_prediction, sample", self.prediction_type));
        }
        Ok(())
    }

    /// Checks the conditioning: classes, prompts and tokenizers.
    fn check_cond(&self) -> std::result::Result<(), String> {
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
        if self.cond.kind != CondKind::Text && (self.cond.tokenizer_2.is_some() || self.cond.pooled_dim.is_some()) {
            return Err("cond.tokenizer_2 / cond.pooled_dim need cond.kind=text".into());
        }
        Ok(())
    }

    /// Checks added conditioning (`prepare`) and the ControlNet (`control`).
    fn check_prepare(&self) -> std::result::Result<(), String> {
        if let Some(p) = &self.prepare {
            if !self.graphs.contains_key("cond_prepare") {
                return Err("`prepare` needs a `cond_prepare` graph".into());
            }
            if p.inputs.first().map(String::as_str) != Some("states") {
                return Err(format!("prepare.inputs must start with `states`, got {:?}", p.inputs));
            }
            for i in &p.inputs[1..] {
                match i.as_str() {
                    "pooled" if self.cond.pooled_dim.is_none() => {
                        return Err("prepare input `pooled` needs cond.pooled_dim (a pooled text embedding)".into())
                    }
                    "time_ids" if p.time_ids.as_ref().is_none_or(|t| t.len() != 6) => {
                        return Err("prepare input `time_ids` needs prepare.time_ids with 6 values".into())
                    }
                    "pooled" | "time_ids" => {}
                    other => {
                        return Err(format!("prepare input `{other}` unknown (expected states, pooled, time_ids)"))
                    }
                }
            }
            if p.extra_dim != self.time_embed_dim {
                return Err(format!(
                    "prepare.extra_dim {} differs from time_embed_dim {}",
                    p.extra_dim, self.time_embed_dim
                ));
            }
        } else if self.graphs.contains_key("cond_prepare") {
            return Err("graph `cond_prepare` listed without a `prepare` entry".into());
        }
        if self.control.is_some() != self.graphs.contains_key("controlnet") {
            return Err("`control` and the `controlnet` graph must be given together".into());
        }
        if let Some(c) = &self.control {
            if !matches!(c.channels, 1 | 3) || c.size.iter().any(|&d| !(1..=1 << 16).contains(&d)) {
                return Err(format!("control: channels {} / size {:?} out of range", c.channels, c.size));
            }
            if self.cond.kind != CondKind::Text {
                return Err("control needs cond.kind=text".into());
            }
        }
        Ok(())
    }

    /// Checks the scheduler's training steps, the VAE and every size.
    fn check_numbers(&self) -> std::result::Result<(), String> {
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
            if let Some(d) = v.dtype.as_deref().filter(|d| !matches!(*d, "float32" | "float16" | "bfloat16")) {
                return Err(format!("vae.dtype `{d}` not one of float32, float16, bfloat16"));
            }
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

    /// DeepCache's own `cache_branch_id` of the manifest's DeepCache entry `key`: recorded, or for
    /// a block-level key b of an older export 3b + the layer count of down block b (from the UNet
    /// config's `layers_per_block`).
    pub fn deepcache_id(&self, key: &str) -> Option<usize> {
        let spec = self.deepcache.get(key)?;
        if let Some(id) = spec.cache_branch_id {
            return Some(id);
        }
        let b: usize = key.parse().ok()?;
        let lpb = &self.unet_config["layers_per_block"];
        let layers = lpb.as_u64().or_else(|| lpb.as_array().and_then(|a| a.get(b)).and_then(|v| v.as_u64()))?;
        Some(3 * b + layers as usize)
    }

    /// Per-sample shape of the model input: [C, H, W], or [C, F, H, W] for a video model.
    pub fn sample_shape(&self) -> Vec<i64> {
        let [h, w] = self.sample_size;
        match self.frames {
            Some(f) => vec![self.in_channels, f, h, w],
            None => vec![self.in_channels, h, w],
        }
    }

    /// Per-sample shapes of the encoder features, in the order the encoder graph returns them.
    pub fn feature_shapes(&self) -> Vec<Vec<i64>> {
        std::iter::once(self.mid_shape.clone()).chain(self.skip_shapes.iter().cloned()).collect()
    }

    /// Names of the encoder features (drift tables, error messages): a UNet's `mid`, `skip00`, ...;
    /// a DiT's `block{k-1}` (the last encoder block's output tokens).
    pub fn feature_names(&self) -> Vec<String> {
        match (self.kind, &self.split) {
            (ModelKind::Dit, Some(sp)) => vec![format!("block{:02}", sp.encoder_blocks - 1)],
            _ => std::iter::once("mid".to_string())
                .chain((0..self.skip_shapes.len()).map(|i| format!("skip{i:02}")))
                .collect(),
        }
    }

    /// Names of the encoder layers the `encoder_analysis` graph returns beyond the features (`n` of
    /// them): a DiT's earlier blocks `block00`, ... (numbered over the whole model); `enc{i}` else.
    pub fn encoder_layer_names(&self, n: usize) -> Vec<String> {
        match self.kind {
            ModelKind::Dit => (0..n).map(|i| format!("block{i:02}")).collect(),
            _ => (0..n).map(|i| format!("enc{i}")).collect(),
        }
    }

    /// Names of the decoder layers the `decoder_analysis` graph returns (`n` of them): a UNet's up
    /// blocks `up0`, ...; a DiT's decoder blocks `block{k}`, ... (numbered over the whole model).
    pub fn decoder_layer_names(&self, n: usize) -> Vec<String> {
        match (self.kind, &self.split) {
            (ModelKind::Dit, Some(sp)) => (0..n).map(|i| format!("block{:02}", sp.encoder_blocks + i)).collect(),
            _ => (0..n).map(|i| format!("up{i}")).collect(),
        }
    }

    /// The manifest as a run's identity sees it when `format` runs the graphs: every field fd
    /// read, less [`COSMETIC_FIELDS`] and each graph's [`COSMETIC_GRAPH_FIELDS`], and, under
    /// TorchScript, less each graph's AOTInductor `packages` (they do not run; a model that gains
    /// packages keeps its TorchScript runs' identity). A field added to the manifest is part of
    /// every identity unless it is added to those lists, so a run can never be resumed or merged
    /// across a change of something that decides its images (a method's fitted coefficients, a
    /// conditioning setting, a graph's or a package's hash).
    pub fn identity(&self, format: GraphFormat) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a manifest serialises");
        if let Some(o) = v.as_object_mut() {
            for k in COSMETIC_FIELDS {
                o.remove(k);
            }
            if let Some(graphs) = o.get_mut("graphs").and_then(|g| g.as_object_mut()) {
                for g in graphs.values_mut().filter_map(|g| g.as_object_mut()) {
                    for k in COSMETIC_GRAPH_FIELDS {
                        g.remove(k);
                    }
                    if format == GraphFormat::Torchscript {
                        g.remove("packages");
                    }
                }
            }
        }
        v
    }

    /// FLOPs of one batch-1 call of `graph`, or 0 when the model has no such graph.
    pub fn flops(&self, graph: &str) -> u64 {
        self.graphs.get(graph).map_or(0, |g| g.flops)
    }

    pub fn tch_kind(&self) -> tch::Kind {
        kind_of(&self.dtype)
    }

    /// The kind the VAE decoder graph takes (its own dtype when the export upcast it).
    pub fn vae_kind(&self) -> tch::Kind {
        self.vae.as_ref().and_then(|v| v.dtype.as_deref()).map_or_else(|| self.tch_kind(), kind_of)
    }

    /// What running this model needs, one line each (shown by `fd info`).
    pub fn needs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let arch = match (self.kind, &self.split) {
            (ModelKind::Dit, Some(sp)) => format!(
                "dit: encoder = patch embedding + blocks 0..{} (caches their output tokens), decoder = blocks {}..{} + final layer",
                sp.encoder_blocks - 1,
                sp.encoder_blocks,
                sp.blocks - 1
            ),
            (ModelKind::Unet3d, _) => format!(
                "unet3d: encoder = conv_in + transformer_in + down blocks + mid block, decoder = up blocks; {} frames per video (fixed at export: --frames {})",
                self.frames.unwrap_or(0),
                self.frames.unwrap_or(0)
            ),
            _ => "unet2d: encoder = conv_in + down blocks + mid block, decoder = up blocks".into(),
        };
        out.push(("architecture".into(), arch));
        let c = &self.cond;
        let cond = match c.kind {
            CondKind::Class => {
                format!("class ids 0..{} (null id {})", c.num_classes.unwrap_or(0), c.null_id.unwrap_or(0))
            }
            CondKind::Text => {
                let n = 1 + usize::from(c.tokenizer_2.is_some());
                let pooled = c.pooled_dim.map_or(String::new(), |p| format!(" + pooled [{p}]"));
                format!(
                    "prompts: {n} tokenizer(s) + text encoder(s) in `cond_encoder` -> states [{}, {}]{pooled}",
                    c.seq_len, c.dim
                )
            }
            CondKind::Embedding => format!("raw embeddings [{}, {}] (library API only)", c.seq_len, c.dim),
        };
        out.push(("conditioning".into(), cond));
        let uncond = match (c.kind, c.uncond) {
            (CondKind::Class, _) => "the null class",
            (_, UncondRule::EmptyPrompt) => "the empty prompt",
            (_, UncondRule::Zeros) => "zero states and pooled embeds (force_zeros_for_empty_prompt)",
        };
        out.push(("unconditional (CFG)".into(), uncond.into()));
        let added = match &self.prepare {
            None => "none".to_string(),
            Some(p) => {
                let mut s =
                    format!("`cond_prepare` once per sample: {}", p.added.as_deref().unwrap_or("projection only"));
                if let Some(t) = &p.time_ids {
                    s += &format!(", time_ids {t:?}");
                }
                if p.projects_states {
                    s += &format!(", states projected {} -> {}", p.raw_dim, c.dim);
                }
                s
            }
        };
        out.push(("added conditioning".into(), added));
        if let Some(t) = &self.tome {
            out.push((
                "token merging".into(),
                format!(
                    "ToMe ratio {} at <= {}x downsampling, stride {}x{}, merging {}{}{}, {} partition ({}); in every UNet graph and its FLOPs",
                    t["ratio"],
                    t["max_downsample"],
                    t["sx"],
                    t["sy"],
                    if t["merge_attn"] == true { "attn " } else { "" },
                    if t["merge_crossattn"] == true { "crossattn " } else { "" },
                    if t["merge_mlp"] == true { "mlp " } else { "" },
                    t["partition"].as_str().unwrap_or("?"),
                    t["reference"].as_str().unwrap_or("?"),
                ),
            ));
        }
        if let Some(c) = &self.control {
            out.push((
                "control".into(),
                format!(
                    "ControlNet (`controlnet` graph): one {}x{} image per sample, {} channel(s), {}, values in [0, 1]",
                    c.size[0], c.size[1], c.channels, c.channel_order
                ),
            ));
        }
        if let Some(g) = self.guidance_channels {
            out.push((
                "guidance".into(),
                format!(
                    "classifier-free guidance on the first {g} of {} channels (the rest: conditional branch)",
                    self.in_channels
                ),
            ));
        }
        let variance = if self.out_channels == 2 * self.in_channels { " + learned variance" } else { "" };
        out.push(("output".into(), format!("{}{variance} ({} channels)", self.prediction_type, self.out_channels)));
        let space = match &self.vae {
            Some(v) => format!(
                "latent {}x{}x{} -> VAE decoder (x{}, scaling {}{})",
                self.in_channels,
                self.sample_size[0],
                self.sample_size[1],
                v.upscale,
                v.scaling_factor,
                v.dtype.as_deref().map_or(String::new(), |d| format!(", {d}"))
            ),
            None => format!("pixel {}x{}x{}", self.in_channels, self.sample_size[0], self.sample_size[1]),
        };
        out.push(("space".into(), space));
        out
    }

    /// Number of training timesteps from the scheduler config (default 1000, as diffusers; checked
    /// to be in 1..=1000000 at load).
    pub fn num_train_timesteps(&self) -> i64 {
        self.scheduler.get("num_train_timesteps").and_then(|v| v.as_i64()).unwrap_or(1000)
    }
}
