use std::path::PathBuf;

/// Errors of fd-run. Lower crates' errors are wrapped, not flattened; every variant that concerns
/// a file names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A run folder, record or config that is not what it must be.
    #[error("{path}: {msg}")]
    Folder { path: PathBuf, msg: String },
    /// A flag or option value (the message names it).
    #[error("{0}")]
    Input(String),
    /// An error with the option or row it concerns; its message includes the cause's.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    Model(#[from] fd_model::Error),
    #[error(transparent)]
    Sched(#[from] fd_sched::Error),
    #[error(transparent)]
    Analysis(#[from] fd_analysis::Error),
    #[error(transparent)]
    Eval(#[from] fd_eval::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("progress bar template: {0}")]
    Template(#[from] indicatif::style::TemplateError),
}

impl Error {
    /// This error, prefixed with the option or row it concerns (`--keys 50lx: ...`).
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context { context: context.into(), source: Box::new(self) }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `result.ctx("--keys x")`: wrap any fd error with the option it concerns.
pub(crate) trait ResultExt<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
