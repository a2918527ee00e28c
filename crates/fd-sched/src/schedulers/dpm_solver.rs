//! DPM-Solver and DPM-Solver++ multistep (Lu et al. 2022), orders 1-2, as
//! `diffusers.DPMSolverMultistepScheduler` (deterministic variants).

use tch::Tensor;

use super::sigmas::{alpha_sigma, interp, train_sigmas};
use super::Scheduler;
use crate::config::{
    DPMSolverMultistepSchedulerConfig, DpmAlgorithm, DpmSolverType, FinalSigmas, PredictionType, TimestepSpacing,
};
use crate::{Error, Result};

#[derive(Debug)]
pub struct DpmSolverMultistep {
    pub config: DPMSolverMultistepSchedulerConfig,
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<f64>,
    /// One per step, plus the final sigma.
    sigmas: Vec<f32>,
    /// Converted model outputs of the last steps (newest last).
    history: Vec<Tensor>,
    lower_order_nums: usize,
}

impl DpmSolverMultistep {
    pub fn new(config: DPMSolverMultistepSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        if !(1..=2).contains(&config.solver_order) {
            return Err(Error::Config(format!("solver_order {} not supported (1 or 2)", config.solver_order)));
        }
        if config.use_karras_sigmas {
            return Err(Error::Config("use_karras_sigmas=true is not supported".into()));
        }
        if config.algorithm_type == DpmAlgorithm::DpmSolver && config.final_sigmas_type == FinalSigmas::Zero {
            return Err(Error::Config(
                "final_sigmas_type `zero` is not supported with algorithm_type `dpmsolver` (diffusers refuses it too); use sigma_min"
                    .into(),
            ));
        }
        let n = config.betas.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > n {
            return Err(Error::Config(format!(
                "steps must be in 1..={n} (num_train_timesteps), got {num_inference_steps}"
            )));
        }
        let s = num_inference_steps;
        // lambda_min_clipped = -inf: last_timestep = num_train_timesteps
        let timesteps: Vec<i64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => {
                (0..=s).rev().map(|i| ((n - 1) as f64 * i as f64 / s as f64).round_ties_even() as i64).take(s).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = n / (s + 1);
                (0..=s).rev().map(|i| (i * ratio + config.steps_offset) as i64).take(s).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / s as f64;
                (0..s).map(|i| (n as f64 - i as f64 * ratio).round_ties_even() as i64 - 1).collect()
            }
        };
        let ac = config.betas.alphas_cumprod();
        let train = train_sigmas(&ac);
        let timesteps: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
        let mut sigmas = interp(&timesteps, &train);
        sigmas.push(match config.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => train[0],
        });
        Ok(Self { config, alphas_cumprod: ac, timesteps, sigmas, history: Vec::new(), lower_order_nums: 0 })
    }

    /// Model output -> x0 (DPM-Solver++) or eps (DPM-Solver) at step `i`.
    fn convert(&self, out: &Tensor, i: usize, sample: &Tensor) -> Tensor {
        let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
        let (a, s) = (f64::from(alpha), f64::from(sigma));
        let x0 = match (self.config.algorithm_type, self.config.prediction_type) {
            (DpmAlgorithm::DpmSolverPlusPlus, PredictionType::Epsilon) => (sample - out * s) / a,
            (DpmAlgorithm::DpmSolverPlusPlus, PredictionType::Sample) => out.shallow_clone(),
            (DpmAlgorithm::DpmSolverPlusPlus, PredictionType::VPrediction) => sample * a - out * s,
            (DpmAlgorithm::DpmSolver, PredictionType::Epsilon) => out.shallow_clone(),
            (DpmAlgorithm::DpmSolver, PredictionType::Sample) => (sample - out * a) / s,
            (DpmAlgorithm::DpmSolver, PredictionType::VPrediction) => out * a + sample * s,
        };
        if self.config.thresholding && self.config.algorithm_type == DpmAlgorithm::DpmSolverPlusPlus {
            super::threshold_sample(&x0, self.config.dynamic_thresholding_ratio, self.config.sample_max_value)
        } else {
            x0
        }
    }

    fn lambda(sigma: f32) -> (f32, f32, f32) {
        let (a, s) = alpha_sigma(sigma);
        (a, s, a.ln() - s.ln())
    }

    fn first_order(&self, m0: &Tensor, i: usize, sample: &Tensor) -> Tensor {
        let (alpha_t, sigma_t, lambda_t) = Self::lambda(self.sigmas[i + 1]);
        let (alpha_s, sigma_s, lambda_s) = Self::lambda(self.sigmas[i]);
        let h = lambda_t - lambda_s;
        match self.config.algorithm_type {
            DpmAlgorithm::DpmSolverPlusPlus => {
                sample * f64::from(sigma_t / sigma_s) - m0 * f64::from(alpha_t * ((-h).exp() - 1.0))
            }
            DpmAlgorithm::DpmSolver => {
                sample * f64::from(alpha_t / alpha_s) - m0 * f64::from(sigma_t * (h.exp() - 1.0))
            }
        }
    }

    fn second_order(&self, i: usize, sample: &Tensor) -> Tensor {
        let (alpha_t, sigma_t, lambda_t) = Self::lambda(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0, lambda_s0) = Self::lambda(self.sigmas[i]);
        let (_, _, lambda_s1) = Self::lambda(self.sigmas[i - 1]);
        let (m0, m1) = (&self.history[self.history.len() - 1], &self.history[self.history.len() - 2]);
        let (h, h0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h0 / h;
        let d0 = m0;
        let d1 = (m0 - m1) * f64::from(1.0 / r0);
        match (self.config.algorithm_type, self.config.solver_type) {
            (DpmAlgorithm::DpmSolverPlusPlus, DpmSolverType::Midpoint) => {
                let c = alpha_t * ((-h).exp() - 1.0);
                sample * f64::from(sigma_t / sigma_s0) - d0 * f64::from(c) - d1 * f64::from(0.5 * c)
            }
            (DpmAlgorithm::DpmSolverPlusPlus, DpmSolverType::Heun) => {
                let c = alpha_t * ((-h).exp() - 1.0);
                sample * f64::from(sigma_t / sigma_s0) - d0 * f64::from(c)
                    + d1 * f64::from(alpha_t * (((-h).exp() - 1.0) / h + 1.0))
            }
            (DpmAlgorithm::DpmSolver, DpmSolverType::Midpoint) => {
                let c = sigma_t * (h.exp() - 1.0);
                sample * f64::from(alpha_t / alpha_s0) - d0 * f64::from(c) - d1 * f64::from(0.5 * c)
            }
            (DpmAlgorithm::DpmSolver, DpmSolverType::Heun) => {
                let c = sigma_t * (h.exp() - 1.0);
                sample * f64::from(alpha_t / alpha_s0)
                    - d0 * f64::from(c)
                    - d1 * f64::from(sigma_t * ((h.exp() - 1.0) / h - 1.0))
            }
        }
    }
}

impl Scheduler for DpmSolverMultistep {
    fn name(&self) -> &'static str {
        match self.config.algorithm_type {
            DpmAlgorithm::DpmSolver => "dpm",
            DpmAlgorithm::DpmSolverPlusPlus => "dpm++",
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_train_timesteps(&self) -> usize {
        self.config.betas.num_train_timesteps
    }

    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor, _noise: Option<&Tensor>) -> Result<Tensor> {
        let n = self.timesteps.len();
        let c = &self.config;
        let lower_order_final = i == n - 1
            && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type == FinalSigmas::Zero);
        let m = self.convert(model_output, i, sample);
        self.history.push(m.shallow_clone());
        if self.history.len() > c.solver_order {
            drop(self.history.remove(0));
        }
        let prev = if c.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(&m, i, sample)
        } else {
            // (diffusers' `lower_order_second` only lowers order 3 to 2; order 2 is the maximum here)
            self.second_order(i, sample)
        };
        if self.lower_order_nums < c.solver_order {
            self.lower_order_nums += 1;
        }
        Ok(prev)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: usize) -> Tensor {
        let a = self.alphas_cumprod[t];
        x0 * a.sqrt() + noise * (1.0 - a).sqrt()
    }
}
