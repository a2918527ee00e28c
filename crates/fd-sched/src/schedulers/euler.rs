//! Euler (discrete) sampler of Karras et al. 2022, as `diffusers.EulerDiscreteScheduler`
//! (deterministic: s_churn = 0).

use tch::Tensor;

use super::sigmas::{interp, train_sigmas};
use super::Scheduler;
use crate::config::{EulerDiscreteSchedulerConfig, FinalSigmas, PredictionType, TimestepSpacing};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    pub config: EulerDiscreteSchedulerConfig,
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl EulerDiscrete {
    pub fn new(config: EulerDiscreteSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        if config.use_karras_sigmas {
            return Err(Error::Config("use_karras_sigmas=true is not supported".into()));
        }
        let n = config.betas.num_train_timesteps;
        let s = num_inference_steps;
        if s == 0 || s > n {
            return Err(Error::Config(format!("steps must be in 1..={n} (num_train_timesteps), got {s}")));
        }
        // float32 timesteps, as diffusers
        let timesteps: Vec<f64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => (0..s)
                .rev()
                .map(|i| if s == 1 { 0.0 } else { (n - 1) as f64 * i as f64 / (s - 1) as f64 })
                .map(|v| f64::from(v as f32))
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = n / s;
                (0..s).rev().map(|i| (i * ratio + config.steps_offset) as f64).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / s as f64;
                let len = (n as f64 / ratio).ceil() as usize;
                (0..len).map(|i| (n as f64 - i as f64 * ratio).round_ties_even() - 1.0).collect()
            }
        };
        let ac = config.betas.alphas_cumprod();
        let train = train_sigmas(&ac);
        let mut sigmas = interp(&timesteps, &train);
        sigmas.push(match config.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => train[0],
        });
        Ok(Self { config, alphas_cumprod: ac, timesteps, sigmas })
    }
}

impl Scheduler for EulerDiscrete {
    fn name(&self) -> &'static str {
        "euler"
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_train_timesteps(&self) -> usize {
        self.config.betas.num_train_timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0f32, f32::max);
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
            TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
        }
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Tensor {
        let s = self.sigmas[i];
        sample / f64::from((s * s + 1.0).sqrt())
    }

    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor, _noise: Option<&Tensor>) -> Result<Tensor> {
        let sigma = self.sigmas[i];
        let x0 = match self.config.prediction_type {
            PredictionType::Epsilon => sample - model_output * f64::from(sigma),
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => {
                model_output * f64::from(-sigma / (sigma * sigma + 1.0).sqrt())
                    + sample / f64::from(sigma * sigma + 1.0)
            }
        };
        let derivative = (sample - x0) / f64::from(sigma);
        let dt = self.sigmas[i + 1] - sigma;
        Ok(sample + derivative * f64::from(dt))
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: usize) -> Tensor {
        let a = self.alphas_cumprod[t] as f32;
        x0 + noise * f64::from(((1.0 - a) / a).sqrt())
    }
}
