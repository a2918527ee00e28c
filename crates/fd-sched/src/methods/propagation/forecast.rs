//! Encoder propagation's feature calibrators: [`Copy`] (the paper: a non-key step decodes its key
//! step's features as they are) and [`Forecast`] (`+forecast:K`).

use fd_model::EncoderFeatures;

use super::Calibrator;

/// The paper's reuse: the key step's features, unchanged.
#[derive(Debug)]
pub(crate) struct Copy;

impl Calibrator for Copy {
    fn update(&mut self, _t: f64, _feats: &EncoderFeatures) {}

    fn approximate(&self, _t: f64, feats: &EncoderFeatures) -> EncoderFeatures {
        feats.clone()
    }
}

/// `+forecast:K`: a non-key step decodes the encoder features extrapolated in t through the last
/// K+1 key steps' features (Lagrange polynomial; fewer points at the first groups, the key step's
/// own features while only one is known).
#[derive(Debug)]
pub(crate) struct Forecast {
    order: usize,
    /// (timestep, features) of the last key steps, oldest first.
    history: Vec<(f64, EncoderFeatures)>,
}

impl Forecast {
    pub fn new(order: usize) -> Self {
        Self { order, history: Vec::new() }
    }
}

impl Calibrator for Forecast {
    fn update(&mut self, t: f64, feats: &EncoderFeatures) {
        self.history.push((t, feats.clone()));
        if self.history.len() > self.order + 1 {
            self.history.remove(0);
        }
    }

    fn approximate(&self, t: f64, feats: &EncoderFeatures) -> EncoderFeatures {
        if self.history.len() < 2 {
            feats.clone()
        } else {
            extrapolate(&self.history, t)
        }
    }

    fn per_step(&self) -> bool {
        true
    }
}

/// The encoder features at timestep `t` extrapolated through `points` (timestep, features) by the
/// Lagrange polynomial: weights w_i = prod_{m != i} (t - t_m) / (t_i - t_m) in f64, features summed
/// in order (tests/fixtures/gen_golden.py has the same reference).
fn extrapolate(points: &[(f64, EncoderFeatures)], t: f64) -> EncoderFeatures {
    let n = points.len();
    let w: Vec<f64> = (0..n)
        .map(|i| (0..n).filter(|&m| m != i).map(|m| (t - points[m].0) / (points[i].0 - points[m].0)).product())
        .collect();
    let parts: Vec<&EncoderFeatures> = points.iter().map(|p| &p.1).collect();
    EncoderFeatures::weighted_sum(&parts, &w)
}
