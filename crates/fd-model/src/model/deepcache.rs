//! DeepCache's graphs (`deepcache.pt`; manifest `deepcache`): the shallow encoder, the deep and
//! shallow decoders of each cut, found by DeepCache's own `cache_branch_id` or fd's earlier
//! block-level branch; FBCache reads a UNet's first block through the cheapest shallow encoder.

use tch::{IValue, Kind, Tensor};

use super::{Denoiser, EncoderFeatures, Graph};
use crate::manifest::ModelKind;
use crate::{Error, Result};

/// The three graphs of one DeepCache branch.
#[derive(Debug)]
pub(crate) struct DeepCacheGraphs {
    pub(crate) shallow_encoder: Graph,
    pub(crate) deep_decoder: Graph,
    pub(crate) shallow_decoder: Graph,
    pub(crate) shallow_skips: usize,
}

impl Denoiser {
    /// DeepCache's own cache_branch_ids this model has graphs for (with their manifest keys).
    pub fn deepcache_ids(&self) -> Vec<(usize, String)> {
        self.deepcache.keys().filter_map(|k| Some((self.manifest.deepcache_id(k)?, k.clone()))).collect()
    }

    pub(crate) fn unet_only(&self, what: &str) -> Result<()> {
        if self.manifest.kind == ModelKind::Unet2d {
            return Ok(());
        }
        Err(Error::Unsupported { model: self.manifest.name.clone(), kind: self.manifest.kind, what: what.into() })
    }

    /// The manifest key of the DeepCache graphs for DeepCache's own `cache_branch_id` (block =
    /// id / 3, layer = id % 3); an error lists the ids the model has.
    pub fn deepcache_key_for_id(&self, id: usize) -> Result<String> {
        self.unet_only("DeepCache (it caches a UNet's up-path feature and recomputes its shallow layers)")?;
        let have = self.deepcache_ids();
        have.iter().find(|(i, _)| *i == id).map(|(_, k)| k.clone()).ok_or_else(|| {
            Error::Cond(format!(
                "model `{}` has no DeepCache graphs for cache_branch_id {id} (block {}, layer {}); it has {:?}. Add them with `python experiments/add/add_deepcache.py --model {} --ids {id}`",
                self.manifest.name,
                id / 3,
                id % 3,
                have.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                self.dir.display()
            ))
        })
    }

    /// The manifest key of fd's earlier block-level DeepCache branch `branch`.
    pub fn deepcache_key_for_block(&self, branch: usize) -> Result<String> {
        self.unet_only("DeepCache (it caches a UNet's up-path feature and recomputes its shallow layers)")?;
        let key = branch.to_string();
        if self.deepcache.contains_key(&key) {
            return Ok(key);
        }
        Err(Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: format!("deepcache{branch}_*"),
            why: "block-level branches are in exports before 2026-12-02; use deepcache:N:ID with DeepCache's own id",
        })
    }

    pub(crate) fn deepcache_graphs(&self, key: &str) -> Result<&DeepCacheGraphs> {
        self.unet_only("DeepCache (it caches a UNet's up-path feature and recomputes its shallow layers)")?;
        self.deepcache.get(key).ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: crate::manifest::deepcache_graph(key, "*"),
            why: "not in this export",
        })
    }

    /// Number of leading skips the shallow path of DeepCache entry `key` produces.
    pub fn deepcache_shallow_skips(&self, key: &str) -> Result<usize> {
        Ok(self.deepcache_graphs(key)?.shallow_skips)
    }

    /// DeepCache full step, deep part: the cached feature h from the encoder features.
    pub fn deepcache_deep_decode(
        &self,
        key: &str,
        feats: &EncoderFeatures,
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        let g = self.deepcache_graphs(key)?;
        self.check_features(feats)?;
        let inputs = self.feature_inputs(feats, emb, cond);
        tch::no_grad(|| g.deep_decoder.forward_ts(&inputs))
    }

    /// DeepCache shallow path of a cached step: conv_in and the shallow down units -> skips.
    pub fn deepcache_shallow_encode(
        &self,
        key: &str,
        sample: &Tensor,
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let g = self.deepcache_graphs(key)?;
        let m = &self.manifest;
        let [h, w] = m.sample_size;
        self.check("sample", sample, &[None, Some(m.in_channels), Some(h), Some(w)])?;
        let out = tch::no_grad(|| {
            g.shallow_encoder.forward_is(&[
                IValue::Tensor(self.input(sample)),
                IValue::Tensor(self.input(emb)),
                IValue::Tensor(self.input(cond)),
            ])
        })?;
        let skips: Vec<Tensor> = match out {
            IValue::Tuple(items) => {
                items.into_iter().filter_map(|v| if let IValue::Tensor(t) = v { Some(t) } else { None }).collect()
            }
            IValue::Tensor(t) => vec![t],
            _ => Vec::new(),
        };
        if skips.len() != g.shallow_skips {
            return Err(Error::Shape {
                what: format!("{} output", crate::manifest::deepcache_graph(key, "shallow_encoder")),
                expected: format!("{} skip tensors (manifest.json)", g.shallow_skips),
                found: skips.len().to_string(),
            });
        }
        Ok(skips)
    }

    /// DeepCache shallow decoder: cached h + shallow skips -> model output.
    pub fn deepcache_shallow_decode(
        &self,
        key: &str,
        cached: &Tensor,
        skips: &[Tensor],
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        let g = self.deepcache_graphs(key)?;
        let mut inputs = vec![self.input(cached), self.input(emb), self.input(cond)];
        inputs.extend(skips.iter().take(g.shallow_skips).map(|s| self.input(s)));
        Ok(tch::no_grad(|| g.shallow_decoder.forward_ts(&inputs))?.to_kind(Kind::Float))
    }

    /// The DeepCache key whose shallow encoder is cheapest (fewest skips): its first output is
    /// conv_in's, the UNet's first block (First-Block Cache's indicator). An error names the
    /// script that adds one.
    pub fn first_block_key(&self) -> Result<String> {
        self.deepcache.iter().min_by_key(|(_, g)| g.shallow_skips).map(|(k, _)| k.clone()).ok_or_else(|| {
            Error::NoSuchGraph {
                model: self.manifest.name.clone(),
                graph: "deepcache_id0_shallow_encoder".into(),
                why: "First-Block Cache reads conv_in's output from a DeepCache shallow encoder; add one with `python experiments/add/add_deepcache.py --model DIR --ids 0`",
            }
        })
    }

    /// The UNet's first block output (conv_in) through the shallow encoder of `key`
    /// ([`Self::first_block_key`]).
    pub fn first_block(&self, key: &str, sample: &Tensor, emb: &Tensor, cond: &Tensor) -> Result<Tensor> {
        Ok(self.deepcache_shallow_encode(key, sample, emb, cond)?.swap_remove(0).to_kind(Kind::Float))
    }
}
