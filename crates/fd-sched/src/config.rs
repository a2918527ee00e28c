//! diffusers scheduler configs (defaults equal diffusers') and the beta schedules they share.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// `beta_schedule` of diffusers schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, N)`.
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2` (Stable Diffusion).
    ScaledLinear,
    /// Cosine alpha-bar schedule (`betas_for_alpha_bar`, max beta 0.999).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// `timestep_spacing` of diffusers schedulers (Table 2 of "Common Diffusion Noise Schedules and
/// Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    #[default]
    Leading,
    Trailing,
    Linspace,
}

/// `prediction_type` of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    #[default]
    Epsilon,
    VPrediction,
    Sample,
}

/// The noise schedule every diffusers scheduler config carries (flattened into each config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BetaConfig {
    /// Number of diffusion steps used to train the model. Default 1000.
    pub num_train_timesteps: usize,
    /// Default 0.0001.
    pub beta_start: f64,
    /// Default 0.02.
    pub beta_end: f64,
    /// Default `linear`.
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, overriding the schedule. Default none.
    pub trained_betas: Option<Vec<f64>>,
    /// Rescale betas to zero terminal SNR; rejected when true (not implemented). Default false.
    pub rescale_betas_zero_snr: bool,
}

impl Default for BetaConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            rescale_betas_zero_snr: false,
        }
    }
}

impl BetaConfig {
    /// alpha_bar over the training timesteps, bit-equal to diffusers' float32 tensor.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        alphas_cumprod(&betas(
            self.beta_schedule,
            self.beta_start,
            self.beta_end,
            self.num_train_timesteps,
            self.trained_betas.as_deref(),
        ))
    }

    fn check(&self) -> Result<()> {
        let n = self.num_train_timesteps;
        if !(1..=1_000_000).contains(&n) {
            return Err(Error::Config(format!("num_train_timesteps must be in 1..=1000000, got {n}")));
        }
        let beta_ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
        match &self.trained_betas {
            Some(b) if b.len() != n || !b.iter().all(|&x| beta_ok(x)) => {
                return Err(Error::Config(format!(
                    "trained_betas must hold num_train_timesteps = {n} values in (0, 1), got {} values",
                    b.len()
                )))
            }
            Some(_) => {}
            None if !(beta_ok(self.beta_start) && beta_ok(self.beta_end)) => {
                return Err(Error::Config(format!(
                    "beta_start {} and beta_end {} must be in (0, 1)",
                    self.beta_start, self.beta_end
                )))
            }
            None => {}
        }
        if self.rescale_betas_zero_snr {
            return Err(Error::Config("rescale_betas_zero_snr=true is not supported".into()));
        }
        Ok(())
    }
}

/// Parse a diffusers scheduler config (unknown keys, e.g. `_class_name`, ignored; missing keys take
/// the struct's defaults, as diffusers' `from_config`).
pub fn from_json<T: serde::de::DeserializeOwned + HasBetas>(v: &serde_json::Value) -> Result<T> {
    let c: T = serde_json::from_value(v.clone()).map_err(|e| Error::Config(e.to_string()))?;
    c.betas().check()?;
    Ok(c)
}

/// Configs that carry a [`BetaConfig`].
pub trait HasBetas {
    fn betas(&self) -> &BetaConfig;
}

macro_rules! has_betas {
    ($($t:ty),*) => {$(
        impl HasBetas for $t {
            fn betas(&self) -> &BetaConfig {
                &self.betas
            }
        }
        impl $t {
            /// From a manifest's diffusers scheduler config.
            pub fn from_json(v: &serde_json::Value) -> Result<Self> {
                from_json(v)
            }
        }
    )*};
}
has_betas!(DDIMSchedulerConfig, DDPMSchedulerConfig, DPMSolverMultistepSchedulerConfig, EulerDiscreteSchedulerConfig);

/// Mirrors `diffusers.DDIMScheduler.__init__`; every default equals diffusers'.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DDIMSchedulerConfig {
    #[serde(flatten)]
    pub betas: BetaConfig,
    /// Clip the predicted x0 to [-clip_sample_range, clip_sample_range]. Default true.
    pub clip_sample: bool,
    /// Default 1.0.
    pub clip_sample_range: f64,
    /// Use alpha_bar = 1 for the step past the last one (else alpha_bar[0]). Default true.
    pub set_alpha_to_one: bool,
    /// Offset added to inference timesteps (SD uses 1). Default 0.
    pub steps_offset: usize,
    /// Default `epsilon`.
    pub prediction_type: PredictionType,
    /// Default `leading`.
    pub timestep_spacing: TimestepSpacing,
    /// Dynamic thresholding of the predicted x0 (Imagen; DeepFloyd-IF's config sets it):
    /// replaces `clip_sample` when true. Default false.
    pub thresholding: bool,
    /// Quantile of |x0| per sample that sets the threshold. Default 0.995.
    pub dynamic_thresholding_ratio: f64,
    /// Upper bound of the threshold. Default 1.0.
    pub sample_max_value: f64,
}

/// `variance_type` of DDPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    #[default]
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
    FixedLargeLog,
    /// The model predicts the variance (its output has twice the sample's channels).
    Learned,
    /// The model predicts an interpolation between the fixed small and large log variances
    /// (improved DDPM; DeepFloyd-IF).
    LearnedRange,
}

/// Mirrors `diffusers.DDPMScheduler.__init__`; every default equals diffusers'.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DDPMSchedulerConfig {
    #[serde(flatten)]
    pub betas: BetaConfig,
    /// Default `fixed_small`.
    pub variance_type: VarianceType,
    /// Default true.
    pub clip_sample: bool,
    /// Default 1.0.
    pub clip_sample_range: f64,
    /// Default `epsilon`.
    pub prediction_type: PredictionType,
    /// Default `leading`.
    pub timestep_spacing: TimestepSpacing,
    /// Default 0.
    pub steps_offset: usize,
    /// Dynamic thresholding of the predicted x0 (Imagen; DeepFloyd-IF's config sets it):
    /// replaces `clip_sample` when true. Default false.
    pub thresholding: bool,
    /// Quantile of |x0| per sample that sets the threshold. Default 0.995.
    pub dynamic_thresholding_ratio: f64,
    /// Upper bound of the threshold. Default 1.0.
    pub sample_max_value: f64,
}

/// `algorithm_type` of DPM-Solver multistep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpmAlgorithm {
    /// DPM-Solver (noise prediction form).
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// DPM-Solver++ (data prediction form).
    #[serde(rename = "dpmsolver++")]
    DpmSolverPlusPlus,
}

/// `solver_type` of DPM-Solver multistep (second-order update form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpmSolverType {
    Midpoint,
    Heun,
}

/// `final_sigmas_type` of DPM-Solver / Euler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// Mirrors `diffusers.DPMSolverMultistepScheduler.__init__`; every default equals diffusers'.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DPMSolverMultistepSchedulerConfig {
    #[serde(flatten)]
    pub betas: BetaConfig,
    /// 1 or 2 (3 is not supported here). Default 2.
    pub solver_order: usize,
    /// Default `epsilon`.
    pub prediction_type: PredictionType,
    /// Default `dpmsolver++`.
    pub algorithm_type: DpmAlgorithm,
    /// Default `midpoint`.
    pub solver_type: DpmSolverType,
    /// First-order final step(s) for < 15 steps. Default true.
    pub lower_order_final: bool,
    /// Euler at the final step. Default false.
    pub euler_at_final: bool,
    /// Default `zero` (diffusers requires `sigma_min` with `dpmsolver`).
    pub final_sigmas_type: FinalSigmas,
    /// Default `linspace`.
    pub timestep_spacing: TimestepSpacing,
    /// Default 0.
    pub steps_offset: usize,
    /// Karras sigmas; rejected when true (not implemented). Default false.
    pub use_karras_sigmas: bool,
    /// Dynamic thresholding of the x0 prediction (DPM-Solver++ only, as diffusers). Default false.
    pub thresholding: bool,
    /// Default 0.995.
    pub dynamic_thresholding_ratio: f64,
    /// Default 1.0.
    pub sample_max_value: f64,
}

impl Default for DPMSolverMultistepSchedulerConfig {
    fn default() -> Self {
        Self {
            betas: BetaConfig::default(),
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            algorithm_type: DpmAlgorithm::DpmSolverPlusPlus,
            solver_type: DpmSolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigmas_type: FinalSigmas::Zero,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            use_karras_sigmas: false,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
        }
    }
}

/// Mirrors `diffusers.EulerDiscreteScheduler.__init__`; every default equals diffusers'.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EulerDiscreteSchedulerConfig {
    #[serde(flatten)]
    pub betas: BetaConfig,
    /// Default `epsilon`.
    pub prediction_type: PredictionType,
    /// Default `linspace`.
    pub timestep_spacing: TimestepSpacing,
    /// Default 0.
    pub steps_offset: usize,
    /// Default `zero`.
    pub final_sigmas_type: FinalSigmas,
    /// Karras sigmas; rejected when true (not implemented). Default false.
    pub use_karras_sigmas: bool,
}

impl Default for EulerDiscreteSchedulerConfig {
    fn default() -> Self {
        Self {
            betas: BetaConfig::default(),
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmas::Zero,
            use_karras_sigmas: false,
        }
    }
}

impl Default for DDIMSchedulerConfig {
    fn default() -> Self {
        Self {
            betas: BetaConfig::default(),
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
        }
    }
}

impl Default for DDPMSchedulerConfig {
    fn default() -> Self {
        Self {
            betas: BetaConfig::default(),
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
        }
    }
}

/// Betas exactly as diffusers computes them: `torch.linspace(..., dtype=float32)` (libtorch's own
/// linspace, so values match bit for bit), squared for `scaled_linear`; the cosine schedule in f64
/// then cast to float32, as `betas_for_alpha_bar`.
pub fn betas(schedule: BetaSchedule, start: f64, end: f64, n: usize, trained: Option<&[f64]>) -> Vec<f64> {
    if let Some(b) = trained {
        return b.iter().map(|&v| f64::from(v as f32)).collect();
    }
    let lin = |a: f64, b: f64| Tensor::linspace(a, b, n as i64, (Kind::Float, Device::Cpu));
    let t = match schedule {
        BetaSchedule::Linear => lin(start, end),
        BetaSchedule::ScaledLinear => lin(start.sqrt(), end.sqrt()).square(),
        BetaSchedule::SquaredcosCapV2 => {
            let abar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
            return (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    f64::from((1.0 - abar(t2) / abar(t1)).min(0.999) as f32)
                })
                .collect();
        }
    };
    Vec::<f32>::try_from(&t).unwrap_or_default().into_iter().map(f64::from).collect()
}

/// alpha_bar_t = prod_{s<=t} (1 - beta_s): `torch.cumprod` in float32, as diffusers.
pub fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    let b = Tensor::from_slice(&betas.iter().map(|&v| v as f32).collect::<Vec<_>>());
    let ac = (b.neg() + 1.0).cumprod(0, Kind::Float);
    Vec::<f32>::try_from(&ac).unwrap_or_default().into_iter().map(f64::from).collect()
}

/// Inference timesteps for `n` steps out of `num_train` (descending), as diffusers' set_timesteps.
pub fn spaced_timesteps(spacing: TimestepSpacing, num_train: usize, n: usize, steps_offset: usize) -> Result<Vec<i64>> {
    if n == 0 || n > num_train {
        return Err(Error::Config(format!("steps must be in 1..={num_train} (num_train_timesteps), got {n}")));
    }
    let t: Vec<i64> = match spacing {
        TimestepSpacing::Linspace => (0..n)
            .rev()
            .map(|i| if n == 1 { 0.0 } else { (num_train - 1) as f64 * i as f64 / (n - 1) as f64 })
            .map(|v| v.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / n;
            (0..n).rev().map(|i| (i * ratio + steps_offset) as i64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / n as f64;
            // np.round(np.arange(num_train, 0, -ratio)) - 1
            let len = (num_train as f64 / ratio).ceil() as usize;
            (0..len).map(|i| (num_train as f64 - i as f64 * ratio).round_ties_even() as i64 - 1).collect()
        }
    };
    Ok(t)
}
