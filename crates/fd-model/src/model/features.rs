//! The encoder's features (the paper's cached E output): the mid block and the skips, with the
//! row operations decoder batches and forecasts are formed from.

use tch::Tensor;

/// Encoder outputs cached at a key step, in the order the encoder graph returns them: a UNet's
/// mid-block output then its skips in down-path order; a DiT's one token tensor (laid out
/// [B, D, h, w] on its patch grid). Every kind is a list of tensors with the batch first, so the
/// executor, feature forecasting and drift analysis need no per-kind code.
///
/// Cloning is shallow (the tensors share storage); [`EncoderFeatures::repeat`] and
/// [`EncoderFeatures::index_select`] build the batches a parallel decoder call needs.
#[derive(Debug)]
pub struct EncoderFeatures {
    pub tensors: Vec<Tensor>,
}

impl Clone for EncoderFeatures {
    fn clone(&self) -> Self {
        Self { tensors: self.tensors.iter().map(Tensor::shallow_clone).collect() }
    }
}

impl EncoderFeatures {
    pub fn batch_size(&self) -> i64 {
        self.tensors.first().map_or(0, |t| t.size()[0])
    }

    pub(crate) fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Self {
        Self { tensors: self.tensors.iter().map(f).collect() }
    }

    /// Tile the whole batch `k` times: [f_0..f_{B-1}, f_0..f_{B-1}, ...] (k*B rows).
    pub fn repeat(&self, k: i64) -> Self {
        self.map(|t| {
            let mut reps = vec![1i64; t.dim()];
            reps[0] = k;
            t.repeat(reps.as_slice())
        })
    }

    /// Rows `index` (an int64 tensor on any device) of every tensor.
    pub fn index_select(&self, index: &Tensor) -> Self {
        self.map(|t| t.index_select(0, &index.to_device(t.device())))
    }

    /// Concatenate along the batch dimension.
    pub fn cat(parts: &[EncoderFeatures]) -> Self {
        let n = parts.first().map_or(0, |p| p.tensors.len());
        let tensors =
            (0..n).map(|i| Tensor::cat(&parts.iter().map(|p| &p.tensors[i]).collect::<Vec<_>>(), 0)).collect();
        Self { tensors }
    }

    /// `self + scale * other`, tensor by tensor (ControlNet residuals added to the features).
    pub fn add_scaled(&self, other: &EncoderFeatures, scale: f64) -> Self {
        let tensors = self.tensors.iter().zip(&other.tensors).map(|(a, b)| a + b.to_kind(a.kind()) * scale).collect();
        Self { tensors }
    }

    /// `sum_i w_i * features_i` tensor by tensor, summed in order (feature forecasting).
    pub fn weighted_sum(parts: &[&EncoderFeatures], weights: &[f64]) -> Self {
        let n = parts.first().map_or(0, |p| p.tensors.len());
        let tensors = (0..n)
            .map(|k| {
                let mut acc = &parts[0].tensors[k] * weights[0];
                for (p, &w) in parts.iter().zip(weights).skip(1) {
                    acc += &p.tensors[k] * w;
                }
                acc
            })
            .collect();
        Self { tensors }
    }

    /// A UNet's mid-block output (the first tensor; a DiT's token tensor).
    pub fn mid(&self) -> &Tensor {
        &self.tensors[0]
    }

    /// A UNet's skip tensors in down-path order (empty for a DiT).
    pub fn skips(&self) -> &[Tensor] {
        &self.tensors[1..]
    }

    /// The features with the first `fresh.len()` skips replaced by `fresh` (a UNet's shallow
    /// skips recomputed, the deeper skips and the mid block kept).
    pub fn with_skips_replaced(&self, fresh: &[Tensor]) -> Self {
        let tensors = self
            .tensors
            .iter()
            .enumerate()
            .map(|(k, t)| if (1..=fresh.len()).contains(&k) { fresh[k - 1].shallow_clone() } else { t.shallow_clone() })
            .collect();
        Self { tensors }
    }
}
