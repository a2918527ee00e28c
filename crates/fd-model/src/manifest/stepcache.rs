//! A DiT's step-cache graphs (TeaCache and First-Block Cache in their DiT form).

use super::{Manifest, ModelKind};

/// A DiT's TeaCache / First-Block Cache graphs (fd_export/dit.py): the token stream cut at the
/// patch embedding, after the first block and after the last. `stepcache_embed(sample, emb, cond)
/// -> (h0, TeaCache's indicator)`, `stepcache_first(h0, ..) -> h1`, `stepcache_rest(h1, ..) -> hL`,
/// `stepcache_head(hL, ..) -> output`; tokens as [B, D, H/p, W/p] grids.
pub const STEPCACHE_GRAPHS: [&str; 4] = ["stepcache_embed", "stepcache_first", "stepcache_rest", "stepcache_head"];

/// A DiT's Pyramid Attention Broadcast graphs (fd_export/methods/pab.py, `pab.pt`): the blocks
/// from h0 to hL, `pab_capture(h0, ..) -> (hL, every block's attn1 output)` and
/// `pab_reuse(h0, .., attn outputs) -> hL`. They need the step-cache graphs (h0, the head).
pub const PAB_GRAPHS: [&str; 2] = ["pab_capture", "pab_reuse"];

/// The manifest's checks of this section (the first problem found, in words).
pub(super) fn validate(m: &Manifest) -> std::result::Result<(), String> {
    let steps = STEPCACHE_GRAPHS.iter().filter(|g| m.graphs.contains_key(**g)).count();
    if steps != 0 && (steps != STEPCACHE_GRAPHS.len() || m.kind != ModelKind::Dit) {
        return Err(format!("the graphs {STEPCACHE_GRAPHS:?} come all together, on a DiT"));
    }
    let pab = PAB_GRAPHS.iter().filter(|g| m.graphs.contains_key(**g)).count();
    if pab != 0 && (pab != PAB_GRAPHS.len() || steps == 0) {
        return Err(format!("the graphs {PAB_GRAPHS:?} come together, on a DiT with the graphs {STEPCACHE_GRAPHS:?}"));
    }
    let probe = m.graphs.contains_key("teacache_probe") || steps != 0;
    if m.teacache.is_some() != probe {
        return Err(
            "`teacache` and its indicator graph (`teacache_probe`, or a DiT's `stepcache_embed`) must be given together"
                .into(),
        );
    }
    Ok(())
}
