//! Class consistency: the share of generated samples that the committed Fashion-MNIST judge
//! classifies as the requested class (top-1), per class and overall. The class-conditional
//! stand-in for CLIP score on class prompts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::{Error, Result};

/// A TorchScript image classifier: `forward(x) -> logits [N, K]`, optional `features(x) -> [N, D]`.
#[derive(Debug)]
pub struct Classifier {
    module: CModule,
    pub path: PathBuf,
    device: Device,
}

impl Classifier {
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Input(format!("{}: classifier file missing", path.display())));
        }
        let mut module = CModule::load_on_device(path, device)
            .map_err(crate::module_error(path, "loading the classifier (a TorchScript module, --classifier)"))?;
        module.set_eval();
        Ok(Self { module, path: path.into(), device })
    }

    /// Logits for images [N, C, H, W] in [-1, 1], evaluated in batches of 500.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        let n = images.size()[0];
        let mut out = Vec::new();
        for start in (0..n).step_by(500) {
            let x = images.narrow(0, start, (n - start).min(500)).to_device(self.device).to_kind(Kind::Float);
            let logits = tch::no_grad(|| self.module.forward_ts(&[x]))
                .map_err(crate::module_error(&self.path, "classifying the samples"))?;
            out.push(logits.to_device(Device::Cpu));
        }
        Ok(Tensor::cat(&out, 0))
    }

    /// Penultimate-layer features (the `features` method), for domain feature statistics.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let x = images.to_device(self.device).to_kind(Kind::Float);
        match tch::no_grad(|| self.module.method_is("features", &[IValue::Tensor(x)]))
            .map_err(crate::module_error(&self.path, "features"))?
        {
            IValue::Tensor(t) => Ok(t.to_device(Device::Cpu)),
            _ => Err(Error::Format { path: self.path.clone(), msg: "`features` did not return a tensor".into() }),
        }
    }
}

/// Consistency of one class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassConsistency {
    pub class: i64,
    pub n: usize,
    pub consistency: f64,
}

/// Overall and per-class consistency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consistency {
    pub n: usize,
    pub consistency: f64,
    pub per_class: Vec<ClassConsistency>,
    pub classifier: String,
}

/// Where class consistency is computed: top-1 agreement of `classifier` with `requested`.
pub fn class_consistency(classifier: &Classifier, images: &Tensor, requested: &[i64]) -> Result<Consistency> {
    let n = images.size()[0] as usize;
    if n != requested.len() || n == 0 {
        return Err(Error::Input(format!("{n} images for {} requested classes", requested.len())));
    }
    let pred = Vec::<i64>::try_from(&classifier.logits(images)?.argmax(1, false))?;
    let hits: Vec<bool> = pred.iter().zip(requested).map(|(p, r)| p == r).collect();
    let mut classes: Vec<i64> = requested.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let per_class = classes
        .iter()
        .map(|&c| {
            let idx: Vec<usize> = (0..n).filter(|&i| requested[i] == c).collect();
            let ok = idx.iter().filter(|&&i| hits[i]).count();
            ClassConsistency { class: c, n: idx.len(), consistency: ok as f64 / idx.len() as f64 }
        })
        .collect();
    Ok(Consistency {
        n,
        consistency: hits.iter().filter(|&&h| h).count() as f64 / n as f64,
        per_class,
        classifier: classifier.path.display().to_string(),
    })
}
