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
}
