//! Prompt path for text-conditioned models: tokenizer.json (HF `tokenizers`) -> padded ids.

use std::path::{Path, PathBuf};

use tch::Tensor;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::manifest::TokenizerSpec;
use crate::{Error, Result};

/// CLIP-style tokenizer: BOS/EOS added by tokenizer.json's post-processor, truncated to
/// `max_length` and padded with `pad_id`, as diffusers' pipelines call it
/// (`padding="max_length", truncation=True`).
#[derive(Debug)]
pub struct PromptTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_length: usize,
    lowercase: bool,
}

impl PromptTokenizer {
    pub fn load(path: &Path, spec: &TokenizerSpec) -> Result<Self> {
        let err = |msg: String| Error::Tokenizer { path: path.to_path_buf(), msg };
        if !path.is_file() {
            return Err(err("file missing (manifest cond.tokenizer.file)".into()));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams { max_length: spec.max_length, ..Default::default() }))
            .map_err(|e| err(e.to_string()))?;
        let pad_token =
            inner.id_to_token(spec.pad_id).ok_or_else(|| err(format!("pad_id {} not in vocabulary", spec.pad_id)))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(spec.max_length),
            direction: PaddingDirection::Right,
            pad_id: spec.pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Self { inner, path: path.to_path_buf(), max_length: spec.max_length, lowercase: spec.lowercase })
    }

    /// Token ids of one prompt, exactly `max_length` long.
    pub fn encode(&self, prompt: &str) -> Result<Vec<i64>> {
        let lowered;
        let prompt = if self.lowercase {
            lowered = prompt.to_lowercase();
            lowered.trim()
        } else {
            prompt
        };
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), msg: e.to_string() })?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// [B, max_length] int64 ids.
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<Tensor> {
        let mut flat = Vec::with_capacity(prompts.len() * self.max_length);
        for p in prompts {
            flat.extend(self.encode(p)?);
        }
        Ok(Tensor::from_slice(&flat).view([prompts.len() as i64, self.max_length as i64]))
    }
}
