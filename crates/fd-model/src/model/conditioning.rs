//! Conditioning: class ids and prompts through the exported condition encoder(s) and tokenizers,
//! the unconditional rows, and added conditioning (SDXL time ids).

use tch::{IValue, Tensor};

use super::{Denoiser, Graph};
use crate::cond::Cond;
use crate::manifest::{CondKind, UncondRule};
use crate::prompt::PromptTokenizer;
use crate::{Error, Result};

impl Denoiser {
    /// Raw text states [B, L, raw] (+ pooled [B, P] for SDXL) -> the prepared [`Cond`]: through
    /// `cond_prepare` (SDXL: with the manifest's time ids) where the model has one.
    pub fn prepare(&self, states: Tensor, pooled: Option<Tensor>) -> Result<Cond> {
        let Some(spec) = &self.manifest.prepare else {
            return Ok(Cond::from(states));
        };
        let g = self.cond_prepare.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "cond_prepare".into(),
            why: "the manifest lists `prepare`",
        })?;
        let b = states.size()[0];
        self.check("text states", &states, &[Some(b), Some(self.manifest.cond.seq_len), Some(spec.raw_dim)])?;
        let mut inputs = vec![IValue::Tensor(self.input(&states))];
        for name in &spec.inputs[1..] {
            let t = match name.as_str() {
                "pooled" => {
                    let p = pooled.as_ref().ok_or_else(|| {
                        Error::Cond(format!(
                            "model `{}` needs pooled text embeds (cond_encoder gave none)",
                            self.manifest.name
                        ))
                    })?;
                    self.check("pooled text embeds", p, &[Some(b), self.manifest.cond.pooled_dim])?;
                    self.input(p)
                }
                "time_ids" => {
                    let ids: Vec<f32> = spec.time_ids.iter().flatten().map(|&v| v as f32).collect();
                    self.input(&Tensor::from_slice(&ids).view([1, -1]).repeat([b, 1]))
                }
                other => return Err(Error::Cond(format!("unknown prepare input `{other}`"))),
            };
            inputs.push(IValue::Tensor(t));
        }
        let out = tch::no_grad(|| g.forward_is(&inputs))?;
        match out {
            IValue::Tuple(mut v) if v.len() == 2 => {
                let (IValue::Tensor(extra), IValue::Tensor(states)) = (v.pop().unwrap(), v.pop().unwrap()) else {
                    return Err(Error::Cond("cond_prepare returned non-tensors".into()));
                };
                self.check_cond(&states, b)?;
                Ok(Cond { states, extra: Some(extra), control: None })
            }
            _ => Err(Error::Cond("cond_prepare must return (states, extra)".into())),
        }
    }

    pub(crate) fn cond_encoder(&self) -> Result<&Graph> {
        self.cond_encoder.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "cond_encoder".into(),
            why: "this model takes raw embeddings",
        })
    }

    /// Class ids -> cond [B, L, D]. `null_id` (the unconditional class) is accepted.
    pub fn encode_classes(&self, ids: &[i64]) -> Result<Tensor> {
        let c = &self.manifest.cond;
        if c.kind != CondKind::Class {
            return Err(Error::Cond(format!("model `{}` is not class-conditioned", self.manifest.name)));
        }
        let n = c.num_classes.unwrap_or(0);
        if let Some(bad) = ids.iter().find(|&&i| !(0..=n).contains(&i)) {
            return Err(Error::Cond(format!("class id {bad} outside 0..{n} (null id {n})")));
        }
        let t = Tensor::from_slice(ids).to_device(self.device);
        let enc = self.cond_encoder()?;
        tch::no_grad(|| enc.forward_ts(&[t]))
    }

    /// Class names or integer ids -> class ids (clear error listing the known names).
    pub fn class_id(&self, name: &str) -> Result<i64> {
        let c = &self.manifest.cond;
        let names = c.class_names.clone().unwrap_or_default();
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name.trim())) {
            return Ok(i as i64);
        }
        match name.trim().parse::<i64>() {
            Ok(i) if (0..c.num_classes.unwrap_or(0)).contains(&i) => Ok(i),
            _ => Err(Error::Cond(format!(
                "unknown class `{name}`: model `{}` is class-conditioned (prompts are read as class names); it knows ids 0..{} or names {names:?}",
                self.manifest.name,
                c.num_classes.unwrap_or(0)
            ))),
        }
    }

    /// Prompts -> token ids (tokenizer.json, + tokenizer_2.json for SDXL) -> text encoder(s)
    /// -> raw states [B, 77, D] (+ pooled [B, P]), as the diffusers pipeline encodes them.
    pub fn encode_prompts_raw(&self, prompts: &[&str]) -> Result<(Tensor, Option<Tensor>)> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            Error::Cond(format!("model `{}` is not text-conditioned (no tokenizer)", self.manifest.name))
        })?;
        let mut ids = vec![IValue::Tensor(tok.encode_batch(prompts)?.to_device(self.device))];
        if let Some(tok_2) = &self.tokenizer_2 {
            ids.push(IValue::Tensor(tok_2.encode_batch(prompts)?.to_device(self.device)));
        }
        let enc = self.cond_encoder()?;
        let out = tch::no_grad(|| enc.forward_is(&ids))?;
        let bad = |found: &str| Error::Shape {
            what: format!("cond_encoder output (model `{}`)", self.manifest.name),
            expected: if self.manifest.cond.pooled_dim.is_some() { "(states, pooled)" } else { "states" }.into(),
            found: found.into(),
        };
        match (out, self.manifest.cond.pooled_dim) {
            (IValue::Tensor(t), None) => Ok((t, None)),
            (IValue::Tuple(mut v), Some(_)) if v.len() == 2 => match (v.pop().unwrap(), v.pop().unwrap()) {
                (IValue::Tensor(pooled), IValue::Tensor(states)) => Ok((states, Some(pooled))),
                _ => Err(bad("non-tensors")),
            },
            (IValue::Tensor(_), Some(_)) => Err(bad("one tensor")),
            _ => Err(bad("another value")),
        }
    }

    /// Prompts -> the prepared [`Cond`] ([`Denoiser::encode_prompts_raw`], then
    /// [`Denoiser::prepare`]).
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Cond> {
        let (states, pooled) = self.encode_prompts_raw(prompts)?;
        self.prepare(states, pooled)
    }

    /// The unconditional cond for a batch of `n`: null class, the empty prompt, or zero states
    /// and pooled embeds (the manifest's `cond.uncond`, SDXL's `force_zeros_for_empty_prompt`).
    pub fn uncond(&self, n: usize) -> Result<Cond> {
        let c = &self.manifest.cond;
        let zeros = |shape: &[i64]| Tensor::zeros(shape, (self.kind, self.device));
        let raw = self.manifest.prepare.as_ref().map_or(c.dim, |p| p.raw_dim);
        match (c.kind, c.uncond) {
            (CondKind::Class, _) => self.encode_classes(&vec![c.null_id.unwrap_or(0); n]).map(Cond::from),
            (CondKind::Text, UncondRule::EmptyPrompt) => self.encode_prompts(&vec![""; n]),
            (CondKind::Text, UncondRule::Zeros) => {
                let pooled = c.pooled_dim.map(|p| zeros(&[n as i64, p]));
                self.prepare(zeros(&[n as i64, c.seq_len, raw]), pooled)
            }
            (CondKind::Embedding, _) => self.prepare(zeros(&[n as i64, c.seq_len, raw]), None),
        }
    }

    pub fn tokenizer(&self) -> Option<&PromptTokenizer> {
        self.tokenizer.as_ref()
    }

    /// The second tokenizer of a two-encoder model (SDXL).
    pub fn tokenizer_2(&self) -> Option<&PromptTokenizer> {
        self.tokenizer_2.as_ref()
    }
}
