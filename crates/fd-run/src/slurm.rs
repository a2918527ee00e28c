//! An experiment as Slurm jobs (`fd experiment CONFIG --slurm`).
//!
//! [`submit`] turns the rows that are not evaluated yet into jobs, each task an ordinary `fd
//! experiment ... --stage X` command line written to a script under `<results>/slurm/`:
//!
//! - `reference.sh`: the named reference set's Inception features, computed once (none for an
//!   `.npz` reference);
//! - `<row>.sample.sh`: a job array, one task per missing shard (`--stage sample --shard i/K`,
//!   resumable, `--requeue`: a preempted or failed-node task runs again and keeps its finished
//!   batches);
//! - `<row>.finish.sh`: after the row's array and the reference (`afterany`), merges the shards,
//!   evaluates the row and records it (`--stage finish`); it fails, naming the row and the missing
//!   shards, when a shard did not finish;
//! - `table.sh`: after every finish job (`afterany`), the table and plots of the rows recorded
//!   (`--stage table`); it fails, naming the rows that are missing, when one is.
//!
//! Submitting again reruns only what is missing: evaluated rows are skipped, a sampled row gets only
//! its finish job, and a row's array lists only its unfinished shards. A submission takes the
//! results folder's lock and is refused while the jobs of the previous one are still queued or
//! running. Every submission (job ids, shards) is appended to `<results>/slurm/submissions.json`,
//! which [`status`] reads with the folders' state and `squeue`.

use std::path::{Path, PathBuf};
use std::process::Command;

use fd_model::io::{read_json, write_atomic, write_json};
use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::experiment::{ExperimentConfig, ExperimentOptions, RowProgress};
use crate::lock::FolderLock;
use crate::{Error, Result};

fn default_shards() -> usize {
    4
}

fn is_default_shards(v: &usize) -> bool {
    *v == default_shards()
}

/// How an experiment is cut into Slurm jobs and what each task asks for: the `slurm` section of
/// an experiment config, each field also a flag of `fd experiment --slurm`. The defaults run on a
/// single-node cluster with no GPU, no account and the default partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// Sampling shards per row: array tasks, one per GPU when `gpus` is 1. Default 4.
    #[serde(default = "default_shards", skip_serializing_if = "is_default_shards")]
    pub shards: usize,
    /// `--partition`. Default: the cluster's default partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--account`. Default: the user's default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// GPUs per task (`--gres=gpu:N`; run with `--device cuda`: Slurm sets CUDA_VISIBLE_DEVICES, fd
    /// sees the task's GPU as cuda:0). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: usize,
    /// `--cpus-per-task`. Default: Slurm's (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<usize>,
    /// `--time` of every task (e.g. `04:00:00`). Default: the partition's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Further `#SBATCH` arguments for every job, e.g. `--qos=normal` or `--constraint=a100`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            shards: default_shards(),
            partition: None,
            account: None,
            gpus: 0,
            cpus_per_task: None,
            time: None,
            sbatch_args: Vec::new(),
        }
    }
}

impl SlurmConfig {
    /// Whether this is the default (the config section is then left out when written).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Values that can be written as `#SBATCH` lines: no line breaks, no empty values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.shards == 0 {
            return Err("slurm shards must be >= 1".into());
        }
        if self.cpus_per_task == Some(0) {
            return Err("slurm cpus_per_task must be >= 1".into());
        }
        let fields = [("partition", &self.partition), ("account", &self.account), ("time", &self.time)];
        for (name, v) in fields {
            if let Some(v) = v {
                if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!("slurm {name} `{v}`: expected one word"));
                }
            }
        }
        for a in &self.sbatch_args {
            if !a.starts_with('-') || a.chars().any(char::is_control) {
                return Err(format!("slurm sbatch argument `{a}`: expected one option such as --qos=normal"));
            }
        }
        Ok(())
    }

    /// The `#SBATCH` lines every job carries.
    fn directives(&self) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(p) = &self.partition {
            d.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.account {
            d.push(format!("--account={a}"));
        }
        if self.gpus > 0 {
            d.push(format!("--gres=gpu:{}", self.gpus));
        }
        if let Some(c) = self.cpus_per_task {
            d.push(format!("--cpus-per-task={c}"));
        }
        if let Some(t) = &self.time {
            d.push(format!("--time={t}"));
        }
        d.extend(self.sbatch_args.iter().cloned());
        d
    }
}

/// The flags every task's `fd experiment` command line carries besides the stage: the device,
/// graph format, extractor, sample reuse and determinism of the submitting command.
#[derive(Debug, Clone)]
pub struct TaskFlags {
    /// The `fd` binary the tasks run (default: the submitting one).
    pub fd: PathBuf,
    /// `--device` text as given (`cuda` on GPU nodes).
    pub device: String,
}

/// One submission: what was submitted for each row, and the job ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    /// When (UTC).
    pub submitted: String,
    /// Shards per row.
    pub shards: usize,
    /// The reference job, when the reference had to be computed.
    pub reference_job: Option<String>,
    pub rows: Vec<RowJobs>,
    /// The table job.
    pub table_job: String,
}

/// A row's jobs in one submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowJobs {
    pub label: String,
    /// The sampling array job and the shard indices it runs (none when every shard was finished).
    pub sample_job: Option<String>,
    pub shards: Vec<usize>,
    /// The merge + evaluate job.
    pub finish_job: String,
}

/// What [`submit`] did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Jobs submitted (also appended to `submissions.json`).
    Jobs(Submission),
    /// Every row is evaluated: nothing to submit.
    Nothing,
}

/// Where a submission's files go.
pub fn slurm_dir(results: &Path) -> PathBuf {
    results.join("slurm")
}

fn submissions_path(results: &Path) -> PathBuf {
    slurm_dir(results).join("submissions.json")
}

/// Every submission made for this results folder, oldest first (none when there is no record).
pub fn submissions(results: &Path) -> Result<Vec<Submission>> {
    let p = submissions_path(results);
    if !p.is_file() {
        return Ok(Vec::new());
    }
    Ok(read_json(&p)?)
}

/// A shell word: `'...'` with embedded single quotes escaped.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=:,@+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// An absolute form of `p` (relative to the current folder), without touching the filesystem.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(io(p))
}

/// The job states in which a job may still write (everything but the final states).
fn is_live(state: &str) -> bool {
    // `CANCELLED` may carry a suffix (`CANCELLED by 0`, `CANCELLED+`)
    !matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "OUT_OF_MEMORY"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
            | "SPECIAL_EXIT"
    ) && !state.starts_with("CANCELLED")
}

/// States of the given jobs (`<id>` or `<id>_<task>` for array tasks) that `squeue` still knows;
/// jobs it has forgotten (finished long ago) are absent. Err when `squeue` cannot be run.
pub fn job_states(ids: &[String]) -> std::result::Result<Vec<(String, String)>, String> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = Command::new("squeue")
        .args(["-h", "-r", "-t", "all", "-o", "%i %T", "-j", &ids.join(",")])
        .output()
        .map_err(|e| format!("squeue: {e} (is Slurm's client installed and on PATH?)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // every id unknown: all finished and purged
        if err.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        return Err(format!("squeue failed: {}", err.trim()));
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(i, s)| (i.trim().to_string(), s.trim().to_string()))
        .collect())
}

/// The job ids of a submission.
fn jobs_of(s: &Submission) -> Vec<String> {
    let mut ids: Vec<String> = s.reference_job.iter().cloned().collect();
    for r in &s.rows {
        ids.extend(r.sample_job.iter().cloned());
        ids.push(r.finish_job.clone());
    }
    ids.push(s.table_job.clone());
    ids
}

/// `sbatch --parsable [--dependency=afterany:a:b] script` -> the job id.
fn sbatch(script: &Path, after: &[String], log: &mut String) -> Result<String> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable");
    if !after.is_empty() {
        cmd.arg(format!("--dependency=afterany:{}", after.join(":")));
    }
    cmd.arg(script);
    let out =
        cmd.output().map_err(|e| Error::Input(format!("sbatch: {e} (is Slurm's client installed and on PATH?)")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    log.push_str(&format!("$ {:?}\n{stdout}\n{stderr}\n", cmd));
    if !out.status.success() {
        return Err(Error::Input(format!("sbatch {} failed: {stderr}", script.display())));
    }
    // `<id>` or `<id>;<cluster>`
    let id = stdout.split(';').next().unwrap_or("").trim().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Input(format!("sbatch {}: unexpected output `{stdout}`", script.display())));
    }
    Ok(id)
}

/// Submit the experiment's missing work as Slurm jobs (see the module docs). `cfg` is the config
/// with the command line's overrides applied; it is written to `<results>/slurm/experiment.json`
/// and every task reads that file.
pub fn submit(cfg: &ExperimentConfig, opt: &ExperimentOptions, task: &TaskFlags) -> Result<Submitted> {
    let slurm = &cfg.slurm;
    slurm.validate().map_err(Error::Input)?;
    crate::experiment::check_shards(cfg, slurm.shards)?;
    fd_eval::reference::check_reference(&cfg.reference).map_err(|e| Error::from(e).context("reference"))?;
    let results = absolute(&opt.results_dir)?;
    let work = absolute(&opt.work_dir)?;
    let _lock = FolderLock::acquire(&results, "fd experiment --slurm (submitting)")?;
    // one submission at a time: the previous one's jobs must be done
    if let Some(prev) = submissions(&results)?.last() {
        let live: Vec<String> = job_states(&jobs_of(prev))
            .map_err(|e| Error::Input(format!("cannot check the previous submission's jobs: {e}")))?
            .into_iter()
            .filter(|(_, s)| is_live(s))
            .map(|(i, s)| format!("{i} {s}"))
            .collect();
        if !live.is_empty() {
            return Err(Error::Folder {
                path: results.clone(),
                msg: format!(
                    "the previous submission ({}) still has jobs queued or running: {}; wait for them or scancel them",
                    prev.submitted,
                    live.join(", ")
                ),
            });
        }
    }
    let opt = ExperimentOptions { results_dir: results.clone(), work_dir: work.clone(), ..opt.clone() };
    let todo: Vec<(&crate::experiment::RowSpec, RowProgress)> = crate::experiment::selected_rows(cfg, &opt)?
        .into_iter()
        .map(|r| Ok((r, crate::experiment::row_progress(cfg, &opt, r, slurm.shards)?)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, p)| !matches!(p, RowProgress::Evaluated(_)))
        .collect();
    if todo.is_empty() {
        return Ok(Submitted::Nothing);
    }
    let dir = slurm_dir(&results);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    let config_path = dir.join("experiment.json");
    write_json(&config_path, cfg)?;
    let cwd = std::env::current_dir().map_err(io(Path::new(".")))?;
    let base = task_command(&config_path, &opt, task);
    let script = |name: &str, job: &str, array: Option<&str>, log: &str, command: &str| -> Result<PathBuf> {
        let mut s = String::from("#!/bin/bash\n");
        let mut d = vec![
            format!("--job-name=fd-{}-{job}", cfg.name),
            format!("--chdir={}", cwd.display()),
            format!("--output={}", logs.join(log).display()),
            "--open-mode=append".to_string(),
        ];
        if let Some(a) = array {
            d.push(format!("--array={a}"));
            d.push("--requeue".into());
        }
        d.extend(slurm.directives());
        for x in d {
            s += &format!("#SBATCH {x}\n");
        }
        s += &format!(
            "# written by `fd experiment --slurm` ({}) for experiment `{}`; see `fd experiment --help`\nset -euo pipefail\n\
             # libtorch's CPU threads: the task's CPUs, not the node's\n\
             export OMP_NUM_THREADS=\"${{OMP_NUM_THREADS:-${{SLURM_CPUS_PER_TASK:-1}}}}\"\n\
             echo \"[$(date -u '+%F %T') on $(hostname)] job ${{SLURM_JOB_ID:-}} ${{SLURM_ARRAY_TASK_ID:+task $SLURM_ARRAY_TASK_ID}}\"\n\
             exec {command}\n",
            crate::machine::now(),
            cfg.name
        );
        let p = dir.join(name);
        write_atomic(&p, s.as_bytes())?;
        Ok(p)
    };
    let mut log = String::new();
    let needs_reference = fd_eval::reference::NAMED.contains(&cfg.reference.as_str());
    let reference_job = if needs_reference {
        let p = script("reference.sh", "reference", None, "reference-%j.out", &format!("{base} --stage reference"))?;
        Some(sbatch(&p, &[], &mut log)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for (row, progress) in &todo {
        let slug = row.slug();
        let only = format!("--only {}", quote(&row.label));
        let missing: Vec<usize> = match progress {
            RowProgress::Shards(s) => s.iter().enumerate().filter(|(_, s)| !s.finished).map(|(i, _)| i).collect(),
            _ => Vec::new(),
        };
        let sample_job = if missing.is_empty() {
            None
        } else {
            let array = missing.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
            let command = format!("{base} --stage sample {only} --shard \"$SLURM_ARRAY_TASK_ID/{}\"", slurm.shards);
            let p = script(
                &format!("{slug}.sample.sh"),
                &format!("{slug}-sample"),
                Some(&array),
                &format!("{slug}.sample-%A_%a.out"),
                &command,
            )?;
            Some(sbatch(&p, &[], &mut log)?)
        };
        let command = format!("{base} --stage finish {only} --shards {}", slurm.shards);
        let p = script(
            &format!("{slug}.finish.sh"),
            &format!("{slug}-finish"),
            None,
            &format!("{slug}.finish-%j.out"),
            &command,
        )?;
        let after: Vec<String> = sample_job.iter().chain(reference_job.iter()).cloned().collect();
        let finish_job = sbatch(&p, &after, &mut log)?;
        rows.push(RowJobs { label: row.label.clone(), sample_job, shards: missing, finish_job });
    }
    let p = script("table.sh", "table", None, "table-%j.out", &format!("{base} --stage table"))?;
    let after: Vec<String> = rows.iter().map(|r| r.finish_job.clone()).collect();
    let table_job = sbatch(&p, &after, &mut log)?;
    let sub = Submission { submitted: crate::machine::now(), shards: slurm.shards, reference_job, rows, table_job };
    let mut all = submissions(&results)?;
    all.push(sub.clone());
    write_json(&submissions_path(&results), &all)?;
    let log_path = dir.join("submit.log");
    let mut text = std::fs::read_to_string(&log_path).unwrap_or_default();
    text += &format!("# {}\n{log}", sub.submitted);
    write_atomic(&log_path, text.as_bytes())?;
    Ok(Submitted::Jobs(sub))
}

/// The command line every task runs, without the stage: the submitted config, the folders, and the
/// submitting command's device, format, extractor, reuse and determinism.
fn task_command(config: &Path, opt: &ExperimentOptions, task: &TaskFlags) -> String {
    let mut words = vec![
        quote(&task.fd.display().to_string()),
        "experiment".into(),
        quote(&config.display().to_string()),
        "--out".into(),
        quote(&opt.results_dir.display().to_string()),
        "--work".into(),
        quote(&opt.work_dir.display().to_string()),
        "--device".into(),
        quote(&task.device),
        "--format".into(),
        opt.format.as_str().to_string(),
        "--inception".into(),
        quote(&std::path::absolute(&opt.inception).unwrap_or_else(|_| opt.inception.clone()).display().to_string()),
    ];
    match &opt.reuse_root {
        Some(r) => {
            words.push("--reuse-from".into());
            words.push(quote(&std::path::absolute(r).unwrap_or_else(|_| r.clone()).display().to_string()));
        }
        None => words.push("--no-reuse".into()),
    }
    if opt.deterministic {
        words.push("--deterministic".into());
    }
    words.join(" ")
}

/// Per row: evaluated, sampled, or each shard's parts; with the job ids and states of the latest
/// submission (from `squeue`, when it can be run). One line per row, then the table job.
pub fn status(cfg: &ExperimentConfig, opt: &ExperimentOptions) -> Result<String> {
    let subs = submissions(&opt.results_dir)?;
    let last = subs.last();
    let shards = last.map_or(cfg.slurm.shards, |s| s.shards);
    crate::experiment::check_shards(cfg, shards)?;
    let (states, note) = match last.map(jobs_of) {
        Some(ids) => match job_states(&ids) {
            Ok(s) => (s, None),
            Err(e) => (Vec::new(), Some(e)),
        },
        None => (Vec::new(), None),
    };
    let state_of = |id: &str| -> String {
        states.iter().find(|(i, _)| i == id).map_or_else(|| "done or forgotten by squeue".into(), |(_, s)| s.clone())
    };
    let mut out = match last {
        Some(s) => format!(
            "{}: {} submission(s), the latest {} ({} shards per row)\n",
            opt.results_dir.display(),
            subs.len(),
            s.submitted,
            s.shards
        ),
        None => format!("{}: never submitted to Slurm ({} shards per row)\n", opt.results_dir.display(), shards),
    };
    if let Some(n) = note {
        out += &format!("(job states unknown: {n})\n");
    }
    let (mut done, rows) = (0, crate::experiment::selected_rows(cfg, opt)?);
    for row in &rows {
        let jobs = last.and_then(|s| s.rows.iter().find(|r| r.label == row.label));
        let line = match crate::experiment::row_progress(cfg, opt, row, shards)? {
            RowProgress::Evaluated(r) => {
                done += 1;
                format!("evaluated: FID {:.2}, {:.4} s/image", r.fid, r.total_s_per_image)
            }
            RowProgress::Sampled => match jobs {
                Some(j) => format!("sampled; finish job {} {}", j.finish_job, state_of(&j.finish_job)),
                None => "sampled; not evaluated (submit to evaluate it)".into(),
            },
            RowProgress::Shards(s) => {
                let finished = s.iter().filter(|x| x.finished).count();
                let mut parts = Vec::new();
                for (i, x) in s.iter().enumerate().filter(|(_, x)| !x.finished) {
                    let job = jobs.and_then(|j| j.sample_job.as_ref().filter(|_| j.shards.contains(&i)));
                    let st = job.map_or_else(
                        || "not submitted".into(),
                        |id| {
                            let t = format!("{id}_{i}");
                            format!("job {t} {}", state_of(&t))
                        },
                    );
                    parts.push(format!("shard {i}: {}/{} parts, {st}", x.parts_done, x.parts_total));
                }
                let fin = jobs
                    .map_or_else(String::new, |j| format!("; finish job {} {}", j.finish_job, state_of(&j.finish_job)));
                format!("{finished}/{} shards done; {}{fin}", s.len(), parts.join("; "))
            }
        };
        out += &format!("  {}: {line}\n", row.label);
    }
    out += &format!("{done}/{} rows evaluated", rows.len());
    if let Some(s) = last {
        out += &format!("; table job {} {}", s.table_job, state_of(&s.table_job));
    }
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_words_whole() {
        assert_eq!(quote("abc/d.e"), "abc/d.e");
        assert_eq!(quote("ours 50ls"), "'ours 50ls'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn directives_and_validation() {
        let mut s = SlurmConfig::default();
        assert!(s.directives().is_empty() && s.validate().is_ok() && s.is_default());
        s.gpus = 1;
        s.partition = Some("gpu".into());
        s.time = Some("04:00:00".into());
        s.sbatch_args = vec!["--qos=high".into()];
        assert_eq!(s.directives(), ["--partition=gpu", "--gres=gpu:1", "--time=04:00:00", "--qos=high"]);
        s.partition = Some("a b".into());
        assert!(s.validate().unwrap_err().contains("partition"));
        s.partition = None;
        s.sbatch_args = vec!["qos".into()];
        assert!(s.validate().unwrap_err().contains("qos"));
        s.sbatch_args.clear();
        s.shards = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn live_states() {
        for s in ["PENDING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED", "CONFIGURING"] {
            assert!(is_live(s), "{s}");
        }
        for s in ["COMPLETED", "FAILED", "CANCELLED", "CANCELLED+", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"] {
            assert!(!is_live(s), "{s}");
        }
    }
}
