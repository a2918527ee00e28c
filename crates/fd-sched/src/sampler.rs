//! Samplers that build themselves (candle's `SchedulerConfig::build`): a [`SamplerSpec`] is the
//! sampler's kind with its typed diffusers config, made once from a model manifest's scheduler
//! config, and [`SamplerSpec::build`] makes a fresh scheduler for a step count (multistep samplers
//! keep per-run history, so every batch gets its own).

use serde::{Deserialize, Serialize};

use crate::config::{self, DpmAlgorithm, FinalSigmas};
use crate::schedulers::{Ddim, Ddpm, DpmSolverMultistep, EulerDiscrete, Scheduler};
use crate::{
    DDIMSchedulerConfig, DDPMSchedulerConfig, DPMSolverMultistepSchedulerConfig, Error, EulerDiscreteSchedulerConfig,
    Result,
};

/// A sampler and its full configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "name")]
pub enum SamplerSpec {
    /// `DDIMScheduler`; `eta` 0 is deterministic DDIM.
    #[serde(rename = "ddim")]
    Ddim { eta: f64, config: DDIMSchedulerConfig },
    /// `DDPMScheduler` (per-sample step noise from the seed).
    #[serde(rename = "ddpm")]
    Ddpm { config: DDPMSchedulerConfig },
    /// `DPMSolverMultistepScheduler(algorithm_type="dpmsolver")`, order 2, `final_sigmas_type`
    /// `sigma_min` (diffusers refuses `zero` with this algorithm).
    #[serde(rename = "dpm")]
    Dpm { config: DPMSolverMultistepSchedulerConfig },
    /// `DPMSolverMultistepScheduler` as DPM-Solver++ (2M).
    #[serde(rename = "dpm++")]
    DpmPlusPlus { config: DPMSolverMultistepSchedulerConfig },
    /// `EulerDiscreteScheduler`.
    #[serde(rename = "euler")]
    Euler { config: EulerDiscreteSchedulerConfig },
}

impl SamplerSpec {
    /// Sampler names accepted by [`SamplerSpec::from_config`] / `--scheduler`.
    pub const NAMES: [&'static str; 5] = ["ddim", "ddpm", "dpm", "dpm++", "euler"];

    /// The sampler a diffusers pipeline would run for an export whose scheduler config is
    /// `config`: the [`SamplerSpec::NAMES`] entry for its `_class_name` (`DPMSolverMultistepScheduler`
    /// by its `algorithm_type`), and that class name; `None` for a scheduler fd does not run
    /// (PNDM, LMS, ...) or a config without a class name.
    pub fn export_default(config: &serde_json::Value) -> (Option<&'static str>, Option<String>) {
        let class = config.get("_class_name").and_then(|c| c.as_str()).map(str::to_string);
        let name = match class.as_deref() {
            Some("DDIMScheduler") => Some("ddim"),
            Some("DDPMScheduler") => Some("ddpm"),
            Some("EulerDiscreteScheduler") => Some("euler"),
            Some("DPMSolverMultistepScheduler") => {
                match config.get("algorithm_type").and_then(|a| a.as_str()).unwrap_or("dpmsolver++") {
                    "dpmsolver" => Some("dpm"),
                    "dpmsolver++" => Some("dpm++"),
                    _ => None,
                }
            }
            _ => None,
        };
        (name, class)
    }

    /// The sampler `name` configured from a diffusers scheduler config (a model manifest's
    /// `scheduler`): keys the sampler does not know are ignored and missing ones take diffusers'
    /// defaults, as `from_config`. `eta` applies to `ddim` only.
    pub fn from_config(name: &str, diffusers_config: &serde_json::Value, eta: f64) -> Result<Self> {
        if eta != 0.0 && name != "ddim" {
            return Err(Error::Config(format!("eta applies to ddim only (got eta={eta} with `{name}`)")));
        }
        let dpm = |algorithm: DpmAlgorithm| -> Result<DPMSolverMultistepSchedulerConfig> {
            let mut c = DPMSolverMultistepSchedulerConfig::from_json(diffusers_config)?;
            c.algorithm_type = algorithm;
            if algorithm == DpmAlgorithm::DpmSolver {
                c.final_sigmas_type = FinalSigmas::SigmaMin;
            }
            Ok(c)
        };
        Ok(match name {
            "ddim" => Self::Ddim { eta, config: config::from_json(diffusers_config)? },
            "ddpm" => Self::Ddpm { config: config::from_json(diffusers_config)? },
            "dpm" => Self::Dpm { config: dpm(DpmAlgorithm::DpmSolver)? },
            "dpm++" => Self::DpmPlusPlus { config: dpm(DpmAlgorithm::DpmSolverPlusPlus)? },
            "euler" => Self::Euler { config: config::from_json(diffusers_config)? },
            other => return Err(Error::UnknownScheduler(other.to_string())),
        })
    }

    /// A fresh scheduler for `steps` inference steps.
    pub fn build(&self, steps: usize) -> Result<Box<dyn Scheduler>> {
        Ok(match self {
            Self::Ddim { eta, config } => Box::new(Ddim::new(config.clone(), steps, *eta)?),
            Self::Ddpm { config } => Box::new(Ddpm::new(config.clone(), steps)?),
            Self::Dpm { config } | Self::DpmPlusPlus { config } => {
                Box::new(DpmSolverMultistep::new(config.clone(), steps)?)
            }
            Self::Euler { config } => Box::new(EulerDiscrete::new(config.clone(), steps)?),
        })
    }

    /// The name `--scheduler` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ddim { .. } => "ddim",
            Self::Ddpm { .. } => "ddpm",
            Self::Dpm { .. } => "dpm",
            Self::DpmPlusPlus { .. } => "dpm++",
            Self::Euler { .. } => "euler",
        }
    }

    /// DDIM's eta (0 for every other sampler).
    pub fn eta(&self) -> f64 {
        match self {
            Self::Ddim { eta, .. } => *eta,
            _ => 0.0,
        }
    }
}
