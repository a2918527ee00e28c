//! How a plan executes: decoding (as asked for, [`DecodeMode`]; as decided and why,
//! [`DecodeChoice`]; [`crate::decode`] decides `auto`), guidance, prior noise injection, the
//! ControlNet scale ([`ExecOptions`]), and the form run records write them in ([`ExecRecord`]).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// When prior noise injection is applied relative to the scheduler step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectWhen {
    Before,
    After,
}

/// Prior noise injection: z <- z + strength * z_T while t < tau * num_train_timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    /// c; the paper's SD default is 0.003.
    pub strength: f64,
    /// tau; the paper's SD default is 0.5.
    pub tau: f64,
    /// The paper's SD default is before the scheduler step.
    pub when: InjectWhen,
}

impl Injection {
    /// Parse `C@TAU` (e.g. `0.003@0.5`), optionally suffixed `:before` / `:after`.
    pub fn parse(spec: &str) -> Result<Self> {
        let err = || Error::Sampling(format!("--inject `{spec}`: expected C@TAU[:before|:after], e.g. 0.003@0.5"));
        let (body, when) = match spec.rsplit_once(':') {
            Some((b, "before")) => (b, InjectWhen::Before),
            Some((b, "after")) => (b, InjectWhen::After),
            Some(_) => return Err(err()),
            None => (spec, InjectWhen::Before),
        };
        let (c, tau) = body.split_once('@').ok_or_else(err)?;
        let strength: f64 = c.trim().parse().map_err(|_| err())?;
        let tau: f64 = tau.trim().parse().map_err(|_| err())?;
        if !strength.is_finite() || !(0.0..=1.0).contains(&tau) {
            return Err(err());
        }
        Ok(Self { strength, tau, when })
    }
}

/// How a plan is executed.
///
/// In records (`config.json` `exec`, part of the run identity) it is written as
/// [`ExecRecord`]: the decoding that runs (`parallel`, `max_decoder_batch`), not why it was chosen
/// (that is `run.json` `decode`); two options are equal when they run the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "ExecRecord", from = "ExecRecord")]
pub struct ExecOptions {
    /// How a group's decoders run, and why ([`crate::decode`]). Default parallel, uncapped.
    pub decode: DecodeChoice,
    /// Classifier-free guidance scale; 1 runs the conditional branch only, < 1 is an error. Default 1.
    pub guidance: f64,
    /// Prior noise injection. Default none.
    pub injection: Option<Injection>,
    /// ControlNet conditioning scale (diffusers' `controlnet_conditioning_scale`): the residuals
    /// are multiplied by it. Default 1; ignored without a ControlNet.
    pub control_scale: f64,
}

impl PartialEq for ExecOptions {
    fn eq(&self, other: &Self) -> bool {
        ExecRecord::from(self.clone()) == ExecRecord::from(other.clone())
    }
}

/// [`ExecOptions`] as records write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRecord {
    /// Batch the decoders of a group into one call (paper's parallel mode).
    pub parallel: bool,
    /// Cap on rows per decoder call (0 = no cap); a group is split into chunks of whole steps.
    pub max_decoder_batch: usize,
    pub guidance: f64,
    pub injection: Option<Injection>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub control_scale: f64,
}

impl From<ExecOptions> for ExecRecord {
    fn from(o: ExecOptions) -> Self {
        Self {
            parallel: o.decode.parallel,
            max_decoder_batch: o.decode.max_decoder_batch,
            guidance: o.guidance,
            injection: o.injection,
            control_scale: o.control_scale,
        }
    }
}

impl From<ExecRecord> for ExecOptions {
    fn from(r: ExecRecord) -> Self {
        let mode = if r.parallel { DecodeMode::Parallel } else { DecodeMode::Sequential };
        Self {
            decode: DecodeChoice::explicit(mode, r.parallel, r.max_decoder_batch, "recorded"),
            guidance: r.guidance,
            injection: r.injection,
            control_scale: r.control_scale,
        }
    }
}

fn one() -> f64 {
    1.0
}

// defaults are left out of records, so run identities of runs without a ControlNet are unchanged
fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            decode: DecodeChoice::explicit(DecodeMode::Parallel, true, 0, "given"),
            guidance: 1.0,
            injection: None,
            control_scale: 1.0,
        }
    }
}

impl ExecOptions {
    /// These options decoding as `choice` says.
    pub fn with_decode(mut self, choice: DecodeChoice) -> Self {
        self.decode = choice;
        self
    }

    /// Decoding given explicitly: parallel (with a row cap, 0 = none) or sequential.
    pub fn decoding(self, parallel: bool, max_decoder_batch: usize) -> Self {
        let mode = if parallel { DecodeMode::Parallel } else { DecodeMode::Sequential };
        self.with_decode(DecodeChoice::explicit(mode, parallel, max_decoder_batch, "given"))
    }
}

/// How the decoders of a group run, as asked for (`--decode`, an experiment row's `decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeMode {
    /// The fastest on the device at hand: on CUDA, one call per group (uncapped parallel); on a
    /// CPU, sequential or parallel with a row cap, from a short measurement cached per machine,
    /// model and batch ([`choose`]). Default.
    #[default]
    Auto,
    /// The paper's parallel decoding: a group's decoders in one call (split into calls of at most
    /// `max_decoder_batch` rows when a cap is given).
    Parallel,
    /// One decoder call per step.
    Sequential,
}

impl FromStr for DecodeMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "parallel" => Ok(Self::Parallel),
            "sequential" => Ok(Self::Sequential),
            _ => Err(Error::Config(format!("--decode `{s}`: expected auto, parallel or sequential"))),
        }
    }
}

impl std::fmt::Display for DecodeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Parallel => "parallel",
            Self::Sequential => "sequential",
        })
    }
}

/// The decoder's cost per row when one call holds `rows` rows (`steps` steps of one batch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RowCost {
    pub steps: usize,
    pub rows: usize,
    pub ms_per_row: f64,
}

/// The decoding a run uses and why (`run.json` `decode`, a bench row's `decode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeChoice {
    /// What was asked for.
    pub requested: DecodeMode,
    /// What runs: batched groups (`true`) or one call per step.
    pub parallel: bool,
    /// Rows per decoder call at most (0 = a whole group).
    pub max_decoder_batch: usize,
    /// Why, in words.
    pub reason: String,
    /// The measurement `auto` chose from (CPU only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<RowCost>,
}

impl DecodeChoice {
    /// A mode given explicitly (`parallel` with an optional cap, or `sequential`).
    pub fn explicit(requested: DecodeMode, parallel: bool, max_decoder_batch: usize, reason: &str) -> Self {
        let max_decoder_batch = if parallel { max_decoder_batch } else { 0 };
        Self { requested, parallel, max_decoder_batch, reason: reason.into(), calibration: Vec::new() }
    }

    /// In a table: `sequential`, `parallel`, `parallel ≤96 rows`, prefixed `auto: ` when chosen.
    pub fn summary(&self) -> String {
        let what = match (self.parallel, self.max_decoder_batch) {
            (false, _) => "sequential".to_string(),
            (true, 0) => "parallel".to_string(),
            (true, cap) => format!("parallel ≤{cap} rows"),
        };
        if self.requested == DecodeMode::Auto {
            format!("auto: {what}")
        } else {
            what
        }
    }
}
