//! DeepCache's section of the manifest (`deepcache`): one entry per cut, its graphs
//! `deepcache_{key}_{part}` (block-level keys of older exports: `deepcache{b}_{part}`).

use serde::{Deserialize, Serialize};

use super::Manifest;

/// One DeepCache branch: the shallow path recomputed at cached steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeepCacheSpec {
    /// Number of leading skip tensors the shallow path produces and consumes.
    pub shallow_skips: usize,
    /// Per-sample shape of the cached deep feature (input of the first up layer after the cut).
    pub cache_shape: Vec<i64>,
    /// DeepCache's own `cache_branch_id` these graphs compute (block = id / 3, layer = id % 3).
    /// Absent in exports before 2026-12-02, whose block-level keys it is derived for
    /// ([`Manifest::deepcache_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_branch_id: Option<usize>,
}

/// Name of a DeepCache graph: `deepcache{b}_{part}` for a block-level key, `deepcache_{key}_{part}`
/// otherwise.
pub fn deepcache_graph(key: &str, part: &str) -> String {
    if key.bytes().all(|c| c.is_ascii_digit()) {
        format!("deepcache{key}_{part}")
    } else {
        format!("deepcache_{key}_{part}")
    }
}

/// The manifest's checks of this section (the first problem found, in words).
pub(super) fn validate(m: &Manifest) -> std::result::Result<(), String> {
    for (b, spec) in &m.deepcache {
        for part in ["shallow_encoder", "deep_decoder", "shallow_decoder"] {
            let g = deepcache_graph(b, part);
            if !m.graphs.contains_key(&g) {
                return Err(format!("deepcache entry `{b}` lists no `{g}` graph"));
            }
        }
        if spec.shallow_skips == 0 || spec.shallow_skips > m.skip_shapes.len() {
            return Err(format!(
                "deepcache branch {b}: shallow_skips {} outside 1..={}",
                spec.shallow_skips,
                m.skip_shapes.len()
            ));
        }
    }
    Ok(())
}
