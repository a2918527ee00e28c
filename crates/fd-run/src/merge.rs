//! `fd merge`: the folders of a sharded run (`fd sample --shard i/n`) combined into one, as if
//! one process had generated them.

use std::path::{Path, PathBuf};

use fd_model::io::{read_json, read_tensor, tensor_sha1, write_json, write_tensors};
use tch::Tensor;

use crate::error::io;
use crate::records::{Gflops, Machines, PartRecord, RunConfig, RunRecord};
use crate::runner::{RunSummary, Shard};
use crate::{Error, Result};

/// Combine finished shard folders of one run (`--shard i/n`, same configuration otherwise) into
/// `out`: parts (with their cached Inception features), PNGs, `samples.safetensors` in index
/// order, `run.json` with summed timings and counts. Missing shards, unfinished shards and
/// configuration mismatches are errors.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<RunRecord> {
    if shards.is_empty() {
        return Err(Error::Input("fd merge: no shard folders given".into()));
    }
    let mut base: Option<RunConfig> = None;
    let mut seen = Vec::new();
    let mut runs = Vec::new();
    for d in shards {
        let run = RunRecord::load(d)?;
        let mut cfg: RunConfig = read_json(&d.join("config.json"))?;
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
        if seen.iter().any(|s: &Shard| s.index == shard.index) {
            return Err(Error::Input(format!("{}: shard {}/{} given twice", d.display(), shard.index, shard.count)));
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
    let pd = out.join("parts");
    std::fs::create_dir_all(&pd).map_err(io(&pd))?;
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    for d in shards {
        for dir in [d.join("parts"), d.to_path_buf()] {
            let rd = std::fs::read_dir(&dir).map_err(io(&dir))?;
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().to_string();
                let is_part = dir.ends_with("parts") && !name.ends_with(".tmp");
                let is_png = name.ends_with(".png") && name != "grid.png" && name.len() == 10;
                if is_part || is_png {
                    let to = if is_part { pd.join(&name) } else { out.join(&name) };
                    files.push((e.path(), to));
                }
            }
        }
    }
    for (from, to) in &files {
        let mut tmp = to.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::copy(from, &tmp).map_err(io(from))?;
        std::fs::rename(&tmp, to).map_err(io(to))?;
    }
    write_json(&out.join("config.json"), &cfg)?;
    // parts in index order -> samples.safetensors
    let mut stems: Vec<String> = std::fs::read_dir(&pd)
        .map_err(io(&pd))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(String::from))
        .collect();
    stems.sort();
    let mut imgs = Vec::new();
    let mut records = Vec::new();
    for s in &stems {
        let rec: PartRecord = read_json(&pd.join(format!("{s}.json")))?;
        let t = read_tensor(&pd.join(format!("{s}.safetensors")), "samples")?;
        if tensor_sha1(&t)? != rec.images_sha1 {
            return Err(Error::Folder {
                path: pd.join(format!("{s}.safetensors")),
                msg: "images do not match their record".into(),
            });
        }
        records.push(rec);
        imgs.push(t);
    }
    let summary = RunSummary::from_records(&records, 0, records.len());
    let n_total = cfg.n;
    if summary.indices != (0..n_total).collect::<Vec<_>>() {
        return Err(Error::Input(format!(
            "fd merge: the shards hold {} of the run's {n_total} samples",
            summary.indices.len()
        )));
    }
    let all = Tensor::cat(&imgs, 0);
    write_tensors(&out.join("samples.safetensors"), &[("samples", &all)])?;
    let gflops: f64 = runs.iter().map(|r| r.gflops_per_image.value * r.n_folder as f64).sum::<f64>() / n_total as f64;
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
        config: cfg,
        command: crate::machine::command(),
        model_dir: None,
        merged_from: Some(shards.to_vec()),
        indices: summary.indices.clone(),
        n_folder: n_total,
        timings_s,
        s_per_image,
        parts: None,
        counts: summary.counts.clone(),
        gflops_per_image: Gflops { value: gflops, convention: None },
        machine: Machines::PerShard(machines),
        versions: None,
        metrics: None,
    };
    write_json(&out.join("run.json"), &run)?;
    Ok(run)
}
