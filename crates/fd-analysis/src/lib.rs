//! fd-analysis: the paper's Fig. 3 observation, measured on any exported model, and key steps
//! chosen from it.
//!
//! - [`drift`]: streaming per-layer, per-step statistics of hierarchical features (encoder skips +
//!   mid, decoder up blocks): MSE between adjacent steps, Frobenius norm of the channel-mean map,
//!   relative change; batch-averaged with per-sample spread. Only the previous step's tensors are
//!   kept, so memory stays bounded.
//! - [`keysteps`]: drift-calibrated key steps (dynamic programming over the encoder drift profile).

pub mod drift;
pub mod keysteps;

/// Errors of fd-analysis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] fd_model::Error),
    #[error(transparent)]
    Sched(#[from] fd_sched::Error),
    #[error("{path}: {msg}")]
    Io { path: std::path::PathBuf, msg: String },
    #[error("{0}")]
    Input(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
