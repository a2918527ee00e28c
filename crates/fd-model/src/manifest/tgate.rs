//! T-GATE's section of the manifest (`tgate`) and its four graphs.

use serde::{Deserialize, Serialize};

use super::Manifest;

/// T-GATE's graphs: the whole UNet with every attention layer's output computed (and returned) or
/// read from an input. `tgate_capture(sample, emb, cond) -> (out, cross..., self...)`,
/// `tgate_sa_reuse(.., self...) -> out`, `tgate_ca_reuse(.., cross...) -> (out, self...)`,
/// `tgate_both_reuse(.., cross..., self...) -> out`.
pub const TGATE_GRAPHS: [&str; 4] = ["tgate_capture", "tgate_sa_reuse", "tgate_ca_reuse", "tgate_both_reuse"];

/// The attention layers T-GATE caches, in the order its graphs take and return them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TGateSpec {
    /// Cross-attention layers (diffusers module names, `...attn2`).
    pub cross_layers: Vec<String>,
    /// Self-attention layers (`...attn1`).
    pub self_layers: Vec<String>,
    /// Per-sample output shape [tokens, channels] of each cross-attention layer.
    pub cross_shapes: Vec<Vec<i64>>,
    /// Per-sample output shape of each self-attention layer.
    pub self_shapes: Vec<Vec<i64>>,
}

/// The manifest's checks of this section (the first problem found, in words).
pub(super) fn validate(m: &Manifest) -> std::result::Result<(), String> {
    if TGATE_GRAPHS.iter().any(|g| m.graphs.contains_key(*g) != m.tgate.is_some()) {
        return Err(format!("`tgate` and the graphs {TGATE_GRAPHS:?} must be given together"));
    }
    if let Some(t) = &m.tgate {
        if t.cross_layers.is_empty()
            || t.cross_layers.len() != t.cross_shapes.len()
            || t.self_layers.len() != t.self_shapes.len()
        {
            return Err("tgate: one shape per layer and at least one cross-attention layer expected".into());
        }
    }
    Ok(())
}
