//! MagCache's section of the manifest (`magcache`): the model's magnitude ratios, calibrated by
//! `experiments/add/add_magcache.py` from the DiT's own step-cache graphs.

use serde::{Deserialize, Serialize};

use super::{Manifest, ModelKind, STEPCACHE_GRAPHS};

/// MagCache's calibration of this model (diffusers' `MagCacheConfig.mag_ratios`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MagCacheSpec {
    /// Per step of the calibration run, the mean ratio ||r_i|| / ||r_(i-1)|| of the norms of the
    /// residual the transformer blocks add (1 at step 0); resampled to a run's step count by
    /// nearest neighbour, as diffusers does.
    pub mag_ratios: Vec<f64>,
    /// How the ratios were calibrated (sampler, steps, guidance, samples, seed), or None when
    /// given by hand.
    #[serde(default)]
    pub fit: Option<serde_json::Value>,
}

impl MagCacheSpec {
    /// The ratios resampled to `n` steps: diffusers' `nearest_interp` (a float32 grid times the
    /// float32 scale, rounded half to even), in float32 as its tensor.
    pub fn ratios_for(&self, n: usize) -> Vec<f32> {
        let src: Vec<f32> = self.mag_ratios.iter().map(|&r| r as f32).collect();
        if src.len() == n || src.is_empty() {
            return src;
        }
        if n == 1 {
            return vec![src[src.len() - 1]];
        }
        let scale = ((src.len() - 1) as f64 / (n - 1) as f64) as f32;
        (0..n).map(|i| src[((i as f32 * scale).round_ties_even() as usize).min(src.len() - 1)]).collect()
    }
}

/// The manifest's checks of this section (the first problem found, in words).
pub(super) fn validate(m: &Manifest) -> std::result::Result<(), String> {
    let Some(spec) = &m.magcache else { return Ok(()) };
    if spec.mag_ratios.is_empty() || spec.mag_ratios.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(format!("magcache.mag_ratios {:?}: expected positive finite numbers", spec.mag_ratios));
    }
    if m.kind != ModelKind::Dit || STEPCACHE_GRAPHS.iter().any(|g| !m.graphs.contains_key(*g)) {
        return Err("`magcache` is calibrated for a DiT's step-cache graphs, which this manifest lacks".into());
    }
    Ok(())
}
