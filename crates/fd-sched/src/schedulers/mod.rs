//! Samplers behind one small trait, numerically equal to their diffusers counterparts.

mod ddim;
mod ddpm;
mod dpm_solver;
mod euler;
mod sigmas;

pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpm_solver::DpmSolverMultistep;
pub use euler::EulerDiscrete;

use tch::Tensor;

use crate::Result;

/// A diffusion sampler stepped by step index (position in [`Scheduler::timesteps`]).
pub trait Scheduler: std::fmt::Debug {
    /// Short name (`ddim`, ...).
    fn name(&self) -> &'static str;
    /// Inference timesteps, descending (model-time units; fractional for some samplers).
    fn timesteps(&self) -> &[f64];
    /// Number of training timesteps (for `t < tau * N` tests such as noise injection).
    fn num_train_timesteps(&self) -> usize;
    /// Standard deviation of the initial noise (1 for DDIM/DDPM/DPM-Solver, sigma_max for Euler).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Model input scaling at step `i` (identity except for sigma-parametrised samplers).
    fn scale_model_input(&self, sample: &Tensor, _i: usize) -> Tensor {
        sample.shallow_clone()
    }
    /// Whether [`Scheduler::step`] consumes fresh noise (DDPM, DDIM with eta > 0).
    fn needs_noise(&self) -> bool {
        false
    }
    /// One update from step `i` to `i + 1`. `noise` is required when [`Scheduler::needs_noise`].
    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor>;
    /// Forward-diffuse `x0` to training timestep `t` (integer training timestep).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: usize) -> Tensor;
    /// Whether [`Scheduler::step`] reads a learned variance: the model output then carries the
    /// noise prediction and the variance values stacked on channels (DDPM `learned` /
    /// `learned_range`); other samplers get the noise prediction only.
    fn learned_variance(&self) -> bool {
        false
    }
}

/// Dynamic thresholding of a predicted x0, as diffusers' `_threshold_sample`: per sample, s =
/// the `ratio` quantile of |x0| clamped to [1, max_value]; x0 is clamped to [-s, s] and divided
/// by s.
pub(crate) fn threshold_sample(x0: &Tensor, ratio: f64, max_value: f64) -> Tensor {
    let size = x0.size();
    let flat = x0.to_kind(tch::Kind::Float).reshape([size[0], -1]);
    let s = flat.abs().quantile_scalar(ratio, 1, false, "linear").clamp(1.0, max_value).unsqueeze(1);
    let out = flat.clamp_tensor(Some(-&s), Some(s.shallow_clone())) / &s;
    out.reshape(&size).to_kind(x0.kind())
}
