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

pub use config::DDIMSchedulerConfig;
pub use error::{Error, Result};
pub use executor::{sample, CallCounts, ExecOptions, InjectWhen, Injection, SampleInput, SampleOutput, Timings};
pub use pipeline::{generate_batch, initial_noise, BatchOutput, Condition};
pub use plan::{KeySteps, Plan};
pub use schedulers::{Ddim, Scheduler};

/// Build a scheduler by name from a model manifest's diffusers scheduler config.
pub fn build_scheduler(name: &str, config: &serde_json::Value, steps: usize, eta: f64) -> Result<Box<dyn Scheduler>> {
    match name {
        "ddim" => Ok(Box::new(Ddim::new(DDIMSchedulerConfig::from_json(config)?, steps, eta)?)),
        other => Err(Error::UnknownScheduler(other.to_string())),
    }
}
pub use tch;
