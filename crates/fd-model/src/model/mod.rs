//! The split denoiser of any family (2-D UNet, DiT, UNet3D) loaded from a model folder:
//! `time_embed`, `encode` (the paper's E), `decode` (the paper's D), `forward` = D(E(x)), the
//! ControlNet. Each caching method's graphs live in a file of their own beside this one
//! (`deepcache.rs`, `teacache.rs`, `stepcache.rs`, `tgate.rs`); conditioning in `conditioning.rs`,
//! the VAE in `output.rs`, the graph wrapper in `graph.rs`, the encoder features in `features.rs`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::cond::Cond;
use crate::manifest::{FormatChoice, GraphFormat, Manifest, PackageEntry};
use crate::prompt::PromptTokenizer;
use crate::{Error, Result};

mod conditioning;
mod deepcache;
mod features;
mod graph;
mod output;
mod stepcache;
mod teacache;
mod tgate;

use deepcache::DeepCacheGraphs;
pub use features::EncoderFeatures;
pub use graph::summarize_torch_error;
use graph::{first_line, Backend, Graph};

/// Options for [`Denoiser::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Device for all graphs. Default: CPU.
    pub device: Device,
    /// Check every graph file's SHA-256 against the manifest. Default: true.
    pub verify_hashes: bool,
    /// Also load the `full` reference graph (only needed for checks). Default: false.
    pub load_full: bool,
    /// Batch-invariant results: every graph is called one batch row at a time, so a sample's
    /// output depends only on its own inputs, never on batch size or on which rows share a
    /// decoder call (CPU BLAS / oneDNN kernels otherwise pick shape-dependent summation orders).
    /// Slower; combine with [`crate::device::set_deterministic`]. Default: false.
    pub row_by_row: bool,
    /// Which compiled form runs each graph: TorchScript, the AOTInductor package where the
    /// manifest lists one, or `auto` ([`FormatChoice::resolve`]). Default: TorchScript (fd's
    /// commands default to `auto`).
    pub format: FormatChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            verify_hashes: true,
            load_full: false,
            row_by_row: false,
            format: FormatChoice::Fixed(GraphFormat::Torchscript),
        }
    }
}

/// A model folder loaded for inference.
#[derive(Debug)]
pub struct Denoiser {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub device: Device,
    /// Graphs are called one batch row at a time ([`LoadOptions::row_by_row`]).
    pub row_by_row: bool,
    /// The format that runs ([`LoadOptions::format`], resolved for this model and device).
    pub format: GraphFormat,
    /// Why `auto` runs TorchScript although the model lists AOTInductor packages (None otherwise).
    pub format_note: Option<String>,
    /// Graphs loaded (the ones this run can call), and how many of them run as AOTInductor packages.
    pub graphs_loaded: (usize, usize),
    /// SHA-256 of the tokenizer file of a text-conditioned model (part of a run's identity); a
    /// two-tokenizer model's is both hashes joined by `+`.
    pub tokenizer_sha256: Option<String>,
    kind: Kind,
    time_embed: Graph,
    encoder: Graph,
    decoder: Graph,
    decoder_analysis: Option<Graph>,
    /// Every encoder layer's output beyond the cached features (a DiT's earlier blocks), for drift.
    encoder_analysis: Option<Graph>,
    full: Option<Graph>,
    cond_encoder: Option<Graph>,
    cond_prepare: Option<Graph>,
    controlnet: Option<Graph>,
    vae_decoder: Option<Graph>,
    /// DeepCache graphs by manifest key (`id{N}`, or a block-level number).
    deepcache: BTreeMap<String, DeepCacheGraphs>,
    /// TeaCache's indicator (the first resnet's timestep-modulated input).
    teacache_probe: Option<Graph>,
    /// T-GATE's graphs by name (empty without them).
    tgate: BTreeMap<String, Graph>,
    /// A DiT's TeaCache / FBCache graphs by name ([`crate::manifest::STEPCACHE_GRAPHS`]; empty
    /// without them).
    stepcache: BTreeMap<String, Graph>,
    tokenizer: Option<PromptTokenizer>,
    tokenizer_2: Option<PromptTokenizer>,
}

fn shape_str(s: &[i64]) -> String {
    format!("{s:?}")
}

/// How often a run called one graph, and in which format ([`Denoiser::graph_calls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphCalls {
    /// The manifest's name of the graph.
    pub graph: String,
    /// It runs from AOTInductor packages (else TorchScript).
    pub package: bool,
    /// FLOPs of one batch-1 call (manifest).
    pub flops: u64,
    /// Calls since the model was loaded.
    pub calls: u64,
}

/// Which of the graphs called between two [`Denoiser::graph_calls`] snapshots ran from packages
/// and which on TorchScript, when a run used both for graphs that compute (FLOPs > 0: a
/// class-label lookup or a sinusoid cannot move a timing): a sentence naming them, else None. A
/// speed measured on such a run compares formats as well as methods.
pub fn mixed_formats(before: &[GraphCalls], after: &[GraphCalls]) -> Option<String> {
    let called: Vec<&GraphCalls> = after
        .iter()
        .filter(|g| g.flops > 0)
        .filter(|g| g.calls > before.iter().find(|b| b.graph == g.graph).map_or(0, |b| b.calls))
        .collect();
    let names = |package: bool| -> Vec<String> {
        called.iter().filter(|g| g.package == package).map(|g| format!("`{}`", g.graph)).collect()
    };
    let (aoti, ts) = (names(true), names(false));
    (!aoti.is_empty() && !ts.is_empty())
        .then(|| format!("{} ran from AOTInductor packages, {} on TorchScript", aoti.join(", "), ts.join(", ")))
}

impl Denoiser {
    /// Every loaded graph's calls so far and format; snapshots before and after a run give what it
    /// called ([`mixed_formats`]).
    pub fn graph_calls(&self) -> Vec<GraphCalls> {
        let mut all: Vec<&Graph> = [
            Some(&self.time_embed),
            Some(&self.encoder),
            Some(&self.decoder),
            self.decoder_analysis.as_ref(),
            self.encoder_analysis.as_ref(),
            self.full.as_ref(),
            self.cond_encoder.as_ref(),
            self.cond_prepare.as_ref(),
            self.controlnet.as_ref(),
            self.vae_decoder.as_ref(),
            self.teacache_probe.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        all.extend(self.deepcache.values().flat_map(|d| [&d.shallow_encoder, &d.deep_decoder, &d.shallow_decoder]));
        all.extend(self.tgate.values().chain(self.stepcache.values()));
        all.iter()
            .map(|g| GraphCalls {
                graph: g.name.clone(),
                package: g.is_package(),
                flops: self.manifest.flops(&g.name),
                calls: g.calls.get(),
            })
            .collect()
    }

    /// Load a model folder written by `experiments/export/export_unet.py`.
    pub fn load(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::MissingFolder { path: dir });
        }
        let manifest = Manifest::load(&dir)?;
        let kind = manifest.tch_kind();
        let (format, format_note) = opts.format.resolve(&manifest, opts.device);
        if format == GraphFormat::Aoti && manifest.graphs.values().all(|g| g.packages.is_empty()) {
            return Err(Error::Manifest {
                path: dir.join("manifest.json"),
                msg: format!(
                    "model `{}` has no AOTInductor packages: compile them with `python experiments/export/convert_aoti.py --model {}`",
                    manifest.name,
                    dir.display()
                ),
            });
        }
        let packages: RefCell<HashMap<String, Rc<crate::aoti::Package>>> = RefCell::new(HashMap::new());
        let counts = std::cell::Cell::new((0usize, 0usize));
        // one package file: checked (device, torch release, hash) and loaded once
        let load_one = |graph: &str, p: &PackageEntry| -> Result<Rc<crate::aoti::Package>> {
            let path = dir.join(&p.file);
            let bad = |msg: String| Error::Package { graph: graph.into(), path: path.clone(), msg };
            if let Some(why) = crate::aoti::package_mismatch(p, opts.device) {
                return Err(bad(format!(
                    "{why}: a package runs only on the device, torch release and CPU vector ISA it was compiled for; compile packages for this machine (experiments/export/convert_aoti.py, `just convert-aoti`) or pass --format torchscript"
                )));
            }
            if let Some(pk) = packages.borrow().get(&p.file) {
                return Ok(pk.clone());
            }
            if !path.is_file() {
                return Err(Error::MissingGraph { path, graph: graph.into() });
            }
            if opts.verify_hashes {
                let found = crate::io::file_sha256(&path)?;
                if !found.eq_ignore_ascii_case(&p.sha256) {
                    return Err(Error::HashMismatch { path, graph: graph.into(), expected: p.sha256.clone(), found });
                }
            }
            let pk = Rc::new(crate::aoti::Package::load(&path, opts.device).map_err(|e| bad(first_line(&e)))?);
            packages.borrow_mut().insert(p.file.clone(), pk.clone());
            Ok(pk)
        };
        // a graph's packages, one per range of batch rows
        let load_packages = |graph: &str, list: &[PackageEntry]| -> Result<Graph> {
            let loaded = list.iter().map(|p| Ok((load_one(graph, p)?, p.batch))).collect::<Result<Vec<_>>>()?;
            Ok(Graph {
                backend: Backend::Aoti { packages: loaded, tuple: list[0].tuple },
                name: graph.into(),
                path: dir.join(&list[0].file),
                method: "AOTInductor package".into(),
                row_by_row: opts.row_by_row,
                calls: Default::default(),
            })
        };
        // each file is checked and loaded once, however many graphs it holds (each graph entry must
        // name the hash the file has)
        let modules: RefCell<HashMap<String, (Rc<CModule>, String)>> = RefCell::new(HashMap::new());
        let load = |graph: &str| -> Result<Graph> {
            let entry = &manifest.graphs[graph];
            let (n, p) = counts.get();
            if format == GraphFormat::Aoti && !entry.packages.is_empty() {
                counts.set((n + 1, p + 1));
                return load_packages(graph, &entry.packages);
            }
            counts.set((n + 1, p));
            let path = dir.join(&entry.file);
            if let Some((m, found)) = modules.borrow().get(&entry.file) {
                // the file was checked for another graph: this graph's entry must name the same hash
                if opts.verify_hashes && !found.eq_ignore_ascii_case(&entry.sha256) {
                    return Err(Error::HashMismatch {
                        path,
                        graph: graph.into(),
                        expected: entry.sha256.clone(),
                        found: found.clone(),
                    });
                }
                return Ok(Graph {
                    backend: Backend::TorchScript(m.clone()),
                    name: graph.into(),
                    path,
                    method: entry.method.clone(),
                    row_by_row: opts.row_by_row,
                    calls: Default::default(),
                });
            }
            if !path.is_file() {
                return Err(Error::MissingGraph { path, graph: graph.into() });
            }
            let found = if opts.verify_hashes { crate::io::file_sha256(&path)? } else { entry.sha256.clone() };
            if !found.eq_ignore_ascii_case(&entry.sha256) {
                return Err(Error::HashMismatch { path, graph: graph.into(), expected: entry.sha256.clone(), found });
            }
            let mut m = CModule::load_on_device(&path, opts.device)
                .map_err(|e| Error::LoadGraph { path: path.clone(), msg: first_line(&e.to_string()) })?;
            m.set_eval();
            let m = Rc::new(m);
            modules.borrow_mut().insert(entry.file.clone(), (m.clone(), found));
            Ok(Graph {
                backend: Backend::TorchScript(m),
                name: graph.into(),
                path,
                method: entry.method.clone(),
                row_by_row: opts.row_by_row,
                calls: Default::default(),
            })
        };
        let optional = |graph: &str| manifest.graphs.contains_key(graph).then(|| load(graph)).transpose();
        let load_tokenizer = |spec: Option<&crate::manifest::TokenizerSpec>| -> Result<_> {
            let Some(spec) = spec else { return Ok((None, None)) };
            let path = dir.join(&spec.file);
            Ok((Some(PromptTokenizer::load(&path, spec)?), Some(crate::io::file_sha256(&path)?)))
        };
        let (tokenizer, sha_1) = load_tokenizer(manifest.cond.tokenizer.as_ref())?;
        let (tokenizer_2, sha_2) = load_tokenizer(manifest.cond.tokenizer_2.as_ref())?;
        let tokenizer_sha256 = match (sha_1, sha_2) {
            (Some(a), Some(b)) => Some(format!("{a}+{b}")),
            (a, _) => a,
        };
        let mut deepcache = BTreeMap::new();
        for (key, spec) in &manifest.deepcache {
            let g = |part: &str| load(&crate::manifest::deepcache_graph(key, part));
            deepcache.insert(
                key.clone(),
                DeepCacheGraphs {
                    shallow_encoder: g("shallow_encoder")?,
                    deep_decoder: g("deep_decoder")?,
                    shallow_decoder: g("shallow_decoder")?,
                    shallow_skips: spec.shallow_skips,
                },
            );
        }
        Ok(Self {
            deepcache,
            teacache_probe: optional("teacache_probe")?,
            tgate: crate::manifest::TGATE_GRAPHS
                .iter()
                .filter_map(|g| optional(g).transpose().map(|r| r.map(|m| (g.to_string(), m))))
                .collect::<Result<_>>()?,
            stepcache: crate::manifest::STEPCACHE_GRAPHS
                .iter()
                .chain(&crate::manifest::PAB_GRAPHS)
                .filter_map(|g| optional(g).transpose().map(|r| r.map(|m| (g.to_string(), m))))
                .collect::<Result<_>>()?,
            time_embed: load("time_embed")?,
            encoder: load("encoder")?,
            decoder: load("decoder")?,
            decoder_analysis: optional("decoder_analysis")?,
            encoder_analysis: optional("encoder_analysis")?,
            full: if opts.load_full { optional("full")? } else { None },
            cond_encoder: optional("cond_encoder")?,
            cond_prepare: optional("cond_prepare")?,
            controlnet: optional("controlnet")?,
            vae_decoder: optional("vae_decoder")?,
            tokenizer,
            tokenizer_2,
            tokenizer_sha256,
            device: opts.device,
            row_by_row: opts.row_by_row,
            format,
            format_note,
            // after every graph above was loaded
            graphs_loaded: counts.get(),
            kind,
            manifest,
            dir,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn input(&self, t: &Tensor) -> Tensor {
        t.to_device(self.device).to_kind(self.kind)
    }

    fn check(&self, what: &str, t: &Tensor, expected: &[Option<i64>]) -> Result<()> {
        let found = t.size();
        let ok = found.len() == expected.len() && found.iter().zip(expected).all(|(f, e)| e.is_none_or(|e| e == *f));
        if ok {
            return Ok(());
        }
        let exp: Vec<String> = expected.iter().map(|e| e.map_or("B".into(), |v| v.to_string())).collect();
        Err(Error::Shape {
            what: format!("{what} (model `{}`)", self.manifest.name),
            expected: format!("[{}]", exp.join(", ")),
            found: shape_str(&found),
        })
    }

    fn check_batch(&self, what: &str, t: &Tensor, batch: i64) -> Result<()> {
        let b = t.size().first().copied().unwrap_or(-1);
        if b != batch {
            return Err(Error::Shape {
                what: format!("{what} batch size (model `{}`)", self.manifest.name),
                expected: batch.to_string(),
                found: b.to_string(),
            });
        }
        Ok(())
    }

    fn check_cond(&self, cond: &Tensor, batch: i64) -> Result<()> {
        let c = &self.manifest.cond;
        self.check("cond", cond, &[Some(batch), Some(c.seq_len), Some(c.dim)])
    }

    /// Timesteps [B] (any numeric kind; fractional values allowed) -> time embedding [B, E].
    /// `extra` ([B, E], [`Cond::extra`]) is required by models with added conditioning (SDXL, IF)
    /// and refused by the others.
    pub fn time_embed(&self, timesteps: &Tensor, extra: Option<&Tensor>) -> Result<Tensor> {
        self.check("timesteps", timesteps, &[None])?;
        let t = timesteps.to_device(self.device).to_kind(Kind::Float);
        match (extra, &self.manifest.prepare) {
            (None, None) => tch::no_grad(|| self.time_embed.forward_ts(&[t])),
            (Some(e), Some(_)) => {
                self.check(
                    "added time embedding (cond extra)",
                    e,
                    &[Some(t.size()[0]), Some(self.manifest.time_embed_dim)],
                )?;
                tch::no_grad(|| self.time_embed.forward_ts(&[t, self.input(e)]))
            }
            (None, Some(p)) => Err(Error::Cond(format!(
                "model `{}` adds per-sample conditioning ({}) to its time embedding: pass the Cond's `extra`",
                self.manifest.name,
                p.added.as_deref().unwrap_or("projection")
            ))),
            (Some(_), None) => Err(Error::Cond(format!(
                "model `{}` has no added conditioning; `extra` must be None",
                self.manifest.name
            ))),
        }
    }

    /// The paper's encoder E: sample [B,C,H,W], emb [B,E], cond [B,L,D] -> features.
    pub fn encode(&self, sample: &Tensor, emb: &Tensor, cond: &Tensor) -> Result<EncoderFeatures> {
        let (feats, extra) = self.encode_with(&self.encoder, "encoder", sample, emb, cond)?;
        if !extra.is_empty() {
            return Err(Error::Shape {
                what: "encoder graph output".into(),
                expected: format!("{} feature tensors (manifest.json)", feats.tensors.len()),
                found: (feats.tensors.len() + extra.len()).to_string(),
            });
        }
        Ok(feats)
    }

    /// Whether the model has the `encoder_analysis` graph ([`Denoiser::encode_analysis`]).
    pub fn has_encoder_analysis(&self) -> bool {
        self.encoder_analysis.is_some()
    }

    /// [`Denoiser::encode`] that also returns the encoder's layers beyond the cached features (a
    /// DiT's earlier blocks, named by [`crate::Manifest::encoder_layer_names`]), for feature-drift
    /// analysis; needs the `encoder_analysis` graph.
    pub fn encode_analysis(
        &self,
        sample: &Tensor,
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<(EncoderFeatures, Vec<Tensor>)> {
        let g = self.encoder_analysis.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "encoder_analysis".into(),
            why: "re-export the model with the current experiments/export/export_dit.py (or add_dit_analysis.py)",
        })?;
        self.encode_with(g, "encoder_analysis", sample, emb, cond)
    }

    /// Run an encoder-side graph: its first outputs are the features (checked against the
    /// manifest), the rest (an analysis graph's extra layers) are returned as they are.
    fn encode_with(
        &self,
        graph: &Graph,
        what: &str,
        sample: &Tensor,
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<(EncoderFeatures, Vec<Tensor>)> {
        let m = &self.manifest;
        let expected: Vec<Option<i64>> = std::iter::once(None).chain(m.sample_shape().into_iter().map(Some)).collect();
        self.check("sample", sample, &expected)?;
        let b = sample.size()[0];
        self.check("time embedding", emb, &[Some(b), Some(m.time_embed_dim)])?;
        self.check_cond(cond, b)?;
        let out = tch::no_grad(|| {
            graph.forward_is(&[
                IValue::Tensor(self.input(sample)),
                IValue::Tensor(self.input(emb)),
                IValue::Tensor(self.input(cond)),
            ])
        })?;
        let IValue::Tuple(items) = out else {
            return Err(Error::Shape {
                what: format!("{what} graph output"),
                expected: "a tuple of feature tensors".into(),
                found: "another value".into(),
            });
        };
        let mut tensors = items
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => Ok(t),
                _ => Err(Error::Shape {
                    what: format!("{what} graph output"),
                    expected: "tensors".into(),
                    found: "a non-tensor item".into(),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        let n = m.feature_shapes().len().min(tensors.len());
        let extra = tensors.split_off(n);
        let feats = EncoderFeatures { tensors };
        self.check_features(&feats)?;
        Ok((feats, extra))
    }

    fn check_features(&self, f: &EncoderFeatures) -> Result<()> {
        let m = &self.manifest;
        let (shapes, names) = (m.feature_shapes(), m.feature_names());
        if f.tensors.len() != shapes.len() {
            return Err(Error::Shape {
                what: "encoder features".into(),
                expected: format!("{} tensors (manifest.json: {})", shapes.len(), names.join(", ")),
                found: f.tensors.len().to_string(),
            });
        }
        let b = f.batch_size();
        for ((t, s), name) in f.tensors.iter().zip(&shapes).zip(&names) {
            let expected: Vec<Option<i64>> = std::iter::once(Some(b)).chain(s.iter().map(|v| Some(*v))).collect();
            self.check(&format!("encoder features: {name}"), t, &expected)?;
        }
        Ok(())
    }

    /// Graph inputs of a decoder-side call: the first feature, the time embedding, the cond, then
    /// the remaining features (the split graphs' signature for every model kind).
    fn feature_inputs(&self, feats: &EncoderFeatures, emb: &Tensor, cond: &Tensor) -> Vec<Tensor> {
        let mut inputs = vec![self.input(feats.mid()), self.input(emb), self.input(cond)];
        inputs.extend(feats.skips().iter().map(|s| self.input(s)));
        inputs
    }

    /// The paper's decoder D. `emb` and `cond` must have the features' batch size: to decode k
    /// steps against one key step's features, pass `feats.repeat(k)` (or an `index_select`) with
    /// the k time embeddings stacked in the same order.
    pub fn decode(&self, feats: &EncoderFeatures, emb: &Tensor, cond: &Tensor) -> Result<Tensor> {
        self.check_features(feats)?;
        let b = feats.batch_size();
        self.check("time embedding", emb, &[Some(b), Some(self.manifest.time_embed_dim)])?;
        self.check_cond(cond, b)?;
        let inputs = self.feature_inputs(feats, emb, cond);
        let out = tch::no_grad(|| self.decoder.forward_ts(&inputs))?;
        Ok(out.to_kind(Kind::Float))
    }

    /// [`Denoiser::decode`] that also returns every up block's output (for feature-drift
    /// analysis; needs the `decoder_analysis` graph).
    pub fn decode_analysis(
        &self,
        feats: &EncoderFeatures,
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let g = self.decoder_analysis.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "decoder_analysis".into(),
            why: "re-export the model with the current experiments/export/export_unet.py",
        })?;
        self.check_features(feats)?;
        let inputs: Vec<IValue> = self.feature_inputs(feats, emb, cond).into_iter().map(IValue::Tensor).collect();
        let IValue::Tuple(items) = tch::no_grad(|| g.forward_is(&inputs))? else {
            return Err(Error::Shape {
                what: "decoder_analysis output".into(),
                expected: "a tuple".into(),
                found: "another value".into(),
            });
        };
        let mut ts = items.into_iter().filter_map(|v| if let IValue::Tensor(t) = v { Some(t) } else { None });
        let out = ts.next().ok_or_else(|| Error::Shape {
            what: "decoder_analysis output".into(),
            expected: "(output, up blocks...)".into(),
            found: "empty".into(),
        })?;
        Ok((out.to_kind(Kind::Float), ts.collect()))
    }

    /// `decode(encode(x))` with the time embedding of `timesteps`: one full UNet evaluation.
    pub fn forward(&self, sample: &Tensor, timesteps: &Tensor, cond: &Cond) -> Result<Tensor> {
        self.check_batch("timesteps", timesteps, sample.size().first().copied().unwrap_or(-1))?;
        let emb = self.time_embed(timesteps, cond.extra.as_ref())?;
        let feats = self.encode(sample, &emb, &cond.states)?;
        self.decode(&feats, &emb, &cond.states)
    }

    /// The unsplit reference graph (needs `LoadOptions::load_full`): diffusers' forward on the
    /// raw text states and the model's added inputs (`prepare.inputs` after `states`).
    pub fn forward_full(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        states: &Tensor,
        added: &[Tensor],
    ) -> Result<Tensor> {
        let full = self.full.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "full".into(),
            why: "load with LoadOptions { load_full: true, .. }",
        })?;
        let t = timesteps.to_device(self.device).to_kind(Kind::Float);
        let mut inputs = vec![self.input(sample), t, self.input(states)];
        inputs.extend(added.iter().map(|a| self.input(a)));
        let out = tch::no_grad(|| full.forward_ts(&inputs))?;
        Ok(out.to_kind(Kind::Float))
    }

    /// Whether the model has a ControlNet (its `controlnet` graph).
    pub fn has_controlnet(&self) -> bool {
        self.controlnet.is_some()
    }

    /// The ControlNet's residuals at conditioning scale 1 for the UNet input `sample` at
    /// `timesteps`, with `cond`'s states and condition images; shaped like the encoder features
    /// (the executor scales them and adds them before the features are cached).
    pub fn controlnet(&self, sample: &Tensor, timesteps: &Tensor, cond: &Cond) -> Result<EncoderFeatures> {
        let g = self.controlnet.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "controlnet".into(),
            why: "export the model with experiments/export/export_sd.py --controlnet DIR",
        })?;
        let spec = self.manifest.control.as_ref().expect("validated: control with the controlnet graph");
        let image = cond.control.as_ref().ok_or_else(|| {
            Error::Cond(format!("model `{}` has a ControlNet: a condition image is required", self.manifest.name))
        })?;
        let b = sample.size()[0];
        self.check("control image", image, &[Some(b), Some(spec.channels), Some(spec.size[0]), Some(spec.size[1])])?;
        self.check_cond(&cond.states, b)?;
        let t = timesteps.to_device(self.device).to_kind(Kind::Float);
        let out = tch::no_grad(|| {
            g.forward_is(&[
                IValue::Tensor(self.input(sample)),
                IValue::Tensor(t),
                IValue::Tensor(self.input(&cond.states)),
                IValue::Tensor(self.input(image)),
            ])
        })?;
        let IValue::Tuple(items) = out else {
            return Err(Error::Cond("controlnet must return (mid, skips...)".into()));
        };
        let mut ts = items.into_iter().filter_map(|v| if let IValue::Tensor(t) = v { Some(t) } else { None });
        let mid = ts.next().ok_or_else(|| Error::Cond("controlnet returned nothing".into()))?;
        let feats = EncoderFeatures { tensors: std::iter::once(mid).chain(ts).collect() };
        self.check_features(&feats)?;
        Ok(feats)
    }
}
