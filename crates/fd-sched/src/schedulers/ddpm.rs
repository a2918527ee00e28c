//! DDPM (Ho et al. 2020) ancestral sampling, as `diffusers.DDPMScheduler.step`.

use tch::Tensor;

use super::Scheduler;
use crate::config::{spaced_timesteps, DDPMSchedulerConfig, PredictionType, VarianceType};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Ddpm {
    pub config: DDPMSchedulerConfig,
    alphas_cumprod: Vec<f64>,
    timesteps_i: Vec<i64>,
    timesteps: Vec<f64>,
}

impl Ddpm {
    pub fn new(config: DDPMSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let n = config.betas.num_train_timesteps;
        let timesteps_i = spaced_timesteps(config.timestep_spacing, n, num_inference_steps, config.steps_offset)?;
        if let Some(bad) = timesteps_i.iter().find(|&&t| t < 0 || t as usize >= n) {
            return Err(Error::Config(format!("timestep {bad} outside 0..{n}")));
        }
        Ok(Self {
            alphas_cumprod: config.betas.alphas_cumprod(),
            timesteps: timesteps_i.iter().map(|&t| t as f64).collect(),
            timesteps_i,
            config,
        })
    }

    fn alpha_at(&self, t: i64) -> f32 {
        if t >= 0 {
            self.alphas_cumprod[t as usize] as f32
        } else {
            1.0
        }
    }
}

impl Scheduler for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_train_timesteps(&self) -> usize {
        self.config.betas.num_train_timesteps
    }

    fn needs_noise(&self) -> bool {
        true
    }

    fn learned_variance(&self) -> bool {
        matches!(self.config.variance_type, VarianceType::Learned | VarianceType::LearnedRange)
    }

    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let c = sample.size()[1];
        let (model_output, predicted_variance) = if self.learned_variance() && model_output.size()[1] == 2 * c {
            let parts = model_output.split(c, 1);
            (parts[0].shallow_clone(), Some(parts[1].shallow_clone()))
        } else {
            (model_output.shallow_clone(), None)
        };
        let model_output = &model_output;
        let t = self.timesteps_i[i];
        // the next timestep of the list (diffusers' `previous_timestep`; -1 after the last), not
        // t - T/n: under `linspace` spacing the steps are not all T/n apart
        let prev_t = self.timesteps_i.get(i + 1).copied().unwrap_or(-1);
        // float32 scalars, as diffusers
        let a_t = self.alpha_at(t);
        let a_prev = self.alpha_at(prev_t);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let (sa, sb) = (f64::from(a_t.sqrt()), f64::from(b_t.sqrt()));
        let mut x0 = match self.config.prediction_type {
            PredictionType::Epsilon => (sample - model_output * sb) / sa,
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => sample * sa - model_output * sb,
        };
        if self.config.thresholding {
            x0 = super::threshold_sample(&x0, self.config.dynamic_thresholding_ratio, self.config.sample_max_value);
        } else if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            x0 = x0.clamp(-r, r);
        }
        let x0_coeff = a_prev.sqrt() * cur_beta / b_t;
        let cur_coeff = cur_alpha.sqrt() * b_prev / b_t;
        let mut prev = x0 * f64::from(x0_coeff) + sample * f64::from(cur_coeff);
        if t > 0 {
            let noise = noise.ok_or_else(|| Error::Sampling("DDPM needs step noise".into()))?;
            let small = (b_prev / b_t * cur_beta).max(1e-20);
            let std = match (self.config.variance_type, &predicted_variance) {
                (VarianceType::FixedSmall, _) => small.sqrt(),
                (VarianceType::FixedSmallLog, _) => (0.5 * small.ln()).exp(),
                (VarianceType::FixedLarge, _) => cur_beta.sqrt(),
                (VarianceType::FixedLargeLog, _) => (0.5 * cur_beta.ln()).exp(),
                (VarianceType::Learned, Some(v)) => {
                    prev += noise * v.sqrt();
                    return Ok(prev);
                }
                (VarianceType::LearnedRange, Some(v)) => {
                    // interpolate the log variance between the fixed small and large ones
                    let (min_log, max_log) = (f64::from(small.ln()), f64::from(cur_beta.ln()));
                    let frac = (v + 1.0) / 2.0;
                    let log_var: Tensor = &frac * max_log + (1.0 - &frac) * min_log;
                    prev += noise * (log_var * 0.5).exp();
                    return Ok(prev);
                }
                (VarianceType::Learned | VarianceType::LearnedRange, None) => {
                    return Err(Error::Sampling(format!(
                        "DDPM variance_type {:?} needs a model output with twice the sample's {c} channels",
                        self.config.variance_type
                    )))
                }
            };
            prev += noise * f64::from(std);
        }
        Ok(prev)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: usize) -> Tensor {
        let a = self.alphas_cumprod[t];
        x0 * a.sqrt() + noise * (1.0 - a).sqrt()
    }
}
