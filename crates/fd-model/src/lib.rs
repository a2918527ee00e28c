//! fd-model: a diffusers `UNet2DConditionModel` exported by `experiments/export_unet.py` as split
//! TorchScript graphs, loaded with libtorch (tch).
//!
//! - [`Manifest`]: `manifest.json` (shapes, conditioning, scheduler config, per-graph FLOPs, hashes).
//! - [`UNetModel`]: `time_embed`, [`UNetModel::encode`] (the paper's encoder E: conv_in, down
//!   blocks, mid block), [`UNetModel::decode`] (decoder D: up blocks, norm, conv_out),
//!   [`UNetModel::forward`] = D(E(x)); conditioning (`encode_classes`, `encode_prompts`) and the
//!   optional VAE decoder.
//! - [`device`]: `cpu` / `cuda[:N]` selection that makes libtorch's CUDA backend load.

pub mod device;
mod error;
pub mod manifest;
mod model;
pub mod prompt;

pub use device::parse_device;
pub use error::{Error, Result};
pub use manifest::{CondKind, CondSpec, GraphEntry, Manifest, SCHEMA_VERSION};
pub use model::{EncoderFeatures, LoadOptions, UNetModel};
pub use prompt::PromptTokenizer;
pub use tch;
