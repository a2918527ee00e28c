//! TeaCache's section of the manifest (`teacache`): the fitted rescaling polynomial of its
//! indicator (a UNet's `teacache_probe`, a DiT's `stepcache_embed`).

use serde::{Deserialize, Serialize};

use super::Manifest;

/// TeaCache's rescaling of its indicator on this model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeaCacheSpec {
    /// Polynomial coefficients, highest power first (numpy.poly1d's order, as TeaCache's
    /// `rescale_func`): the indicator's relative L1 change -> the model output's, fitted per model.
    pub coefficients: Vec<f64>,
    /// How the coefficients were fitted (sampler, steps, guidance, samples, seed, R^2), or None
    /// when given by hand.
    #[serde(default)]
    pub fit: Option<serde_json::Value>,
}

impl TeaCacheSpec {
    /// The polynomial at `x` (Horner, f64).
    pub fn rescale(&self, x: f64) -> f64 {
        self.coefficients.iter().fold(0.0, |acc, c| acc * x + c)
    }
}

/// The manifest's checks of this section (the first problem found, in words).
pub(super) fn validate(m: &Manifest) -> std::result::Result<(), String> {
    if let Some(t) = &m.teacache {
        if t.coefficients.is_empty() || t.coefficients.iter().any(|c| !c.is_finite()) {
            return Err(format!("teacache.coefficients {:?}: expected finite numbers", t.coefficients));
        }
    }
    Ok(())
}
