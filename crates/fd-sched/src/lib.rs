//! fd-sched: samplers, key-step plans and the executor that runs encoder propagation.
//!
//! - [`sampler`]: [`SamplerSpec`], a sampler with its typed diffusers config that builds itself;
//!   [`schedulers`]: the samplers behind the [`Scheduler`] trait (diffusers-equal numerics).
//! - [`plan`]: where a key step is decided ([`KeySteps`] -> [`Plan`] groups).
//! - [`decode`]: how a group's decoders are batched (`auto` decides from the device and a
//!   measured per-row cost).
//! - [`executor`]: where a decoder batch is formed and the scheduler is stepped ([`sample`]).
//! - [`pipeline`]: [`SamplingSpec`] = sampler + plan + execution options, and seeded batches.
#![forbid(unsafe_code)]

pub mod config;
pub mod decode;
mod error;
pub mod executor;
pub mod pipeline;
pub mod plan;
pub mod sampler;
pub mod schedulers;

pub use config::{
    DDIMSchedulerConfig, DDPMSchedulerConfig, DPMSolverMultistepSchedulerConfig, EulerDiscreteSchedulerConfig,
};
pub use error::{Error, Result};
pub use executor::{
    sample, CallCounts, ExecOptions, Hooks, InjectWhen, Injection, SampleInput, SampleOutput, StepFeatures, Timings,
};
pub use pipeline::{initial_noise, step_noise, BatchOutput, SamplingSpec};
pub use plan::{CacheRule, KeySteps, Method, Plan, PlanFile};
pub use sampler::SamplerSpec;
pub use schedulers::{Ddim, Ddpm, DpmSolverMultistep, EulerDiscrete, Scheduler};
pub use tch;
