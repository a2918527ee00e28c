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

use std::path::{Path, PathBuf};

use fd_model::io::read_json;

use crate::error::io;
use crate::records::RunConfig;
use crate::runner::{folder_state, FolderState};
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
/// equals `config`, for every part `own` lacks. Does nothing when `own` holds a different run or
/// something else (the runner reports it). Returns the donor folder and the parts adopted.
pub fn adopt_parts(root: &Path, own: &Path, config: &RunConfig) -> Result<Option<(PathBuf, usize)>> {
    match folder_state(own)? {
        FolderState::Foreign(_) => return Ok(None),
        FolderState::Run => {
            let mine: RunConfig = match read_json(&own.join("config.json")) {
                Ok(c) => c,
                Err(_) => return Ok(None),
            };
            if mine != *config {
                return Ok(None);
            }
        }
        FolderState::Empty => {}
    }
    for donor in candidates(root, own) {
        let Ok(theirs) = read_json::<RunConfig>(&donor.join("config.json")) else { continue };
        if theirs != *config {
            continue;
        }
        let parts = donor.join("parts");
        // the donor's part files, listed once
        let mut names: Vec<String> = std::fs::read_dir(&parts)
            .map_err(io(&parts))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        let records: Vec<PathBuf> = names.iter().filter(|n| n.ends_with(".json")).map(|n| parts.join(n)).collect();
        let own_parts = own.join("parts");
        let mut adopted = 0;
        for rec in records {
            let Some(stem) = rec.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
            if own_parts.join(format!("{stem}.json")).exists() {
                continue;
            }
            let Some((a, b)) = stem.split_once('-') else { continue };
            let (Ok(start), Ok(end)) = (a.parse::<usize>(), b.parse::<usize>()) else { continue };
            if adopted == 0 {
                std::fs::create_dir_all(&own_parts).map_err(io(&own_parts))?;
                link_or_copy(&donor.join("config.json"), &own.join("config.json"))?;
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
            link_or_copy(&rec, &own_parts.join(format!("{stem}.json")))?;
            adopted += 1;
        }
        if adopted > 0 {
            return Ok(Some((donor, adopted)));
        }
    }
    Ok(None)
}
