use std::path::PathBuf;

/// Errors of fd-model. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: model folder not found (expected a folder holding manifest.json and the graph files)")]
    MissingFolder { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Record { path: PathBuf, msg: String },
    #[error("{path}: invalid manifest: {msg}")]
    Manifest { path: PathBuf, msg: String },
    #[error("{path}: unsupported manifest schema_version {found} (this build of fd reads versions 1 to {expected}; re-export the model with experiments/export/export_unet.py)")]
    SchemaVersion { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: graph file missing (manifest.json lists graph `{graph}`)")]
    MissingGraph { path: PathBuf, graph: String },
    #[error("{path}: SHA-256 mismatch for graph `{graph}`: manifest says {expected}, file has {found} (file corrupted or replaced; re-export the model)")]
    HashMismatch { path: PathBuf, graph: String, expected: String, found: String },
    #[error("{path}: not a loadable TorchScript graph: {msg}")]
    LoadGraph { path: PathBuf, msg: String },
    #[error("graph `{graph}` ({path}, method `{method}`) failed: {msg} (full libtorch message at --log-level debug)")]
    GraphCall { graph: String, path: PathBuf, method: String, msg: String },
    #[error("graph `{graph}`: AOTInductor package {path}: {msg}")]
    Package { graph: String, path: PathBuf, msg: String },
    #[error("model `{model}` has no `{graph}` graph ({why})")]
    NoSuchGraph { model: String, graph: String, why: &'static str },
    #[error("model `{model}` is a {kind} model: {what} applies to UNets only (use an encoder-propagation plan)")]
    Unsupported { model: String, kind: crate::ModelKind, what: String },
    #[error("{what}: expected {expected}, got {found}")]
    Shape { what: String, expected: String, found: String },
    #[error("device `{spec}`: {msg}")]
    Device { spec: String, msg: String },
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("conditioning: {0}")]
    Cond(String),
    #[error("{path}: control image: {msg}")]
    Control { path: PathBuf, msg: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
