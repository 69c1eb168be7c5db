//! The measurements: training steps through the production step and optimizer wrapper,
//! no-gradient encoder throughput, and inference per batch.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use burn_train::{Interrupter, TrainStep};
use dbps_data::TaskKind;
use dbps_encoder::{NativeEncoder, PatchEncoder};
use dbps_model::PatchClassifier;
use dbps_model::batch::{BatchImages, BatchKey, ImageBatch, SingleImage, TaskTargets};
use dbps_model::classifier::SelectionEngine;
use dbps_model::meter::{
    MeteredOptimizer, StepMeter, live_heap_bytes, median, peak_heap_bytes, reset_peak_heap,
};
use dbps_model::step::{TrainedClassifier, TrainingMonitor};
use dbps_parallel::ExchangeLayout;
use dbps_tiling::{HostImages, HostPixels, PixelNorm};
use dbps_train::backend::pool_probe;
use dbps_train::build::build_classifier;
use serde::{Deserialize, Serialize};

use super::resident::Resident;
use super::scenario::{Geometry, Method};

type CpuAd = Autodiff<Flex>;

/// Images per batch in every measurement (the papers' protocol).
pub const BATCH: usize = 16;

/// Patches per call of the encoder-throughput rows (the harness's `--enc-batch`).
pub const ENCODER_BATCH: usize = 64;

/// A classifier for `geometry` and `method` with fresh weights, selection on `engine`: the
/// run config they describe, checked and built by the engine's builder as `dbps train` builds.
fn classifier<B: Backend>(
    geometry: &Geometry,
    method: &Method,
    engine: SelectionEngine,
    device: &B::Device,
) -> Result<PatchClassifier<B>> {
    let run = geometry.run_config(method, engine).check()?;
    Ok(build_classifier::<B>(&run, 0, &geometry.tasks, device)?)
}

/// A batch of random images (uniform [0, 1] for one channel, standard normal otherwise: what
/// MNIST canvases and ImageNet-normalised photos look like) with random targets.
fn random_batch<B: Backend>(geometry: &Geometry, device: &B::Device) -> ImageBatch<B> {
    let shape = [BATCH, geometry.channels, geometry.height, geometry.width];
    let distribution = if geometry.channels == 1 {
        Distribution::Uniform(0.0, 1.0)
    } else {
        Distribution::Normal(0.0, 1.0)
    };
    // Kept in host memory as the data loaders keep them: selection uploads chunks only.
    let values: Vec<f32> = Tensor::<B, 4>::random(shape, distribution, device)
        .into_data()
        .iter::<f32>()
        .collect();
    let host = |values: Vec<f32>, shape: [usize; 4]| {
        HostImages::new(
            HostPixels::F32(values),
            shape,
            PixelNorm::identity(shape[1]),
        )
        .expect("pixel count matches the shape it was drawn with")
    };
    let images = if geometry.bags {
        let per_bag = values.len() / BATCH;
        let bag_shape = [1, shape[1], shape[2], shape[3]];
        BatchImages::Separate {
            images: values
                .chunks(per_bag)
                .map(|bag| SingleImage::Host(Arc::new(host(bag.to_vec(), bag_shape))))
                .collect(),
            device: device.clone(),
        }
    } else {
        BatchImages::host(host(values, shape), device)
    };
    let targets = geometry
        .tasks
        .iter()
        .map(|task| match task.kind {
            TaskKind::Softmax => TaskTargets::Classes(
                Tensor::<B, 1>::random(
                    [BATCH],
                    Distribution::Uniform(0.0, task.classes as f64),
                    device,
                )
                .int()
                .clamp(0, task.classes as i64 - 1),
            ),
            TaskKind::MultiLabel => TaskTargets::MultiHot(Tensor::<B, 2>::random(
                [BATCH, task.classes],
                Distribution::Bernoulli(0.5),
                device,
            )),
        })
        .collect();
    ImageBatch {
        images,
        targets,
        key: BatchKey::whole(BATCH),
    }
}

/// Time and memory of training steps (method.md §10), measured in a process of their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Geometry name.
    pub geometry: String,
    /// Method name.
    pub method: String,
    /// Patches per image N.
    pub n: usize,
    /// Salient patches M.
    pub m: usize,
    /// Patches per selection iteration L (the harness's I).
    pub l: usize,
    /// Patch side.
    pub patch: usize,
    /// Images per batch.
    pub batch: usize,
    /// Selection engine.
    pub engine: String,
    /// Trainable parameters: a data-parallel step all-reduces 4 bytes of gradient per
    /// parameter (docs/distributed.md).
    pub parameters: usize,
    /// Milliseconds of the warm-up step (not in the median).
    pub warmup_ms: Vec<f64>,
    /// Milliseconds of every timed step, in order.
    pub timed_ms: Vec<f64>,
    /// Median of `timed_ms`: the harness's statistic.
    pub ms_median: f64,
    /// The largest heap peak above a timed step's start (tracking allocator): what the step
    /// itself allocates.
    pub peak_heap_step_bytes: Option<u64>,
    /// Growth of the process's peak resident set from before the warm-up step to the end of
    /// the last timed step: the harness's `peak_rss_delta_mb`, same meter.
    pub peak_rss_growth_bytes: u64,
    /// The highest heap level during the steps above the process's heap before the model was
    /// built: weights, optimizer state, the batch and the step's own peak (method.md §10).
    pub inputs_included_bytes: Option<u64>,
}

/// Why a runner has no model: a step unwound between taking it and putting it back.
const MODEL_LOST: &str = "the model was lost by a step that did not finish; start a new runner";

/// One method's model, optimizer, meter and batch, stepped on demand.
struct StepRunner<B: AutodiffBackend> {
    model: Option<TrainedClassifier<B>>,
    optimizer: MeteredOptimizer<
        burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, TrainedClassifier<B>, B>,
        B,
    >,
    monitor: TrainingMonitor,
    batch: ImageBatch<B>,
}

impl<B: AutodiffBackend> StepRunner<B> {
    fn new(
        geometry: &Geometry,
        method: &Method,
        engine: SelectionEngine,
        device: &B::Device,
    ) -> Result<Self> {
        B::seed(device, 0);
        let monitor = match pool_probe::<B>(device) {
            Some(pool) => TrainingMonitor::new(Interrupter::new()).with_pool(pool),
            None => TrainingMonitor::new(Interrupter::new()),
        };
        let model = TrainedClassifier::new(
            classifier::<B>(geometry, method, engine, device)?,
            monitor.clone(),
        );
        let optimizer = MeteredOptimizer::new(
            AdamWConfig::new().with_weight_decay(0.1).init(),
            monitor.meter().clone(),
            device.clone(),
        );
        Ok(Self {
            model: Some(model),
            optimizer,
            monitor,
            batch: random_batch::<B>(geometry, device),
        })
    }

    fn parameters(&self, tasks: usize) -> Result<usize> {
        let model = self.model.as_ref().context(MODEL_LOST)?;
        Ok(ExchangeLayout::of(model, tasks, 1).parameters())
    }

    /// One training step and optimizer step, metered; a step that failed is an error.
    fn step(&mut self) -> Result<()> {
        let model = self.model.take().context(MODEL_LOST)?;
        let out = TrainStep::step(&model, self.batch.clone());
        self.model = Some(self.optimizer.step(1e-4, model, out.grads));
        match self.monitor.take_failure() {
            Some(error) => Err(anyhow::anyhow!(error)),
            None => Ok(()),
        }
    }
}

/// One warm-up step and `timed` timed steps of one method on one random batch, with the
/// step meter (time, heap) and the process's resident set (the harness's meter).
pub fn train_steps<B: AutodiffBackend>(
    geometry: &Geometry,
    method: &Method,
    engine: SelectionEngine,
    timed: usize,
    device: &B::Device,
) -> Result<StepResult> {
    const WARMUP: usize = 1;
    anyhow::ensure!(timed >= 1, "train_steps: time at least one step");
    let heap_base = live_heap_bytes();
    let mut runner = StepRunner::<B>::new(geometry, method, engine, device)?;
    let parameters = runner.parameters(geometry.tasks.len())?;
    let before = Resident::baseline()?;
    let mut heap_top = None;
    for _ in 0..WARMUP + timed {
        runner.step()?;
        heap_top = heap_top.max(peak_heap_bytes());
    }
    let after = Resident::now()?;
    let steps = runner.monitor.meter().steps();
    anyhow::ensure!(
        steps.len() == WARMUP + timed,
        "the step meter saw {} steps of {}",
        steps.len(),
        WARMUP + timed
    );
    let (warmup, timed) = steps.split_at(WARMUP);
    let timed_ms: Vec<f64> = timed.iter().map(|s| s.ms).collect();
    let peaks: Option<Vec<u64>> = timed.iter().map(|s| s.peak_bytes).collect();
    Ok(StepResult {
        geometry: geometry.name.clone(),
        method: method.name.clone(),
        n: geometry.patches(),
        m: method.m,
        l: method.l,
        patch: geometry.patch,
        batch: BATCH,
        engine: format!("{engine:?}"),
        parameters,
        warmup_ms: warmup.iter().map(|s| s.ms).collect(),
        ms_median: median(timed_ms.clone()),
        timed_ms,
        peak_heap_step_bytes: peaks.and_then(|p| p.into_iter().max()),
        peak_rss_growth_bytes: after.peak_growth_since(&before),
        inputs_included_bytes: heap_top
            .zip(heap_base)
            .map(|(top, base)| top.saturating_sub(base)),
    })
}

/// The no-gradient selection phase alone: one batch through `forward_eval` (selection embeds
/// every candidate L at a time in inference mode; the M winners' embeddings come from that
/// same pass, so nothing is re-embedded) in a process of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectionResult {
    /// Geometry name.
    pub geometry: String,
    /// Method name.
    pub method: String,
    /// Patches per image N.
    pub n: usize,
    /// Milliseconds of the call.
    pub ms: f64,
    /// Heap peak above the level before the call (tracking allocator).
    pub peak_heap_bytes: Option<u64>,
    /// Growth of the peak resident set from before the call.
    pub peak_rss_growth_bytes: u64,
}

/// [`SelectionResult`] of one batch of 16 random images of `geometry`.
pub fn selection_phase<B: Backend>(
    geometry: &Geometry,
    method: &Method,
    device: &B::Device,
) -> Result<SelectionResult> {
    let model = classifier::<B>(geometry, method, SelectionEngine::Auto, device)?;
    let batch = random_batch::<B>(geometry, device);
    let before = Resident::baseline()?;
    let base = reset_peak_heap();
    let start = Instant::now();
    let out = model.forward_eval(&batch.images)?;
    let _ = out.logits[0].clone().into_data();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let peak = peak_heap_bytes();
    let after = Resident::now()?;
    Ok(SelectionResult {
        geometry: geometry.name.clone(),
        method: method.name.clone(),
        n: geometry.patches(),
        ms,
        peak_heap_bytes: peak.zip(base).map(|(p, b)| p.saturating_sub(b)),
        peak_rss_growth_bytes: after.peak_growth_since(&before),
    })
}

/// No-gradient encoder throughput.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderResult {
    /// Geometry whose encoder and patch size this is.
    pub geometry: String,
    /// `native`: the ResNet frozen onto dbps-kernels (channels-last, BatchNorm folded,
    /// Winograd), what selection runs; `module`: the Burn module's forward (channels-first
    /// tensors, Burn's pooling and element-wise ops, convolutions routed to dbps-kernels).
    pub engine: String,
    /// Patches per call.
    pub batch: usize,
    /// Median patches per second.
    pub patches_per_s: f64,
    /// Calls timed.
    pub calls: usize,
}

/// Median throughput of `embed` on a batch of 64 patches, over about `seconds`.
pub fn encoder_throughput<B: Backend>(
    geometry: &Geometry,
    native: bool,
    seconds: f64,
    device: &B::Device,
) -> Result<EncoderResult> {
    let encoder = geometry.encoder.init::<B>(device)?;
    let shape = [
        ENCODER_BATCH,
        geometry.channels,
        geometry.patch,
        geometry.patch,
    ];
    let patches = Tensor::<B, 4>::random(shape, Distribution::Uniform(0.0, 1.0), device);
    let frozen = if native {
        Some(NativeEncoder::freeze(&encoder).context("no native path for this encoder")??)
    } else {
        None
    };
    let embed = |p: Tensor<B, 4>| match &frozen {
        Some(f) => f.embed(p),
        None => encoder.embed(p),
    };
    for _ in 0..2 {
        embed(patches.clone()).into_data();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 3 {
        let t = Instant::now();
        embed(patches.clone()).into_data();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(EncoderResult {
        geometry: geometry.name.clone(),
        engine: if native { "native" } else { "module" }.into(),
        batch: ENCODER_BATCH,
        patches_per_s: ENCODER_BATCH as f64 / times[times.len() / 2],
        calls: times.len(),
    })
}

/// Evaluation cost of one batch of 16 (the paper's Table 3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferenceResult {
    /// Geometry name.
    pub geometry: String,
    /// Method name.
    pub method: String,
    /// Median milliseconds per batch (the warm-up call excluded).
    pub ms_per_batch: f64,
    /// Peak heap bytes above the level before the call (tracking allocator).
    pub peak_bytes: Option<u64>,
    /// Batches timed.
    pub batches: usize,
}

/// Median time and peak memory of `forward_eval` on a batch of 16, over `batches` calls after
/// one warm-up call.
pub fn inference_cost<B: Backend>(
    geometry: &Geometry,
    method: &Method,
    batches: usize,
    device: &B::Device,
) -> Result<InferenceResult> {
    anyhow::ensure!(batches >= 1, "inference_cost: time at least one batch");
    let model = classifier::<B>(geometry, method, SelectionEngine::Auto, device)?;
    let batch = random_batch::<B>(geometry, device);
    let _ = model.forward_eval(&batch.images)?.logits[0]
        .clone()
        .into_data();
    // The training-step meter times and measures each call the same way (heap or device pool).
    let meter = match pool_probe::<B>(device) {
        Some(pool) => StepMeter::default().with_pool(pool),
        None => StepMeter::default(),
    };
    for _ in 0..batches {
        meter.begin();
        let out = model.forward_eval(&batch.images)?;
        let _ = out.logits[0].clone().into_data();
        meter.end::<B>(device);
    }
    let calls = meter.steps();
    let peaks: Option<Vec<u64>> = calls.iter().map(|c| c.peak_bytes).collect();
    Ok(InferenceResult {
        geometry: geometry.name.clone(),
        method: method.name.clone(),
        ms_per_batch: median(calls.iter().map(|c| c.ms).collect()),
        peak_bytes: peaks.and_then(|p| p.into_iter().max()),
        batches,
    })
}

/// One gradient pass alone, for profiling: forward and backward milliseconds, and the heap's
/// peak above its level before the forward.
#[derive(Debug, Clone, Copy)]
pub struct GradientPass {
    /// Forward through the encoder (train mode) and the sum, ms.
    pub forward_ms: f64,
    /// Backward, ms.
    pub backward_ms: f64,
    /// Heap peak above the level before the forward, MB (tracking allocator only).
    pub peak_heap_mb: Option<f64>,
}

/// [`GradientPass`] of `patches` patches through the encoder on the autodiff backend (train
/// mode), summed, then differentiated; `repeats` times.
pub fn gradient_pass(
    geometry: &Geometry,
    patches: usize,
    repeats: usize,
) -> Result<Vec<GradientPass>> {
    let device = Default::default();
    let encoder = geometry.encoder.init::<CpuAd>(&device)?;
    let shape = [patches, geometry.channels, geometry.patch, geometry.patch];
    let input = Tensor::<CpuAd, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let mut out = Vec::new();
    for _ in 0..repeats {
        let base = reset_peak_heap();
        let t = Instant::now();
        let loss = encoder.embed(input.clone()).sum();
        let forward_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let grads = loss.backward();
        drop(grads);
        out.push(GradientPass {
            forward_ms,
            backward_ms: t.elapsed().as_secs_f64() * 1e3,
            peak_heap_mb: peak_heap_bytes()
                .zip(base)
                .map(|(p, b)| p.saturating_sub(b) as f64 / 1e6),
        });
    }
    Ok(out)
}
