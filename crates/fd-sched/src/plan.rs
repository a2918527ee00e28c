//! Where a key step is decided: [`KeySteps`] (the user's choice) -> [`Plan`] (groups of steps that
//! share one encoder pass).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which steps run the encoder (0-based indices into the sampler's timestep list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySteps {
    /// Every step is a key step: the plain sampler (baseline).
    None,
    /// Every k-th step (i % k == 0).
    Uniform(usize),
    /// One of the paper's named sets (`50ls`, `50ls2`, `50ls3`, `50ls4`, `100ls`, `75ls`, `s2`, `pro`,
    /// `dit250`).
    Preset(String),
    /// An explicit list.
    List(Vec<usize>),
    /// Chosen while sampling under a budget of K encoder passes (`runtime:K`): at each key step
    /// the next group's length comes from how fast the encoder features changed since the last
    /// key step ([`crate::executor`]'s `RuntimeKeys`). Resolves to [0] before sampling.
    Runtime(usize),
}

/// The paper's named key-step sets (../shared/paper-notes.md §2).
pub const PRESETS: [&str; 9] = ["50ls", "50ls2", "50ls3", "50ls4", "100ls", "75ls", "s2", "pro", "dit250"];

/// FasterDiffusion-DiT's key steps for DiT-XL/2 with 250 DDPM steps (sample_fasterdiffusion.py):
/// 166 of 250, step indices from the noisy end.
const DIT250: [usize; 166] = [
    0, 1, 2, 3, 4, 5, 6, 10, 12, 13, 14, 16, 17, 18, 19, 20, 22, 25, 27, 29, 30, 31, 32, 33, 34, 35, 36, 37, 45, 49,
    51, 52, 53, 54, 58, 59, 60, 62, 64, 67, 68, 70, 72, 73, 75, 77, 78, 81, 82, 83, 84, 85, 86, 87, 88, 90, 91, 92, 95,
    97, 99, 101, 102, 103, 104, 106, 107, 109, 110, 111, 112, 115, 116, 117, 118, 119, 120, 121, 123, 125, 128, 130,
    131, 132, 134, 137, 138, 139, 141, 142, 143, 144, 145, 147, 150, 152, 155, 157, 158, 160, 161, 162, 163, 164, 166,
    168, 169, 170, 172, 173, 174, 175, 178, 180, 181, 182, 184, 187, 188, 189, 190, 191, 193, 194, 195, 196, 198, 200,
    201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 212, 213, 214, 216, 217, 218, 219, 221, 223, 224, 225, 226, 227,
    228, 229, 231, 232, 233, 234, 237, 239, 241, 242, 243, 245, 246, 247, 249,
];

// Written as in the paper / authors' code ("i > 85 or i < 10 or i % 5 == 0").
#[allow(clippy::manual_range_contains)]
fn preset(name: &str, n: usize) -> Option<Vec<usize>> {
    let list = |v: &[usize]| v.iter().copied().filter(|&i| i < n).collect::<Vec<_>>();
    let pred = |f: &dyn Fn(usize) -> bool| (0..n).filter(|&i| f(i)).collect::<Vec<_>>();
    Some(match name {
        "50ls" => list(&[0, 1, 2, 3, 5, 10, 15, 25, 35]),
        "50ls2" => list(&[0, 10, 11, 12, 15, 20, 25, 30, 35, 45]),
        "50ls3" => list(&[0, 20, 25, 30, 35, 45, 46, 47, 48, 49]),
        "50ls4" => list(&[0, 9, 13, 14, 15, 28, 29, 32, 36, 45]),
        "100ls" => pred(&|i| i > 85 || i < 10 || i % 5 == 0),
        "75ls" => pred(&|i| i > 65 || i < 10 || i % 5 == 0),
        "s2" => pred(&|i| !(20..=40).contains(&i) || i % 2 == 0),
        "dit250" => list(&DIT250),
        "pro" => pred(&|i| {
            let v = 9 + 8 * i;
            let r = (v as f64).sqrt().round() as usize;
            r * r == v
        }),
        _ => return None,
    })
}

impl KeySteps {
    /// Parse a `--keys` value: `none`, `uniform:K` (or `every:K`), a preset name, `0,1,2,5,...`, or
    /// a plan file `PATH.json` holding `{"keys": [...]}`.
    pub fn parse(spec: &str) -> Result<Self> {
        let s = spec.trim();
        let err = |msg: String| Error::KeySteps { spec: spec.to_string(), msg };
        if s.is_empty() {
            return Err(err("empty; expected none, uniform:K, a preset or a list like 0,1,2,5".into()));
        }
        if s == "none" {
            return Ok(Self::None);
        }
        if s.ends_with(".json") {
            // a saved plan file, e.g. written by `fd drift --save-plan`
            return Ok(Self::List(PlanFile::load(std::path::Path::new(s))?.keys));
        }
        if let Some(k) = s.strip_prefix("uniform:").or_else(|| s.strip_prefix("every:")) {
            let k: usize = k.parse().map_err(|_| err(format!("`{k}` is not a positive integer")))?;
            if k == 0 {
                return Err(err("uniform interval must be >= 1".into()));
            }
            return Ok(Self::Uniform(k));
        }
        if let Some(k) = s.strip_prefix("runtime:") {
            let k: usize = k.parse().map_err(|_| err(format!("`{k}` is not a budget of encoder passes >= 1")))?;
            if k == 0 {
                return Err(err("runtime budget must be >= 1 encoder pass".into()));
            }
            return Ok(Self::Runtime(k));
        }
        if PRESETS.contains(&s) {
            return Ok(Self::Preset(s.to_string()));
        }
        if s.contains(',') || s.chars().all(|c| c.is_ascii_digit() || c == ' ') {
            let v = s
                .split(',')
                .map(|x| x.trim().parse::<usize>().map_err(|_| err(format!("`{x}` is not a step index"))))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Self::List(v));
        }
        Err(err(format!("unknown; expected none, uniform:K, one of {PRESETS:?}, or a list like 0,1,2,5")))
    }

    /// Resolve to a validated, sorted list of key-step indices for a sampler with `n` steps.
    pub fn resolve(&self, n: usize) -> Result<Vec<usize>> {
        let err = |msg: String| Error::KeySteps { spec: self.to_string(), msg };
        if n == 0 {
            return Err(err("the sampler has 0 steps".into()));
        }
        let v = match self {
            Self::None => (0..n).collect(),
            Self::Uniform(k) => (0..n).step_by(*k).collect(),
            Self::Preset(name) => preset(name, n).ok_or_else(|| err("unknown preset".into()))?,
            Self::List(v) => v.clone(),
            Self::Runtime(k) if *k > n => {
                return Err(err(format!("budget of {k} encoder passes exceeds the sampler's {n} steps")))
            }
            Self::Runtime(_) => vec![0],
        };
        if let Some(&bad) = v.iter().find(|&&i| i >= n) {
            return Err(err(format!("step index {bad} out of range for a {n}-step sampler (0..{n})")));
        }
        let mut sorted = v.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(err(format!("step index {} listed twice", w[0])));
        }
        if sorted.first() != Some(&0) {
            return Err(err("step 0 must be a key step (nothing is cached before it)".into()));
        }
        Ok(sorted)
    }
}

impl std::fmt::Display for KeySteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::Uniform(k) => write!(f, "uniform:{k}"),
            Self::Preset(p) => write!(f, "{p}"),
            Self::List(v) => write!(f, "{}", v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")),
            Self::Runtime(k) => write!(f, "runtime:{k}"),
        }
    }
}

/// A saved plan (`fd drift --save-plan auto:K` writes `plan.json`; `--keys PATH.json` reads it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// What made it, e.g. `auto:9 from fmnist-ddim50-cfg3`.
    pub name: String,
    /// Key-step indices.
    pub keys: Vec<usize>,
    /// Sampler steps the plan was made for; a run with another step count refuses it.
    pub steps: usize,
    /// Encoder drift accumulated between each reused step and its key step (lower is better).
    #[serde(default)]
    pub cost: Option<f64>,
    /// The drift summary the plan was calibrated on.
    #[serde(default)]
    pub calibration: Option<std::path::PathBuf>,
}

impl PlanFile {
    /// Read a plan file (a missing or mistyped field is an error naming the file and field).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        Ok(fd_model::io::read_json(path)?)
    }
}

/// What a non-key step reuses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The paper: reuse the encoder features (mid + skips) of the key step; decoders of a group
    /// can run as one batch.
    EncoderPropagation,
    /// DeepCache (Ma et al. 2023) as its authors' helper defines it (`DeepCacheSDHelper`,
    /// `cache_branch_id` = 3 x block + layer; `deepcache:N:ID`): at a full step the whole UNet runs
    /// and the input of the first up layer after the cut is kept; at the other steps only conv_in,
    /// the down path before the cut and the up layers after it run (sequential by nature).
    DeepCacheId { id: usize },
    /// fd's earlier block-level DeepCache branch `branch` (`deepcache-block:N:B`): the whole up
    /// block U[n-1-B] and those after it rerun; equals DeepCache id 3B + (down block B's layer
    /// count). Kept so that records made with it (README rows until 2026-12-02, labelled
    /// `deepcache:N:B` then) still read and rerun.
    DeepCache { branch: usize },
    /// The paper's failed ablation, decoder-only propagation: the decoder's output at the key
    /// step is reused by the following non-key steps (only the scheduler runs there). Recomputing
    /// the encoder at those steps could not change anything once the decoder is reused, so it is
    /// neither run nor charged: cost = key steps x (encoder + decoder).
    DecoderPropagation,
    /// AdaptiveDiffusion (Ye et al. 2024, UniModal4Reasoning/AdaptiveDiffusion; `adaptive:T[:M]`):
    /// the first 4 steps run the UNet; after step i >= 3 the next step reuses the last noise
    /// prediction when the latent differences d_i = mean|x_i - x_{i-1}| are locally linear,
    /// |(d_i + d_{i-2}) / 2 - d_{i-1}| <= T x d_{i-1}, unless the last M decisions were all skips.
    /// Decided per sample (the official pipeline decides on the batch mean; equal at batch 1).
    Adaptive { threshold: f64, max_skip: usize },
    /// Step caching decided by a cheap indicator computed every step (`teacache:T[:residual]`,
    /// `fbcache:T[:residual]`; [`CacheRule`] says which indicator and rule). A step that does not
    /// compute the UNet reuses the last computed output, or with `residual` (the UNet ports of
    /// both methods) the step's input plus the last computed output-minus-input. Decided per
    /// sample over its CFG rows.
    StepCache { rule: CacheRule, threshold: f64, residual: bool },
    /// T-GATE (Liu et al. 2024, HaozheLiu-ST/T-GATE; `tgate:G[:SP[:FI[:W]]]`, official SD
    /// defaults SP 5, FI 1, W 2): before the gate step G-1 the CFG batch runs with self-attention
    /// reused between its caching steps (W, then every SP-th); at G-1 both attention kinds are
    /// cached as the mean of the CFG halves; after it only the unconditional branch runs, without
    /// guidance, cross-attention reused, self-attention recomputed every FI-th step.
    TGate { gate_step: usize, sp_interval: usize, fi_interval: usize, warm_up: usize },
}

/// The indicator and decision rule of a [`Method::StepCache`] plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheRule {
    /// TeaCache (Liu et al. 2024, ali-vilab/TeaCache): the first block's timestep-modulated input
    /// (graph `teacache_probe`); its relative L1 change against the previous step, rescaled by
    /// the model's fitted polynomial (manifest `teacache`), is accumulated; the step reuses the
    /// cache while the sum stays below T, else computes and the sum restarts. The first and last
    /// steps always compute.
    TeaCache,
    /// First-Block Cache (ParaAttention; diffusers' `FirstBlockCacheConfig`): the first block's
    /// output (conv_in) is compared with its value at the last computed step; the step computes
    /// when the relative L1 change exceeds T. The first step computes.
    FbCache,
}

impl CacheRule {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheRule::TeaCache => "teacache",
            CacheRule::FbCache => "fbcache",
        }
    }
}

/// A resolved plan: the groups (a key step plus the non-key steps that reuse its features).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub method: Method,
    pub keys: KeySteps,
    pub num_steps: usize,
    pub key_steps: Vec<usize>,
    /// Step ranges; each starts at a key step.
    pub groups: Vec<Range<usize>>,
    /// Forecast order (encoder propagation only; `+forecast:K`): a non-key step decodes the
    /// encoder features extrapolated in t through the last K+1 key steps' features (Lagrange
    /// polynomial; fewer points at the first groups) instead of the key step's as they are. 0 =
    /// the paper's copy.
    pub forecast: usize,
    /// Partial propagation (encoder propagation only; `+partial:ID`): at a non-key step the
    /// shallow encoder of DeepCache id ID (conv_in and the down-path layers before its cut) is
    /// recomputed on the step's own latents and its skips replace the key step's; the deeper
    /// skips and the mid block are propagated. None = the paper's whole-encoder reuse.
    pub partial: Option<usize>,
}

impl Plan {
    /// An encoder-propagation plan (`KeySteps::None` is the baseline).
    pub fn new(keys: KeySteps, num_steps: usize) -> Result<Self> {
        Self::with_method(Method::EncoderPropagation, keys, num_steps)
    }

    pub fn with_method(method: Method, keys: KeySteps, num_steps: usize) -> Result<Self> {
        let key_steps = keys.resolve(num_steps)?;
        let groups =
            key_steps.iter().enumerate().map(|(i, &s)| s..key_steps.get(i + 1).copied().unwrap_or(num_steps)).collect();
        Ok(Self { method, keys, num_steps, key_steps, groups, forecast: 0, partial: None })
    }

    /// Parse a `--keys` value: anything [`KeySteps::parse`] takes (encoder propagation),
    /// `deepcache:N[:ID]` (DeepCache, full step every N steps, DeepCache's own cache_branch_id,
    /// default 0 as its helper), `deepcache-block:N:B` (fd's earlier block-level branch),
    /// `decoder-prop:KEYS` (decoder-only propagation, the paper's failed ablation),
    /// `adaptive:T[:M]` (AdaptiveDiffusion), `teacache:T[:residual]`, `fbcache:T[:residual]` or
    /// `tgate:G[:SP[:FI[:W]]]` (T-GATE).
    pub fn parse(spec: &str, num_steps: usize) -> Result<Self> {
        if let Some((base, order)) = spec.trim().rsplit_once("+forecast:") {
            let err = |msg: String| Error::KeySteps { spec: spec.to_string(), msg };
            let k: usize = order.parse().map_err(|_| err(format!("forecast order `{order}` is not 1 or 2")))?;
            if !(1..=2).contains(&k) {
                return Err(err(format!("forecast order {k}: expected 1 (linear) or 2 (quadratic)")));
            }
            let mut plan = Self::parse(base, num_steps)?;
            if plan.method != Method::EncoderPropagation || plan.partial.is_some() {
                return Err(err("+forecast applies to encoder-propagation plans only (not with +partial)".into()));
            }
            plan.forecast = k;
            return Ok(plan);
        }
        if let Some((base, id)) = spec.trim().rsplit_once("+partial:") {
            let err = |msg: String| Error::KeySteps { spec: spec.to_string(), msg };
            let id: usize = id.parse().map_err(|_| {
                err(format!("`{id}` is not a DeepCache cache_branch_id (the shallow encoder recomputed every step)"))
            })?;
            let mut plan = Self::parse(base, num_steps)?;
            if plan.method != Method::EncoderPropagation || plan.forecast > 0 {
                return Err(err("+partial applies to encoder-propagation plans only (not with +forecast)".into()));
            }
            plan.partial = Some(id);
            return Ok(plan);
        }
        if spec.trim().ends_with(".json") {
            let file = PlanFile::load(std::path::Path::new(spec.trim()))?;
            if file.steps != num_steps {
                return Err(Error::KeySteps {
                    spec: spec.to_string(),
                    msg: format!("plan file made for {} steps, used with {num_steps}", file.steps),
                });
            }
            return Self::new(KeySteps::List(file.keys), num_steps);
        }
        if let Some(rest) = spec.trim().strip_prefix("adaptive:") {
            let err = |msg: &str| Error::KeySteps { spec: spec.to_string(), msg: msg.to_string() };
            let (t, m) = rest.split_once(':').unwrap_or((rest, "4"));
            let threshold: f64 =
                t.parse().map_err(|_| err("expected adaptive:T[:M] with T = threshold > 0 (official 0.01)"))?;
            let max_skip: usize =
                m.parse().map_err(|_| err("expected adaptive:T[:M] with M = most skips in a row >= 1 (official 4)"))?;
            if !(threshold.is_finite() && threshold > 0.0) || max_skip == 0 {
                return Err(err("threshold must be finite and > 0, M >= 1"));
            }
            return Self::with_method(Method::Adaptive { threshold, max_skip }, KeySteps::None, num_steps);
        }
        for rule in [CacheRule::TeaCache, CacheRule::FbCache] {
            let Some(rest) = spec.trim().strip_prefix(rule.as_str()).and_then(|r| r.strip_prefix(':')) else {
                continue;
            };
            let name = rule.as_str();
            let err = |msg: String| Error::KeySteps { spec: spec.to_string(), msg };
            let (t, residual) = match rest.split_once(':') {
                None => (rest, false),
                Some((t, "residual")) => (t, true),
                Some((_, other)) => {
                    return Err(err(format!("`{other}`: expected {name}:T or {name}:T:residual")));
                }
            };
            let threshold: f64 =
                t.parse().map_err(|_| err(format!("expected {name}:T[:residual] with T = threshold > 0")))?;
            if !(threshold.is_finite() && threshold > 0.0) {
                return Err(err("threshold must be finite and > 0".into()));
            }
            return Self::with_method(Method::StepCache { rule, threshold, residual }, KeySteps::None, num_steps);
        }
        if let Some(rest) = spec.trim().strip_prefix("tgate:") {
            let err = |msg: String| Error::KeySteps { spec: spec.to_string(), msg };
            let parts: Vec<&str> = rest.split(':').collect();
            let defaults = [0, 5, 1, 2];
            if parts.len() > 4 {
                return Err(err("expected tgate:G[:SP[:FI[:W]]]".into()));
            }
            let mut v = defaults;
            for (i, p) in parts.iter().enumerate() {
                v[i] =
                    p.parse().map_err(|_| err(format!("`{p}` is not a step count; expected tgate:G[:SP[:FI[:W]]]")))?;
            }
            let [gate_step, sp_interval, fi_interval, warm_up] = v;
            if !(1..=num_steps).contains(&gate_step) {
                return Err(err(format!("gate step {gate_step} outside 1..={num_steps} (the sampler's steps)")));
            }
            if sp_interval == 0 || fi_interval == 0 {
                return Err(err("SP and FI intervals must be >= 1".into()));
            }
            let method = Method::TGate { gate_step, sp_interval, fi_interval, warm_up };
            return Self::with_method(method, KeySteps::None, num_steps);
        }
        if let Some(keys) = spec.trim().strip_prefix("decoder-prop:") {
            return Self::with_method(Method::DecoderPropagation, KeySteps::parse(keys)?, num_steps);
        }
        let s = spec.trim();
        let (rest, block) = match (s.strip_prefix("deepcache-block:"), s.strip_prefix("deepcache:")) {
            (Some(r), _) => (r, true),
            (None, Some(r)) => (r, false),
            (None, None) => return Self::new(KeySteps::parse(spec)?, num_steps),
        };
        let err = |msg: &str| Error::KeySteps { spec: spec.to_string(), msg: msg.to_string() };
        let syntax = if block { "deepcache-block:N:B" } else { "deepcache:N[:ID]" };
        let (n, b) = rest.split_once(':').unwrap_or((rest, "0"));
        let n: usize = n.parse().map_err(|_| err(&format!("expected {syntax} with N = cache interval >= 1")))?;
        let b: usize = b.parse().map_err(|_| {
            err(&if block {
                "expected deepcache-block:N:B with B = block-level branch >= 0".to_string()
            } else {
                "expected deepcache:N[:ID] with ID = DeepCache's cache_branch_id >= 0 (block = ID / 3, layer = ID % 3)"
                    .to_string()
            })
        })?;
        if n == 0 {
            return Err(err("cache interval must be >= 1"));
        }
        let method = if block { Method::DeepCache { branch: b } } else { Method::DeepCacheId { id: b } };
        Self::with_method(method, KeySteps::Uniform(n), num_steps)
    }

    /// Whether non-key steps run DeepCache's shallow path (either spelling).
    pub fn is_deepcache(&self) -> bool {
        matches!(self.method, Method::DeepCache { .. } | Method::DeepCacheId { .. })
    }

    /// The plan as `--keys` spells it.
    pub fn label(&self) -> String {
        let base = match (self.method, &self.keys) {
            (Method::DeepCacheId { id }, KeySteps::Uniform(n)) => format!("deepcache:{n}:{id}"),
            (Method::DeepCacheId { id }, k) => format!("deepcache[{k}]:{id}"),
            (Method::DeepCache { branch }, KeySteps::Uniform(n)) => format!("deepcache-block:{n}:{branch}"),
            (Method::DeepCache { branch }, k) => format!("deepcache-block[{k}]:{branch}"),
            (Method::EncoderPropagation, k) => k.to_string(),
            (Method::DecoderPropagation, k) => format!("decoder-prop:{k}"),
            (Method::Adaptive { threshold, max_skip }, _) => format!("adaptive:{threshold}:{max_skip}"),
            (Method::TGate { gate_step, sp_interval, fi_interval, warm_up }, _) => {
                format!("tgate:{gate_step}:{sp_interval}:{fi_interval}:{warm_up}")
            }
            (Method::StepCache { rule, threshold, residual }, _) => {
                format!("{}:{threshold}{}", rule.as_str(), if residual { ":residual" } else { "" })
            }
        };
        if self.forecast > 0 {
            format!("{base}+forecast:{}", self.forecast)
        } else if let Some(id) = self.partial {
            format!("{base}+partial:{id}")
        } else {
            base
        }
    }

    pub fn is_baseline(&self) -> bool {
        self.key_steps.len() == self.num_steps && !self.is_dynamic() && !matches!(self.method, Method::TGate { .. })
    }

    /// Whether which steps run the UNet is decided while sampling (AdaptiveDiffusion, TeaCache,
    /// FBCache): `key_steps` then lists every step and says nothing about the cost.
    pub fn is_dynamic(&self) -> bool {
        matches!(self.method, Method::Adaptive { .. } | Method::StepCache { .. })
            || matches!(self.keys, KeySteps::Runtime(_))
    }

    /// Encoder calls per sample (per CFG branch).
    pub fn encoder_calls(&self) -> usize {
        self.key_steps.len()
    }

    /// Decoder evaluations per sample (per CFG branch): one per step (one per key step for
    /// decoder-only propagation).
    pub fn decoder_calls(&self) -> usize {
        match self.method {
            Method::DecoderPropagation => self.key_steps.len(),
            _ => self.num_steps,
        }
    }

    /// UNet GFLOPs per image of an encoder-propagation plan, from batch-1 FLOPs per graph:
    /// `branches` x (key steps x (encoder + time embedding) + steps x (decoder + time embedding)).
    /// `branches` = 2 counts the classifier-free-guidance batch doubling, 1 does not. This is what
    /// the executor's [`crate::CallCounts::gflops_per_image`] measures for the same plan.
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
