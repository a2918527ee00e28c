//! Drift-calibrated key steps: given the encoder drift d[i] of each step transition (i-1 -> i),
//! choose K key steps (step 0 always) minimising the accumulated drift between each reused step
//! and its key step: cost of a group [s, e) = sum_{j in (s, e)} sum_{i in (s, j]} d[i].

use crate::{Error, Result};

fn group_cost(prefix: &[f64], s: usize, e: usize) -> f64 {
    // sum_{j=s+1}^{e-1} (P[j] - P[s]) with P the prefix sum of d
    (s + 1..e).map(|j| prefix[j] - prefix[s]).sum()
}

/// `drift[i]`: drift from step i-1 to step i (drift[0] ignored). Returns sorted key steps, with 0.
pub fn auto_key_steps(drift: &[f64], k: usize) -> Result<Vec<usize>> {
    let n = drift.len();
    if k == 0 || k > n {
        return Err(Error::Input(format!("auto:K needs 1 <= K <= {n} steps, got K={k}")));
    }
    if drift.iter().skip(1).any(|d| !d.is_finite() || *d < 0.0) {
        return Err(Error::Input("drift profile must be finite and non-negative".into()));
    }
    let mut prefix = vec![0.0; n + 1];
    for i in 1..n {
        prefix[i] = prefix[i - 1] + drift[i];
    }
    prefix[n] = prefix[n - 1];
    // best[g][e]: min cost covering steps [0, e) with g groups, the last ending at e
    let inf = f64::INFINITY;
    let mut best = vec![vec![inf; n + 1]; k + 1];
    let mut arg = vec![vec![0usize; n + 1]; k + 1];
    best[0][0] = 0.0;
    for g in 1..=k {
        for e in g..=n {
            for s in (g - 1)..e {
                if best[g - 1][s].is_finite() {
                    let c = best[g - 1][s] + group_cost(&prefix, s, e);
                    if c < best[g][e] {
                        best[g][e] = c;
                        arg[g][e] = s;
                    }
                }
            }
        }
    }
    let mut keys = Vec::with_capacity(k);
    let mut e = n;
    for g in (1..=k).rev() {
        let s = arg[g][e];
        keys.push(s);
        e = s;
    }
    keys.reverse();
    Ok(keys)
}

/// Greedy threshold variant: a new key step whenever the drift accumulated since the last key
/// step would exceed `threshold`.
pub fn threshold_key_steps(drift: &[f64], threshold: f64) -> Vec<usize> {
    let mut keys = vec![0];
    let mut acc = 0.0;
    for (i, d) in drift.iter().enumerate().skip(1) {
        acc += d;
        if acc > threshold {
            keys.push(i);
            acc = 0.0;
        }
    }
    keys
}

/// Total cost of a key-step set under the same objective.
pub fn plan_cost(drift: &[f64], keys: &[usize]) -> f64 {
    let n = drift.len();
    let mut prefix = vec![0.0; n + 1];
    for i in 1..n {
        prefix[i] = prefix[i - 1] + drift[i];
    }
    keys.iter().enumerate().map(|(g, &s)| group_cost(&prefix, s, keys.get(g + 1).copied().unwrap_or(n))).sum()
}

/// A parsed `auto:K` / `auto:threshold=X` key-step rule (the plan grammar's, [`fd_sched::AutoRule`]).
pub use fd_sched::AutoRule;

/// Whether `rule` can pick key steps for a run of `steps` steps (checked before any drift is
/// measured): `auto:K` needs K <= steps; a threshold rule always can.
pub fn check_rule(rule: AutoRule, steps: usize) -> Result<()> {
    match rule {
        AutoRule::K(k) if k > steps => {
            Err(Error::Input(format!("{rule}: {k} key steps do not fit a run of {steps} steps (K <= {steps})")))
        }
        _ => Ok(()),
    }
}

/// The key steps `rule` picks from an encoder drift profile (non-finite entries count as 0).
pub fn rule_key_steps(rule: AutoRule, drift: &[f64]) -> Result<Vec<usize>> {
    let profile: Vec<f64> = drift.iter().map(|d| if d.is_finite() { *d } else { 0.0 }).collect();
    match rule {
        AutoRule::K(k) => auto_key_steps(&profile, k),
        AutoRule::Threshold(x) => Ok(threshold_key_steps(&profile, x)),
    }
}
