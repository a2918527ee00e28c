//! DDIM (Song et al. 2021), as `diffusers.DDIMScheduler.step`.

use tch::Tensor;

use super::Scheduler;
use crate::config::{spaced_timesteps, DDIMSchedulerConfig, PredictionType};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Ddim {
    pub config: DDIMSchedulerConfig,
    /// eta: 0 = deterministic DDIM, 1 = DDPM-like variance.
    pub eta: f64,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    timesteps_i: Vec<i64>,
    timesteps: Vec<f64>,
    step_ratio: i64,
}

impl Ddim {
    pub fn new(config: DDIMSchedulerConfig, num_inference_steps: usize, eta: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::Config(format!("eta must be in [0, 1], got {eta}")));
        }
        let n = config.betas.num_train_timesteps;
        let ac = config.betas.alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { ac[0] };
        let timesteps_i = spaced_timesteps(config.timestep_spacing, n, num_inference_steps, config.steps_offset)?;
        if let Some(bad) = timesteps_i.iter().find(|&&t| t < 0 || t as usize >= n) {
            return Err(Error::Config(format!(
                "timestep {bad} outside 0..{n} (steps_offset {} with {num_inference_steps} steps)",
                config.steps_offset
            )));
        }
        Ok(Self {
            eta,
            alphas_cumprod: ac,
            final_alpha_cumprod,
            timesteps: timesteps_i.iter().map(|&t| t as f64).collect(),
            timesteps_i,
            step_ratio: (n / num_inference_steps) as i64,
            config,
        })
    }

    fn alpha_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }
}

impl Scheduler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_train_timesteps(&self) -> usize {
        self.config.betas.num_train_timesteps
    }

    fn needs_noise(&self) -> bool {
        self.eta > 0.0
    }

    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let t = self.timesteps_i[i];
        let prev_t = t - self.step_ratio;
        // Scalars in float32, as diffusers computes them from float32 tensors.
        let a_t = self.alpha_at(t) as f32;
        let a_prev = self.alpha_at(prev_t) as f32;
        let b_t = 1.0 - a_t;
        let (sa, sb) = (f64::from(a_t.sqrt()), f64::from(b_t.sqrt()));
        let (mut x0, eps) = match self.config.prediction_type {
            PredictionType::Epsilon => ((sample - model_output * sb) / sa, model_output.shallow_clone()),
            PredictionType::Sample => {
                let x0 = model_output.shallow_clone();
                let eps = (sample - &x0 * sa) / sb;
                (x0, eps)
            }
            PredictionType::VPrediction => (sample * sa - model_output * sb, model_output * sa + sample * sb),
        };
        if self.config.thresholding {
            x0 = super::threshold_sample(&x0, self.config.dynamic_thresholding_ratio, self.config.sample_max_value);
        } else if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            x0 = x0.clamp(-r, r);
        }
        let variance = ((1.0 - a_prev) / b_t) * (1.0 - a_t / a_prev);
        let std = self.eta as f32 * variance.sqrt();
        let dir = &eps * f64::from((1.0 - a_prev - std * std).sqrt());
        let mut prev = x0 * f64::from(a_prev.sqrt()) + dir;
        if self.eta > 0.0 {
            let noise = noise.ok_or_else(|| Error::Sampling("DDIM with eta > 0 needs step noise".into()))?;
            prev += noise * f64::from(std);
        }
        Ok(prev)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: usize) -> Tensor {
        let a = self.alphas_cumprod[t];
        x0 * a.sqrt() + noise * (1.0 - a).sqrt()
    }
}
