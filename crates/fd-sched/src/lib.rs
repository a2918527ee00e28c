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
//! - [`executor`]: [`sample`] checks a run and dispatches to the plan's method.
//! - [`pipeline`]: [`SamplingSpec`] = sampler + plan + execution options, and seeded batches.
#![forbid(unsafe_code)]

pub mod config;
pub mod decode;
mod error;
pub mod executor;
pub mod methods;
pub mod pipeline;
pub mod plan;
pub mod sampler;
pub mod schedulers;
pub mod step;

pub use config::{
    DDIMSchedulerConfig, DDPMSchedulerConfig, DPMSolverMultistepSchedulerConfig, EulerDiscreteSchedulerConfig,
};
pub use error::{Error, Result};
pub use executor::{
    check_plan, sample, CallCounts, ExecOptions, Hooks, InjectWhen, Injection, SampleInput, SampleOutput,
    StepFeatures, Timings,
};
pub use methods::{MethodRecord, PlanSpec};
pub use pipeline::{BatchOutput, SamplingSpec};
pub use plan::{AutoRule, KeySteps, Plan, PlanFile};
pub use step::{initial_noise, step_noise};
pub use sampler::SamplerSpec;
pub use schedulers::{Ddim, Ddpm, DpmSolverMultistep, EulerDiscrete, Scheduler};
pub use tch;
