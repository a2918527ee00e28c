/// Errors of fd-sched: plan validation, scheduler configuration, sampling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key steps `{spec}`: {msg}")]
    KeySteps { spec: String, msg: String },
    #[error("scheduler config: {0}")]
    Config(String),
    #[error("unknown scheduler `{0}` (expected one of: ddim, ddpm, dpm, dpm++, euler)")]
    UnknownScheduler(String),
    #[error("sampling diverged: non-finite latents after step {step} (timestep {timestep}) with plan {plan}")]
    NonFinite { step: usize, timestep: f64, plan: String },
    #[error("sampling: {0}")]
    Sampling(String),
    #[error(transparent)]
    Model(#[from] fd_model::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
