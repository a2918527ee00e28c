//! `fd merge --out DIR SHARD...`: shard folders into one run (fd_run::merge).

use std::path::{Path, PathBuf};

use anyhow::Result;

pub fn run(shards: &[PathBuf], out: &Path) -> Result<()> {
    let run = fd_run::merge::merge(shards, out)?;
    println!(
        "merged {} shards -> {} ({} samples); evaluate with `fd eval fid --samples {}`",
        shards.len(),
        out.display(),
        run.n_folder,
        out.display()
    );
    Ok(())
}
