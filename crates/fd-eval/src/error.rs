use std::path::PathBuf;

/// Errors of fd-eval. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{0}")]
    Input(String),
    /// A TorchScript module (classifier, Inception, CLIP) that failed to load or run.
    #[error("{path}: {what} failed: {msg} (full libtorch message at --log-level debug)")]
    Module { path: PathBuf, what: String, msg: String },
    #[error(transparent)]
    Model(#[from] fd_model::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A libtorch failure of the module at `path` doing `what`, as one line (the full message goes to
/// the debug log).
pub(crate) fn module_error(path: &std::path::Path, what: &str) -> impl FnOnce(tch::TchError) -> Error {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |e| {
        let full = e.to_string();
        log::debug!("{}: {what}: {full}", path.display());
        Error::Module { path, what, msg: fd_model::summarize_torch_error(&full) }
    }
}
