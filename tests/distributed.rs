//! Data-parallel training end to end through the CLI: two Flex replicas in one process
//! (`--device cpu,cpu`), and two ranks in two processes joined by burn-collective (an
//! orchestrator and two `dbps train --nodes 2` workers, on 127.0.0.1 and, as root with
//! `ip netns`, as two hosts in their own network namespaces joined by a veth pair).
//!
//! Each is held against one process training the same global batches: the gradients every
//! optimizer step receives (`--trace-gradients`) must agree within 1e-5 of each tensor's
//! largest value, and the last weights within a few learning rates. The encoder is `tiny_cnn`
//! and dropout is off: BatchNorm's batch statistics and dropout masks are drawn per replica
//! (as in PyTorch DDP), so with them the replicas would compute another function than one
//! process on the whole batch.

mod common;

use common::outcome;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::DataLoader;
use burn::data::dataset::Dataset;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use burn_train::TrainStep;
use dbps_model::batch::ImageBatcher;
use dbps_model::epoch_order::EpochOrder;
use dbps_model::step::{TrainedClassifier, TrainingMonitor};
use dbps_model::trace::{GradientTrace, TRACE_INDEX, TracedParam};
use dbps_parallel::{ShardLoader, ShardPlan};
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;
use dbps_train::checkpoint::{MethodManifest, checkpoint_path, load_weights};
use dbps_train::config::CheckedRun;
use dbps_train::datasets::Splits;

type A = Autodiff<Flex>;
use serde_json::{Value, json};

const LR: f64 = 0.002;

/// `images` training images in global batches of 8 over `epochs` epochs, both methods. With
/// 401 images and 2 epochs: 51 steps an epoch, the last of a single image (so one rank's part
/// of it is empty), 204 global steps in all, each an all-reduce between the ranks (stock
/// burn-collective 0.21 hangs on the second).
fn config(epochs: usize, images: usize) -> Value {
    json!({
        "name": "parallel",
        "dataset": { "synthetic_digits": {
            "canvas": 48, "digit_height": [10, 14], "copies": 1, "clutter": 2, "clutter_size": 8,
            "sizes": [images, 12, 10]
        } },
        "patch": { "size": 16 },
        "encoder": { "tiny_cnn": { "in_channels": 1, "width": 8 } },
        "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [
            { "name": "IPS", "m": 2, "s": 0, "l": 4, "aggregator": "ips" },
            { "name": "DBPS", "m": 2, "s": 3, "l": 4, "drop": 0.3, "aggregator": "dual_attention" }
        ],
        "train": { "epochs": epochs, "batch_size": 8, "lr": LR, "warmup_epochs": 0.5,
                   "shuffle_patches": true, "seed": 5, "workers": 1 }
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-parallel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    path
}

fn dbps() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbps"));
    command.env("RUST_LOG", "warn,dbps_train=debug,dbps_parallel=debug");
    command
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Trains `config` in one process on `devices`, recording gradients.
fn train_one_process(dir: &Path, config: &Path, devices: &str) -> Output {
    let out = dbps()
        .args(["train", "--quiet", "--config"])
        .arg(config)
        .args(["--device", devices, "--output"])
        .arg(dir.join("run"))
        .arg("--trace-gradients")
        .arg(dir.join("trace"))
        .output()
        .expect("dbps runs");
    assert!(out.status.success(), "{devices}: {}", stderr(&out));
    out
}

/// How to start a process in a network namespace (or here), optionally as an unprivileged
/// user.
#[derive(Clone)]
struct Host {
    netns: Option<String>,
    address: String,
}

/// The dbps binary as a user without write access to the run directory (uid `nobody`), when
/// this test runs as root with `setpriv`: rank 1 started so cannot write where rank 0 writes,
/// so "only rank 0 writes files" is enforced by the system, not merely observed.
fn unprivileged() -> Option<&'static Vec<String>> {
    static COMMAND: OnceLock<Option<Vec<String>>> = OnceLock::new();
    COMMAND
        .get_or_init(|| {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
            let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
            if !(root && setpriv) {
                eprintln!("SKIPPED (in part): rank 1 runs as this user, not as `nobody` (needs root and setpriv)");
                return None;
            }
            // The build's own folder may be private to root: a copy `nobody` can run.
            let dir = std::env::temp_dir().join(format!("dbps-parallel-bin-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let binary = dir.join("dbps");
            std::fs::copy(env!("CARGO_BIN_EXE_dbps"), &binary).unwrap();
            use std::os::unix::fs::PermissionsExt;
            for path in [&dir, &binary] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            Some(
                [
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    binary.to_str().unwrap(),
                ]
                .map(String::from)
                .to_vec(),
            )
        })
        .as_ref()
}

impl Host {
    fn command(&self) -> Command {
        self.command_as(false)
    }

    /// The dbps command on this host; `nobody`: as an unprivileged user where possible.
    fn command_as(&self, nobody: bool) -> Command {
        let mut words: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            words.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        match unprivileged().filter(|_| nobody) {
            Some(command) => words.extend(command.iter().cloned()),
            None => words.push(env!("CARGO_BIN_EXE_dbps").into()),
        }
        let mut c = Command::new(&words[0]);
        c.args(&words[1..])
            .env("RUST_LOG", "warn,dbps_train=debug,dbps_parallel=debug");
        c
    }
}

/// The orchestrator, killed when dropped.
struct Orchestrator(Child);

impl Orchestrator {
    fn start(host: &Host, port: u16) -> Self {
        let child = host
            .command()
            .args(["orchestrator", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the orchestrator starts");
        Self(child)
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One rank's command line; rank 1 as `nobody` where possible (see [`unprivileged`]).
fn rank(host: &Host, r: usize, orchestrator: &str, port: u16, timeout: u64) -> Command {
    let mut c = host.command_as(r == 1);
    c.args([
        "train",
        "--quiet",
        "--nodes",
        "2",
        "--node-rank",
        &r.to_string(),
    ])
    .args(["--orchestrator", orchestrator])
    .args(["--listen", &format!("ws://{}:{port}", host.address)])
    .args(["--peer-timeout", &timeout.to_string()]);
    c
}

/// A rank running in the background, its stderr gathered by a thread.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("a rank starts");
        let log = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits at most `limit` for the process to end; its exit status and log.
    fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, self.log());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("still running after {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The parameter digest each rank logged after each step, by (epoch, step) in log order.
fn digests(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("parameters after the step"))
        .filter_map(|l| l.split("digest=").nth(1))
        .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Writes `weights` (every float tensor, in visiting order) into `model`.
fn load_floats(model: TrainedClassifier<A>, weights: &[f32]) -> TrainedClassifier<A> {
    struct Overwrite<'a>(&'a [f32], usize);
    impl ModuleMapper<A> for Overwrite<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<A, D>>) -> Param<Tensor<A, D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let n = shape.num_elements();
            let values = TensorData::new(self.0[self.1..self.1 + n].to_vec(), shape);
            self.1 += n;
            let mut value = Tensor::<A, D>::from_data(values, &tensor.device());
            if tensor.is_require_grad() {
                value = value.require_grad();
            }
            Param::from_mapped_value(id, value, mapper)
        }
    }
    let mut overwrite = Overwrite(weights, 0);
    let model = model.map(&mut overwrite);
    assert_eq!(
        overwrite.1,
        weights.len(),
        "the recorded weights fit the model"
    );
    model
}

/// One process's gradients for step `n` (1-based, over the run) of method `method`, computed
/// at `weights` on the whole global batch of that step, in the trace's layout.
fn one_process_gradients(
    config: &CheckedRun,
    method: usize,
    weights: &[f32],
    n: usize,
) -> Vec<f32> {
    let device = Default::default();
    let splits = Splits::open(config).unwrap();
    let model = build_classifier::<A>(config, method, &splits.tasks, &device).unwrap();
    let model = load_floats(
        TrainedClassifier::new(model, TrainingMonitor::default()),
        weights,
    );
    let order = EpochOrder::new(splits.train.clone(), config.train.seed);
    let plan = ShardPlan::new(config.train.batch_size, 1);
    let steps = plan.steps(splits.train.len());
    order.start_epoch((n - 1) / steps + 1);
    let batcher = ImageBatcher::for_split(splits.tasks.clone(), &splits.train);
    let loader = ShardLoader::<A>::new(order, batcher, plan, 0..1, 0, device);
    let batch = loader
        .iter()
        .nth((n - 1) % steps)
        .expect("the step's batch");
    let out = TrainStep::step(&model, batch);
    // Tests run in parallel: every reference its own folder.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("dbps-parallel-ref-{}-{unique}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut trace = GradientTrace::new(&dir).for_method("one").unwrap();
    trace.record(&model, &out.grads).unwrap();
    let values = read_f32(&GradientTrace::step_file(&dir, "one", 1));
    let _ = std::fs::remove_dir_all(&dir);
    values
}

fn read_f32(file: &Path) -> Vec<f32> {
    std::fs::read(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The gradients every step of `run`'s trace received equal, within 1e-5 of each tensor's
/// largest value, what one process computes at the same weights on the same global batch;
/// returns the number of steps compared.
fn assert_one_process_gradients(config: &CheckedRun, trace: &Path, method: usize) -> usize {
    let name = &config.methods[method].name;
    let index: Vec<TracedParam> =
        serde_json::from_str(&std::fs::read_to_string(trace.join(name).join(TRACE_INDEX)).unwrap())
            .unwrap();
    let mut n = 0;
    while GradientTrace::step_file(trace, name, n + 1).is_file() {
        n += 1;
        let got = read_f32(&GradientTrace::step_file(trace, name, n));
        let weights = read_f32(&GradientTrace::weights_file(trace, name, n));
        let want = one_process_gradients(config, method, &weights, n);
        assert_eq!(want.len(), got.len());
        for (i, p) in index.iter().enumerate() {
            let end = index.get(i + 1).map_or(want.len(), |next| next.offset);
            let (a, b) = (&want[p.offset..end], &got[p.offset..end]);
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() / scale)
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-5,
                "{name} step {n}: gradient of {} differs from one process's by {worst:e} of its largest value",
                p.name
            );
        }
    }
    assert!(n > 0, "{name}: no step recorded in {}", trace.display());
    n
}

/// Every float of a method's last checkpoint.
fn last_weights(run: &Path, method: &str) -> Vec<f32> {
    struct Floats(Vec<f32>);
    impl ModuleVisitor<Flex> for Floats {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let dir = run.join(method);
    let (manifest, trained) = MethodManifest::read_checked(&dir).unwrap();
    let device = Default::default();
    let model =
        build_classifier::<Flex>(&trained, manifest.method, &manifest.tasks, &device).unwrap();
    let model = load_weights(
        TrainedClassifier::new(model, TrainingMonitor::default()),
        &checkpoint_path(&dir, manifest.epochs),
        &device,
    )
    .unwrap();
    let mut floats = Floats(Vec::new());
    model.visit(&mut floats);
    floats.0
}

fn assert_close_weights(want: &Path, got: &Path, method: &str) {
    let (a, b) = (last_weights(want, method), last_weights(got, method));
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max);
    assert!(
        worst <= 3.0 * LR,
        "{method}: last weights differ by {worst:e} (> 3 lr)"
    );
}

/// One process on the whole batches, run once for every test of this file.
fn reference() -> &'static PathBuf {
    static REFERENCE: OnceLock<PathBuf> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = scratch("one");
        let config = write_config(&dir, &config(2, 401));
        train_one_process(&dir, &config, "cpu");
        dir
    })
}

/// Runs the two ranks of `config` on `hosts` and checks them against one process.
fn two_ranks(name: &str, hosts: [Host; 2]) {
    let reference = reference();
    let dir = scratch(name);
    let config = write_config(&dir, &config(2, 401));
    let port = free_port();
    let _orchestrator = Orchestrator::start(&hosts[0], port);
    let address = format!("ws://{}:{port}", hosts[0].address);
    let ranks: Vec<Running> = (0..2)
        .map(|r| {
            let mut c = rank(&hosts[r], r, &address, free_port(), 60);
            c.arg("--config")
                .arg(&config)
                .arg("--output")
                .arg(dir.join("run"));
            // Only rank 0 records; rank 1 is told a folder too and must not create it.
            c.arg("--trace-gradients")
                .arg(dir.join(format!("trace{}", if r == 0 { "" } else { "-rank1" })));
            Running::spawn(c)
        })
        .collect();
    let mut logs = Vec::new();
    for running in ranks {
        let (status, log) = running.finish(Duration::from_secs(900));
        assert!(status.success(), "a rank failed:\n{log}");
        logs.push(log);
    }
    // Both replicas hold the same parameters after every step.
    let (d0, d1) = (digests(&logs[0]), digests(&logs[1]));
    assert!(d0.len() >= 200, "{} steps logged:\n{}", d0.len(), logs[0]);
    assert_eq!(d0, d1, "the ranks' parameters diverged");
    // Rank 0 wrote the run; rank 1 nothing.
    assert!(
        !dir.join("trace-rank1").exists(),
        "rank 1 wrote a gradient trace"
    );
    assert!(dir.join("run/metrics.json").is_file());
    let parsed = RunConfig::from_file(&config).unwrap();
    let steps: usize = (0..parsed.methods.len())
        .map(|m| {
            assert_close_weights(
                &reference.join("run"),
                &dir.join("run"),
                &parsed.methods[m].name,
            );
            assert_one_process_gradients(&parsed, &dir.join("trace"), m)
        })
        .sum();
    assert_eq!(steps, d0.len());
}

#[test]
fn two_replicas_in_one_process_train_like_one_device() {
    let reference = reference();
    let dir = scratch("replicas");
    let config = write_config(&dir, &config(2, 401));
    train_one_process(&dir, &config, "cpu,cpu");
    let parsed = RunConfig::from_file(&config).unwrap();
    for (m, method) in parsed.methods.iter().enumerate() {
        assert_eq!(
            assert_one_process_gradients(&parsed, &dir.join("trace"), m),
            102
        );
        assert_close_weights(&reference.join("run"), &dir.join("run"), &method.name);
    }
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/metrics.json")).unwrap())
            .unwrap();
    assert!(
        metrics["device"].as_str().unwrap().contains("2 devices"),
        "{metrics}"
    );
}

#[test]
fn two_ranks_on_loopback_train_like_one_process() {
    let here = Host {
        netns: None,
        address: "127.0.0.1".into(),
    };
    two_ranks("loopback", [here.clone(), here]);
}

/// Two network namespaces joined by a veth pair: the traffic crosses a real interface.
struct Namespaces {
    names: [String; 2],
}

impl Namespaces {
    /// Creates them, or says why not (not root, no `ip netns`).
    fn create() -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let names = [format!("dbps{tag}a"), format!("dbps{tag}b")];
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let spaces = Self { names };
        let [a, b] = &spaces.names;
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        let (va, vb) = (format!("v{tag}a"), format!("v{tag}b"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", a])?;
        ip(&["link", "set", &vb, "netns", b])?;
        for (ns, dev, addr) in [(a, &va, "10.231.0.1/24"), (b, &vb, "10.231.0.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(spaces)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[test]
fn two_ranks_in_two_network_namespaces_train_like_one_process() {
    let spaces = match Namespaces::create() {
        Ok(spaces) => spaces,
        Err(why) => {
            eprintln!("SKIPPED: two hosts in network namespaces need root and `ip netns` ({why})");
            return;
        }
    };
    let hosts = [
        Host {
            netns: Some(spaces.names[0].clone()),
            address: "10.231.0.1".into(),
        },
        Host {
            netns: Some(spaces.names[1].clone()),
            address: "10.231.0.2".into(),
        },
    ];
    two_ranks("netns", hosts);
}

#[test]
fn a_killed_rank_stops_the_other_and_both_resume_to_the_uninterrupted_result() {
    let here = Host {
        netns: None,
        address: "127.0.0.1".into(),
    };
    let timeout = 10;
    let run_pair = |dir: &Path, resume: bool, orchestrator: &str| -> Vec<Running> {
        let config = dir.join("config.json");
        (0..2)
            .map(|r| {
                let mut c = rank(&here, r, orchestrator, free_port(), timeout);
                if resume {
                    c.arg("--resume").arg(dir.join("run"));
                } else {
                    c.arg("--config")
                        .arg(&config)
                        .arg("--output")
                        .arg(dir.join("run"));
                }
                Running::spawn(c)
            })
            .collect()
    };
    let port = free_port();
    let _orchestrator = Orchestrator::start(&here, port);
    let orchestrator = format!("ws://127.0.0.1:{port}");

    // Uninterrupted.
    let whole = scratch("whole");
    write_config(&whole, &config(3, 64));
    for running in run_pair(&whole, false, &orchestrator) {
        let (status, log) = running.finish(Duration::from_secs(900));
        assert!(status.success(), "{log}");
    }

    // Rank 1 killed in IPS's second epoch, once epoch 1's checkpoint is on disk.
    let dir = scratch("killed");
    write_config(&dir, &config(3, 64));
    let mut ranks = run_pair(&dir, false, &orchestrator);
    let start = Instant::now();
    while !dir.join("run/IPS/checkpoint/scheduler-1.mpk").is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint:\n{}",
            ranks[0].log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    while digests(&ranks[1].log()).len() < 11 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut victim = ranks.pop().unwrap();
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    let killed_at = Instant::now();
    let (status, log) = ranks.pop().unwrap().finish(Duration::from_secs(120));
    let waited = killed_at.elapsed();
    assert!(!status.success(), "rank 0 went on without rank 1:\n{log}");
    assert!(
        waited < Duration::from_secs(timeout + 20),
        "rank 0 stopped after {waited:?} (bound {timeout} s)"
    );
    let error = log.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    eprintln!("rank 0, {waited:?} after rank 1 was killed: {error}");
    assert!(
        error.contains("rank 1") && error.contains("--resume"),
        "{log}"
    );
    assert!(error.contains("of IPS"), "the error names the step: {log}");
    assert!(dir.join("run/IPS/checkpoint/model-1.mpk").is_file());

    // Both resume from rank 0's directory, with the same orchestrator.
    for running in run_pair(&dir, true, &orchestrator) {
        let (status, log) = running.finish(Duration::from_secs(900));
        assert!(status.success(), "{log}");
    }
    let metrics = |run: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
    };
    assert_eq!(
        outcome(&metrics(&dir.join("run"))),
        outcome(&metrics(&whole.join("run")))
    );
}

#[test]
fn a_rank_without_an_orchestrator_names_the_address_and_the_fix() {
    let dir = scratch("alone");
    let config = write_config(&dir, &config(1, 16));
    let orchestrator = format!("ws://127.0.0.1:{}", free_port());
    let here = Host {
        netns: None,
        address: "127.0.0.1".into(),
    };
    let out = rank(&here, 1, &orchestrator, free_port(), 60)
        .args(["--start-timeout", "2", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&orchestrator) && err.contains("dbps orchestrator"),
        "{err}"
    );
    assert!(
        !dir.join("run").exists(),
        "rank 1 created the run directory"
    );
}

/// A rank that stops answering without dying (SIGSTOP: its sockets still accept connections)
/// is caught by the watchdog within the peer timeout.
#[test]
fn a_hung_rank_is_caught_within_the_peer_timeout() {
    let here = Host {
        netns: None,
        address: "127.0.0.1".into(),
    };
    let dir = scratch("hung");
    let config = write_config(&dir, &config(3, 64));
    let port = free_port();
    let _orchestrator = Orchestrator::start(&here, port);
    let orchestrator = format!("ws://127.0.0.1:{port}");
    let timeout = 5;
    let mut ranks: Vec<Running> = (0..2)
        .map(|r| {
            let mut c = rank(&here, r, &orchestrator, free_port(), timeout);
            c.arg("--config")
                .arg(&config)
                .arg("--output")
                .arg(dir.join("run"));
            Running::spawn(c)
        })
        .collect();
    let start = Instant::now();
    while digests(&ranks[1].log()).len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{}",
            ranks[1].log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let victim = ranks.pop().unwrap();
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, &victim.child.id().to_string()])
            .status()
            .unwrap()
    };
    assert!(signal("-STOP").success());
    let stopped = Instant::now();
    let (status, log) = ranks.pop().unwrap().finish(Duration::from_secs(120));
    let waited = stopped.elapsed();
    signal("-KILL");
    let _ = victim.finish(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(dbps_parallel::PEER_LOST_EXIT_CODE),
        "{log}"
    );
    assert!(
        (Duration::from_secs(timeout)..Duration::from_secs(timeout + 15)).contains(&waited),
        "rank 0 stopped {waited:?} after rank 1 hung (timeout {timeout} s)"
    );
    let error = log.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    eprintln!("rank 0, {waited:?} after rank 1 stopped answering: {error}");
    assert!(error.contains("waited") && error.contains("hangs"), "{log}");
}
