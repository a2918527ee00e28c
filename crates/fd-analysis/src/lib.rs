//! fd-analysis: per-layer feature-drift statistics (the paper's Fig. 3). Filled by the analysis
//! issue; for now it only holds its error type so the crate is wired into the workspace.

/// Errors of fd-analysis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] fd_model::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
