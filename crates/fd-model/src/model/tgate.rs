//! T-GATE's graphs (`tgate.pt`): the whole UNet taking or returning every attention output.

use tch::{IValue, Kind, Tensor};

use super::graph::tensors_out;
use super::Denoiser;
use crate::{Error, Result};

impl Denoiser {
    /// One T-GATE graph (`graph` one of [`crate::manifest::TGATE_GRAPHS`]) on the full UNet
    /// input: `cached` are the reused attention outputs in the graph's order (cross then self).
    /// Returns the model output and the attention outputs the graph computed and returns.
    pub fn tgate(
        &self,
        graph: &str,
        sample: &Tensor,
        emb: &Tensor,
        cond: &Tensor,
        cached: &[Tensor],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let g = self.tgate.get(graph).ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: graph.into(),
            why: "add T-GATE's graphs with `python experiments/add/add_tgate.py --model DIR`",
        })?;
        let m = &self.manifest;
        let [h, w] = m.sample_size;
        self.check("sample", sample, &[None, Some(m.in_channels), Some(h), Some(w)])?;
        let mut inputs =
            vec![IValue::Tensor(self.input(sample)), IValue::Tensor(self.input(emb)), IValue::Tensor(self.input(cond))];
        inputs.extend(cached.iter().map(|t| IValue::Tensor(self.input(t))));
        let mut ts = tensors_out(graph, tch::no_grad(|| g.forward_is(&inputs))?)?;
        let out = ts.remove(0).to_kind(Kind::Float);
        Ok((out, ts))
    }
}
