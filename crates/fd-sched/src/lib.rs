//! fd-sched: samplers, key-step plans and the executor that runs encoder propagation.
//!
//! - [`schedulers`]: samplers behind the [`Scheduler`] trait (diffusers-equal numerics).
//! - [`plan`]: where a key step is decided ([`KeySteps`] -> [`Plan`] groups).
//! - [`executor`]: where a decoder batch is formed and the scheduler is stepped ([`sample`]).

pub mod config;
mod error;
pub mod executor;
pub mod pipeline;
pub mod plan;
pub mod schedulers;

pub use config::{
    DDIMSchedulerConfig, DDPMSchedulerConfig, DPMSolverMultistepSchedulerConfig, EulerDiscreteSchedulerConfig,
};
pub use error::{Error, Result};
pub use executor::{
    sample, CallCounts, ExecOptions, Hooks, InjectWhen, Injection, SampleInput, SampleOutput, StepFeatures, Timings,
};
pub use pipeline::{generate_batch, generate_batch_observed, initial_noise, BatchOutput, Condition};
pub use plan::{KeySteps, Method, Plan};
pub use schedulers::{Ddim, Ddpm, DpmSolverMultistep, EulerDiscrete, Scheduler};

/// Sampler names accepted by [`build_scheduler`] / `fd sample --scheduler`.
pub const SCHEDULERS: [&str; 5] = ["ddim", "ddpm", "dpm", "dpm++", "euler"];

/// Build a scheduler by name from a model manifest's diffusers scheduler config (keys the sampler
/// does not know are ignored and missing ones take diffusers' defaults, as `from_config`).
/// `dpm` is DPM-Solver (order 2, `final_sigmas_type` forced to `sigma_min` as diffusers requires),
/// `dpm++` DPM-Solver++ (2M).
pub fn build_scheduler(name: &str, config: &serde_json::Value, steps: usize, eta: f64) -> Result<Box<dyn Scheduler>> {
    if eta != 0.0 && name != "ddim" {
        return Err(Error::Config(format!("eta applies to ddim only (got eta={eta} with `{name}`)")));
    }
    Ok(match name {
        "ddim" => Box::new(Ddim::new(DDIMSchedulerConfig::from_json(config)?, steps, eta)?),
        "ddpm" => Box::new(Ddpm::new(DDPMSchedulerConfig::from_json(config)?, steps)?),
        "dpm" | "dpm++" => {
            let mut c = DPMSolverMultistepSchedulerConfig::from_json(config)?;
            if name == "dpm" {
                c.algorithm_type = config::DpmAlgorithm::DpmSolver;
                c.final_sigmas_type = config::FinalSigmas::SigmaMin;
            } else {
                c.algorithm_type = config::DpmAlgorithm::DpmSolverPlusPlus;
            }
            Box::new(DpmSolverMultistep::new(c, steps)?)
        }
        "euler" => Box::new(EulerDiscrete::new(EulerDiscreteSchedulerConfig::from_json(config)?, steps)?),
        other => return Err(Error::UnknownScheduler(other.to_string())),
    })
}
pub use tch;
