//! fd-sched: samplers, key-step plans and the executor that runs encoder propagation.
//!
//! - [`sampler`]: [`SamplerSpec`], a sampler with its typed diffusers config that builds itself;
//!   [`schedulers`]: the samplers behind the [`Scheduler`] trait (diffusers-equal numerics).
//! - [`plan`]: where a key step is decided ([`KeySteps`] -> [`Plan`] groups).
//! - [`methods`]: the caching methods, one file each, the typed plan [`PlanSpec`] (a `--keys`
//!   value) and the method table [`methods::METHODS`].
//! - [`step`]: what every method's loop shares: the step context, the scheduler step, seeded noise
//!   and where a decoder batch is formed ([`step`]'s `decode_steps`).
//! - [`decode`]: how a group's decoders are batched (`auto` decides from the device and a
//!   measured per-row cost).
//! - [`options`]: how a plan executes ([`ExecOptions`]: decoding, guidance, injection).
//! - [`executor`]: [`sample`] checks a run and dispatches to the plan's method.
//! - [`pipeline`]: [`SamplingSpec`] = sampler + plan + execution options, and seeded batches.
#![forbid(unsafe_code)]

pub mod config;
pub mod decode;
mod error;
pub mod executor;
pub mod methods;
pub mod options;
pub mod pipeline;
pub mod plan;
pub mod sampler;
pub mod schedulers;
pub mod step;

pub use config::{
    DDIMSchedulerConfig, DDPMSchedulerConfig, DPMSolverMultistepSchedulerConfig, EulerDiscreteSchedulerConfig,
};
pub use error::{Error, Result};
pub use executor::{check_plan, sample, Hooks, SampleInput, SampleOutput};
pub use methods::{MethodRecord, Plan, PlanSpec};
pub use options::{ExecOptions, ExecRecord, InjectWhen, Injection};
pub use pipeline::{BatchOutput, SamplingSpec};
pub use plan::{AutoRule, KeySteps, PlanFile};
pub use sampler::SamplerSpec;
pub use schedulers::{Ddim, Ddpm, DpmSolverMultistep, EulerDiscrete, Scheduler};
pub use step::{initial_noise, step_noise, CallCounts, StepFeatures, Timings};
pub use tch;
