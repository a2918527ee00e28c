//! `fd merge`: the folders of a sharded run (`fd sample --shard i/n`) combined into one, as if
//! one process had generated them. Every shard and every part is verified before anything is
//! written: same run (identity), all shards present once, every part's record and images proven.

use std::path::{Path, PathBuf};

use fd_model::io::{copy_atomic, file_sha256, read_json, tensor_sha1, write_json, write_tensors};
use tch::Tensor;

use crate::error::io;
use crate::lock::FolderLock;
use crate::records::{Gflops, Machines, PartRecord, RunConfig, RunRecord};
use crate::runner::{
    clear_run_folder, folder_state, part_stem, read_verified_part, Existing, FolderState, RunSummary, Shard,
};
use crate::{Error, Result};

/// One verified part of one shard.
struct Part {
    from: PathBuf,
    range: std::ops::Range<usize>,
    record: PartRecord,
    images: Tensor,
}

/// Combine finished shard folders of one run (`--shard i/n`, same configuration otherwise) into
/// `out`: parts (with their cached Inception features), PNGs, `samples.safetensors` in index
/// order, `run.json` with summed timings and counts. Missing, unfinished, duplicated or foreign
/// shards and parts are errors, found before `out` is touched; `out` must be new or empty
/// ([`Existing::Overwrite`]: or an fd run, which is cleared first).
///
/// The steps: the shards checked against each other ([`Shards::load`]), every part they must hold
/// verified ([`Shards::verified_parts`]), `out` prepared ([`prepare_out`]), the parts copied
/// ([`copy_parts`]) and the merged record written.
pub fn merge(shards: &[PathBuf], out: &Path, existing: Existing) -> Result<RunRecord> {
    check_out_apart(shards, out)?;
    let s = Shards::load(shards)?;
    let parts = s.verified_parts(shards)?;
    let records: Vec<PartRecord> = parts.iter().map(|p| p.record.clone()).collect();
    let summary = RunSummary::from_records(&records, 0, records.len());
    if summary.indices != (0..s.cfg.n).collect::<Vec<_>>() {
        return Err(Error::Input(format!(
            "fd merge: the shards hold {} of the run's {} samples",
            summary.indices.len(),
            s.cfg.n
        )));
    }
    let _lock = prepare_out(out, existing)?;
    write_json(&out.join("config.json"), &s.cfg)?;
    copy_parts(&parts, out)?;
    let all = Tensor::cat(&parts.iter().map(|p| p.images.shallow_clone()).collect::<Vec<_>>(), 0);
    write_tensors(&out.join("samples.safetensors"), &[("samples", &all)])?;
    let Shards { cfg, runs, .. } = s;
    let gflops: f64 = runs.iter().map(|r| r.gflops_per_image.value * r.n_folder as f64).sum::<f64>() / cfg.n as f64;
    let (timings_s, s_per_image) =
        summary.timing_records("sums over shards (processes may have run on different machines)");
    let machines = runs
        .iter()
        .flat_map(|r| match &r.machine {
            Machines::One(m) => vec![m.clone()],
            Machines::PerShard(v) => v.clone(),
        })
        .collect();
    let run = RunRecord {
        identity: cfg.identity(),
        config: cfg,
        decode: runs.first().and_then(|r| r.decode.clone()),
        samples_sha1: tensor_sha1(&all)?,
        command: crate::machine::command(),
        model_dir: None,
        merged_from: Some(shards.to_vec()),
        indices: summary.indices.clone(),
        n_folder: summary.n,
        timings_s,
        s_per_image,
        parts: None,
        counts: summary.counts.clone(),
        gflops_per_image: Gflops { value: gflops, convention: None },
        machine: Machines::PerShard(machines),
        versions: None,
        metrics: None,
        // a shard that mixed formats makes the whole run's timings mixed
        mixed_formats: runs.iter().find_map(|r| r.mixed_formats.clone()),
    };
    write_json(&out.join("run.json"), &run)?;
    Ok(run)
}

/// `out` is none of the inputs, nor inside one, nor holding one: merging writes (and with
/// `--overwrite` clears) `out`, which must never touch what the merge reads.
fn check_out_apart(shards: &[PathBuf], out: &Path) -> Result<()> {
    // a folder that does not exist yet is no input (nor inside one: its parent is checked)
    let canon = |p: &Path| -> Option<PathBuf> {
        p.canonicalize().ok().or_else(|| {
            let parent = p.parent().filter(|q| !q.as_os_str().is_empty()).unwrap_or(Path::new("."));
            parent.canonicalize().ok().map(|q| q.join(p.file_name().unwrap_or_default()))
        })
    };
    let Some(o) = canon(out) else { return Ok(()) };
    for d in shards {
        let Some(i) = d.canonicalize().ok() else { continue };
        let clash = if o == i {
            "is one of the folders being merged"
        } else if o.starts_with(&i) {
            "lies inside a folder being merged"
        } else if i.starts_with(&o) {
            "holds a folder being merged"
        } else {
            continue;
        };
        return Err(Error::Input(format!(
            "--out {} {clash} ({}): merge into a new folder",
            out.display(),
            d.display()
        )));
    }
    Ok(())
}

/// The shards of one run, checked against each other: one configuration (but the shard), each
/// shard index once, none missing.
struct Shards {
    cfg: RunConfig,
    seen: Vec<Shard>,
    runs: Vec<RunRecord>,
}

impl Shards {
    fn load(shards: &[PathBuf]) -> Result<Self> {
        if shards.is_empty() {
            return Err(Error::Input("fd merge: no shard folders given".into()));
        }
        let mut base: Option<RunConfig> = None;
        let mut seen: Vec<Shard> = Vec::new();
        let mut runs = Vec::new();
        for d in shards {
            let run = RunRecord::load(d)?;
            let mut cfg: RunConfig = read_json(&d.join("config.json"))?;
            if run.identity != cfg.identity() {
                return Err(Error::Folder {
                    path: d.to_path_buf(),
                    msg: "run.json and config.json describe different runs".into(),
                });
            }
            let shard = cfg.shard;
            cfg.shard = Shard::default();
            match &base {
                None => base = Some(cfg),
                Some(b) if *b != cfg => {
                    return Err(Error::Input(format!(
                        "{}: configuration differs from {} (only `shard` may differ; differs in: {})",
                        d.display(),
                        shards[0].display(),
                        b.differing_fields(&cfg).join(", ")
                    )))
                }
                Some(_) => {}
            }
            if seen.iter().any(|s| s.index == shard.index) {
                return Err(Error::Input(format!(
                    "{}: shard {}/{} given twice",
                    d.display(),
                    shard.index,
                    shard.count
                )));
            }
            seen.push(shard);
            runs.push(run);
        }
        let cfg = base.expect("at least one shard");
        let count = seen[0].count;
        if seen.iter().any(|s| s.count != count) {
            return Err(Error::Input("fd merge: shards of different counts (i/n with different n)".into()));
        }
        let missing: Vec<String> =
            (0..count).filter(|i| !seen.iter().any(|s| s.index == *i)).map(|i| format!("{i}/{count}")).collect();
        if !missing.is_empty() {
            return Err(Error::Input(format!("fd merge: shards {} are missing", missing.join(", "))));
        }
        Ok(Self { cfg, seen, runs })
    }

    /// Every part the shards must hold, read and verified, in sample order.
    fn verified_parts(&self, shards: &[PathBuf]) -> Result<Vec<Part>> {
        let identity = self.cfg.identity();
        let mut parts = Vec::new();
        for (d, shard) in shards.iter().zip(&self.seen) {
            for r in shard.parts(self.cfg.n, self.cfg.batch) {
                let (record, images) = read_verified_part(d, &r, &self.cfg, &identity)?;
                parts.push(Part { from: d.clone(), range: r, record, images });
            }
        }
        parts.sort_by_key(|p| p.range.start);
        Ok(parts)
    }
}

/// The output folder: new, empty, or (`--overwrite`) an fd run, cleared; locked for the merge.
fn prepare_out(out: &Path, existing: Existing) -> Result<FolderLock> {
    let state = folder_state(out)?;
    match (&state, existing) {
        (FolderState::Empty, _) | (FolderState::Run, Existing::Overwrite) => {}
        (FolderState::Run, _) => {
            return Err(Error::Input(format!(
                "--out {} already holds a run: pass --overwrite to replace it, or use another folder",
                out.display()
            )))
        }
        (FolderState::Foreign(why), _) => {
            return Err(Error::Input(format!(
                "--out {} is not empty and holds no fd run ({why}): use a new or empty folder",
                out.display()
            )))
        }
    }
    let lock = FolderLock::acquire(out, "fd merge")?;
    if folder_state(out)? != state {
        return Err(Error::Input(format!("--out {}: changed by another process meanwhile", out.display())));
    }
    if state == FolderState::Run {
        clear_run_folder(out)?;
    }
    let pd = out.join("parts");
    std::fs::create_dir_all(&pd).map_err(io(&pd))?;
    Ok(lock)
}

/// Each part's files (cached features included) and PNGs into `out`: a PNG is copied when it
/// matches its recorded hash, else written from the verified images.
fn copy_parts(parts: &[Part], out: &Path) -> Result<()> {
    let pd = out.join("parts");
    for p in parts {
        let stem = part_stem(&p.range);
        let src = p.from.join("parts");
        for e in std::fs::read_dir(&src).map_err(io(&src))?.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("{stem}.")) && !name.ends_with(".tmp") && !name.contains(".tmp.") {
                copy_atomic(&e.path(), &pd.join(&name))?;
            }
        }
        let u8s = (!p.record.png_sha256.is_empty()).then(|| fd_eval::images::to_u8(&p.images));
        for (k, (i, h)) in p.range.clone().zip(&p.record.png_sha256).enumerate() {
            let (from, to) = (p.from.join(format!("{i:06}.png")), out.join(format!("{i:06}.png")));
            if file_sha256(&from).ok().as_ref() == Some(h) {
                copy_atomic(&from, &to)?;
            } else if let Some(u8s) = &u8s {
                fd_eval::images::save_png(&u8s.get(k as i64), &to)?;
            }
        }
    }
    Ok(())
}
