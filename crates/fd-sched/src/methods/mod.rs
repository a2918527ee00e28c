//! The caching methods, one file each, over the shared step context ([`crate::step`]).
//!
//! A method file holds its config type (the method's public API: parameters, defaults, docs),
//! its grammar (parse and print, the same string back), its checks against the model and the
//! execution options, its step loop, its experiment family and its line of help. This module
//! holds what ties them together: the typed plan [`PlanSpec`] (a `--keys` value, parsed once at
//! the edge), the method table [`METHODS`] (the `--keys` help, `fd info`'s peer plans, experiment
//! families and plot colours are generated from it) and the [`CachingMethod`] trait the executor
//! dispatches through.
//!
//! Adding a method: its file here (config, `INFO`, `impl CachingMethod`), a variant of
//! [`PlanSpec`] with its arm in [`PlanSpec::method`], its row in [`METHODS`]; its graphs in
//! fd-model; its tests and config rows.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use fd_model::Denoiser;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::Tensor;

use crate::plan::KeySteps;
use crate::step::{CallCounts, StepCtx, StepFeatures};
use crate::{Error, Result};

pub mod adaptive;
pub mod decoder_prop;
pub mod deepcache;
pub mod fastercache;
pub mod fbcache;
pub mod magcache;
pub mod pab;
pub mod propagation;
pub(crate) mod step_cache;
pub mod taylorseer;
pub mod teacache;
pub mod tgate;

pub use adaptive::Adaptive;
pub use decoder_prop::DecoderProp;
pub use deepcache::DeepCache;
pub use fastercache::FasterCache;
pub use fbcache::FbCache;
pub use magcache::MagCache;
pub use pab::Pab;
pub use propagation::{Propagation, Reuse};
pub use taylorseer::TaylorSeer;
pub use teacache::TeaCache;
pub use tgate::TGate;

/// The feature observer of a run ([`crate::Hooks::observe`]).
pub type Observer<'b> = &'b mut dyn FnMut(&StepFeatures<'_>);

/// One experiment family: its name (experiment rows, Pareto plots) and its plot colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub rgb: (u8, u8, u8),
}

/// One row of the method table.
#[derive(Debug)]
pub struct MethodInfo {
    /// The method's name as the grammar starts it (`tgate`), or `keys` for encoder propagation,
    /// whose plans are key-step sets.
    pub name: &'static str,
    /// The plan grammar (`tgate:G[:SP[:FI[:W]]]`).
    pub syntax: &'static str,
    /// The source file that implements it (`file!()`; the book's plan reference links it).
    pub source: &'static str,
    /// One sentence: what the method does and where it comes from.
    pub help: &'static str,
    /// The families its plans fall in (the first is the default).
    pub families: &'static [Family],
    /// The parser of the text after `name:` (the whole plan part for encoder propagation).
    parse: fn(&str) -> Result<PlanSpec>,
    /// What this model's export offers the method (`fd info`), or None when it cannot run it.
    pub offered: fn(&Denoiser) -> Option<String>,
    /// Its run records' method name and parameters, in record order ([`MethodRecord`]; a method
    /// without parameters has none).
    pub record: (&'static str, &'static [&'static str]),
}

/// The method table: every caching method fd runs, in the order `--keys` help lists them.
pub static METHODS: [&MethodInfo; 12] = [
    &propagation::INFO,
    &decoder_prop::INFO,
    &deepcache::INFO,
    &deepcache::BLOCK_INFO,
    &adaptive::INFO,
    &teacache::INFO,
    &fbcache::INFO,
    &magcache::INFO,
    &taylorseer::INFO,
    &pab::INFO,
    &fastercache::INFO,
    &tgate::INFO,
];

/// The book's plan reference (docs/plans.md, between its `plan-table` markers), generated from the
/// method table so it cannot drift: one row per method with its grammar, what it does, the
/// experiment families its rows fall in and the file that implements it. `crates/fd-sched/tests/plans.rs`
/// rewrites the book's copy when it differs (and fails, so the change is committed).
pub fn reference_markdown() -> String {
    let mut out = String::from("| plan | what it does | experiment families | file |\n|---|---|---|---|\n");
    for m in METHODS {
        let file = m.source.rsplit_once("src/methods/").map_or(m.source, |(_, f)| f);
        let families: Vec<String> = m.families.iter().map(|f| format!("`{}`", f.name)).collect();
        out += &format!(
            "| `{}` | {} | {} | [`methods/{file}`](../crates/fd-sched/src/methods/{file}) |\n",
            m.syntax.replace('|', "\\|"),
            m.help.replace('|', "\\|"),
            families.join(", "),
        );
    }
    out
}

/// The plot colour of experiment family `name`, if a method in the table names it.
pub fn family_rgb(name: &str) -> Option<(u8, u8, u8)> {
    METHODS.iter().flat_map(|m| m.families).find(|f| f.name == name).map(|f| f.rgb)
}

/// The table row of the method a plan part names (`tgate:...` -> T-GATE); encoder propagation
/// for anything else (key-step sets have no method name).
fn method_of(part: &str) -> &'static MethodInfo {
    let name = part.split_once(':').map_or(part, |(n, _)| n);
    METHODS.iter().skip(1).copied().find(|m| m.name == name).unwrap_or(METHODS[0])
}

/// A `--keys` value, typed: the method and its parameters as the user wrote them (a parameter
/// left out stays out when printed; [`PlanSpec::label`] fills in the defaults). `FromStr` and
/// `Display` are each other's inverse for every method (tests/plans.rs checks the round trip);
/// serde reads and writes the same string.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanSpec {
    Propagation(Propagation),
    DecoderProp(DecoderProp),
    DeepCache(DeepCache),
    Adaptive(Adaptive),
    TeaCache(TeaCache),
    FbCache(FbCache),
    MagCache(MagCache),
    TaylorSeer(TaylorSeer),
    Pab(Pab),
    FasterCache(FasterCache),
    TGate(TGate),
}

impl PlanSpec {
    /// Encoder propagation with `keys`, copying the key step's features (the paper).
    pub fn propagation(keys: KeySteps) -> Self {
        Self::Propagation(Propagation { keys, reuse: Reuse::Copy })
    }

    /// The method behind the plan.
    pub(crate) fn method(&self) -> &dyn CachingMethod {
        match self {
            Self::Propagation(m) => m,
            Self::DecoderProp(m) => m,
            Self::DeepCache(m) => m,
            Self::Adaptive(m) => m,
            Self::TeaCache(m) => m,
            Self::FbCache(m) => m,
            Self::MagCache(m) => m,
            Self::TaylorSeer(m) => m,
            Self::Pab(m) => m,
            Self::FasterCache(m) => m,
            Self::TGate(m) => m,
        }
    }

    /// The key-step set the plan groups by (None for methods that decide per step).
    pub fn keys(&self) -> Option<KeySteps> {
        self.method().keys()
    }

    fn keys_mut(&mut self) -> Option<&mut KeySteps> {
        match self {
            Self::Propagation(m) => Some(&mut m.keys),
            Self::DecoderProp(m) => Some(&mut m.keys),
            _ => None,
        }
    }

    /// The method's table row.
    pub fn info(&self) -> &'static MethodInfo {
        self.method().info()
    }

    /// The experiment family of the plan (plot colour, the table's grouping).
    pub fn family(&self) -> &'static str {
        self.method().family()
    }

    /// The rule an `auto:` plan is calibrated with.
    pub fn auto_rule(&self) -> Option<crate::plan::AutoRule> {
        match self.keys() {
            Some(KeySteps::Auto(rule)) => Some(rule),
            _ => None,
        }
    }

    /// This plan with its key-step set replaced by `keys` (an `auto:` rule by its calibrated list).
    pub fn with_keys(&self, keys: KeySteps) -> Result<Self> {
        let mut spec = self.clone();
        match spec.keys_mut() {
            Some(k) => *k = keys,
            None => {
                return Err(Error::KeySteps {
                    spec: self.to_string(),
                    msg: format!("{} has no key-step set", self.info().name),
                })
            }
        }
        Ok(spec)
    }

    /// The plan spelled with every parameter (defaults filled in): what runs record.
    pub fn label(&self) -> String {
        struct Full<'a>(&'a PlanSpec);
        impl fmt::Display for Full<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.method().write(f, true)
            }
        }
        Full(self).to_string()
    }

    /// The plan with every parameter given (defaults filled in): what [`PlanSpec::label`] prints,
    /// as a value (run records and bench rows store it).
    pub fn filled(&self) -> Self {
        self.label().parse().expect("a plan's label parses as the same plan")
    }

    /// The plan's method as run records store it (`plan.method` in `config.json`).
    pub fn record(&self) -> MethodRecord {
        self.method().record()
    }

    /// Resolve for a sampler with `num_steps` steps: the method's step-count checks, the key-step
    /// set read (plan file) and checked, the groups formed. An `auto:` rule must be calibrated
    /// first ([`PlanSpec::with_keys`]).
    pub fn resolve(&self, num_steps: usize) -> Result<Plan> {
        self.method().check_steps(num_steps)?;
        let keys = self.keys().unwrap_or(KeySteps::None);
        let key_steps = keys.resolve(num_steps)?;
        let spec = match keys {
            // the label of a resolved plan shows a plan file's keys
            KeySteps::File(_) => self.with_keys(KeySteps::List(key_steps.clone()))?,
            _ => self.clone(),
        };
        Ok(Plan::from_parts(spec, num_steps, key_steps))
    }

    /// The `--keys` help: one entry per method, from the table.
    pub fn help() -> String {
        METHODS.iter().map(|m| format!("{} ({})", m.syntax, m.help)).collect::<Vec<_>>().join("; ")
    }
}

impl FromStr for PlanSpec {
    type Err = Error;

    /// `BASE[+MODIFIER...]`: the base names its method (`tgate:10`) or is a key-step set
    /// (encoder propagation); modifiers (`+forecast:K`, `+partial:ID`) are encoder propagation's
    /// plug-ins, each at most once.
    fn from_str(spec: &str) -> Result<Self> {
        let s = spec.trim();
        let (base, modifiers) = s.split_once('+').map_or((s, None), |(b, m)| (b, Some(m)));
        let info = method_of(base);
        // a bare method name (`teacache`) has an empty body: its parser says what it expects
        let body = if std::ptr::eq(info, METHODS[0]) { base } else { base.get(info.name.len() + 1..).unwrap_or("") };
        let parsed = (info.parse)(body).map_err(|e| match e {
            // name the part that was refused
            Error::KeySteps { spec: _, msg } => Error::KeySteps { spec: base.to_string(), msg },
            e => e,
        })?;
        match (modifiers, parsed) {
            (None, p) => Ok(p),
            (Some(m), Self::Propagation(p)) => Ok(Self::Propagation(p.with_modifiers(m)?)),
            (Some(m), p) => Err(Error::KeySteps {
                spec: format!("+{m}"),
                msg: format!(
                    "plan modifiers (+forecast:K, +partial:ID) apply to encoder-propagation plans; `{base}` is {}",
                    p.info().help.split(':').next().unwrap_or(p.info().name)
                ),
            }),
        }
    }
}

impl fmt::Display for PlanSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.method().write(f, false)
    }
}

impl Serialize for PlanSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PlanSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for PlanSpec {
    /// The baseline: every step a key step.
    fn default() -> Self {
        Self::propagation(KeySteps::None)
    }
}

/// A resolved plan: the method with concrete key steps (a plan file read, an `auto:` rule
/// calibrated), and the groups (a key step plus the non-key steps that reuse its features).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The method and its parameters; its key steps are concrete ([`KeySteps::File`] and
    /// [`KeySteps::Auto`] replaced by their [`KeySteps::List`]).
    pub spec: PlanSpec,
    pub num_steps: usize,
    pub key_steps: Vec<usize>,
    /// Step ranges; each starts at a key step.
    pub groups: Vec<Range<usize>>,
}

impl Plan {
    /// An encoder-propagation plan (`KeySteps::None` is the baseline).
    pub fn new(keys: KeySteps, num_steps: usize) -> Result<Self> {
        PlanSpec::propagation(keys).resolve(num_steps)
    }

    /// Parse a `--keys` value ([`PlanSpec`]'s grammar) and resolve it for `num_steps` steps.
    pub fn parse(spec: &str, num_steps: usize) -> Result<Self> {
        spec.parse::<PlanSpec>()?.resolve(num_steps)
    }

    /// The resolved plan from `spec` (its key steps concrete) and its key steps.
    pub(crate) fn from_parts(spec: PlanSpec, num_steps: usize, key_steps: Vec<usize>) -> Self {
        let groups =
            key_steps.iter().enumerate().map(|(i, &s)| s..key_steps.get(i + 1).copied().unwrap_or(num_steps)).collect();
        Self { spec, num_steps, key_steps, groups }
    }

    /// The plan as `--keys` spells it with every parameter given (defaults filled in, the key
    /// steps of a plan file or an `auto:` rule as their list): the label runs record.
    pub fn label(&self) -> String {
        self.spec.label()
    }

    /// The plain sampler: every step runs the whole model.
    pub fn is_baseline(&self) -> bool {
        self.key_steps.len() == self.num_steps && !self.is_dynamic() && self.spec.method().is_baseline_shape()
    }

    /// Whether which steps run the UNet is decided while sampling (AdaptiveDiffusion, TeaCache,
    /// FBCache, run-time key steps): `key_steps` then lists every step and says nothing about the
    /// cost.
    pub fn is_dynamic(&self) -> bool {
        self.spec.method().is_dynamic() || matches!(self.spec.keys(), Some(KeySteps::Runtime(_)))
    }

    /// What ran, for a run's one-line summary: the key steps of the plan, the gate of a T-GATE
    /// plan, or the UNet steps counted (`counts` of `samples` samples, `branches` CFG branches)
    /// for a plan decided while sampling.
    pub fn summary(&self, counts: &CallCounts, samples: usize, branches: usize) -> String {
        self.spec.method().summary(self, counts, samples, branches)
    }

    /// Encoder calls per sample (per CFG branch).
    pub fn encoder_calls(&self) -> usize {
        self.key_steps.len()
    }

    /// Decoder evaluations per sample (per CFG branch): one per step (one per key step for
    /// decoder-only propagation).
    pub fn decoder_calls(&self) -> usize {
        self.spec.method().decoder_calls(self)
    }

    /// UNet GFLOPs per image of an encoder-propagation plan, from batch-1 FLOPs per graph:
    /// `branches` x (key steps x (encoder + time embedding) + steps x (decoder + time embedding)).
    /// `branches` = 2 counts the classifier-free-guidance batch doubling, 1 does not. This is what
    /// the executor's [`CallCounts::gflops_per_image`] measures for the same plan.
    pub fn gflops_per_image(&self, encoder: u64, decoder: u64, time_embed: u64, branches: usize) -> f64 {
        let per_branch = self.encoder_calls() as f64 * (encoder + time_embed) as f64
            + self.decoder_calls() as f64 * (decoder + time_embed) as f64;
        branches as f64 * per_branch / 1e9
    }

    /// FLOPs-bound speedup of an encoder-propagation plan against the baseline, from per-call
    /// encoder / decoder FLOPs.
    pub fn flops_speedup(&self, enc_flops: u64, dec_flops: u64) -> f64 {
        let base = self.num_steps as f64 * (enc_flops + dec_flops) as f64;
        base / (self.encoder_calls() as f64 * enc_flops as f64 + self.decoder_calls() as f64 * dec_flops as f64)
    }
}

/// What every caching method provides; the executor dispatches through it and holds no method
/// logic.
pub(crate) trait CachingMethod {
    /// The method's table row.
    fn info(&self) -> &'static MethodInfo;

    /// Print the plan: as given (`full` false) or with every parameter ([`PlanSpec::label`]).
    fn write(&self, f: &mut fmt::Formatter<'_>, full: bool) -> fmt::Result;

    /// The run record's `plan.method` value.
    fn record(&self) -> MethodRecord;

    /// The key-step set the method groups steps by (None: it decides per step).
    fn keys(&self) -> Option<KeySteps> {
        None
    }

    /// The experiment family of this plan.
    fn family(&self) -> &'static str {
        self.info().families[0].name
    }

    /// Checks that need the sampler's step count (before anything runs).
    fn check_steps(&self, _num_steps: usize) -> Result<()> {
        Ok(())
    }

    /// Whether `model` can run this plan with `guidance` (its graphs, its kind, CFG): checked
    /// before any run writes a file.
    fn check(&self, _model: &Denoiser, _guidance: f64) -> Result<()> {
        Ok(())
    }

    /// The step loop of `plan` (this method's, resolved): from z_T (`latents`) to the final latents.
    fn run(
        &self,
        ctx: &mut StepCtx<'_, '_>,
        plan: &Plan,
        latents: Tensor,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor>;

    /// Whether which steps run is decided while sampling.
    fn is_dynamic(&self) -> bool {
        false
    }

    /// Whether a plan of this method with every step a key step is the plain sampler.
    fn is_baseline_shape(&self) -> bool {
        true
    }

    /// Decoder evaluations per sample and CFG branch.
    fn decoder_calls(&self, plan: &Plan) -> usize {
        plan.num_steps
    }

    /// The longest run of steps one decoder call could hold (1: every step decodes on its own).
    fn max_steps_per_call(&self, _plan: &Plan) -> usize {
        1
    }

    /// How `fd sample` describes what ran: key steps of the plan, or what was counted.
    fn summary(&self, plan: &Plan, counts: &CallCounts, samples: usize, branches: usize) -> String {
        if plan.is_dynamic() {
            let per = samples.max(1) * branches;
            format!("{:.1} UNet steps per sample of {}", counts.rows("encoder") as f64 / per as f64, plan.num_steps)
        } else {
            format!("{} key steps of {}", plan.key_steps.len(), plan.num_steps)
        }
    }
}

/// A refusal of `what` the model or options cannot do, naming the plan part.
/// The graphs a DiT-only method (MagCache, TaylorSeer, PAB, FasterCache) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DitGraphs {
    /// The step-cache graphs (`stepcache.pt`).
    StepCache,
    /// The step-cache and PAB graphs (`pab.pt`).
    Pab,
}

/// Refuse plan part `part` unless `model` is a DiT with `graphs`; `why` says, for a model of
/// another kind, what the method works on.
pub(crate) fn require_dit(model: &Denoiser, part: &str, why: &str, graphs: DitGraphs) -> Result<()> {
    let m = &model.manifest;
    if m.kind != fd_model::ModelKind::Dit {
        return Err(refuse(part, format!("{why}; model `{}` is a {} model", m.name, m.kind)));
    }
    let (has, files) = match graphs {
        DitGraphs::StepCache => (model.has_stepcache(), "step-cache graphs (stepcache.pt)"),
        DitGraphs::Pab => (model.has_pab(), "PAB graphs (pab.pt)"),
    };
    if !has {
        let also = if graphs == DitGraphs::Pab { " (the default DiT: experiments/add/add_dit_pab.py)" } else { "" };
        return Err(refuse(
            part,
            format!("DiT `{}` has no {files}: export it again with experiments/export/export_dit.py{also}", m.name),
        ));
    }
    Ok(())
}

pub(crate) fn refuse(part: impl fmt::Display, msg: impl Into<String>) -> Error {
    Error::KeySteps { spec: part.to_string(), msg: msg.into() }
}

/// Parse one `:`-separated field of a plan: `what` names it in the error.
pub(crate) fn field<T: FromStr>(text: &str, what: &str) -> Result<T> {
    text.parse().map_err(|_| Error::KeySteps { spec: String::new(), msg: format!("`{text}` is not {what}") })
}

/// Refusal of a run hook the method does not support (feature observation, ControlNet).
pub(crate) fn refuse_hooks(ctx: &StepCtx<'_, '_>, observe: bool, name: &str, controlnet_ok: bool) -> Result<()> {
    if observe {
        return Err(Error::Sampling(format!(
            "feature observation (fd drift) supports encoder-propagation plans only, not {name}"
        )));
    }
    if ctx.controlled() && !controlnet_ok {
        return Err(Error::Sampling(format!("{name} plans do not support ControlNet models")));
    }
    Ok(())
}

/// A method as run records store it (`plan.method` in `config.json`, part of the run identity):
/// `"name"` for a method without parameters, else `{"name": {"param": value, ...}}` with the
/// parameters in the method's own order (the order is part of the identity's bytes, so it is kept
/// as written, not sorted).
#[derive(Debug, Clone, PartialEq)]
pub enum MethodRecord {
    Name(String),
    Params(String, Vec<(String, serde_json::Value)>),
}

impl MethodRecord {
    /// A record with parameters, in the order given.
    pub fn params(name: &str, params: &[(&str, serde_json::Value)]) -> Self {
        Self::Params(name.into(), params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    /// The parameters in the method's record order ([`MethodInfo::record`]), whatever order they
    /// were read in (a JSON object read through `serde_json::Value` comes back sorted); parameters
    /// the method does not list keep their place after the listed ones.
    fn in_record_order(self) -> Self {
        let Self::Params(name, mut params) = self else { return self };
        if let Some(order) = METHODS.iter().find(|m| m.record.0 == name).map(|m| m.record.1) {
            params.sort_by_key(|(k, _)| order.iter().position(|o| o == k).unwrap_or(order.len()));
        }
        Self::Params(name, params)
    }
}

impl Serialize for MethodRecord {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Ordered<'a>(&'a [(String, serde_json::Value)]);
        impl Serialize for Ordered<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        match self {
            Self::Name(n) => s.serialize_str(n),
            Self::Params(n, p) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(n, &Ordered(p))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for MethodRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        struct Params;
        impl<'de> Visitor<'de> for Params {
            type Value = Vec<(String, serde_json::Value)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of method parameters")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = a.next_entry()? {
                    v.push(e);
                }
                Ok(v)
            }
        }
        struct Ordered(Vec<(String, serde_json::Value)>);
        impl<'de> Deserialize<'de> for Ordered {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                d.deserialize_map(Params).map(Ordered)
            }
        }
        struct Rec;
        impl<'de> Visitor<'de> for Rec {
            type Value = MethodRecord;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a method name or {"name": {parameters}}"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(MethodRecord::Name(v.into()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Self::Value, A::Error> {
                let (name, Ordered(params)) = a
                    .next_entry::<String, Ordered>()?
                    .ok_or_else(|| serde::de::Error::custom("an empty method record"))?;
                if a.next_key::<String>()?.is_some() {
                    return Err(serde::de::Error::custom("a method record names one method"));
                }
                Ok(MethodRecord::Params(name, params).in_record_order())
            }
        }
        d.deserialize_any(Rec)
    }
}
