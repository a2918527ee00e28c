//! `fd`: a thin command-line front end over the fd library crates. This file only dispatches:
//! the flags are in [`args`], each command in its own file under `commands/`, the work in the
//! library crates (fd-run above all).
#![forbid(unsafe_code)]

/// `println!` that cannot panic: a report line to a closed stdout (`fd info MODEL | head -1`) is
/// dropped and the command carries on (its files are its record); exit status as usual.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// A `note: ...` line on stderr (what fd chose for the user), never a panic.
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "note: {}", format_args!($($t)*));
    }};
}

mod args;
mod commands;

use clap::Parser;

use args::{Cli, Cmd, EvalCmd};

fn main() -> std::process::ExitCode {
    // every record holds the command line as text: a non-UTF-8 argument is refused before anything
    if let Some((i, a)) = std::env::args_os().enumerate().skip(1).find(|(_, a)| a.to_str().is_none()) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "error: argument {i} ({}) is not valid UTF-8: fd records its command line and paths as text; use a UTF-8 name",
            a.to_string_lossy()
        );
        return std::process::ExitCode::from(2);
    }
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .format_timestamp(None)
        .format_target(false)
        .parse_env("FD_LOG")
        .init();
    let res = match cli.cmd {
        Cmd::Info { model, device, format } => commands::info::run(&model, &device, format),
        Cmd::Sample(a) => commands::sample::run(&a),
        Cmd::Bench(a) => commands::bench::run(&a),
        Cmd::Drift(a) => commands::drift::run(&a),
        Cmd::Eval(EvalCmd::Fid { samples, r#ref, inception, kid_subsets, kid_subset_size, seed, device }) => {
            let kid = fd_eval::score::KidOptions { subsets: kid_subsets, subset_size: kid_subset_size, seed };
            commands::eval::fid(&samples, &r#ref, inception.as_deref(), kid, &device)
        }
        Cmd::Eval(EvalCmd::Clip { samples, clip, device }) => commands::eval::clip(&samples, &clip, &device),
        Cmd::Eval(EvalCmd::Consistency { samples, classifier, device }) => {
            commands::eval::consistency(&samples, &classifier, &device)
        }
        Cmd::Merge { out, shards, overwrite } => commands::merge::run(&shards, &out, overwrite),
        Cmd::Compare { out, labels, classifier, device, timings, runs } => {
            commands::compare::run(&runs, &labels, classifier.as_deref(), &device, timings.as_deref(), &out)
        }
        Cmd::Experiment(a) => commands::experiment::run(&a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr().lock(), "error: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Library errors already show their cause in their own
/// message (so `to_string()` is complete), so a cause is added only when it says something new.
fn report(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
