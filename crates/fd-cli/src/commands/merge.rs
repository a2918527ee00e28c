//! `fd merge --out DIR SHARD...`: shard folders into one run (fd_run::merge).

use std::path::{Path, PathBuf};

use anyhow::Result;

pub fn run(shards: &[PathBuf], out: &Path, overwrite: bool) -> Result<()> {
    let existing = if overwrite { fd_run::runner::Existing::Overwrite } else { fd_run::runner::Existing::Fail };
    let run = fd_run::merge::merge(shards, out, existing)?;
    say!(
        "merged {} shards -> {} ({} samples); evaluate with `fd eval fid --samples {}`",
        shards.len(),
        out.display(),
        run.n_folder,
        out.display()
    );
    Ok(())
}
