//! `fd compare`: finished runs of the same samples side by side — UNet time, speedup, GFLOPs and
//! class consistency from the model's judge — as one table (`compare.md`, `compare.json`) and one
//! labelled figure (`compare.png`: each run's grid under its label, speedup and consistency).
//! Every number is read or computed from verified run folders ([`VerifiedRun`]).

use std::path::{Path, PathBuf};

use fd_analysis::plot::{image_panels, ImagePanel};
use fd_eval::consistency::Classifier;
use fd_model::io::{write_atomic, write_json};
use fd_model::Condition;
use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::evaluate::VerifiedRun;
use crate::records::Machines;
use crate::{Error, Result};

/// One compared run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRow {
    pub label: String,
    pub dir: PathBuf,
    /// The plan as run.json records it (`none` = the plain sampler).
    pub plan: String,
    /// Decoding as run ([`fd_sched::decode::DecodeChoice::summary`]).
    pub decode: String,
    pub n: usize,
    pub unet_s_per_image: f64,
    pub total_s_per_image: f64,
    /// UNet s/image of the first run over this run's.
    pub speedup: f64,
    pub gflops_per_image: f64,
    /// Class consistency (class-conditional runs with a judge).
    pub consistency: Option<f64>,
}

/// `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    pub command: Vec<String>,
    pub model: String,
    pub sampler: String,
    pub steps: usize,
    pub guidance: f64,
    /// The machines the runs were timed on (speedups mean most when there is one).
    pub machines: Vec<String>,
    /// The judge of class consistency.
    pub classifier: Option<PathBuf>,
    pub rows: Vec<CompareRow>,
    /// The `fd bench` report the UNet times and speedups come from (plans timed side by side in
    /// one process), instead of each run's own process.
    #[serde(default)]
    pub timings: Option<PathBuf>,
    /// What disturbed those timings ([`crate::bench::BenchReport::disturbed`]).
    #[serde(default)]
    pub disturbed: Vec<String>,
    /// The timed plans that ran graphs of both formats ([`fd_model::mixed_formats`]), each as
    /// "`plan`: which graphs ran in which format".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mixed_formats: Vec<String>,
}

/// Compare finished run folders `dirs` (the first is the reference of the speedups). They must
/// hold the same samples: the same model, seeds and conditions. `labels` name the rows (default:
/// the plan); `classifier` judges class consistency. Returns the report and one figure panel per
/// run (its grid under the caption).
pub fn compare(
    dirs: &[PathBuf],
    labels: &[String],
    classifier: Option<&Classifier>,
    timings: Option<&Path>,
) -> Result<(CompareReport, Vec<ImagePanel>)> {
    if dirs.is_empty() {
        return Err(Error::Input("fd compare: give at least one run folder".into()));
    }
    if !labels.is_empty() && labels.len() != dirs.len() {
        return Err(Error::Input(format!("--labels: {} labels for {} run folders", labels.len(), dirs.len())));
    }
    let runs: Vec<VerifiedRun> = dirs.iter().map(|d| VerifiedRun::load(d)).collect::<Result<_>>()?;
    let first = &runs[0].record;
    for (run, dir) in runs.iter().zip(dirs).skip(1) {
        let (c, f) = (&run.record.config, &first.config);
        // like with like: the same samples (model, seeds, conditions) made by the same sampler and
        // guidance, so a speedup and a consistency difference are the plan's alone
        let fields = [
            ("model", c.model == f.model),
            ("seed", c.seed == f.seed),
            ("conditions", c.conditions == f.conditions),
            ("samples", run.record.indices == first.indices),
            (
                "sampler",
                c.sampler.name == f.sampler.name
                    && c.sampler.eta == f.sampler.eta
                    && c.sampler.config == f.sampler.config,
            ),
            ("steps", c.sampler.steps == f.sampler.steps),
            ("guidance", c.exec.guidance == f.exec.guidance),
        ];
        let differ: Vec<&str> = fields.iter().filter(|(_, same)| !same).map(|(name, _)| *name).collect();
        if !differ.is_empty() {
            return Err(Error::Folder {
                path: dir.clone(),
                msg: format!(
                    "not comparable with {}: {} differ{} (compare runs of the same samples, sampler and guidance)",
                    dirs[0].display(),
                    differ.join(", "),
                    if differ.len() == 1 { "s" } else { "" }
                ),
            });
        }
    }
    let bench = timings.map(|p| side_by_side(p, &runs)).transpose()?;
    let class_run = first.config.conditions.iter().all(|c| matches!(c, Condition::Class(_)));
    let mut rows = Vec::new();
    let mut panels = Vec::new();
    let mut machines: Vec<String> = Vec::new();
    for (k, (run, dir)) in runs.iter().zip(dirs).enumerate() {
        let r = &run.record;
        let consistency = match classifier {
            Some(c) if class_run => Some(run.consistency(c, dir)?.consistency),
            _ => None,
        };
        let plan = r.config.plan.keys.to_string();
        let label = labels.get(k).cloned().unwrap_or_else(|| plan.clone());
        let ms = match &r.machine {
            Machines::One(m) => vec![m.clone()],
            Machines::PerShard(v) => v.clone(),
        };
        for m in ms {
            let s = format!("{} ({} torch threads, {})", m.cpu, m.torch_threads, m.device);
            if !machines.contains(&s) {
                machines.push(s);
            }
        }
        let (unet, speedup) = match &bench {
            Some(b) => (b.rows[k].median_s_per_image, b.rows[k].speedup),
            None => (r.s_per_image.unet_loop, first.s_per_image.unet_loop / r.s_per_image.unet_loop),
        };
        rows.push(CompareRow {
            label,
            dir: dir.clone(),
            plan,
            decode: r.decode.as_ref().map_or_else(|| "-".into(), |d| d.summary()),
            n: r.n_folder,
            unet_s_per_image: unet,
            total_s_per_image: r.s_per_image.total,
            speedup,
            gflops_per_image: r.gflops_per_image.value,
            consistency,
        });
        let row = rows.last().expect("pushed");
        let images = run.images()?;
        if !matches!(images.size().get(1), Some(1 | 3)) {
            continue; // latents without a VAE decoder: no figure
        }
        let grid = fd_eval::images::to_u8(&fd_eval::images::grid(&images, 10)).squeeze_dim(0);
        let s = grid.size();
        let mut title =
            vec![row.label.clone(), format!("{:.2}x UNet speed, {:.1} GFLOPs/img", row.speedup, row.gflops_per_image)];
        if let Some(c) = row.consistency {
            title.push(format!("class consistency {c:.3}"));
        }
        panels.push(ImagePanel {
            title,
            pixels: Vec::<u8>::try_from(&grid.flatten(0, -1))?,
            height: s[0] as usize,
            width: s[1] as usize,
            channels: s[2] as usize,
        });
    }
    let report = CompareReport {
        command: crate::machine::command(),
        model: first.config.model.name().to_string(),
        sampler: first.config.sampler.name.clone(),
        steps: first.config.sampler.steps,
        guidance: first.config.exec.guidance,
        machines,
        classifier: classifier.map(|c| c.path.clone()),
        rows,
        timings: timings.map(Path::to_path_buf),
        mixed_formats: match &bench {
            Some(b) => {
                b.rows.iter().filter_map(|r| Some(format!("`{}`: {}", r.plan, r.mixed_formats.as_ref()?))).collect()
            }
            None => runs
                .iter()
                .filter_map(|r| Some(format!("`{}`: {}", r.record.config.plan.keys, r.record.mixed_formats.as_ref()?)))
                .collect(),
        },
        disturbed: bench.map(|b| b.disturbed).unwrap_or_default(),
    };
    Ok((report, panels))
}

/// The `fd bench` report at `path`, checked to time the runs' plans, in their order, on the same
/// model, sampler, steps and guidance.
fn side_by_side(path: &Path, runs: &[VerifiedRun]) -> Result<crate::bench::BenchReport> {
    let b: crate::bench::BenchReport = fd_model::io::read_json(path)?;
    let bad = |msg: String| Error::Folder { path: path.to_path_buf(), msg: format!("--timings: {msg}") };
    if b.rows.len() != runs.len() {
        return Err(bad(format!("times {} plans for {} runs (one per run, in order)", b.rows.len(), runs.len())));
    }
    let first = &runs[0].record.config;
    if b.model != first.model.name() || b.steps != first.sampler.steps || b.cfg != first.exec.guidance {
        return Err(bad(format!(
            "timed model `{}`, {} steps, CFG {}; the runs are `{}`, {} steps, CFG {}",
            b.model,
            b.steps,
            b.cfg,
            first.model.name(),
            first.sampler.steps,
            first.exec.guidance
        )));
    }
    for (k, (row, run)) in b.rows.iter().zip(runs).enumerate() {
        let (timed, ran) = (row.keys.to_string(), run.record.config.plan.keys.to_string());
        if timed != ran {
            return Err(bad(format!("plan {} is `{timed}`, run {} ran `{ran}`", k + 1, k + 1)));
        }
    }
    Ok(b)
}

impl CompareReport {
    /// The table, as printed and written to `compare.md`.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "Model `{}`, {} {} steps, CFG {}, N = {} (same seeds and conditions in every run).\n\n\
             | run | plan | decoding | UNet s/image | speedup | GFLOPs/image | class consistency |\n\
             |---|---|---|---|---|---|---|\n",
            self.model,
            self.sampler,
            self.steps,
            self.guidance,
            self.rows.first().map_or(0, |r| r.n)
        );
        for r in &self.rows {
            md += &format!(
                "| {} | `{}` | {} | {:.3} | {:.2}x | {:.1} | {} |\n",
                r.label,
                r.plan,
                r.decode,
                r.unet_s_per_image,
                r.speedup,
                r.gflops_per_image,
                r.consistency.map_or_else(|| "-".into(), |c| format!("{c:.3}"))
            );
        }
        let timing = match &self.timings {
            Some(p) => format!(
                "UNet s/image and speedup: `fd bench` ({}), the plans timed side by side in one process{}",
                p.display(),
                if self.disturbed.is_empty() {
                    String::new()
                } else {
                    format!(". **Timing disturbed**: {}; not clean numbers", self.disturbed.join("; "))
                }
            ),
            None => format!(
                "Timed on {}{}. Speedup: UNet-loop s/image of the first run over each run's (separate processes; \
                 `fd bench` times plans side by side)",
                self.machines.join("; "),
                if self.machines.len() > 1 { " (different machines: speedups are not comparable)" } else { "" }
            ),
        };
        let timing = if self.mixed_formats.is_empty() {
            timing
        } else {
            format!(
                "{timing}. **Mixed graph formats**: {}; their speedups compare graph formats as well as methods \
                 (`--format torchscript` times every graph alike)",
                self.mixed_formats.join("; ")
            )
        };
        md += &format!(
            "\n{timing}.{}\n",
            match &self.classifier {
                Some(p) => format!(
                    " Class consistency: share of samples the judge `{}` assigns the requested class.",
                    p.display()
                ),
                None => String::new(),
            }
        );
        md
    }

    /// Write `compare.md`, `compare.json` and the figure `compare.png` into `out` (created; the
    /// figure only when every run has 1- or 3-channel images, one panel per run).
    pub fn write(&self, panels: &[ImagePanel], out: &Path) -> Result<bool> {
        std::fs::create_dir_all(out).map_err(io(out))?;
        let figure = !panels.is_empty() && panels.len() == self.rows.len();
        if figure {
            image_panels(panels, 2, &out.join("compare.png"))?;
        }
        write_json(&out.join("compare.json"), self)?;
        write_atomic(&out.join("compare.md"), self.markdown().as_bytes())?;
        Ok(figure)
    }
}

/// The judge a comparison uses by default: `classifier.pt` in the model folder the run `dir` was
/// sampled from (its run.json's `model_dir`), when that file exists.
pub fn default_judge(dir: &Path) -> Result<Option<PathBuf>> {
    let rec = crate::evaluate::finished_run(dir)?;
    Ok(rec.model_dir.map(|m| m.join("classifier.pt")).filter(|p| p.is_file()))
}
