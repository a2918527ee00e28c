//! The split UNet: `time_embed`, `encode` (paper's E), `decode` (paper's D), `forward` = D(E(x)).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::cond::Cond;
use crate::manifest::{CondKind, Manifest, ModelKind, UncondRule};
use crate::prompt::PromptTokenizer;
use crate::{Error, Result};

/// Options for [`UNetModel::load`].
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
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, verify_hashes: true, load_full: false, row_by_row: false }
    }
}

/// Encoder outputs cached at a key step, in the order the encoder graph returns them: a UNet's
/// mid-block output then its skips in down-path order; a DiT's one token tensor (laid out
/// [B, D, h, w] on its patch grid). Every kind is a list of tensors with the batch first, so the
/// executor, feature forecasting and drift analysis need no per-kind code.
///
/// Cloning is shallow (the tensors share storage); [`EncoderFeatures::repeat`] and
/// [`EncoderFeatures::index_select`] build the batches a parallel decoder call needs.
#[derive(Debug)]
pub struct EncoderFeatures {
    pub tensors: Vec<Tensor>,
}

impl Clone for EncoderFeatures {
    fn clone(&self) -> Self {
        Self { tensors: self.tensors.iter().map(Tensor::shallow_clone).collect() }
    }
}

impl EncoderFeatures {
    pub fn batch_size(&self) -> i64 {
        self.tensors.first().map_or(0, |t| t.size()[0])
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Self {
        Self { tensors: self.tensors.iter().map(f).collect() }
    }

    /// Tile the whole batch `k` times: [f_0..f_{B-1}, f_0..f_{B-1}, ...] (k*B rows).
    pub fn repeat(&self, k: i64) -> Self {
        self.map(|t| {
            let mut reps = vec![1i64; t.dim()];
            reps[0] = k;
            t.repeat(reps.as_slice())
        })
    }

    /// Rows `index` (an int64 tensor on any device) of every tensor.
    pub fn index_select(&self, index: &Tensor) -> Self {
        self.map(|t| t.index_select(0, &index.to_device(t.device())))
    }

    /// Concatenate along the batch dimension.
    pub fn cat(parts: &[EncoderFeatures]) -> Self {
        let n = parts.first().map_or(0, |p| p.tensors.len());
        let tensors =
            (0..n).map(|i| Tensor::cat(&parts.iter().map(|p| &p.tensors[i]).collect::<Vec<_>>(), 0)).collect();
        Self { tensors }
    }

    /// `self + scale * other`, tensor by tensor (ControlNet residuals added to the features).
    pub fn add_scaled(&self, other: &EncoderFeatures, scale: f64) -> Self {
        let tensors = self.tensors.iter().zip(&other.tensors).map(|(a, b)| a + b.to_kind(a.kind()) * scale).collect();
        Self { tensors }
    }

    /// `sum_i w_i * features_i` tensor by tensor, summed in order (feature forecasting).
    pub fn weighted_sum(parts: &[&EncoderFeatures], weights: &[f64]) -> Self {
        let n = parts.first().map_or(0, |p| p.tensors.len());
        let tensors = (0..n)
            .map(|k| {
                let mut acc = &parts[0].tensors[k] * weights[0];
                for (p, &w) in parts.iter().zip(weights).skip(1) {
                    acc += &p.tensors[k] * w;
                }
                acc
            })
            .collect();
        Self { tensors }
    }

    /// A UNet's mid-block output (the first tensor; a DiT's token tensor).
    pub fn mid(&self) -> &Tensor {
        &self.tensors[0]
    }

    /// A UNet's skip tensors in down-path order (empty for a DiT).
    pub fn skips(&self) -> &[Tensor] {
        &self.tensors[1..]
    }

    /// The features with the first `fresh.len()` skips replaced by `fresh` (a UNet's shallow
    /// skips recomputed, the deeper skips and the mid block kept).
    pub fn with_skips_replaced(&self, fresh: &[Tensor]) -> Self {
        let tensors = self
            .tensors
            .iter()
            .enumerate()
            .map(|(k, t)| if (1..=fresh.len()).contains(&k) { fresh[k - 1].shallow_clone() } else { t.shallow_clone() })
            .collect();
        Self { tensors }
    }
}

/// One graph: a method of a loaded TorchScript module (modules are shared between graphs).
#[derive(Debug)]
struct Graph {
    module: Rc<CModule>,
    /// The manifest's name for the graph, the file it was loaded from and the method called.
    name: String,
    path: PathBuf,
    method: String,
    /// See [`LoadOptions::row_by_row`].
    row_by_row: bool,
}

/// Row `i` of every batched tensor in an input (tensors whose first dimension is `b`).
fn row_of(v: &IValue, i: i64, b: i64) -> Result<IValue, tch::TchError> {
    Ok(match v {
        IValue::Tensor(t) if t.dim() > 0 && t.size()[0] == b => IValue::Tensor(t.narrow(0, i, 1)),
        IValue::Tensor(t) => IValue::Tensor(t.shallow_clone()),
        IValue::TensorList(v) => IValue::TensorList(
            v.iter()
                .map(|t| if t.size().first() == Some(&b) { t.narrow(0, i, 1) } else { t.shallow_clone() })
                .collect(),
        ),
        IValue::Tuple(v) => IValue::Tuple(v.iter().map(|x| row_of(x, i, b)).collect::<Result<_, _>>()?),
        IValue::GenericList(v) => IValue::GenericList(v.iter().map(|x| row_of(x, i, b)).collect::<Result<_, _>>()?),
        IValue::None => IValue::None,
        IValue::Int(x) => IValue::Int(*x),
        IValue::Double(x) => IValue::Double(*x),
        IValue::Bool(x) => IValue::Bool(*x),
        other => return Err(tch::TchError::Kind(format!("row-by-row call: unsupported graph input {other:?}"))),
    })
}

/// Concatenate per-row outputs along the batch dimension (tensors, tuples and lists of them).
fn cat_rows(outs: Vec<IValue>) -> Result<IValue, tch::TchError> {
    let bad = || tch::TchError::Kind("row-by-row call: graph outputs differ in structure".into());
    match outs.first() {
        Some(IValue::Tensor(_)) => {
            let ts = outs.into_iter().map(|o| if let IValue::Tensor(t) = o { Ok(t) } else { Err(bad()) });
            Ok(IValue::Tensor(Tensor::cat(&ts.collect::<Result<Vec<_>, _>>()?, 0)))
        }
        Some(IValue::Tuple(first)) | Some(IValue::GenericList(first)) => {
            let tuple = matches!(outs[0], IValue::Tuple(_));
            let k = first.len();
            let mut cols: Vec<Vec<IValue>> = (0..k).map(|_| Vec::with_capacity(outs.len())).collect();
            for o in outs {
                let (IValue::Tuple(v) | IValue::GenericList(v)) = o else { return Err(bad()) };
                if v.len() != k {
                    return Err(bad());
                }
                for (c, x) in cols.iter_mut().zip(v) {
                    c.push(x);
                }
            }
            let v = cols.into_iter().map(cat_rows).collect::<Result<Vec<_>, _>>()?;
            Ok(if tuple { IValue::Tuple(v) } else { IValue::GenericList(v) })
        }
        Some(IValue::TensorList(first)) => {
            let k = first.len();
            let mut cols: Vec<Vec<Tensor>> = (0..k).map(|_| Vec::new()).collect();
            for o in outs {
                let IValue::TensorList(v) = o else { return Err(bad()) };
                for (c, x) in cols.iter_mut().zip(v) {
                    c.push(x);
                }
            }
            Ok(IValue::TensorList(cols.iter().map(|c| Tensor::cat(c, 0)).collect()))
        }
        _ => Err(bad()),
    }
}

impl Graph {
    fn call(&self, inputs: &[IValue]) -> Result<IValue, tch::TchError> {
        if self.method == "forward" {
            self.module.forward_is(inputs)
        } else {
            self.module.method_is(&self.method, inputs)
        }
    }

    fn forward_ts(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let iv: Vec<IValue> = inputs.iter().map(|t| IValue::Tensor(t.shallow_clone())).collect();
        match self.forward_is(&iv)? {
            IValue::Tensor(t) => Ok(t),
            other => Err(self.error(tch::TchError::Kind(format!("returned {other:?}, expected a tensor")))),
        }
    }

    /// A libtorch failure of this graph as one line naming the graph, its file and method; the
    /// full libtorch message (often a long TorchScript trace) goes to the debug log.
    fn error(&self, e: tch::TchError) -> Error {
        let full = e.to_string();
        log::debug!("graph `{}` ({}, method `{}`): {full}", self.name, self.path.display(), self.method);
        Error::GraphCall {
            graph: self.name.clone(),
            path: self.path.clone(),
            method: self.method.clone(),
            msg: first_line(&full),
        }
    }

    fn forward_is(&self, inputs: &[IValue]) -> Result<IValue> {
        self.forward_is_raw(inputs).map_err(|e| self.error(e))
    }

    fn forward_is_raw(&self, inputs: &[IValue]) -> Result<IValue, tch::TchError> {
        let b = match inputs.first() {
            Some(IValue::Tensor(t)) if self.row_by_row && t.dim() > 0 => t.size()[0],
            _ => 1,
        };
        if b <= 1 {
            return self.call(inputs);
        }
        let outs = (0..b)
            .map(|i| self.call(&inputs.iter().map(|v| row_of(v, i, b)).collect::<Result<Vec<_>, _>>()?))
            .collect::<Result<Vec<_>, _>>()?;
        cat_rows(outs)
    }
}

/// A model folder loaded for inference.
#[derive(Debug)]
pub struct UNetModel {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub device: Device,
    /// Graphs are called one batch row at a time ([`LoadOptions::row_by_row`]).
    pub row_by_row: bool,
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

/// The three graphs of one DeepCache branch.
#[derive(Debug)]
struct DeepCacheGraphs {
    shallow_encoder: Graph,
    deep_decoder: Graph,
    shallow_decoder: Graph,
    shallow_skips: usize,
}

/// A graph's output as its tensors (one, or a tuple's); an error naming `graph` when it has none.
fn tensors_out(graph: &str, out: IValue) -> Result<Vec<Tensor>> {
    let ts: Vec<Tensor> = match out {
        IValue::Tuple(items) => {
            items.into_iter().filter_map(|v| if let IValue::Tensor(t) = v { Some(t) } else { None }).collect()
        }
        IValue::Tensor(t) => vec![t],
        _ => Vec::new(),
    };
    if ts.is_empty() {
        return Err(Error::Shape { what: format!("{graph} output"), expected: "tensors".into(), found: "none".into() });
    }
    Ok(ts)
}

fn shape_str(s: &[i64]) -> String {
    format!("{s:?}")
}

impl UNetModel {
    /// Load a model folder written by `experiments/export/export_unet.py`.
    pub fn load(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::MissingFolder { path: dir });
        }
        let manifest = Manifest::load(&dir)?;
        let kind = manifest.tch_kind();
        // each file is checked and loaded once, however many graphs it holds (each graph entry must
        // name the hash the file has)
        let modules: RefCell<HashMap<String, (Rc<CModule>, String)>> = RefCell::new(HashMap::new());
        let load = |graph: &str| -> Result<Graph> {
            let entry = &manifest.graphs[graph];
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
                    module: m.clone(),
                    name: graph.into(),
                    path,
                    method: entry.method.clone(),
                    row_by_row: opts.row_by_row,
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
            Ok(Graph { module: m, name: graph.into(), path, method: entry.method.clone(), row_by_row: opts.row_by_row })
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

    /// Whether the model has the `encoder_analysis` graph ([`UNetModel::encode_analysis`]).
    pub fn has_encoder_analysis(&self) -> bool {
        self.encoder_analysis.is_some()
    }

    /// [`UNetModel::encode`] that also returns the encoder's layers beyond the cached features (a
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

    /// [`UNetModel::decode`] that also returns every up block's output (for feature-drift
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

    /// Raw text states [B, L, raw] (+ pooled [B, P] for SDXL) -> the prepared [`Cond`]: through
    /// `cond_prepare` (SDXL: with the manifest's time ids) where the model has one.
    pub fn prepare(&self, states: Tensor, pooled: Option<Tensor>) -> Result<Cond> {
        let Some(spec) = &self.manifest.prepare else {
            return Ok(Cond::from(states));
        };
        let g = self.cond_prepare.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "cond_prepare".into(),
            why: "the manifest lists `prepare`",
        })?;
        let b = states.size()[0];
        self.check("text states", &states, &[Some(b), Some(self.manifest.cond.seq_len), Some(spec.raw_dim)])?;
        let mut inputs = vec![IValue::Tensor(self.input(&states))];
        for name in &spec.inputs[1..] {
            let t = match name.as_str() {
                "pooled" => {
                    let p = pooled.as_ref().ok_or_else(|| {
                        Error::Cond(format!(
                            "model `{}` needs pooled text embeds (cond_encoder gave none)",
                            self.manifest.name
                        ))
                    })?;
                    self.check("pooled text embeds", p, &[Some(b), self.manifest.cond.pooled_dim])?;
                    self.input(p)
                }
                "time_ids" => {
                    let ids: Vec<f32> = spec.time_ids.iter().flatten().map(|&v| v as f32).collect();
                    self.input(&Tensor::from_slice(&ids).view([1, -1]).repeat([b, 1]))
                }
                other => return Err(Error::Cond(format!("unknown prepare input `{other}`"))),
            };
            inputs.push(IValue::Tensor(t));
        }
        let out = tch::no_grad(|| g.forward_is(&inputs))?;
        match out {
            IValue::Tuple(mut v) if v.len() == 2 => {
                let (IValue::Tensor(extra), IValue::Tensor(states)) = (v.pop().unwrap(), v.pop().unwrap()) else {
                    return Err(Error::Cond("cond_prepare returned non-tensors".into()));
                };
                self.check_cond(&states, b)?;
                Ok(Cond { states, extra: Some(extra), control: None })
            }
            _ => Err(Error::Cond("cond_prepare must return (states, extra)".into())),
        }
    }

    /// DeepCache's own cache_branch_ids this model has graphs for (with their manifest keys).
    pub fn deepcache_ids(&self) -> Vec<(usize, String)> {
        self.deepcache.keys().filter_map(|k| Some((self.manifest.deepcache_id(k)?, k.clone()))).collect()
    }

    fn unet_only(&self, what: &str) -> Result<()> {
        if self.manifest.kind == ModelKind::Unet2d {
            return Ok(());
        }
        Err(Error::Unsupported { model: self.manifest.name.clone(), kind: self.manifest.kind, what: what.into() })
    }

    /// The manifest key of the DeepCache graphs for DeepCache's own `cache_branch_id` (block =
    /// id / 3, layer = id % 3); an error lists the ids the model has.
    pub fn deepcache_key_for_id(&self, id: usize) -> Result<String> {
        self.unet_only("DeepCache (it caches a UNet's up-path feature and recomputes its shallow layers)")?;
        let have = self.deepcache_ids();
        have.iter().find(|(i, _)| *i == id).map(|(_, k)| k.clone()).ok_or_else(|| {
            Error::Cond(format!(
                "model `{}` has no DeepCache graphs for cache_branch_id {id} (block {}, layer {}); it has {:?}. Add them with `python experiments/add/add_deepcache.py --model {} --ids {id}`",
                self.manifest.name,
                id / 3,
                id % 3,
                have.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                self.dir.display()
            ))
        })
    }

    /// The manifest key of fd's earlier block-level DeepCache branch `branch`.
    pub fn deepcache_key_for_block(&self, branch: usize) -> Result<String> {
        self.unet_only("DeepCache (it caches a UNet's up-path feature and recomputes its shallow layers)")?;
        let key = branch.to_string();
        if self.deepcache.contains_key(&key) {
            return Ok(key);
        }
        Err(Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: format!("deepcache{branch}_*"),
            why: "block-level branches are in exports before 2026-12-02; use deepcache:N:ID with DeepCache's own id",
        })
    }

    fn deepcache_graphs(&self, key: &str) -> Result<&DeepCacheGraphs> {
        self.unet_only("DeepCache (it caches a UNet's up-path feature and recomputes its shallow layers)")?;
        self.deepcache.get(key).ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: crate::manifest::deepcache_graph(key, "*"),
            why: "not in this export",
        })
    }

    /// Number of leading skips the shallow path of DeepCache entry `key` produces.
    pub fn deepcache_shallow_skips(&self, key: &str) -> Result<usize> {
        Ok(self.deepcache_graphs(key)?.shallow_skips)
    }

    /// DeepCache full step, deep part: the cached feature h from the encoder features.
    pub fn deepcache_deep_decode(
        &self,
        key: &str,
        feats: &EncoderFeatures,
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        let g = self.deepcache_graphs(key)?;
        self.check_features(feats)?;
        let inputs = self.feature_inputs(feats, emb, cond);
        tch::no_grad(|| g.deep_decoder.forward_ts(&inputs))
    }

    /// DeepCache shallow path of a cached step: conv_in and the shallow down units -> skips.
    pub fn deepcache_shallow_encode(
        &self,
        key: &str,
        sample: &Tensor,
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let g = self.deepcache_graphs(key)?;
        let m = &self.manifest;
        let [h, w] = m.sample_size;
        self.check("sample", sample, &[None, Some(m.in_channels), Some(h), Some(w)])?;
        let out = tch::no_grad(|| {
            g.shallow_encoder.forward_is(&[
                IValue::Tensor(self.input(sample)),
                IValue::Tensor(self.input(emb)),
                IValue::Tensor(self.input(cond)),
            ])
        })?;
        let skips: Vec<Tensor> = match out {
            IValue::Tuple(items) => {
                items.into_iter().filter_map(|v| if let IValue::Tensor(t) = v { Some(t) } else { None }).collect()
            }
            IValue::Tensor(t) => vec![t],
            _ => Vec::new(),
        };
        if skips.len() != g.shallow_skips {
            return Err(Error::Shape {
                what: format!("{} output", crate::manifest::deepcache_graph(key, "shallow_encoder")),
                expected: format!("{} skip tensors (manifest.json)", g.shallow_skips),
                found: skips.len().to_string(),
            });
        }
        Ok(skips)
    }

    /// DeepCache shallow decoder: cached h + shallow skips -> model output.
    pub fn deepcache_shallow_decode(
        &self,
        key: &str,
        cached: &Tensor,
        skips: &[Tensor],
        emb: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        let g = self.deepcache_graphs(key)?;
        let mut inputs = vec![self.input(cached), self.input(emb), self.input(cond)];
        inputs.extend(skips.iter().take(g.shallow_skips).map(|s| self.input(s)));
        Ok(tch::no_grad(|| g.shallow_decoder.forward_ts(&inputs))?.to_kind(Kind::Float))
    }

    /// TeaCache's indicator: the first resnet's timestep-modulated input for `sample` and its
    /// time embedding `emb` (graph `teacache_probe`; experiments/add/add_teacache.py adds it).
    pub fn teacache_probe(&self, sample: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let g = self.teacache_probe.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "teacache_probe".into(),
            why: "add TeaCache's probe and fitted polynomial with `python experiments/add/add_teacache.py --model DIR`",
        })?;
        let m = &self.manifest;
        let [h, w] = m.sample_size;
        self.check("sample", sample, &[None, Some(m.in_channels), Some(h), Some(w)])?;
        Ok(tch::no_grad(|| g.forward_ts(&[self.input(sample), self.input(emb)]))?.to_kind(Kind::Float))
    }

    /// Whether the model has a DiT's TeaCache / FBCache graphs.
    pub fn has_stepcache(&self) -> bool {
        !self.stepcache.is_empty()
    }

    /// One of a DiT's step-cache graphs ([`crate::manifest::STEPCACHE_GRAPHS`]) on token grid (or,
    /// for `stepcache_embed`, sample) `x`: every output, in order.
    pub fn stepcache(&self, graph: &str, x: &Tensor, emb: &Tensor, cond: &Tensor) -> Result<Vec<Tensor>> {
        let g = self.stepcache.get(graph).ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: graph.into(),
            why: "a DiT exported by experiments/export/export_dit.py carries its TeaCache / FBCache graphs; export it again",
        })?;
        let inputs = [IValue::Tensor(self.input(x)), IValue::Tensor(self.input(emb)), IValue::Tensor(self.input(cond))];
        Ok(tensors_out(graph, tch::no_grad(|| g.forward_is(&inputs))?)?
            .into_iter()
            .map(|t| t.to_kind(Kind::Float))
            .collect())
    }

    /// One T-GATE graph (`graph` one of [`crate::manifest::TGATE_GRAPHS`]) on the full UNet
    /// input: `cached` are the reused attention outputs in the graph's order (cross then self).
    /// Returns the model output and the attention outputs the graph computed and returns.
    pub fn tgate(
        &self,
        graph: &str,
        sample: &Tensor,
        emb: &Tensor,
        cond: &Tensor,
        cached: &[Tensor],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let g = self.tgate.get(graph).ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: graph.into(),
            why: "add T-GATE's graphs with `python experiments/add/add_tgate.py --model DIR`",
        })?;
        let m = &self.manifest;
        let [h, w] = m.sample_size;
        self.check("sample", sample, &[None, Some(m.in_channels), Some(h), Some(w)])?;
        let mut inputs =
            vec![IValue::Tensor(self.input(sample)), IValue::Tensor(self.input(emb)), IValue::Tensor(self.input(cond))];
        inputs.extend(cached.iter().map(|t| IValue::Tensor(self.input(t))));
        let mut ts = tensors_out(graph, tch::no_grad(|| g.forward_is(&inputs))?)?;
        let out = ts.remove(0).to_kind(Kind::Float);
        Ok((out, ts))
    }

    /// The DeepCache key whose shallow encoder is cheapest (fewest skips): its first output is
    /// conv_in's, the UNet's first block (First-Block Cache's indicator). An error names the
    /// script that adds one.
    pub fn first_block_key(&self) -> Result<String> {
        self.deepcache.iter().min_by_key(|(_, g)| g.shallow_skips).map(|(k, _)| k.clone()).ok_or_else(|| {
            Error::NoSuchGraph {
                model: self.manifest.name.clone(),
                graph: "deepcache_id0_shallow_encoder".into(),
                why: "First-Block Cache reads conv_in's output from a DeepCache shallow encoder; add one with `python experiments/add/add_deepcache.py --model DIR --ids 0`",
            }
        })
    }

    /// The UNet's first block output (conv_in) through the shallow encoder of `key`
    /// ([`Self::first_block_key`]).
    pub fn first_block(&self, key: &str, sample: &Tensor, emb: &Tensor, cond: &Tensor) -> Result<Tensor> {
        Ok(self.deepcache_shallow_encode(key, sample, emb, cond)?.swap_remove(0).to_kind(Kind::Float))
    }

    fn cond_encoder(&self) -> Result<&Graph> {
        self.cond_encoder.as_ref().ok_or_else(|| Error::NoSuchGraph {
            model: self.manifest.name.clone(),
            graph: "cond_encoder".into(),
            why: "this model takes raw embeddings",
        })
    }

    /// Class ids -> cond [B, L, D]. `null_id` (the unconditional class) is accepted.
    pub fn encode_classes(&self, ids: &[i64]) -> Result<Tensor> {
        let c = &self.manifest.cond;
        if c.kind != CondKind::Class {
            return Err(Error::Cond(format!("model `{}` is not class-conditioned", self.manifest.name)));
        }
        let n = c.num_classes.unwrap_or(0);
        if let Some(bad) = ids.iter().find(|&&i| !(0..=n).contains(&i)) {
            return Err(Error::Cond(format!("class id {bad} outside 0..{n} (null id {n})")));
        }
        let t = Tensor::from_slice(ids).to_device(self.device);
        let enc = self.cond_encoder()?;
        tch::no_grad(|| enc.forward_ts(&[t]))
    }

    /// Class names or integer ids -> class ids (clear error listing the known names).
    pub fn class_id(&self, name: &str) -> Result<i64> {
        let c = &self.manifest.cond;
        let names = c.class_names.clone().unwrap_or_default();
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name.trim())) {
            return Ok(i as i64);
        }
        match name.trim().parse::<i64>() {
            Ok(i) if (0..c.num_classes.unwrap_or(0)).contains(&i) => Ok(i),
            _ => Err(Error::Cond(format!(
                "unknown class `{name}`; model `{}` knows ids 0..{} or names {names:?}",
                self.manifest.name,
                c.num_classes.unwrap_or(0)
            ))),
        }
    }

    /// Prompts -> token ids (tokenizer.json, + tokenizer_2.json for SDXL) -> text encoder(s)
    /// -> raw states [B, 77, D] (+ pooled [B, P]), as the diffusers pipeline encodes them.
    pub fn encode_prompts_raw(&self, prompts: &[&str]) -> Result<(Tensor, Option<Tensor>)> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            Error::Cond(format!("model `{}` is not text-conditioned (no tokenizer)", self.manifest.name))
        })?;
        let mut ids = vec![IValue::Tensor(tok.encode_batch(prompts)?.to_device(self.device))];
        if let Some(tok_2) = &self.tokenizer_2 {
            ids.push(IValue::Tensor(tok_2.encode_batch(prompts)?.to_device(self.device)));
        }
        let enc = self.cond_encoder()?;
        let out = tch::no_grad(|| enc.forward_is(&ids))?;
        let bad = |found: &str| Error::Shape {
            what: format!("cond_encoder output (model `{}`)", self.manifest.name),
            expected: if self.manifest.cond.pooled_dim.is_some() { "(states, pooled)" } else { "states" }.into(),
            found: found.into(),
        };
        match (out, self.manifest.cond.pooled_dim) {
            (IValue::Tensor(t), None) => Ok((t, None)),
            (IValue::Tuple(mut v), Some(_)) if v.len() == 2 => match (v.pop().unwrap(), v.pop().unwrap()) {
                (IValue::Tensor(pooled), IValue::Tensor(states)) => Ok((states, Some(pooled))),
                _ => Err(bad("non-tensors")),
            },
            (IValue::Tensor(_), Some(_)) => Err(bad("one tensor")),
            _ => Err(bad("another value")),
        }
    }

    /// Prompts -> the prepared [`Cond`] ([`UNetModel::encode_prompts_raw`], then
    /// [`UNetModel::prepare`]).
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Cond> {
        let (states, pooled) = self.encode_prompts_raw(prompts)?;
        self.prepare(states, pooled)
    }

    /// The unconditional cond for a batch of `n`: null class, the empty prompt, or zero states
    /// and pooled embeds (the manifest's `cond.uncond`, SDXL's `force_zeros_for_empty_prompt`).
    pub fn uncond(&self, n: usize) -> Result<Cond> {
        let c = &self.manifest.cond;
        let zeros = |shape: &[i64]| Tensor::zeros(shape, (self.kind, self.device));
        let raw = self.manifest.prepare.as_ref().map_or(c.dim, |p| p.raw_dim);
        match (c.kind, c.uncond) {
            (CondKind::Class, _) => self.encode_classes(&vec![c.null_id.unwrap_or(0); n]).map(Cond::from),
            (CondKind::Text, UncondRule::EmptyPrompt) => self.encode_prompts(&vec![""; n]),
            (CondKind::Text, UncondRule::Zeros) => {
                let pooled = c.pooled_dim.map(|p| zeros(&[n as i64, p]));
                self.prepare(zeros(&[n as i64, c.seq_len, raw]), pooled)
            }
            (CondKind::Embedding, _) => self.prepare(zeros(&[n as i64, c.seq_len, raw]), None),
        }
    }

    pub fn tokenizer(&self) -> Option<&PromptTokenizer> {
        self.tokenizer.as_ref()
    }

    /// The second tokenizer of a two-encoder model (SDXL).
    pub fn tokenizer_2(&self) -> Option<&PromptTokenizer> {
        self.tokenizer_2.as_ref()
    }

    /// Latent model: latents -> images in [-1, 1] (divides by the VAE scaling factor first).
    /// Pixel model: returns the sample unchanged.
    ///
    /// A video model's [B, C, F, h, w] latents are decoded frame by frame (as the text-to-video
    /// pipeline does) and returned as one film strip per video, [B, C', H, F * W]: frame j is the
    /// columns j*W..(j+1)*W (see [`UNetModel::frames_of`]).
    pub fn to_images(&self, latents: &Tensor) -> Result<Tensor> {
        let frames = self.manifest.frames;
        let z = match frames {
            // [B, C, F, h, w] -> [B*F, C, h, w]
            Some(f) => {
                let s = latents.size();
                latents.permute([0, 2, 1, 3, 4]).reshape([s[0] * f, s[1], s[3], s[4]])
            }
            None => latents.shallow_clone(),
        };
        let images = match (&self.vae_decoder, &self.manifest.vae) {
            (Some(vae), Some(spec)) => {
                let z = (z / spec.scaling_factor).to_device(self.device).to_kind(self.manifest.vae_kind());
                tch::no_grad(|| vae.forward_ts(&[z]))?.to_kind(Kind::Float)
            }
            _ => z,
        };
        Ok(match frames {
            // [B*F, C', H, W] -> [B, F, C', H, W] -> [B, C', H, F, W] -> [B, C', H, F*W]
            Some(f) => {
                let s = images.size();
                images.reshape([-1, f, s[1], s[2], s[3]]).permute([0, 2, 3, 1, 4]).reshape([-1, s[1], s[2], f * s[3]])
            }
            None => images,
        })
    }

    /// The frames of film strips [B, C, H, F * W] (what [`UNetModel::to_images`] gives a video
    /// model) as [B, F, C, H, W]; None for an image model.
    pub fn frames_of(&self, strips: &Tensor) -> Option<Tensor> {
        let f = self.manifest.frames?;
        let s = strips.size();
        Some(strips.reshape([s[0], s[1], s[2], f, s[3] / f]).permute([0, 3, 1, 2, 4]))
    }
}

fn first_line(s: &str) -> String {
    summarize_torch_error(s)
}

/// One line of a libtorch error: the last `...Error: message` line of a TorchScript trace (what
/// actually went wrong), else the first non-empty line.
pub fn summarize_torch_error(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let error_line = lines.iter().rev().find_map(|l| {
        let (kind, msg) = l.split_once(": ")?;
        (kind.ends_with("Error") && !kind.contains(' ') && !msg.is_empty()).then(|| format!("{kind}: {msg}"))
    });
    error_line.unwrap_or_else(|| lines.first().map_or(s.trim(), |l| l).to_string())
}
