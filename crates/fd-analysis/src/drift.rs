//! Where feature drift is measured.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::Result;

/// Encoder or decoder side of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Encoder,
    Decoder,
}

/// One row of the long-format CSV: a layer at a step.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub run: String,
    pub step: usize,
    pub timestep: f64,
    pub side: Side,
    pub layer: String,
    /// Mean over the batch of MSE(f_t, f_prev); NaN at the first step.
    pub mse: f64,
    /// Population standard deviation over the batch (as every `_std` column).
    pub mse_std: f64,
    /// Mean over the batch of ||mean_c(f_t)||_F.
    pub fnorm: f64,
    pub fnorm_std: f64,
    /// Mean over the batch of ||f_t - f_prev||_F / ||f_prev||_F; NaN at the first step.
    pub rel_change: f64,
    pub rel_change_std: f64,
    pub n: usize,
}

/// Per-layer summary over the run.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub side: Side,
    pub layer: String,
    pub mean_mse: f64,
    pub mean_rel_change: f64,
    /// Std over steps of the batch-mean F-norm (the paper's Fig. 3c).
    pub fnorm_std_over_steps: f64,
}

/// Encoder vs decoder aggregates: the qualitative claim, as numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run: String,
    pub layers: Vec<LayerSummary>,
    pub encoder_mean_mse: f64,
    pub decoder_mean_mse: f64,
    /// encoder_mean_mse / decoder_mean_mse (the paper: << 1).
    pub mse_ratio: f64,
    pub encoder_mean_fnorm_std: f64,
    pub decoder_mean_fnorm_std: f64,
    pub encoder_mean_rel_change: f64,
    pub decoder_mean_rel_change: f64,
    /// Per step transition i -> i+1 (index i+1): mean relative change over the encoder layers that
    /// encoder propagation caches (every encoder layer unless [`DriftAccumulator::profile_layers`]
    /// names them): what `auto:K` places key steps from.
    pub encoder_drift_profile: Vec<f64>,
}

impl Summary {
    /// Every statistic is finite (the profile from step 1 on: step 0 has no transition into it);
    /// else an error naming the first that is not, and the layer it came from. Checked before a
    /// summary is printed or written.
    pub fn check_finite(&self) -> crate::Result<()> {
        let bad = |what: String| {
            Err(crate::Error::Input(format!(
                "drift of {}: {what} is not finite (NaN or inf in the model's features?)",
                self.run
            )))
        };
        for (name, v) in [
            ("encoder_mean_mse", self.encoder_mean_mse),
            ("decoder_mean_mse", self.decoder_mean_mse),
            ("mse_ratio", self.mse_ratio),
            ("encoder_mean_fnorm_std", self.encoder_mean_fnorm_std),
            ("decoder_mean_fnorm_std", self.decoder_mean_fnorm_std),
            ("encoder_mean_rel_change", self.encoder_mean_rel_change),
            ("decoder_mean_rel_change", self.decoder_mean_rel_change),
        ] {
            if !v.is_finite() {
                return bad(format!("`{name}` ({v})"));
            }
        }
        for l in &self.layers {
            for (name, v) in [
                ("mean MSE", l.mean_mse),
                ("mean relative change", l.mean_rel_change),
                ("F-norm std", l.fnorm_std_over_steps),
            ] {
                if !v.is_finite() {
                    return bad(format!("the {name} of layer {} ({v})", l.layer));
                }
            }
        }
        if let Some(i) = self.encoder_drift_profile.iter().skip(1).position(|v| !v.is_finite()) {
            return bad(format!("the encoder drift into step {}", i + 1));
        }
        Ok(())
    }
}

fn mean_std(v: &Tensor) -> (f64, f64) {
    let v = v.to_kind(Kind::Double);
    let n = v.numel();
    let mean = v.mean(Kind::Double).double_value(&[]);
    let std = if n > 1 { v.std(false).double_value(&[]) } else { 0.0 };
    (mean, std)
}

/// Streaming accumulator: feed every step's features; keeps only the previous step per layer.
#[derive(Debug, Default)]
pub struct DriftAccumulator {
    run: String,
    prev: BTreeMap<(Side, String), Tensor>,
    rows: Vec<Row>,
    /// Encoder layers the drift profile averages (None: all).
    profile_layers: Option<BTreeSet<String>>,
}

impl DriftAccumulator {
    pub fn new(run: &str) -> Self {
        Self { run: run.to_string(), ..Default::default() }
    }

    /// Average the encoder drift profile over these encoder layers only (the cached features, when
    /// the run also observes layers propagation does not reuse, e.g. a DiT's earlier blocks).
    pub fn profile_layers(mut self, layers: &[String]) -> Self {
        self.profile_layers = Some(layers.iter().cloned().collect());
        self
    }

    /// Record layer `layer` at `step` (features [B, C, H, W] or [B, ...]).
    pub fn push(&mut self, step: usize, timestep: f64, side: Side, layer: &str, f: &Tensor) {
        let f = f.to_device(tch::Device::Cpu).to_kind(Kind::Double);
        let b = f.size()[0];
        let flat = f.reshape([b, -1]);
        let fnorm = if f.dim() >= 3 {
            f.mean_dim(1, false, Kind::Double).reshape([b, -1]).square().sum_dim_intlist(1, false, Kind::Double).sqrt()
        } else {
            flat.square().sum_dim_intlist(1, false, Kind::Double).sqrt()
        };
        let (fnorm_m, fnorm_s) = mean_std(&fnorm);
        let key = (side, layer.to_string());
        let (mse, rel) = match self.prev.get(&key) {
            Some(p) if p.size() == flat.size() => {
                let d = &flat - p;
                let mse = d.square().mean_dim(1, false, Kind::Double);
                let rel = d.square().sum_dim_intlist(1, false, Kind::Double).sqrt()
                    / p.square().sum_dim_intlist(1, false, Kind::Double).sqrt().clamp_min(1e-30);
                (mean_std(&mse), mean_std(&rel))
            }
            _ => ((f64::NAN, f64::NAN), (f64::NAN, f64::NAN)),
        };
        self.rows.push(Row {
            run: self.run.clone(),
            step,
            timestep,
            side,
            layer: layer.to_string(),
            mse: mse.0,
            mse_std: mse.1,
            fnorm: fnorm_m,
            fnorm_std: fnorm_s,
            rel_change: rel.0,
            rel_change_std: rel.1,
            n: b as usize,
        });
        self.prev.insert(key, flat);
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Per-layer and encoder-vs-decoder summary.
    pub fn summary(&self) -> Summary {
        let mut by_layer: BTreeMap<(Side, String), Vec<&Row>> = BTreeMap::new();
        for r in &self.rows {
            by_layer.entry((r.side, r.layer.clone())).or_default().push(r);
        }
        let finite_mean = |v: &mut dyn Iterator<Item = f64>| {
            let v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let layers: Vec<LayerSummary> = by_layer
            .iter()
            .map(|((side, layer), rows)| {
                let f: Vec<f64> = rows.iter().map(|r| r.fnorm).collect();
                let m = f.iter().sum::<f64>() / f.len() as f64;
                let sd = (f.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / f.len() as f64).sqrt();
                LayerSummary {
                    side: *side,
                    layer: layer.clone(),
                    mean_mse: finite_mean(&mut rows.iter().map(|r| r.mse)),
                    mean_rel_change: finite_mean(&mut rows.iter().map(|r| r.rel_change)),
                    fnorm_std_over_steps: sd,
                }
            })
            .collect();
        let agg = |side: Side, f: &dyn Fn(&LayerSummary) -> f64| {
            finite_mean(&mut layers.iter().filter(|l| l.side == side).map(f))
        };
        let steps = self.rows.iter().map(|r| r.step).max().map_or(0, |s| s + 1);
        let profile = (0..steps)
            .map(|s| {
                finite_mean(
                    &mut self
                        .rows
                        .iter()
                        .filter(|r| r.step == s && r.side == Side::Encoder)
                        .filter(|r| self.profile_layers.as_ref().is_none_or(|p| p.contains(&r.layer)))
                        .map(|r| r.rel_change),
                )
            })
            .collect();
        let (em, dm) = (agg(Side::Encoder, &|l| l.mean_mse), agg(Side::Decoder, &|l| l.mean_mse));
        Summary {
            run: self.run.clone(),
            encoder_mean_mse: em,
            decoder_mean_mse: dm,
            mse_ratio: em / dm,
            encoder_mean_fnorm_std: agg(Side::Encoder, &|l| l.fnorm_std_over_steps),
            decoder_mean_fnorm_std: agg(Side::Decoder, &|l| l.fnorm_std_over_steps),
            encoder_mean_rel_change: agg(Side::Encoder, &|l| l.mean_rel_change),
            decoder_mean_rel_change: agg(Side::Decoder, &|l| l.mean_rel_change),
            encoder_drift_profile: profile,
            layers,
        }
    }

    /// Write the long-format CSV (temp file + rename).
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &self.rows {
            w.serialize(r)?;
        }
        let bytes = w.into_inner().map_err(|e| e.into_error())?;
        Ok(fd_model::io::write_atomic(path, &bytes)?)
    }
}
