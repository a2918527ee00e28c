//! fd-eval: metrics and their inputs.
//! - [`fid`]: where FID and KID are computed (statistics, Frechet distance, polynomial MMD).
//! - [`inception`]: the Inception-v3 extractor and its preprocessing; [`reference`]: cached
//!   reference feature sets (Fashion-MNIST test).
//! - [`consistency`]: class consistency with the committed judge classifier; [`clip`]: CLIP score
//!   with user-exported CLIP towers.
//! - [`idx`], [`images`]: Fashion-MNIST IDX reader, PNG I/O.
//! - [`runner`]: where samples are generated to disk (atomic parts, resume, shards);
//!   [`features`]: per-chunk cached Inception features of a sample folder and where its FID/KID
//!   is computed; [`experiment`]: rows of a JSON config -> one evaluated table (table1, ablations).
//! - [`progress`]: the progress bar every long step uses (plain lines when stderr is a log file).

pub mod clip;
pub mod consistency;
mod error;
pub mod experiment;
pub mod features;
pub mod fid;
pub mod idx;
pub mod images;
pub mod inception;
pub mod progress;
pub mod reference;
pub mod runner;

pub use error::{Error, Result};
