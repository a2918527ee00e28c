//! What a sample is conditioned on, and how a batch of conditions becomes the embeddings the
//! UNet's cross-attention reads (through the model's `cond_encoder` graph).

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::manifest::CondKind;
use crate::{Error, Result, UNetModel};

/// What one sample is conditioned on. In run records a class is a JSON integer and a prompt a
/// JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    Class(i64),
    Prompt(String),
}

impl Condition {
    /// The prompt, or the class id as text (CLIP score of a class-conditioned run).
    pub fn text(&self) -> String {
        match self {
            Condition::Class(i) => i.to_string(),
            Condition::Prompt(p) => p.clone(),
        }
    }
}

impl UNetModel {
    /// The conditioning tensor [B, L, D] of a batch: class ids (or class names given as prompts)
    /// through the class embedding, prompts through the tokenizer and text encoder.
    pub fn encode_conditions(&self, conds: &[Condition]) -> Result<Tensor> {
        match self.manifest.cond.kind {
            CondKind::Class => {
                let ids = conds
                    .iter()
                    .map(|c| match c {
                        Condition::Class(i) => Ok(*i),
                        Condition::Prompt(p) => self.class_id(p),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.encode_classes(&ids)
            }
            CondKind::Text => {
                let prompts = conds
                    .iter()
                    .map(|c| match c {
                        Condition::Prompt(p) => Ok(p.as_str()),
                        Condition::Class(_) => Err(Error::Cond("a text-conditioned model needs prompts".into())),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.encode_prompts(&prompts)
            }
            CondKind::Embedding => Err(Error::Cond("model takes raw embeddings; use the library API".into())),
        }
    }
}
