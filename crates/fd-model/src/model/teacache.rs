//! TeaCache's probe graph on a UNet (`teacache.pt`): the first block's timestep-modulated input.

use tch::{Kind, Tensor};

use super::Denoiser;
use crate::{Error, Result};

impl Denoiser {
    /// TeaCache's indicator: the first resnet's timestep-modulated input for `sample` and its
    /// time embedding `emb` (graph `teacache_probe`; experiments/add/add_teacache.py adds it).
    pub fn teacache_probe(&self, sample: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let g = self.teacache_probe.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "teacache_probe".into(),
            why: "add TeaCache's probe and fitted polynomial with `python experiments/add/add_teacache.py --model DIR`",
        })?;
        let m = &self.manifest;
        let [h, w] = m.sample_size;
        self.check("sample", sample, &[None, Some(m.in_channels), Some(h), Some(w)])?;
        Ok(tch::no_grad(|| g.forward_ts(&[self.input(sample), self.input(emb)]))?.to_kind(Kind::Float))
    }
}
