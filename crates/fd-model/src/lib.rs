//! fd-model: a diffusers `UNet2DConditionModel` exported by `experiments/export/export_unet.py` as split
//! TorchScript graphs, loaded with libtorch (tch).
//!
//! - [`Manifest`]: `manifest.json` (shapes, conditioning, scheduler config, per-graph FLOPs, hashes).
//! - [`Denoiser`]: `time_embed`, [`Denoiser::encode`] (the paper's encoder E: conv_in, down
//!   blocks, mid block), [`Denoiser::decode`] (decoder D: up blocks, norm, conv_out),
//!   [`Denoiser::forward`] = D(E(x)); conditioning (`encode_classes`, `encode_prompts`) and the
//!   optional VAE decoder.
//! - [`Condition`]: a sample's class or prompt, and [`Denoiser::encode_conditions`].
//! - [`device`]: `cpu` / `cuda[:N]` selection that makes libtorch's CUDA backend load.
//! - [`io`]: every file fd writes (temp file + rename) and every record it reads back (typed,
//!   errors naming the file and field), safetensors, image hashes.

pub mod aoti;
mod cond;
pub mod device;
mod error;
pub mod io;
pub mod manifest;
mod model;
pub mod prompt;

pub use cond::{Cond, Condition, ControlImage};
pub use device::parse_device;
pub use error::{Error, Result};
pub use manifest::{
    CondKind, CondSpec, ControlSpec, FormatChoice, GraphEntry, GraphFormat, MagCacheSpec, Manifest, ModelKind,
    PackageEntry, PrepareSpec, SplitSpec, TGateSpec, TeaCacheSpec, UncondRule, SCHEMA_VERSION,
};
pub use model::{mixed_formats, summarize_torch_error, Denoiser, EncoderFeatures, GraphCalls, LoadOptions};
pub use prompt::PromptTokenizer;
pub use tch;
