//! A DiT's step-cache graphs (`stepcache.pt`: patch embedding | first block | other blocks |
//! final layer), which TeaCache and FBCache run in their DiT form.

use tch::{IValue, Kind, Tensor};

use super::graph::tensors_out;
use super::Denoiser;
use crate::{Error, Result};

impl Denoiser {
    /// Whether the model has a DiT's TeaCache / FBCache graphs.
    pub fn has_stepcache(&self) -> bool {
        !self.stepcache.is_empty()
    }

    /// Whether the model has a DiT's Pyramid Attention Broadcast graphs.
    pub fn has_pab(&self) -> bool {
        crate::manifest::PAB_GRAPHS.iter().all(|g| self.stepcache.contains_key(*g))
    }

    /// One of a DiT's step-cache graphs ([`crate::manifest::STEPCACHE_GRAPHS`]) on token grid (or,
    /// for `stepcache_embed`, sample) `x`: every output, in order.
    pub fn stepcache(&self, graph: &str, x: &Tensor, emb: &Tensor, cond: &Tensor) -> Result<Vec<Tensor>> {
        self.stepcache_with(graph, x, emb, cond, &[])
    }

    /// A step-cache or PAB graph ([`crate::manifest::PAB_GRAPHS`]) with `extra` inputs after
    /// (x, emb, cond) (pab_reuse: the reused attention outputs): every output, in order.
    pub fn stepcache_with(
        &self,
        graph: &str,
        x: &Tensor,
        emb: &Tensor,
        cond: &Tensor,
        extra: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let g = self.stepcache.get(graph).ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: graph.into(),
            why: "a DiT exported by experiments/export/export_dit.py carries its TeaCache / FBCache / PAB graphs; export it again",
        })?;
        let mut inputs =
            vec![IValue::Tensor(self.input(x)), IValue::Tensor(self.input(emb)), IValue::Tensor(self.input(cond))];
        inputs.extend(extra.iter().map(|t| IValue::Tensor(self.input(t))));
        Ok(tensors_out(graph, tch::no_grad(|| g.forward_is(&inputs))?)?
            .into_iter()
            .map(|t| t.to_kind(Kind::Float))
            .collect())
    }
}
