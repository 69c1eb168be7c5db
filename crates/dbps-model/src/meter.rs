//! The efficiency meter (method.md §10): milliseconds and peak memory per optimizer step.
//!
//! - **Time** runs from the start of a batch's selection to the end of its optimizer step
//!   (the device synchronised first, so queued GPU kernels count), recorded by
//!   [`StepMeter::begin`] and [`StepMeter::end`]. [`EfficiencyFigures`] takes the median of
//!   the steps of an epoch without its first (warm-up: allocator growth, packing caches) and
//!   last (a short batch) step — the statistic the PyTorch harness reports.
//! - **Memory on the CPU** is heap bytes from [`TrackingAllocator`], which the binary installs
//!   as its global allocator: the peak of live bytes during the step minus those live at its
//!   start. What was allocated before the step — the decoded input batch, the weights, the
//!   optimizer state — is therefore not counted; what the step itself allocates (patches,
//!   activations, the autodiff tape, gradients, the optimizer's temporaries) is. Threads that
//!   allocate concurrently (data-loading workers) add to the figure, so the bench runs none.
//!   Without the tracking allocator the figure is absent, never zero.
//! - **Memory on a GPU** comes from the device's memory pool through a [`PoolProbe`] (burn-cuda:
//!   CubeCL's pool statistics): pool pages no tensor uses are released when the step begins, and
//!   the figure is the growth of the pool's reserved bytes by the step's end. CubeCL 0.10 reports
//!   current, not peak, figures; a pool only releases pages when told to, so that growth bounds
//!   the step's peak from above (padding and page rounding included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting live heap bytes and their peak for the step meter.
///
/// Install it in a binary with `#[global_allocator] static A: TrackingAllocator = TrackingAllocator;`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrackingAllocator;

impl TrackingAllocator {
    fn grew(size: usize) {
        let live = LIVE.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    fn shrank(size: usize) {
        LIVE.fetch_sub(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counters have no effect on memory.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        Self::shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let out = unsafe { System.realloc(ptr, layout, new_size) };
        if !out.is_null() {
            Self::shrank(layout.size());
            Self::grew(new_size);
        }
        out
    }
}

/// Live heap bytes now, when the [`TrackingAllocator`] is installed.
pub fn live_heap_bytes() -> Option<u64> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| LIVE.load(Ordering::Relaxed))
}

/// Starts a new peak at the current live level and returns that level (tracking allocator only).
pub fn reset_peak_heap() -> Option<u64> {
    let live = live_heap_bytes()?;
    PEAK.store(live, Ordering::Relaxed);
    Some(live)
}

/// The highest live heap level since the last [`reset_peak_heap`] (tracking allocator only).
pub fn peak_heap_bytes() -> Option<u64> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| PEAK.load(Ordering::Relaxed))
}

/// A GPU memory pool as the step meter reads it (see the module docs).
pub trait PoolProbe: Send + Sync + std::fmt::Debug {
    /// Releases pool pages no tensor uses, so that the next step's growth is what it needs.
    fn release_unused(&self);
    /// Bytes the pool holds reserved on the device now (`None` if the device cannot say).
    fn reserved_bytes(&self) -> Option<u64>;
}

const HEAP_METER: &str = "peak live heap bytes during the step minus those live at its start (tracking global allocator)";
const POOL_METER: &str = "growth of the device memory pool's reserved bytes during the step, unused pages released at its start (an upper bound on the step's peak)";

/// One optimizer step as the meter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepFigures {
    /// Start of selection to end of the optimizer step, in milliseconds.
    pub ms: f64,
    /// Peak bytes above the step's starting level: heap bytes on the CPU (tracking allocator
    /// only), pool growth on a GPU.
    pub peak_bytes: Option<u64>,
}

/// Median time and peak memory per optimizer step (method.md §10), first and last step excluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficiencyFigures {
    /// Steps summarised.
    pub steps: usize,
    /// Median milliseconds per optimizer step (of an even count, the mean of the middle two).
    pub ms_per_step: f64,
    /// Largest per-step peak, bytes (`None`: not measured on this device or binary).
    pub peak_step_bytes: Option<u64>,
    /// How memory was measured.
    pub memory_meter: String,
}

impl EfficiencyFigures {
    /// Summarises an epoch's steps: the first and last are dropped when at least three exist.
    pub fn from_steps(steps: &[StepFigures]) -> Option<Self> {
        let kept = match steps.len() {
            0 => return None,
            1 | 2 => steps,
            n => &steps[1..n - 1],
        };
        let ms_per_step = median(kept.iter().map(|s| s.ms).collect());
        let peaks: Option<Vec<u64>> = kept.iter().map(|s| s.peak_bytes).collect();
        let peak_step_bytes = peaks.and_then(|p| p.into_iter().max());
        Some(Self {
            steps: kept.len(),
            ms_per_step,
            peak_step_bytes,
            memory_meter: match peak_step_bytes {
                Some(_) => HEAP_METER.into(),
                None => "not measured (no tracking allocator in this binary, and no pool probe for this device)".into(),
            },
        })
    }
}

/// The median of `values` (not empty); of an even count, the mean of the middle two.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[derive(Debug, Default)]
struct Open {
    start: Option<(Instant, Option<u64>)>,
    done: Vec<StepFigures>,
}

/// Times optimizer steps and tracks their peak memory; cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct StepMeter {
    state: Arc<Mutex<Open>>,
    pool: Option<Arc<dyn PoolProbe>>,
}

impl StepMeter {
    /// A meter that reads step memory from a device pool instead of the host heap.
    pub fn with_pool(self, pool: Arc<dyn PoolProbe>) -> Self {
        Self {
            pool: Some(pool),
            ..self
        }
    }

    /// Marks the start of a step's selection.
    pub fn begin(&self) {
        let base = match &self.pool {
            Some(pool) => {
                pool.release_unused();
                pool.reserved_bytes()
            }
            None => reset_peak_heap(),
        };
        self.lock().start = Some((Instant::now(), base));
    }

    /// Marks the end of a step's optimizer update, after synchronising `device`.
    pub fn end<B: Backend>(&self, device: &B::Device) {
        // Queued kernels belong to the step; a sync failure only makes the time less exact.
        let _ = B::sync(device);
        let now = Instant::now();
        let peak = match &self.pool {
            Some(pool) => pool.reserved_bytes(),
            None => Some(PEAK.load(Ordering::Relaxed)),
        };
        let mut state = self.lock();
        if let Some((start, base)) = state.start.take() {
            state.done.push(StepFigures {
                ms: (now - start).as_secs_f64() * 1e3,
                peak_bytes: base.zip(peak).map(|(b, p)| p.saturating_sub(b)),
            });
        }
    }

    /// Every step completed so far, in order.
    pub fn steps(&self) -> Vec<StepFigures> {
        self.lock().done.clone()
    }

    /// [`EfficiencyFigures::from_steps`] of the steps so far, naming this meter's memory source.
    pub fn figures(&self) -> Option<EfficiencyFigures> {
        let mut figures = EfficiencyFigures::from_steps(&self.steps())?;
        if self.pool.is_some() && figures.peak_step_bytes.is_some() {
            figures.memory_meter = POOL_METER.into();
        }
        Some(figures)
    }

    /// Forgets completed steps (at an epoch boundary, say).
    pub fn clear(&self) {
        self.lock().done.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An optimizer that closes the meter's step once its own update is done, and can record the
/// gradients each step receives ([`crate::trace::GradientTrace`]).
#[derive(Clone)]
pub struct MeteredOptimizer<O, B: Backend> {
    inner: O,
    meter: StepMeter,
    device: B::Device,
    trace: Option<crate::trace::MethodTrace>,
}

impl<O, B: Backend> MeteredOptimizer<O, B> {
    /// Wraps `inner`; `device` is synchronised before each step's clock stops.
    pub fn new(inner: O, meter: StepMeter, device: B::Device) -> Self {
        Self {
            inner,
            meter,
            device,
            trace: None,
        }
    }

    /// The same optimizer, writing every step's gradients to `trace` first.
    pub fn with_trace(self, trace: crate::trace::MethodTrace) -> Self {
        Self {
            trace: Some(trace),
            ..self
        }
    }
}

impl<O, M, B> Optimizer<M, B> for MeteredOptimizer<O, B>
where
    O: Optimizer<M, B>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    type Record = O::Record;

    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        if let Some(trace) = &mut self.trace
            && let Err(error) = trace.record(&module, &grads)
        {
            // A debugging aid: losing it must not stop training.
            tracing::warn!(%error, "gradient trace stopped");
            self.trace = None;
        }
        let module = self.inner.step(lr, module, grads);
        self.meter.end::<B>(&self.device);
        module
    }

    fn step_multi(&mut self, lr: f64, module: M, grads: MultiGradientsParams) -> M {
        let module = self.inner.step_multi(lr, module, grads);
        self.meter.end::<B>(&self.device);
        module
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_steps_are_excluded() {
        let step = |ms, peak| StepFigures {
            ms,
            peak_bytes: Some(peak),
        };
        let figures = EfficiencyFigures::from_steps(&[
            step(100.0, 9),
            step(10.0, 4),
            step(20.0, 6),
            step(1.0, 1),
        ])
        .unwrap();
        assert_eq!(figures.steps, 2);
        assert_eq!(figures.ms_per_step, 15.0);
        assert_eq!(figures.peak_step_bytes, Some(6));
        // The median, not the mean: one slow step does not move it.
        let figures = EfficiencyFigures::from_steps(&[
            step(100.0, 9),
            step(10.0, 4),
            step(90.0, 6),
            step(11.0, 4),
            step(1.0, 1),
        ])
        .unwrap();
        assert_eq!(figures.ms_per_step, 11.0);
        assert_eq!(EfficiencyFigures::from_steps(&[]), None);
    }

    #[test]
    fn memory_is_absent_without_the_tracking_allocator() {
        let figures = EfficiencyFigures::from_steps(&[StepFigures {
            ms: 1.0,
            peak_bytes: None,
        }])
        .unwrap();
        assert_eq!(figures.peak_step_bytes, None);
        assert!(figures.memory_meter.starts_with("not measured"));
    }

    /// A pool whose reserved bytes follow a script; counts the releases asked of it.
    #[derive(Debug, Default)]
    struct ScriptedPool {
        reserved: Mutex<Vec<u64>>,
        releases: AtomicU64,
    }

    impl PoolProbe for ScriptedPool {
        fn release_unused(&self) {
            self.releases.fetch_add(1, Ordering::Relaxed);
        }

        fn reserved_bytes(&self) -> Option<u64> {
            let mut script = self.reserved.lock().unwrap();
            (!script.is_empty()).then(|| script.remove(0))
        }
    }

    #[test]
    fn pool_meter_releases_unused_pages_then_reports_growth() {
        let pool = Arc::new(ScriptedPool {
            // (begin, end) readings of three steps; the last step's device cannot say.
            reserved: Mutex::new(vec![1000, 1600, 1200, 1300]),
            ..ScriptedPool::default()
        });
        let meter = StepMeter::default().with_pool(pool.clone());
        for _ in 0..3 {
            meter.begin();
            meter.end::<burn::backend::Flex>(&Default::default());
        }
        assert_eq!(pool.releases.load(Ordering::Relaxed), 3);
        let peaks: Vec<_> = meter.steps().iter().map(|s| s.peak_bytes).collect();
        assert_eq!(peaks, [Some(600), Some(100), None]);
        // The middle step only: first and last are excluded.
        assert_eq!(meter.figures().unwrap().peak_step_bytes, Some(100));
        let two = StepMeter::default().with_pool(Arc::new(ScriptedPool {
            reserved: Mutex::new(vec![10, 50, 10, 30]),
            ..ScriptedPool::default()
        }));
        for _ in 0..2 {
            two.begin();
            two.end::<burn::backend::Flex>(&Default::default());
        }
        let figures = two.figures().unwrap();
        assert_eq!(figures.peak_step_bytes, Some(40));
        assert!(
            figures.memory_meter.contains("memory pool"),
            "{}",
            figures.memory_meter
        );
    }
}
