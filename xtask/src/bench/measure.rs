//! The measurements: training steps through the production step and optimizer wrapper,
//! no-gradient encoder throughput, and inference per batch.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use burn_train::{Interrupter, TrainStep};
use dbps_data::TaskKind;
use dbps_encoder::{NativeEncoder, PatchEncoder};
use dbps_mil::AggregatorConfig;
use dbps_select::DualBuffer;
use dbps_tiling::{HostImages, HostPixels, PatchDrop, PatchGrid, PixelNorm, RemainderPolicy};
use dbps_train::parallel::ExchangeLayout;
use dbps_train::{
    BatchImages, BatchKey, EfficiencyFigures, ImageBatch, MeteredOptimizer, PatchClassifier,
    SelectionEngine, SelectionPlan, SingleImage, StepMeter, TaskTargets, TrainedClassifier,
    TrainingMonitor, pool_probe,
};
use serde::Serialize;

use super::scenario::{Geometry, Method};

type CpuAd = Autodiff<Flex>;

/// Images per batch in every measurement (the papers' protocol).
pub const BATCH: usize = 16;

/// A classifier for `geometry` and `method` with fresh weights, selection on `engine`.
fn classifier<B: Backend>(
    geometry: &Geometry,
    method: &Method,
    engine: SelectionEngine,
    device: &B::Device,
) -> Result<PatchClassifier<B>> {
    let grid = PatchGrid::new(
        [geometry.height, geometry.width],
        geometry.patch,
        geometry.patch,
        RemainderPolicy::Drop,
    )?;
    let encoder = geometry.encoder.init::<B>(device)?;
    let aggregator = AggregatorConfig {
        embed_dim: encoder.embed_dim(),
        tasks: geometry.tasks.iter().map(|t| t.classes).collect(),
        kind: method.aggregator,
        attention: geometry.attention.clone(),
    }
    .init(device)?;
    let plan = SelectionPlan::new(
        grid,
        DualBuffer::new(method.m, method.s, method.l)?,
        PatchDrop::new(method.drop)?,
        true,
        0,
    )
    .with_eval_buffer(DualBuffer::new(method.m_eval, method.s, method.l)?)
    .with_engine(engine);
    let model = PatchClassifier::new(encoder, aggregator, plan);
    // Materialise lazily initialised parameters once, as the trainer does.
    let record = model.clone().into_record();
    Ok(model.load_record(record))
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

/// Time and memory of training steps (method.md §10).
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Geometry name.
    pub geometry: String,
    /// Method name.
    pub method: String,
    /// Patches per image N.
    pub n: usize,
    /// Selection engine.
    pub engine: SelectionEngine,
    /// Steps run (the first and last are not averaged).
    pub steps_run: usize,
    /// Trainable parameters: a data-parallel step all-reduces 4 bytes of gradient per
    /// parameter (docs/distributed.md).
    pub parameters: usize,
    /// What the meter averaged.
    pub figures: EfficiencyFigures,
    /// Milliseconds of every step, in order.
    pub all_ms: Vec<f64>,
}

/// One method's model, optimizer, meter and batch, stepped on demand.
struct StepRunner<B: AutodiffBackend> {
    geometry: String,
    method: String,
    n: usize,
    engine: SelectionEngine,
    parameters: usize,
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
        let parameters = ExchangeLayout::of(&model, geometry.tasks.len(), 1).parameters();
        let optimizer = MeteredOptimizer::new(
            AdamWConfig::new().with_weight_decay(0.1).init(),
            monitor.meter().clone(),
            device.clone(),
        );
        Ok(Self {
            geometry: geometry.name.clone(),
            method: method.name.clone(),
            n: geometry.patches(),
            engine,
            parameters,
            model: Some(model),
            optimizer,
            monitor,
            batch: random_batch::<B>(geometry, device),
        })
    }

    /// One training step and optimizer step, metered; a step that failed is an error.
    fn step(&mut self) -> Result<()> {
        let model = self
            .model
            .take()
            .expect("the model is put back after every step");
        let out = TrainStep::step(&model, self.batch.clone());
        self.model = Some(self.optimizer.step(1e-4, model, out.grads));
        match self.monitor.take_failure() {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    fn result(self) -> Result<StepResult> {
        let meter = self.monitor.meter();
        let all = meter.steps();
        Ok(StepResult {
            geometry: self.geometry,
            method: self.method,
            n: self.n,
            engine: self.engine,
            steps_run: all.len(),
            parameters: self.parameters,
            figures: meter.figures().context("no step completed")?,
            all_ms: all.iter().map(|s| s.ms).collect(),
        })
    }
}

/// Runs `steps` optimizer steps of one method on one random batch.
pub fn train_steps<B: AutodiffBackend>(
    geometry: &Geometry,
    method: &Method,
    engine: SelectionEngine,
    steps: usize,
    device: &B::Device,
) -> Result<StepResult> {
    let mut results = train_steps_interleaved::<B>(
        geometry,
        std::slice::from_ref(method),
        engine,
        steps,
        device,
    )?;
    Ok(results.remove(0))
}

/// Runs `steps` optimizer steps of each method, taking turns (method 1, 2, …, 1, 2, …), so that
/// the ratios between methods compare steps taken minutes apart at most rather than one
/// method's run against another's: on a shared 2-core machine the speed drifts by ±10 % over
/// a quarter of an hour.
pub fn train_steps_interleaved<B: AutodiffBackend>(
    geometry: &Geometry,
    methods: &[Method],
    engine: SelectionEngine,
    steps: usize,
    device: &B::Device,
) -> Result<Vec<StepResult>> {
    let mut runners = methods
        .iter()
        .map(|m| StepRunner::<B>::new(geometry, m, engine, device))
        .collect::<Result<Vec<_>>>()?;
    for _ in 0..steps {
        for runner in &mut runners {
            runner.step()?;
        }
    }
    runners.into_iter().map(StepRunner::result).collect()
}

/// No-gradient encoder throughput.
#[derive(Debug, Clone, Serialize)]
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
    const PATCHES: usize = 64;
    let encoder = geometry.encoder.init::<B>(device)?;
    let shape = [PATCHES, geometry.channels, geometry.patch, geometry.patch];
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
        batch: PATCHES,
        patches_per_s: PATCHES as f64 / times[times.len() / 2],
        calls: times.len(),
    })
}

/// Evaluation cost of one batch of 16 (the paper's Table 3).
#[derive(Debug, Clone, Serialize)]
pub struct InferenceResult {
    /// Geometry name.
    pub geometry: String,
    /// Method name.
    pub method: String,
    /// Mean milliseconds per batch (first call excluded).
    pub ms_per_batch: f64,
    /// Peak heap bytes above the level before the call (tracking allocator).
    pub peak_bytes: Option<u64>,
    /// Batches timed.
    pub batches: usize,
}

/// Mean time and peak memory of `forward_eval` on a batch of 16, over `batches` calls after one
/// warm-up call.
pub fn inference_cost<B: Backend>(
    geometry: &Geometry,
    method: &Method,
    batches: usize,
    device: &B::Device,
) -> Result<InferenceResult> {
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
        ms_per_batch: calls.iter().map(|c| c.ms).sum::<f64>() / calls.len().max(1) as f64,
        peak_bytes: peaks.and_then(|p| p.into_iter().max()),
        batches,
    })
}

/// Forward and backward milliseconds of the gradient pass alone: `patches` patches through the
/// encoder on the autodiff backend (train mode), summed, then differentiated. For profiling.
pub fn gradient_pass(
    geometry: &Geometry,
    patches: usize,
    repeats: usize,
) -> Result<Vec<(f64, f64)>> {
    let device = Default::default();
    let encoder = geometry.encoder.init::<CpuAd>(&device)?;
    let shape = [patches, geometry.channels, geometry.patch, geometry.patch];
    let input = Tensor::<CpuAd, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let mut out = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let loss = encoder.embed(input.clone()).sum();
        let forward = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let grads = loss.backward();
        drop(grads);
        out.push((forward, t.elapsed().as_secs_f64() * 1e3));
    }
    Ok(out)
}
