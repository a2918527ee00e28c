//! One file per command; each turns its flags into library objects once and calls fd-run.

pub mod bench;
pub mod compare;
pub mod drift;
pub mod eval;
pub mod experiment;
pub mod info;
pub mod merge;
pub mod sample;

/// A progress bar, shown at --log-level info or more verbose (as plain lines every 30 s when
/// stderr is not a terminal; `fd_run::progress`).
pub fn bar(len: u64, msg: &'static str) -> indicatif::ProgressBar {
    fd_run::progress::bar(len, log::max_level() >= log::LevelFilter::Info).with_message(msg)
}
