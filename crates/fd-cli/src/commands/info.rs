//! `fd info MODEL`: manifest summary, parameter / FLOP split, device and libtorch.

use std::path::Path;

use anyhow::Result;
use fd_model::CondKind;
use fd_run::spec::ModelSpec;

pub fn run(dir: &Path, device: &str, format: fd_model::FormatChoice) -> Result<()> {
    let model = ModelSpec::new(dir, device, false)?.with_format(format).load()?;
    let m = &model.manifest;
    let p = |k: &str| m.params.get(k).copied().unwrap_or(0);
    let (pe, pd) = (p("encoder") + p("time_embed"), p("decoder"));
    let (fe, fd) = (m.flops("encoder"), m.flops("decoder"));
    say!(
        "model        {} ({}){}",
        m.name,
        dir.display(),
        m.family.as_deref().map_or(String::new(), |f| format!(", family {f}"))
    );
    say!("input        {:?} ({}), prediction {}", m.sample_shape(), m.dtype, m.prediction_type);
    say!(
        "cond         {:?}: [{}, {}]{}",
        m.cond.kind,
        m.cond.seq_len,
        m.cond.dim,
        match (&m.cond.kind, &m.cond.class_names) {
            (CondKind::Class, Some(n)) => format!(", classes {n:?}"),
            _ => String::new(),
        }
    );
    for (what, need) in m.needs() {
        say!("needs        {what}: {need}");
    }
    let feats: Vec<String> =
        m.feature_names().iter().zip(m.feature_shapes()).map(|(n, s)| format!("{n} {s:?}")).collect();
    say!("features     {} tensor(s) cached at key steps ({}): {}", feats.len(), m.kind, feats.join(", "));
    say!("scheduler    {}", m.scheduler);
    say!(
        "params       encoder (incl. time embedding) {:.3}M ({:.1}%), decoder {:.3}M ({:.1}%)",
        pe as f64 / 1e6,
        100.0 * pe as f64 / (pe + pd) as f64,
        pd as f64 / 1e6,
        100.0 * pd as f64 / (pe + pd) as f64
    );
    say!("flops/call   encoder {:.4} GFLOPs ({:.1}%), decoder {:.4} GFLOPs ({:.1}%), time_embed {:.6} GFLOPs (batch 1, 2 x MACs)",
        fe as f64 / 1e9, 100.0 * fe as f64 / (fe + fd) as f64, fd as f64 / 1e9, 100.0 * fd as f64 / (fe + fd) as f64, m.flops("time_embed") as f64 / 1e9);
    say!("graphs       {}", m.graphs.keys().cloned().collect::<Vec<_>>().join(", "));
    let packaged: Vec<String> = m
        .graphs
        .iter()
        .filter_map(|(k, g)| {
            g.packages.first().map(|p| {
                let ranges: Vec<String> =
                    g.packages.iter().map(|q| format!("{}..={}", q.batch[0], q.batch[1])).collect();
                let isa = p.cpu_capability.as_deref().map_or(String::new(), |c| format!(", {c} kernels"));
                let isa = isa + &p.march.as_deref().map_or(String::new(), |m| format!(", -march={m}"));
                format!("{k} ({}, torch {}{isa}, rows {})", p.device, p.torch, ranges.join(" + "))
            })
        })
        .collect();
    // which format runs, and why (the policy: docs/benchmarks.md "Graph formats")
    let runs = match (model.format, format) {
        (fd_model::GraphFormat::Aoti, fd_model::FormatChoice::Auto) => format!(
            "AOTInductor runs (--format auto: the model's packages run on this device, libtorch {} and this CPU's {} kernels); --format torchscript runs the TorchScript graphs",
            fd_model::aoti::torch_version(),
            fd_model::aoti::cpu_capability()
        ),
        (fd_model::GraphFormat::Aoti, _) => "AOTInductor runs (--format aoti)".to_string(),
        (_, fd_model::FormatChoice::Auto) => match &model.format_note {
            Some(why) => format!("{why} (--format auto)"),
            None => "TorchScript runs (--format auto: the model lists no AOTInductor packages)".to_string(),
        },
        _ => "TorchScript runs (--format torchscript)".to_string(),
    };
    say!("format       {runs}");
    say!(
        "packages     {}",
        if packaged.is_empty() {
            "none (experiments/export/convert_aoti.py compiles them)".to_string()
        } else {
            format!(
                "AOTInductor packages for {} of {} graphs ({} of the {} graphs this load uses run from them): {}",
                packaged.len(),
                m.graphs.len(),
                model.graphs_loaded.1,
                model.graphs_loaded.0,
                packaged.join(", ")
            )
        }
    );
    // the methods of the table this export can run beyond encoder propagation
    let peers: Vec<String> =
        fd_sched::methods::METHODS.iter().skip(1).filter_map(|meth| (meth.offered)(&model)).collect();
    say!("peer plans   {}", if peers.is_empty() { "none (encoder propagation only)".into() } else { peers.join("; ") });
    say!("device       {}", fd_model::device::describe(model.device));
    say!(
        "libtorch     {} (cuda available: {}, cudnn: {})",
        fd_model::device::libtorch_summary(),
        fd_model::tch::Cuda::is_available(),
        fd_model::tch::Cuda::cudnn_is_available()
    );
    Ok(())
}
