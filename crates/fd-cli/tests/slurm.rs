//! `fd experiment --slurm` on a real Slurm: each test starts a one-node cluster of its own (Debian's
//! `munge`, `slurmctld` and `slurmd`, configured in a temporary folder, on free ports), submits a
//! small experiment and stops every daemon it started by pid. The Slurm table must equal the table
//! of the same experiment run in one local process; a task killed mid-run is resubmitted and only
//! its shard runs again, keeping the finished batches it wrote.
//!
//! Skipped, with a message saying why, where the packages are not installed (`scripts/setup.sh`
//! installs them) or the test does not run as root (the daemons run as root here).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo_path, snapshot, stats_npz};

/// A one-node Slurm cluster in a temporary folder; its daemons stop when it drops.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn which(bin: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

impl Cluster {
    /// Start munged, slurmctld and slurmd; None (with the reason printed) where this machine
    /// cannot run them.
    fn start() -> Option<Self> {
        let missing: Vec<&str> = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"]
            .into_iter()
            .filter(|b| which(b).is_none())
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "SKIPPED: Slurm test needs {} (Debian packages munge slurmctld slurmd slurm-client; scripts/setup.sh installs them)",
                missing.join(", ")
            );
            return None;
        }
        let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if uid.ok().as_deref() != Some("0") {
            eprintln!("SKIPPED: the one-node Slurm cluster of this test runs its daemons as root");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("fd-slurm").tempdir().unwrap();
        let d = dir.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).unwrap();
        for sub in ["state", "spool", "munge"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::set_permissions(d.join("munge"), std::fs::Permissions::from_mode(0o711)).unwrap();
        let key = d.join("munge/munge.key");
        let mut bytes = vec![0u8; 1024];
        use std::io::Read;
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
        std::fs::write(&key, &bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        let socket = d.join("munge/munge.socket");
        let host =
            String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout).unwrap().trim().to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = d.join("slurm.conf");
        let p = |name: &str| d.join(name).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "ClusterName=fdtest\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
                 SlurmctldPort={}\nSlurmdPort={}\nAuthType=auth/munge\nAuthInfo=socket={}\nCredType=cred/munge\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_CPU\nStateSaveLocation={}\nSlurmdSpoolDir={}\nSlurmctldPidFile={}\n\
                 SlurmdPidFile={}\nSlurmctldLogFile={}\nSlurmdLogFile={}\nReturnToService=2\nJobCompType=jobcomp/none\n\
                 JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\nMpiDefault=none\n\
                 SchedulerParameters=sched_min_interval=100000\nKillWait=5\nMinJobAge=600\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
                 PartitionName=fdtest Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES\n",
                free_port(),
                free_port(),
                socket.display(),
                p("state"),
                p("spool"),
                p("slurmctld.pid"),
                p("slurmd.pid"),
                p("slurmctld.log"),
                p("slurmd.log"),
            ),
        )
        .unwrap();
        let mut c = Cluster { conf: conf.clone(), daemons: Vec::new(), dir };
        let spawn = |bin: &str, args: Vec<String>, log: &Path| -> Child {
            Command::new(which(bin).unwrap())
                .args(args)
                .env("SLURM_CONF", &conf)
                .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
                .stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()))
                .spawn()
                .unwrap_or_else(|e| panic!("{bin}: {e}"))
        };
        let munged = spawn(
            "munged",
            vec![
                "-F".into(),
                "-f".into(),
                format!("--key-file={}", key.display()),
                format!("--socket={}", socket.display()),
                format!("--pid-file={}", p("munge/munged.pid")),
                format!("--log-file={}", p("munge/munged.log")),
                format!("--seed-file={}", p("munge/munged.seed")),
            ],
            &d.join("munged.out"),
        );
        c.daemons.push(("munged", munged));
        c.wait_for("the munge socket", Duration::from_secs(20), || socket.exists());
        let conf_s = conf.display().to_string();
        let ctld =
            spawn("slurmctld", vec!["-D".into(), "-i".into(), "-f".into(), conf_s.clone()], &d.join("slurmctld.out"));
        c.daemons.push(("slurmctld", ctld));
        let slurmd = spawn("slurmd", vec!["-D".into(), "-f".into(), conf_s, "-N".into(), host], &d.join("slurmd.out"));
        c.daemons.push(("slurmd", slurmd));
        c.wait_for("the node to be idle (sinfo)", Duration::from_secs(60), || {
            let o = c.cmd("sinfo").args(["-h", "-o", "%T"]).output();
            o.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        Some(c)
    }

    fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(which(bin).unwrap_or_else(|| PathBuf::from(bin)));
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `fd` with this cluster's `SLURM_CONF`: (success, stdout, stderr).
    fn fd(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fd")).args(args).env("SLURM_CONF", &self.conf).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log", "munge/munged.log"]
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                let tail: String =
                    t.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                format!("--- {f} (last lines)\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !ok() {
            assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// State of a job (`squeue -h -t all`), empty when squeue no longer knows it.
    fn state(&self, job: &str) -> String {
        let o = self.cmd("squeue").args(["-h", "-t", "all", "-o", "%T", "-j", job]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Wait until `job` is in a final state; returns it.
    fn wait_job(&self, job: &str, limit: Duration) -> String {
        let mut last = String::new();
        self.wait_for(&format!("job {job} to end"), limit, || {
            last = self.state(job);
            ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"].iter().any(|s| last.starts_with(s))
        });
        last
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // jobs first (their steps are children of slurmd), then the daemons, newest first, by pid
        let _ = self.cmd("scancel").args(["--partition=fdtest"]).status();
        std::thread::sleep(Duration::from_millis(300));
        for (name, child) in self.daemons.iter_mut().rev() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("{name} (pid {pid}) did not stop on SIGTERM: killed");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A small experiment config: 2 rows on the committed default model, a few steps.
fn config(dir: &Path, n: usize, steps: usize, shards: usize) -> PathBuf {
    let cfg = dir.join("exp.json");
    let config = serde_json::json!({
        "name": "slurm-mini", "model": repo_path("models/fmnist"), "n": n, "batch": 2, "guidance": 3.0,
        "reference": stats_npz(dir),
        "rows": [
            { "label": "DDIM", "steps": steps },
            { "label": "ours uniform:2", "steps": steps, "keys": "uniform:2", "inject": "0.003@0.5", "baseline": "DDIM" }
        ],
        "slurm": { "shards": shards }
    });
    std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    cfg
}

/// `table.csv` without the columns that time a process (they differ between any two runs) or count
/// resumed parts (a Slurm row is merged from its shards: every part is resumed).
fn table(results: &Path) -> Vec<Vec<(String, String)>> {
    let mut rdr = csv::Reader::from_path(results.join("table.csv")).unwrap();
    let h = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            h.iter()
                .zip(r.iter())
                .filter(|(k, _)| !["unet_s_per_image", "total_s_per_image", "ftc", "parts_resumed"].contains(k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn submissions(results: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(results.join("slurm/submissions.json")).unwrap()).unwrap()
}

/// The same experiment in one local process, with the tasks' one CPU thread (libtorch's CPU
/// kernels may sum in another order with another thread count: equal only to float rounding).
fn run_local(cfg: &Path, d: &Path) -> PathBuf {
    let (res, work) = (d.join("local"), d.join("work-local"));
    let out = Command::new(env!("CARGO_BIN_EXE_fd"))
        .args(["experiment", cfg.to_str().unwrap(), "--out", res.to_str().unwrap(), "--work", work.to_str().unwrap()])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "local run: {}", String::from_utf8_lossy(&out.stderr));
    res
}

#[test]
fn slurm_experiment_equals_the_local_run() {
    let Some(cluster) = Cluster::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 8, 6, 3);
    let (res, work) = (d.path().join("slurm"), d.path().join("work-slurm"));
    let args = ["experiment", cfg.to_str().unwrap(), "--out", res.to_str().unwrap(), "--work", work.to_str().unwrap()];
    let (ok, out, err) = cluster.fd(&[&args[..], &["--slurm"]].concat());
    assert!(ok, "{err}\n{}", cluster.logs());
    assert!(out.contains("sbatch") || out.contains("job"), "{out}");
    let sub = &submissions(&res)[0];
    assert_eq!(sub["rows"].as_array().unwrap().len(), 2);
    assert_eq!(sub["rows"][0]["shards"], serde_json::json!([0, 1, 2]));
    assert!(sub["reference_job"].is_null(), "an .npz reference needs no job");
    for f in ["experiment.json", "ddim.sample.sh", "ddim.finish.sh", "ours-uniform-2.sample.sh", "table.sh"] {
        assert!(res.join("slurm").join(f).is_file(), "{f}");
    }
    let script = std::fs::read_to_string(res.join("slurm/ours-uniform-2.sample.sh")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0,1,2") && script.contains("--stage sample --only 'ours uniform:2'"),
        "{script}"
    );
    // a second submission while the first runs is refused
    let (ok, _, err) = cluster.fd(&[&args[..], &["--slurm"]].concat());
    assert!(!ok && err.contains("still has jobs"), "{err}");
    let table_job = sub["table_job"].as_str().unwrap().to_string();
    let state = cluster.wait_job(&table_job, Duration::from_secs(300));
    let log = |pat: &str| -> String {
        std::fs::read_dir(res.join("slurm/logs"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(pat))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(state, "COMPLETED", "table job: {}\nfinish: {}\n{}", log("table"), log("ddim.finish"), cluster.logs());
    let (ok, status, err) = cluster.fd(&[&args[..], &["--status"]].concat());
    assert!(ok && status.contains("2/2 rows evaluated"), "{status}{err}");
    // the same experiment in one local process: the same table (but timings)
    let local = run_local(&cfg, d.path());
    assert_eq!(table(&local), table(&res));
    assert_eq!(table(&res).len(), 2);
    // everything is done: nothing to submit
    let (ok, out, err) = cluster.fd(&[&args[..], &["--slurm"]].concat());
    assert!(ok && out.contains("nothing to submit"), "{out}{err}");
}

#[test]
fn a_killed_task_is_resubmitted_alone_and_keeps_its_batches() {
    let Some(cluster) = Cluster::start() else { return };
    let d = tempfile::tempdir().unwrap();
    // 24 samples in batches of 2: 12 parts, 4 per shard, slow enough (20 steps, one thread per
    // task: about 2 s a batch here) to cancel a shard between its first and its last batch
    let cfg = config(d.path(), 24, 20, 3);
    let (res, work) = (d.path().join("slurm"), d.path().join("work-slurm"));
    let args = ["experiment", cfg.to_str().unwrap(), "--out", res.to_str().unwrap(), "--work", work.to_str().unwrap()];
    let (ok, _, err) = cluster.fd(&[&args[..], &["--slurm"]].concat());
    assert!(ok, "{err}\n{}", cluster.logs());
    let sub = submissions(&res)[0].clone();
    let victim = &sub["rows"][1];
    assert_eq!(victim["label"], "ours uniform:2");
    let array = victim["sample_job"].as_str().unwrap().to_string();
    let shard = work.join("ours-uniform-2.shards/2-of-3");
    let parts = |dir: &Path| -> usize {
        std::fs::read_dir(dir.join("parts"))
            .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
            .unwrap_or(0)
    };
    cluster.wait_for("shard 2 to write its first batch", Duration::from_secs(300), || parts(&shard) >= 1);
    let st = cluster.cmd("scancel").arg(format!("{array}_2")).status().unwrap();
    assert!(st.success());
    let table_job = sub["table_job"].as_str().unwrap().to_string();
    let state = cluster.wait_job(&table_job, Duration::from_secs(300));
    assert!(!shard.join("run.json").exists(), "the shard finished before it was cancelled: make it slower");
    let done = parts(&shard);
    assert!((1..4).contains(&done), "{done} of 4 batches");
    let logs: Vec<(String, String)> = std::fs::read_dir(res.join("slurm/logs"))
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read_to_string(e.path()).unwrap_or_default()))
        .collect();
    let log = |prefix: &str| -> String {
        logs.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, t)| t.clone()).collect::<Vec<_>>().join("\n")
    };
    // the row's finish job fails naming the row and the shard; the table job names the missing row
    let finish = log("ours-uniform-2.finish");
    assert!(finish.contains("`ours uniform:2`") && finish.contains("shard 2"), "{finish}");
    assert_ne!(state, "COMPLETED", "{}", log("table"));
    assert!(log("table").contains("ours uniform:2"), "{}", log("table"));
    // the other row finished
    assert!(res.join("rows/ddim/row.json").is_file(), "{}", log("ddim"));
    let (ok, status, _) = cluster.fd(&[&args[..], &["--status"]].concat());
    assert!(ok && status.contains("DDIM: evaluated") && status.contains("shard 2:"), "{status}");
    eprintln!("--status after the cancelled task:\n{status}");
    // resubmit: only the killed shard runs; the batches it finished stay as they were
    let before: Vec<_> = snapshot(&shard.join("parts"))
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let (ok, _, err) = cluster.fd(&[&args[..], &["--slurm"]].concat());
    assert!(ok, "{err}");
    let sub2 = submissions(&res)[1].clone();
    let rows = sub2["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the unfinished row: {sub2}");
    assert_eq!(rows[0]["shards"], serde_json::json!([2]));
    let state = cluster.wait_job(sub2["table_job"].as_str().unwrap(), Duration::from_secs(300));
    assert_eq!(state, "COMPLETED", "{}", cluster.logs());
    let after = snapshot(&shard.join("parts"));
    for (p, bytes) in &before {
        assert_eq!(after.get(p), Some(bytes), "{} changed", p.display());
    }
    let resumed = std::fs::read_dir(res.join("slurm/logs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ours-uniform-2.sample"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(resumed.contains(&format!("{done} batches resumed")), "{resumed}");
    let local = run_local(&cfg, d.path());
    assert_eq!(table(&local), table(&res));
}
