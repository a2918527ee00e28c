//! Where a key step is decided: [`KeySteps`] (the user's choice, typed: a preset, a list, a plan
//! file, an `auto:` rule, run-time key steps) resolved to the key-step indices of a sampler. A
//! whole `--keys` value is a [`crate::PlanSpec`] ([`crate::methods`]); resolving it gives the
//! [`crate::Plan`] (groups of steps that share one encoder pass).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which steps run the encoder (0-based indices into the sampler's timestep list).
#[derive(Debug, Clone, PartialEq)]
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
    /// A saved plan file (`fd drift --save-plan` writes one): its `keys`, for its `steps`.
    File(PathBuf),
    /// Calibrated on the encoder drift of a few samples before sampling (`auto:K`,
    /// `auto:threshold=X`; fd-run calibrates, fd-analysis measures): an [`AutoRule`] resolves to a
    /// list only after that.
    Auto(AutoRule),
    /// Chosen while sampling under a budget of K encoder passes (`runtime:K`): at each key step
    /// the next group's length comes from how fast the encoder features changed since the last
    /// key step ([`crate::methods::propagation`]'s run-time key steps). Resolves to [0] before
    /// sampling.
    Runtime(usize),
}

/// A drift-calibrated key-step rule (`auto:K` / `auto:threshold=X`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AutoRule {
    /// The K key steps that minimise the accumulated encoder drift.
    K(usize),
    /// A new key step whenever the accumulated drift passes X.
    Threshold(f64),
}

impl std::str::FromStr for AutoRule {
    type Err = Error;
    fn from_str(spec: &str) -> Result<Self> {
        let err = |msg: String| Error::KeySteps { spec: spec.to_string(), msg };
        let body = spec.strip_prefix("auto:").ok_or_else(|| err("expected auto:K or auto:threshold=X".into()))?;
        Ok(match body.strip_prefix("threshold=") {
            Some(x) => {
                let t: f64 = x.parse().map_err(|_| err(format!("threshold `{x}` is not a number")))?;
                if !(t.is_finite() && t >= 0.0) {
                    return Err(err(format!("threshold {x}: expected a finite number >= 0")));
                }
                Self::Threshold(t)
            }
            None => match body.parse() {
                Ok(0) => return Err(err("K = 0: at least one key step (step 0) is needed".into())),
                Ok(k) => Self::K(k),
                Err(_) => return Err(err(format!("K `{body}` is not an integer"))),
            },
        })
    }
}

impl std::fmt::Display for AutoRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::K(k) => write!(f, "auto:{k}"),
            Self::Threshold(x) => write!(f, "auto:threshold={x}"),
        }
    }
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
    /// Parse a key-step set: `none`, `uniform:K` (or `every:K`), a preset name, `0,1,2,5,...`, a
    /// plan file `PATH.json` holding `{"keys": [...]}`, `auto:K` / `auto:threshold=X` or
    /// `runtime:K`.
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
            // a saved plan file, e.g. written by `fd drift --save-plan`; read when resolved
            return Ok(Self::File(PathBuf::from(s)));
        }
        if s.starts_with("auto:") {
            return Ok(Self::Auto(s.parse()?));
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
        Err(err(format!(
            "unknown; expected none, uniform:K, one of {PRESETS:?}, a list like 0,1,2,5, a plan file PATH.json, auto:K or runtime:K"
        )))
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
            Self::File(path) => {
                let file = PlanFile::load(path)?;
                if file.steps != n {
                    return Err(err(format!("plan file made for {} steps, used with {n}", file.steps)));
                }
                file.keys
            }
            Self::Auto(_) => return Err(err("an auto: rule is calibrated before it resolves (fd-run does it)".into())),
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
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Auto(rule) => write!(f, "{rule}"),
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
