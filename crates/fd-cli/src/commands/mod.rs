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

/// The sampler of `opts` on `model`, checked. Without `--scheduler` it is the export's own; that
/// choice is said on stderr unless it is the long-standing default (ddim for a DDIM export).
pub fn sampler(
    opts: &fd_run::spec::SamplingOptions,
    model: &fd_model::Denoiser,
) -> anyhow::Result<fd_sched::SamplerSpec> {
    let spec = opts.sampler(model)?;
    // the long-standing default (ddim) for a DDIM export is not worth a line
    if let (_, Some(how)) = opts.sampler_choice(model) {
        if fd_sched::SamplerSpec::export_default(&model.manifest.scheduler).0 != Some("ddim") {
            note!("{how}");
        }
    }
    Ok(spec)
}
