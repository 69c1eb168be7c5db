//! One rank of a training run spread over several processes or machines: its membership in
//! burn-collective's global collective, the all-reduce every exchange goes through, and the
//! watchdog that stops the rank when another stops answering.
//!
//! burn-collective has no broadcast or gather between machines (0.21 leaves them
//! unimplemented), so both are built on its all-reduce: a rank contributes its values in its
//! own slot and zeros elsewhere, and the sum hands every rank every slot, bit for bit.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};

use crate::{ParallelError, Result};

/// The exit status of a rank stopped because another rank stopped answering.
pub const PEER_LOST_EXIT_CODE: i32 = 3;

/// Bytes each rank may announce about itself in the start-up exchange.
const ANNOUNCE_BYTES: usize = 240;

/// Bytes of text (a run directory's path) rank 0 may hand the others.
const TEXT_BYTES: usize = 4096;

/// Where one rank sits in a multi-process run, as its command line gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Ranks in the run, N.
    pub nodes: usize,
    /// This rank, 0 … N − 1; rank 0 writes every file.
    pub rank: usize,
    /// The orchestrator every rank registers with, `ws://HOST:PORT`.
    pub orchestrator: String,
    /// This rank's own address, `ws://ADDR:PORT`: the other ranks download its tensors there.
    pub listen: String,
    /// How long a rank waits in an exchange for the others before it stops with an error.
    pub peer_timeout: Duration,
    /// How long a rank waits at start-up for every rank to register.
    pub start_timeout: Duration,
}

/// `HOST:PORT` of a `ws://HOST:PORT` address.
fn host_port(address: &str) -> Option<(String, u16)> {
    let rest = address.strip_prefix("ws://")?.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.trim_matches(['[', ']']).to_string(), port))
}

fn socket_addrs(address: &str) -> Vec<SocketAddr> {
    host_port(address)
        .and_then(|(host, port)| (host.as_str(), port).to_socket_addrs().ok())
        .map(Iterator::collect)
        .unwrap_or_default()
}

fn fault(reason: impl Into<String>) -> ParallelError {
    ParallelError::Collective {
        reason: reason.into(),
    }
}

impl NodeSpec {
    /// Checks the options before anything starts, naming each bad one and its fix.
    pub fn check(&self) -> Result<()> {
        if self.nodes < 2 {
            return Err(fault(format!(
                "--nodes {} must be at least 2 (a single process trains without --nodes)",
                self.nodes
            )));
        }
        if self.rank >= self.nodes {
            return Err(fault(format!(
                "--node-rank {} must be below --nodes {} (ranks count from 0)",
                self.rank, self.nodes
            )));
        }
        for (option, address) in [
            ("--orchestrator", &self.orchestrator),
            ("--listen", &self.listen),
        ] {
            if host_port(address).is_none() {
                return Err(fault(format!(
                    "{option} {address} is not an address of the form ws://HOST:PORT (e.g. ws://10.0.0.1:3000)"
                )));
            }
            if socket_addrs(address).is_empty() {
                return Err(fault(format!(
                    "{option} {address}: the host name does not resolve; use an IP address or a name this machine can resolve"
                )));
            }
        }
        if self.peer_timeout.is_zero() || self.start_timeout.is_zero() {
            return Err(fault("--peer-timeout must be at least 1 second"));
        }
        Ok(())
    }

    /// The port this rank serves its tensors on.
    fn data_port(&self) -> u16 {
        host_port(&self.listen).map_or(0, |(_, port)| port)
    }
}

/// An exchange that has waited too long, and what was found about the other ranks.
#[derive(Debug, Clone)]
pub struct PeerLost {
    /// This rank.
    pub rank: usize,
    /// What this rank was doing (step, epoch, method).
    pub during: String,
    /// How long it waited.
    pub waited: Duration,
    /// Which ranks no longer accept connections, and what to do.
    pub diagnosis: String,
}

impl std::fmt::Display for PeerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rank {} waited {} s for the other ranks during {}: {}",
            self.rank,
            self.waited.as_secs(),
            self.during,
            self.diagnosis
        )
    }
}

struct Armed {
    since: Instant,
    limit: Duration,
    during: String,
}

/// Watches the exchange in progress; when one outlasts its limit it diagnoses the other ranks
/// and ends the process: a blocked all-reduce cannot be cancelled, and a rank that waits
/// forever would hold its GPU and its job slot for nothing.
struct Watchdog {
    armed: Arc<Mutex<Option<Armed>>>,
}

impl Watchdog {
    fn start(rank: usize, known: Arc<Mutex<Known>>, orchestrator: String) -> Self {
        let armed: Arc<Mutex<Option<Armed>>> = Arc::default();
        let watched = Arc::clone(&armed);
        let spawned = std::thread::Builder::new()
            .name("dbps-peer-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let expired = {
                        let armed = watched.lock().unwrap_or_else(|e| e.into_inner());
                        armed
                            .as_ref()
                            .filter(|a| a.since.elapsed() > a.limit)
                            .map(|a| (a.during.clone(), a.since.elapsed()))
                    };
                    if let Some((during, waited)) = expired {
                        let known = known.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let lost = PeerLost {
                            rank,
                            during,
                            waited,
                            diagnosis: diagnose(rank, &known.peers, &orchestrator, &known.run_dir),
                        };
                        tracing::error!(%lost, "stopping this rank");
                        eprintln!("error: {lost}");
                        std::process::exit(PEER_LOST_EXIT_CODE);
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the peer watchdog: a lost rank will not be detected");
        }
        Self { armed }
    }

    fn arm(&self, during: String, limit: Duration) -> WatchGuard<'_> {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Armed {
            since: Instant::now(),
            limit,
            during,
        });
        WatchGuard(self)
    }
}

/// Disarms the watchdog when the exchange returns.
struct WatchGuard<'a>(&'a Watchdog);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        *self.0.armed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Which ranks are gone: a rank whose address refuses connections has stopped; if every rank
/// still accepts them, one of them hangs or is far slower than the rest.
///
/// Each address is probed up to four times, a quarter of a second apart: a process that was
/// just killed closes its connections (which is how the loss is noticed) a moment before its
/// listening socket, so a single probe can still be accepted. A hung rank accepts them all.
fn diagnose(rank: usize, peers: &[String], orchestrator: &str, run_dir: &str) -> String {
    if peers.is_empty() {
        return format!(
            "not every rank registered with the orchestrator at {orchestrator}; start every rank 0 … N−1 with the same --nodes and --orchestrator (and the orchestrator first, with `dbps orchestrator`)"
        );
    }
    let gone: Vec<String> = peers
        .iter()
        .enumerate()
        .filter(|&(r, _)| r != rank)
        .filter(|(_, address)| {
            (0..4).any(|probe| {
                if probe > 0 {
                    std::thread::sleep(Duration::from_millis(250));
                }
                !socket_addrs(address)
                    .iter()
                    .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
            })
        })
        .map(|(r, address)| format!("rank {r} ({address})"))
        .collect();
    if gone.is_empty() {
        "every other rank still accepts connections, so one hangs or is much slower than the rest; check their logs, or raise --peer-timeout if its steps take that much longer".into()
    } else {
        format!(
            "{} no longer answer{} (the process has stopped); the last complete checkpoint is intact: restart every rank with `dbps train --resume {run_dir}` and the same --nodes options",
            gone.join(", "),
            if gone.len() == 1 { "s" } else { "" }
        )
    }
}

/// What a rank learns about the run once it started: every rank's address (by rank) and the
/// run directory, for the error that names a lost rank and the fix.
#[derive(Debug, Clone)]
struct Known {
    peers: Vec<String>,
    run_dir: String,
}

/// This process's membership in a multi-process run, on backend `B` (the training backend's
/// inner backend: burn-collective works below autodiff).
pub struct CollectiveSession<B: Backend> {
    spec: NodeSpec,
    device: B::Device,
    known: Arc<Mutex<Known>>,
    watchdog: Watchdog,
    reduced_bytes: AtomicU64,
    exchanges: AtomicU64,
}

impl<B: Backend> std::fmt::Debug for CollectiveSession<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectiveSession")
            .field("spec", &self.spec)
            .finish()
    }
}

/// FNV-1a of `bytes`: a digest for consistency checks between ranks (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<B: Backend> CollectiveSession<B> {
    /// Joins the run: checks that this rank can serve on its address and reach the
    /// orchestrator, registers (waiting for every rank, at most `start_timeout`), then has
    /// every rank announce its address and `fingerprint` (what must agree: the config, the
    /// dataset) and checks that they agree with rank 0's.
    pub fn join(spec: NodeSpec, device: B::Device, fingerprint: u64) -> Result<Self> {
        spec.check()?;
        let port = spec.data_port();
        if let Err(e) = TcpListener::bind(("0.0.0.0", port)) {
            return Err(fault(format!(
                "--listen {}: this rank cannot serve on port {port} ({e}); choose a free port",
                spec.listen
            )));
        }
        wait_for_orchestrator(&spec)?;
        let known = Arc::new(Mutex::new(Known {
            peers: Vec::new(),
            run_dir: "RUN_DIR".into(),
        }));
        let watchdog = Watchdog::start(spec.rank, Arc::clone(&known), spec.orchestrator.clone());
        let parse = |address: &str| {
            address
                .parse::<burn_communication::Address>()
                .map_err(|e| fault(format!("{address}: {e}")))
        };
        let config = CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(spec.nodes as u32)
            .with_global_address(parse(&spec.orchestrator)?)
            .with_node_address(parse(&spec.listen)?)
            .with_data_service_port(port)
            // The tree works for tensors of any shape; the ring needs a dimension at least as
            // long as the number of ranks, which every exchange here pads to anyway.
            .with_global_all_reduce_strategy(AllReduceStrategy::Ring);
        {
            let _watch = watchdog.arm(
                format!("start-up (registering with {})", spec.orchestrator),
                spec.start_timeout,
            );
            tracing::info!(rank = spec.rank, nodes = spec.nodes, orchestrator = %spec.orchestrator, listen = %spec.listen, "registering with the orchestrator");
            burn_collective::register::<B>(PeerId(spec.rank as u32), device.clone(), config)
                .map_err(|e| {
                    fault(format!(
                        "registering with the orchestrator at {} failed ({e:?}); check that every rank has its own --node-rank and --listen, and the same --nodes",
                        spec.orchestrator
                    ))
                })?;
        }
        let session = Self {
            spec,
            device,
            known,
            watchdog,
            reduced_bytes: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
        };
        session.check_members(fingerprint)?;
        tracing::info!(
            rank = session.spec.rank,
            nodes = session.spec.nodes,
            "every rank joined"
        );
        Ok(session)
    }

    /// Every rank announces `rank|listen|fingerprint`; a missing or doubled rank, or a
    /// fingerprint other than rank 0's, is an error naming the rank.
    fn check_members(&self, fingerprint: u64) -> Result<()> {
        let mine = format!("{}|{}|{fingerprint:016x}", self.spec.rank, self.spec.listen);
        let announced = self.gather_bytes(
            mine.as_bytes(),
            ANNOUNCE_BYTES,
            "start-up (announcing the ranks)",
        )?;
        let mut addresses = Vec::with_capacity(self.spec.nodes);
        let mut prints = Vec::with_capacity(self.spec.nodes);
        for (rank, bytes) in announced.iter().enumerate() {
            let text = bytes
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("");
            let fields: Vec<&str> = text.splitn(3, '|').collect();
            match fields.as_slice() {
                [r, address, print] if r.parse() == Ok(rank) => {
                    addresses.push(address.to_string());
                    prints.push(print.to_string());
                }
                _ => {
                    return Err(fault(format!(
                        "rank {rank} did not announce itself: two processes were given the same --node-rank, or a rank runs another dbps version; give each process its own rank 0 … {}",
                        self.spec.nodes - 1
                    )));
                }
            }
        }
        if let Some(rank) = prints.iter().position(|p| *p != prints[0]) {
            return Err(fault(format!(
                "rank {rank} runs another config or dataset than rank 0 (fingerprint {} vs {}); start every rank with the same --config (or --resume directory) and the same data",
                prints[rank], prints[0]
            )));
        }
        self.known.lock().unwrap_or_else(|e| e.into_inner()).peers = addresses;
        Ok(())
    }

    /// Names the run directory in the errors that tell how to resume.
    pub fn set_run_dir(&self, run_dir: &std::path::Path) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).run_dir =
            run_dir.display().to_string();
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.spec.rank
    }

    /// Ranks in the run.
    pub fn nodes(&self) -> usize {
        self.spec.nodes
    }

    /// The device this rank's exchanges run on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The options this rank was started with.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Bytes all-reduced so far (values sent into exchanges, 4 per value) and the number of
    /// exchanges.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.reduced_bytes.load(Ordering::Relaxed),
            self.exchanges.load(Ordering::Relaxed),
        )
    }

    /// The element-wise sum over every rank of `values` (the same length on every rank),
    /// waiting at most the peer timeout; `during` says what the exchange is for (in the error
    /// that stops the rank when another stops answering).
    pub fn all_reduce_sum(&self, values: Vec<f32>, during: &str) -> Result<Vec<f32>> {
        let len = values.len();
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(values, [len]), &self.device);
        let summed = self.all_reduce_tensor(tensor, during)?;
        summed.into_data().into_vec::<f32>().map_err(|e| {
            fault(format!(
                "{during}: the reduced values cannot be read ({e:?})"
            ))
        })
    }

    /// [`CollectiveSession::all_reduce_sum`] on a tensor already on this rank's device.
    pub fn all_reduce_tensor(&self, tensor: Tensor<B, 1>, during: &str) -> Result<Tensor<B, 1>> {
        let [len] = tensor.dims();
        // The ring splits the tensor into one slice per rank: pad it to at least that long.
        let padded = if len < self.spec.nodes {
            Tensor::cat(
                vec![tensor, Tensor::zeros([self.spec.nodes - len], &self.device)],
                0,
            )
        } else {
            tensor
        };
        let bytes = 4 * padded.dims()[0] as u64;
        let summed = {
            let _watch = self
                .watchdog
                .arm(during.to_string(), self.spec.peer_timeout);
            burn_collective::all_reduce::<B>(
                PeerId(self.spec.rank as u32),
                padded.into_primitive().tensor(),
                ReduceOperation::Sum,
            )
            .map_err(|e| {
                let known = self.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
                fault(format!(
                    "rank {} lost the other ranks during {during} ({e:?}): {}",
                    self.spec.rank,
                    diagnose(
                        self.spec.rank,
                        &known.peers,
                        &self.spec.orchestrator,
                        &known.run_dir
                    )
                ))
            })?
        };
        self.reduced_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        let summed = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed));
        Ok(if len < self.spec.nodes {
            summed.narrow(0, 0, len)
        } else {
            summed
        })
    }

    /// Rank 0's `values` on every rank (others pass theirs only for the length): zeros from
    /// every other rank leave rank 0's values bit for bit.
    pub fn broadcast(&self, values: Vec<f32>, during: &str) -> Result<Vec<f32>> {
        let values = if self.spec.rank == 0 {
            values
        } else {
            vec![0.0; values.len()]
        };
        self.all_reduce_sum(values, during)
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self, during: &str) -> Result<()> {
        self.all_reduce_sum(vec![1.0], during).map(|_| ())
    }

    /// Rank 0's `text` on every rank (what the others pass is ignored).
    pub fn broadcast_text(&self, text: &str, during: &str) -> Result<String> {
        let mine = if self.spec.rank == 0 {
            text.as_bytes()
        } else {
            &[]
        };
        let gathered = self.gather_bytes(mine, TEXT_BYTES, during)?;
        gathered
            .into_iter()
            .next()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| fault(format!("{during}: rank 0's text did not arrive intact")))
    }

    /// Every rank's `bytes` (at most `capacity` of them), by rank; `None` for a slot that no
    /// rank filled correctly (a missing rank, or two claiming the same one).
    pub fn gather_bytes(
        &self,
        bytes: &[u8],
        capacity: usize,
        during: &str,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // Slot layout: length, the bytes, a check value; every value is a small integer, so
        // f32 sums are exact.
        let width = capacity + 2;
        if bytes.len() > capacity {
            return Err(fault(format!(
                "{during}: {} bytes exceed the {capacity} a rank may send; use a shorter address or path",
                bytes.len()
            )));
        }
        let mut values = vec![0f32; width * self.spec.nodes];
        let slot = &mut values[self.spec.rank * width..][..width];
        slot[0] = bytes.len() as f32;
        for (v, &b) in slot[1..].iter_mut().zip(bytes) {
            *v = f32::from(b);
        }
        slot[width - 1] = (fnv1a(bytes) % 65_521) as f32;
        let summed = self.all_reduce_sum(values, during)?;
        Ok(summed
            .chunks(width)
            .map(|slot| {
                let len = slot[0] as usize;
                if slot[0].fract() != 0.0 || len > capacity {
                    return None;
                }
                let bytes: Option<Vec<u8>> = slot[1..=len]
                    .iter()
                    .map(|&v| (v.fract() == 0.0 && (0.0..256.0).contains(&v)).then_some(v as u8))
                    .collect();
                bytes.filter(|b| (fnv1a(b) % 65_521) as f32 == slot[width - 1])
            })
            .collect())
    }

    /// Leaves the collective (the orchestrator forgets this rank).
    pub fn finish(&self) {
        let _watch = self
            .watchdog
            .arm("leaving the collective".into(), self.spec.peer_timeout);
        if let Err(e) = burn_collective::finish_collective::<B>(PeerId(self.spec.rank as u32)) {
            tracing::warn!(error = ?e, "leaving the collective failed");
        }
    }
}

/// Waits (at most the start timeout) until the orchestrator's port accepts connections, so
/// that a wrong address or a missing orchestrator is named instead of retried forever.
fn wait_for_orchestrator(spec: &NodeSpec) -> Result<()> {
    let start = Instant::now();
    let addresses = socket_addrs(&spec.orchestrator);
    let mut last = String::new();
    while start.elapsed() < spec.start_timeout.min(Duration::from_secs(60)) {
        for address in &addresses {
            match TcpStream::connect_timeout(address, Duration::from_secs(2)) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(fault(format!(
        "cannot reach the orchestrator at {} ({last}) for {} s; start it first with `dbps orchestrator --port PORT` on that host, and check --orchestrator and the firewall",
        spec.orchestrator,
        start.elapsed().as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            nodes: 2,
            rank: 1,
            orchestrator: "ws://127.0.0.1:3000".into(),
            listen: "ws://127.0.0.1:3001".into(),
            peer_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(600),
        }
    }

    #[test]
    fn node_options_are_checked_with_their_fix() {
        assert!(spec().check().is_ok());
        let bad = |f: fn(&mut NodeSpec), says: &str| {
            let mut s = spec();
            f(&mut s);
            let err = s.check().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        };
        bad(|s| s.rank = 2, "--node-rank 2 must be below --nodes 2");
        bad(|s| s.nodes = 1, "--nodes 1 must be at least 2");
        bad(
            |s| s.orchestrator = "127.0.0.1:3000".into(),
            "ws://HOST:PORT",
        );
        bad(|s| s.listen = "ws://127.0.0.1".into(), "--listen");
        bad(|s| s.listen = "ws://127.0.0.1:0".into(), "--listen");
    }

    #[test]
    fn a_missing_orchestrator_is_named_with_the_fix() {
        // A port nothing listens on: bind one, note it, close it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = NodeSpec {
            orchestrator: format!("ws://127.0.0.1:{port}"),
            start_timeout: Duration::from_secs(1),
            ..spec()
        };
        let err = wait_for_orchestrator(&spec).unwrap_err().to_string();
        assert!(
            err.contains(&spec.orchestrator) && err.contains("dbps orchestrator"),
            "{err}"
        );
    }
}
