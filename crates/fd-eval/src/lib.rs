//! fd-eval: metrics and their inputs. So far: class consistency with the committed judge
//! ([`consistency`]), the Fashion-MNIST IDX reader ([`idx`]) and image I/O ([`images`]).
//! FID / KID / CLIP score / GFLOPs reports arrive with the fd-eval issue.

pub mod consistency;
mod error;
pub mod fid;
pub mod idx;
pub mod images;
pub mod inception;

pub use error::{Error, Result};
