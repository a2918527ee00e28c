//! `fd`: a thin command-line front end over the fd library crates. This file only dispatches:
//! the flags are in [`args`], each command in its own file under `commands/`, the work in the
//! library crates (fd-run above all).
#![forbid(unsafe_code)]

mod args;
mod commands;

use clap::Parser;

use args::{Cli, Cmd, EvalCmd};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .format_timestamp(None)
        .format_target(false)
        .parse_env("FD_LOG")
        .init();
    let res = match cli.cmd {
        Cmd::Info { model, device } => commands::info::run(&model, &device),
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
        Cmd::Compare { out, labels, classifier, device, runs } => {
            commands::compare::run(&runs, &labels, classifier.as_deref(), &device, &out)
        }
        Cmd::Experiment(a) => commands::experiment::run(&a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
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
