//! The efficiency meter (method.md §10): milliseconds and peak memory per optimizer step.
//!
//! - **Time** runs from the start of a batch's selection to the end of its optimizer step
//!   (the device synchronised first, so queued GPU kernels count), recorded by
//!   [`StepMeter::begin`] and [`StepMeter::end`]. [`EfficiencyFigures`] averages the steps of an
//!   epoch without its first (warm-up: allocator growth, packing caches) and last (a short
//!   batch) step.
//! - **Memory on the CPU** is heap bytes from [`TrackingAllocator`], which the binary installs
//!   as its global allocator: the peak of live bytes during the step minus those live at its
//!   start. What was allocated before the step — the decoded input batch, the weights, the
//!   optimizer state — is therefore not counted; what the step itself allocates (patches,
//!   activations, the autodiff tape, gradients, the optimizer's temporaries) is. Threads that
//!   allocate concurrently (data-loading workers) add to the figure, so the bench runs none.
//!   Without the tracking allocator the figure is absent, never zero.

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

/// One optimizer step as the meter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepFigures {
    /// Start of selection to end of the optimizer step, in milliseconds.
    pub ms: f64,
    /// Peak heap bytes above the step's starting level (CPU, tracking allocator only).
    pub peak_bytes: Option<u64>,
}

/// Mean time and peak memory per optimizer step (method.md §10), first and last step excluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficiencyFigures {
    /// Steps averaged.
    pub steps: usize,
    /// Mean milliseconds per optimizer step.
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
        let ms_per_step = kept.iter().map(|s| s.ms).sum::<f64>() / kept.len() as f64;
        let peaks: Option<Vec<u64>> = kept.iter().map(|s| s.peak_bytes).collect();
        let peak_step_bytes = peaks.and_then(|p| p.into_iter().max());
        Some(Self {
            steps: kept.len(),
            ms_per_step,
            peak_step_bytes,
            memory_meter: match peak_step_bytes {
                Some(_) => "peak live heap bytes during the step minus those live at its start (tracking global allocator)".into(),
                None => "not measured (no tracking allocator in this binary, or a GPU device)".into(),
            },
        })
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
}

impl StepMeter {
    /// Marks the start of a step's selection.
    pub fn begin(&self) {
        let base = reset_peak_heap();
        self.lock().start = Some((Instant::now(), base));
    }

    /// Marks the end of a step's optimizer update, after synchronising `device`.
    pub fn end<B: Backend>(&self, device: &B::Device) {
        // Queued kernels belong to the step; a sync failure only makes the time less exact.
        let _ = B::sync(device);
        let now = Instant::now();
        let peak = PEAK.load(Ordering::Relaxed);
        let mut state = self.lock();
        if let Some((start, base)) = state.start.take() {
            state.done.push(StepFigures {
                ms: (now - start).as_secs_f64() * 1e3,
                peak_bytes: base.map(|b| peak.saturating_sub(b)),
            });
        }
    }

    /// Every step completed so far, in order.
    pub fn steps(&self) -> Vec<StepFigures> {
        self.lock().done.clone()
    }

    /// Forgets completed steps (at an epoch boundary, say).
    pub fn clear(&self) {
        self.lock().done.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An optimizer that closes the meter's step once its own update is done.
#[derive(Clone)]
pub struct MeteredOptimizer<O, B: Backend> {
    inner: O,
    meter: StepMeter,
    device: B::Device,
}

impl<O, B: Backend> MeteredOptimizer<O, B> {
    /// Wraps `inner`; `device` is synchronised before each step's clock stops.
    pub fn new(inner: O, meter: StepMeter, device: B::Device) -> Self {
        Self {
            inner,
            meter,
            device,
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
}
