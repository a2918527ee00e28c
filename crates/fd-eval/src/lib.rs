//! fd-eval: metrics and their inputs.
//! - [`fid`]: where FID and KID are computed (statistics, Frechet distance, polynomial MMD).
//! - [`inception`]: the Inception-v3 extractor and its preprocessing; [`reference`]: cached
//!   reference feature sets (Fashion-MNIST test).
//! - [`consistency`]: class consistency with the committed judge classifier; [`clip`]: CLIP score
//!   with user-exported CLIP towers.
//! - [`features`]: per-chunk cached Inception features of an image set; [`score`]: where a sample
//!   set's FID / KID against a reference is computed from them.
//! - [`idx`], [`images`]: Fashion-MNIST IDX reader, PNG I/O, sample grids.
//!
//! Generation, run folders and experiments live in fd-run; this crate knows images and features,
//! not how they were made.
#![forbid(unsafe_code)]

pub mod clip;
pub mod consistency;
mod error;
pub mod features;
pub mod fid;
pub mod idx;
pub mod images;
pub mod inception;
pub mod reference;
pub mod score;

pub(crate) use error::module_error;
pub use error::{Error, Result};
