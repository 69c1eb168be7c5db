//! Learning rate per optimizer step: linear warm-up, then cosine decay to 0.001·lr (method.md §9).

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// Linear warm-up over `warmup` steps, then cosine decay to `0.001·peak` at step `total`.
///
/// Counted in global optimizer steps: an engine that steps the schedule once per device and
/// step (burn-train's DDP, on every worker) gets [`WarmupCosine::with_calls_per_step`], so
/// that several devices follow the schedule of one device with the same global batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    peak: f64,
    warmup: usize,
    total: usize,
    step: usize,
    calls_per_step: usize,
    calls: usize,
}

impl WarmupCosine {
    /// A schedule peaking at `peak` after `warmup` of `total` steps.
    pub fn new(peak: f64, warmup: usize, total: usize) -> Self {
        Self {
            peak,
            warmup: warmup.min(total),
            total: total.max(1),
            step: 0,
            calls_per_step: 1,
            calls: 0,
        }
    }

    /// The same schedule advancing one step every `calls` calls of [`LrScheduler::step`].
    pub fn with_calls_per_step(self, calls: usize) -> Self {
        Self {
            calls_per_step: calls.max(1),
            ..self
        }
    }

    /// The rate at 1-based step `step`.
    pub fn at(&self, step: usize) -> f64 {
        let floor = 0.001 * self.peak;
        if step <= self.warmup {
            return self.peak * step as f64 / self.warmup.max(1) as f64;
        }
        let span = (self.total - self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        floor + 0.5 * (self.peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for WarmupCosine {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        if self.calls.is_multiple_of(self.calls_per_step) {
            self.step += 1;
        }
        self.calls += 1;
        self.at(self.step)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self.calls = record * self.calls_per_step;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_peaks_and_decays_to_the_floor() {
        let s = WarmupCosine::new(1e-3, 10, 110);
        assert!((s.at(5) - 5e-4).abs() < 1e-12);
        assert!((s.at(10) - 1e-3).abs() < 1e-12);
        assert!(s.at(60) < 1e-3 && s.at(60) > 1e-6);
        assert!((s.at(110) - 1e-6).abs() < 1e-12);
        let lrs: Vec<f64> = (10..=110).map(|i| s.at(i)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    /// Four workers each stepping the schedule once per global step see the rate one device
    /// sees, and a resumed schedule continues where it stopped.
    #[test]
    fn several_calls_per_step_follow_the_one_device_schedule() {
        let mut one = WarmupCosine::new(1e-3, 3, 20);
        let mut four = WarmupCosine::new(1e-3, 3, 20).with_calls_per_step(4);
        for _ in 0..7 {
            let want = one.step();
            for _ in 0..4 {
                assert_eq!(four.step(), want);
            }
        }
        let record = LrScheduler::to_record::<burn::backend::Flex>(&four);
        let mut resumed = WarmupCosine::new(1e-3, 3, 20)
            .with_calls_per_step(4)
            .load_record::<burn::backend::Flex>(record);
        let want = one.step();
        assert_eq!(resumed.step(), want);
    }
}
