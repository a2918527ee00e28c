//! Sigma tables shared by the sigma-parametrised samplers (DPM-Solver, Euler).

/// sigma_t = ((1 - alpha_bar) / alpha_bar) ** 0.5 per training timestep, in float32 as diffusers.
pub fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a as f32) / a as f32).sqrt()).collect()
}

/// `np.interp(timesteps, arange(len(sigmas)), sigmas)` (float64), then cast to float32.
pub fn interp(timesteps: &[f64], sigmas: &[f32]) -> Vec<f32> {
    let last = sigmas.len() - 1;
    timesteps
        .iter()
        .map(|&t| {
            if t <= 0.0 {
                return sigmas[0];
            }
            if t >= last as f64 {
                return sigmas[last];
            }
            let i = t.floor() as usize;
            let (a, b) = (f64::from(sigmas[i]), f64::from(sigmas[i + 1]));
            (a + (t - i as f64) * (b - a)) as f32
        })
        .collect()
}

/// (alpha_t, sigma_t) of a sigma, as diffusers' `_sigma_to_alpha_sigma_t` (float32).
pub fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}
