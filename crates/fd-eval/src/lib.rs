//! fd-eval: metrics and their inputs. So far: the Fashion-MNIST IDX reader and image I/O.
//! FID / KID / class consistency / CLIP score / GFLOPs reports arrive with the fd-eval issue.

mod error;
pub mod idx;
pub mod images;

pub use error::{Error, Result};
