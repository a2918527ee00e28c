//! Samples shared between experiments: a row whose run configuration equals a row of another
//! experiment (the same model graphs, sampler, plan, options, conditions, seeds and batch —
//! [`RunConfig`] equality, the test `--resume` applies) adopts that row's finished parts instead
//! of sampling them again. `ablate-beyond` and `compare-caches` share their baseline, `50ls` and
//! DeepCache rows this way.
//!
//! Adoption only links files into the row's own folder (hard links, a copy where linking fails):
//! `config.json`, each finished part's record, images and cached Inception features, and its PNGs.
//! Parts are written by temp + rename and never modified in place, so a link cannot change under
//! either folder. The runner then resumes the folder as usual, so every adopted part is verified
//! (identity, seeds, conditions, image hash) before it counts; one that fails is recomputed.
//!
//! A shard folder of a row (`fd experiment --stage sample`) adopts, the same way, the parts of its
//! shard from an unsharded run of the same configuration: the row's own folder, or another
//! experiment's identical row.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fd_model::io::{read_json, write_json};

use crate::error::io;
use crate::records::RunConfig;
use crate::runner::{folder_state, part_stem, FolderState, Shard};
use crate::Result;

/// Run folders under `root` laid out as `<experiment>/<N...>/<row>/config.json` (the layout of
/// `out/experiments`), sorted; `own` is left out.
fn candidates(root: &Path, own: &Path) -> Vec<PathBuf> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let own = own.canonicalize().unwrap_or_else(|_| own.to_path_buf());
    dirs(root)
        .iter()
        .flat_map(|e| dirs(e))
        .flat_map(|n| dirs(&n))
        .filter(|r| r.join("config.json").is_file())
        .filter(|r| r.canonicalize().map_or(true, |c| c != own))
        .collect()
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Ok(());
    }
    if std::fs::hard_link(from, to).is_err() {
        // another file system: copy through a temp file, renamed into place
        let tmp = to.with_extension("adopt.tmp");
        std::fs::copy(from, &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, to).map_err(io(to))?;
    }
    Ok(())
}

/// Link into `own` the finished parts of the first run folder under `root` whose `config.json`
/// equals `config` (but the shard: a shard folder adopts the parts of its own shard from an
/// unsharded donor), for every part `own` lacks. Does nothing when `own` holds a different run or
/// something else (the runner reports it). Returns the donor folder and the parts adopted.
pub fn adopt_parts(root: &Path, own: &Path, config: &RunConfig) -> Result<Option<(PathBuf, usize)>> {
    if !adoptable(own, config)? {
        return Ok(None);
    }
    for donor in candidates(root, own) {
        let k = adopt_from(&donor, own, config)?;
        if k > 0 {
            return Ok(Some((donor, k)));
        }
    }
    Ok(None)
}

/// `own` is empty, or holds this very run.
fn adoptable(own: &Path, config: &RunConfig) -> Result<bool> {
    Ok(match folder_state(own)? {
        FolderState::Foreign(_) => false,
        FolderState::Run => read_json::<RunConfig>(&own.join("config.json")).is_ok_and(|mine| mine == *config),
        FolderState::Empty => true,
    })
}

/// Link into `own` the finished parts of `donor` that `own`'s run needs and lacks, when `donor` is
/// an unsharded run of the same configuration (`config`, but the shard). Returns how many.
pub fn adopt_from(donor: &Path, own: &Path, config: &RunConfig) -> Result<usize> {
    if !donor.join("config.json").is_file() || !adoptable(own, config)? {
        return Ok(0);
    }
    let Ok(theirs) = read_json::<RunConfig>(&donor.join("config.json")) else { return Ok(0) };
    let mut want = config.clone();
    want.shard = Shard::default();
    if theirs != want {
        return Ok(0);
    }
    let wanted: BTreeSet<String> = config.shard.parts(config.n, config.batch).iter().map(part_stem).collect();
    let parts = donor.join("parts");
    let Ok(rd) = std::fs::read_dir(&parts) else { return Ok(0) };
    // the donor's part files, listed once
    let mut names: Vec<String> =
        rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect();
    names.sort();
    let own_parts = own.join("parts");
    let mut adopted = 0;
    for stem in names.iter().filter_map(|n| n.strip_suffix(".json")).filter(|s| wanted.contains(*s)) {
        if own_parts.join(format!("{stem}.json")).exists() {
            continue;
        }
        let Some((a, b)) = stem.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (a.parse::<usize>(), b.parse::<usize>()) else { continue };
        if adopted == 0 {
            std::fs::create_dir_all(&own_parts).map_err(io(&own_parts))?;
            if !own.join("config.json").exists() {
                write_json(&own.join("config.json"), config)?;
            }
        }
        // images and Inception features first, the record last (as the runner writes a part)
        let prefix = format!("{stem}.");
        for name in names.iter().filter(|n| n.starts_with(&prefix) && n.ends_with(".safetensors")) {
            link_or_copy(&parts.join(name), &own_parts.join(name))?;
        }
        for i in start..end {
            let png = format!("{i:06}.png");
            if donor.join(&png).is_file() {
                link_or_copy(&donor.join(&png), &own.join(&png))?;
            }
        }
        link_or_copy(&parts.join(format!("{stem}.json")), &own_parts.join(format!("{stem}.json")))?;
        adopted += 1;
    }
    Ok(adopted)
}
