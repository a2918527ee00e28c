//! One graph of a model folder: a TorchScript method or an AOTInductor package, how it is called
//! (whole batch or row by row) and how its errors name the graph and file. Everything above calls
//! graphs through [`Graph::forward_is`] and does not know which format runs.

use std::path::PathBuf;
use std::rc::Rc;

use tch::{CModule, IValue, Tensor};

use crate::aoti::Package;
use crate::{Error, Result};

/// What runs a graph.
#[derive(Debug)]
pub(crate) enum Backend {
    /// A method of a loaded TorchScript module (modules are shared between graphs).
    TorchScript(Rc<CModule>),
    /// AOTInductor packages, each with the batch rows it accepts (ranges in order); `tuple`: the
    /// graph returns a tuple (a package returns its tensors flattened either way).
    Aoti { packages: Vec<(Rc<Package>, [i64; 2])>, tuple: bool },
}

/// One graph.
#[derive(Debug)]
pub(crate) struct Graph {
    pub(crate) backend: Backend,
    /// The manifest's name for the graph, the file it was loaded from and the method called
    /// (`AOTInductor package` for a package).
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) method: String,
    /// See [`LoadOptions::row_by_row`].
    pub(crate) row_by_row: bool,
    /// Calls so far ([`crate::Denoiser::graph_calls`]: which graphs a run called in which format).
    pub(crate) calls: std::cell::Cell<u64>,
}

/// The tensors of a package call's inputs, in order (a tensor list's tensors in place), each
/// contiguous: a package's generated code indexes its inputs with the strides they had at export
/// (dense, row-major) and does not check them, so a strided view (a DiT encoder's token grid is
/// one) would be read wrongly. Dense tensors, nearly all of them, pass as they are.
fn flat_tensors(inputs: &[IValue]) -> Result<Vec<Tensor>, tch::TchError> {
    let mut out = Vec::with_capacity(inputs.len());
    for v in inputs {
        match v {
            IValue::Tensor(t) => out.push(t.contiguous()),
            IValue::TensorList(ts) => out.extend(ts.iter().map(Tensor::contiguous)),
            other => return Err(tch::TchError::Kind(format!("AOTInductor package input {other:?} is not a tensor"))),
        }
    }
    Ok(out)
}

/// Row `i` of every batched tensor in an input (tensors whose first dimension is `b`).
pub(crate) fn row_of(v: &IValue, i: i64, b: i64) -> Result<IValue, tch::TchError> {
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
pub(crate) fn cat_rows(outs: Vec<IValue>) -> Result<IValue, tch::TchError> {
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
    pub(crate) fn call(&self, inputs: &[IValue]) -> Result<IValue, tch::TchError> {
        match &self.backend {
            Backend::TorchScript(m) if self.method == "forward" => m.forward_is(inputs),
            Backend::TorchScript(m) => m.method_is(&self.method, inputs),
            Backend::Aoti { packages, tuple } => {
                let mut ts = flat_tensors(inputs)?;
                let rows = ts.first().and_then(|t| t.size().first().copied()).unwrap_or(1);
                let (lo, hi) = (packages[0].1[0], packages[packages.len() - 1].1[1]);
                if rows > hi {
                    return Err(tch::TchError::Kind(format!(
                        "{rows} batch rows: the packages were compiled for {lo}..={hi} (re-run experiments/export/convert_aoti.py with a larger --max-batch)"
                    )));
                }
                // torch.export makes a dynamic dimension start at 2: a call with fewer rows runs
                // padded with copies of its last row, whose outputs are dropped (rows are
                // independent in every graph fd exports)
                let pad = (lo - rows).max(0);
                if pad > 0 {
                    for t in ts.iter_mut().filter(|t| t.dim() > 0 && t.size()[0] == rows) {
                        let last = t.narrow(0, rows - 1, 1);
                        let reps: Vec<i64> =
                            std::iter::once(pad).chain(std::iter::repeat_n(1, last.dim() - 1)).collect();
                        *t = Tensor::cat(&[t.shallow_clone(), last.repeat(reps)], 0);
                    }
                }
                let n = rows + pad;
                let Some((package, _)) = packages.iter().find(|(_, r)| (r[0]..=r[1]).contains(&n)) else {
                    let ranges: Vec<String> = packages.iter().map(|(_, r)| format!("{}..={}", r[0], r[1])).collect();
                    return Err(tch::TchError::Kind(format!(
                        "{rows} batch rows: no package covers them (ranges {})",
                        ranges.join(", ")
                    )));
                };
                let mut out = package.run(&ts).map_err(tch::TchError::Kind)?;
                if pad > 0 {
                    out = out
                        .into_iter()
                        .map(|t| if t.dim() > 0 && t.size()[0] == n { t.narrow(0, 0, rows) } else { t })
                        .collect();
                }
                Ok(if *tuple || out.len() != 1 {
                    IValue::Tuple(out.into_iter().map(IValue::Tensor).collect())
                } else {
                    IValue::Tensor(out.remove(0))
                })
            }
        }
    }

    pub(crate) fn forward_ts(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let iv: Vec<IValue> = inputs.iter().map(|t| IValue::Tensor(t.shallow_clone())).collect();
        match self.forward_is(&iv)? {
            IValue::Tensor(t) => Ok(t),
            other => Err(self.error(tch::TchError::Kind(format!("returned {other:?}, expected a tensor")))),
        }
    }

    /// A libtorch failure of this graph as one line naming the graph, its file and method; the
    /// full libtorch message (often a long TorchScript trace) goes to the debug log.
    pub(crate) fn error(&self, e: tch::TchError) -> Error {
        let full = e.to_string();
        log::debug!("graph `{}` ({}, method `{}`): {full}", self.name, self.path.display(), self.method);
        Error::GraphCall {
            graph: self.name.clone(),
            path: self.path.clone(),
            method: self.method.clone(),
            msg: first_line(&full),
        }
    }

    pub(crate) fn forward_is(&self, inputs: &[IValue]) -> Result<IValue> {
        self.calls.set(self.calls.get() + 1);
        self.forward_is_raw(inputs).map_err(|e| self.error(e))
    }

    /// Whether the graph runs from AOTInductor packages.
    pub(crate) fn is_package(&self) -> bool {
        matches!(self.backend, Backend::Aoti { .. })
    }

    pub(crate) fn forward_is_raw(&self, inputs: &[IValue]) -> Result<IValue, tch::TchError> {
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

/// A graph's output as its tensors (one, or a tuple's); an error naming `graph` when it has none.
pub(crate) fn tensors_out(graph: &str, out: IValue) -> Result<Vec<Tensor>> {
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

pub(crate) fn first_line(s: &str) -> String {
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
