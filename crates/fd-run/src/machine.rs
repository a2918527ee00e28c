//! Where a number was measured: the machine description every record carries, and the
//! `<date>-<machine>` tags of result folders.

use serde::{Deserialize, Serialize};

/// The machine a run or benchmark was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical cores available to the process.
    pub cores: usize,
    /// libtorch intra-op threads.
    pub torch_threads: i64,
    /// The device the graphs ran on (`fd_model::device::describe`).
    pub device: String,
    pub hostname: String,
}

impl Machine {
    /// This machine, running on `device`.
    pub fn current(device: tch::Device) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cores: cores(),
            torch_threads: tch::get_num_threads().into(),
            device: fd_model::device::describe(device),
            hostname: hostname(),
        }
    }
}

/// fd's version and the libtorch it loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub fd: String,
    pub libtorch: String,
}

impl Versions {
    pub fn current() -> Self {
        Versions { fd: env!("CARGO_PKG_VERSION").into(), libtorch: fd_model::device::libtorch_summary() }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

/// The command line of this process, as records keep it.
pub fn command() -> Vec<String> {
    std::env::args().collect()
}

/// Short machine tag for result folders: `2core-x86_64` on CPU, `cuda-16core-x86_64` on a GPU.
pub fn machine_tag(device: tch::Device) -> String {
    let cpu = format!("{}core-{}", cores(), std::env::consts::ARCH);
    if device.is_cuda() {
        format!("cuda-{cpu}")
    } else {
        cpu
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown host`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Now, UTC, as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn now() -> String {
    let s = now_secs();
    format!("{} {:02}:{:02}:{:02} UTC", date_of(s), s / 3600 % 24, s / 60 % 60, s % 60)
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, no calendar dependency).
pub fn today() -> String {
    date_of(now_secs())
}

/// The UTC date of a Unix time as YYYY-MM-DD.
fn date_of(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
