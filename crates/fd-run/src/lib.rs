//! fd-run: how fd runs things, between the flags and the numbers.
//!
//! - [`spec`]: run specs. A command's options ([`spec::SamplingOptions`], conditions) are resolved
//!   once against the model into one [`fd_sched::SamplingSpec`] (sampler + plan + execution
//!   options); `auto:K` plans are calibrated here.
//! - [`records`]: the run-folder contract: typed `config.json`, `run.json` and part records.
//! - [`runner`]: where samples are generated to disk (atomic parts, `--resume`, `--shard`);
//!   [`merge`]: shard folders into one run.
//! - [`evaluate`]: metrics of a run folder (FID/KID on per-part cached features, class
//!   consistency, CLIP score), reading the conditions from its records.
//! - [`experiment`]: rows of a JSON config -> sampled, evaluated, one table (table1, ablations).
//! - [`bench`]: plans timed side by side in one process (median, FLOPs-bound speedup, report);
//!   [`compare`]: finished runs of the same samples side by side (table + labelled figure).
//! - [`slurm`]: an experiment as Slurm jobs (sampling arrays, per-row finish jobs, the table),
//!   resubmitted for what is missing; `--status` per row.
//! - [`lock`]: one writer per folder (advisory lock, the holder's pid and host in the error).
//! - [`machine`]: machine description, date and machine tags of result folders;
//!   [`progress`]: the progress bar every long step uses.
#![forbid(unsafe_code)]

pub mod bench;
pub mod compare;
mod error;
pub mod evaluate;
pub mod experiment;
pub mod lock;
pub mod machine;
pub mod merge;
pub mod progress;
pub mod records;
pub mod reuse;
pub mod runner;
pub mod slurm;
pub mod spec;

pub use error::{Error, Result};
