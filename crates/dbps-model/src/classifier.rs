//! The patch classifier: encoder F + aggregator, with the selection plan that feeds them.

use std::sync::Arc;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use dbps_encoder::{Encoder, NativeEncoder, PatchEncoder, in_inference};
use dbps_mil::Aggregator;
use dbps_select::{DualBuffer, PatchBag, SalienceScorer, Selection};
use dbps_tiling::{HostImages, PatchDrop, PatchGrid};

use crate::ModelError;
use crate::batch::BatchImages;
use crate::batch::{BatchKey, SingleImage};
use crate::candidates::{HostCandidates, ImageCandidates, cut_selected, cut_selected_host};
use crate::slide_source::{SlideCandidates, tissue_patches};
use dbps_data::SlideImage;
use dbps_select::CandidateChunks;
use dbps_tiling::TilingError;
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};

/// Whether a forward pass is for training (patch drop on) or evaluation (never a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: random patch drop and per-step shuffles, drawn from the key.
    Train(DrawKey),
    /// Evaluation: every patch, a fixed shuffle.
    Eval,
}

/// What a training draw (shuffle and patch drop) is keyed by: the epoch and the draw's number
/// in it, never the order in which batches happen to be processed. A resumed run, a replica
/// holding part of a global batch, and a single process holding all of it all draw the same.
///
/// A batch of images of one size makes one draw, numbered by its global step; its images draw
/// their drops one after the other from it, so a replica whose part starts at image `skip` of
/// the global batch replays the drops of the `skip` images before its own. An image with a grid
/// of its own (a slide, a bag) makes a draw of its own, numbered by its index in the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrawKey {
    /// Epoch, 1-based (0 outside a run).
    pub epoch: usize,
    /// Number of the draw in the epoch.
    pub draw: u64,
    /// Images of the draw that belong to other parts of the global batch (drawn and discarded).
    pub skip: usize,
}

impl DrawKey {
    /// The seed of this draw in a plan seeded with `seed`: one stream per (seed, epoch, draw).
    fn seed(&self, seed: u64) -> u64 {
        let counter = ((self.epoch as u64) << 32).wrapping_add(self.draw);
        seed ^ counter.wrapping_mul(0x9e37_79b9)
    }
}

/// What runs the encoder during selection (the no-gradient pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionEngine {
    /// The dedicated CPU kernels of `dbps-kernels` ([`NativeEncoder`]) when the backend is
    /// burn-flex and the encoder a ResNet; Burn's own forward everywhere else.
    #[default]
    Auto,
    /// Always Burn's forward (for comparisons; slower on the CPU).
    Burn,
}

/// Everything besides weights that decides which patches a classifier looks at.
#[derive(Debug, Clone)]
pub struct SelectionPlan {
    /// Patch geometry.
    pub grid: PatchGrid,
    /// M, S and L of training.
    pub buffer: DualBuffer,
    /// M′, S and L of evaluation (Table 1 evaluates with M′ ≠ M); `buffer` unless set.
    pub eval_buffer: DualBuffer,
    /// Random patch drop (training only).
    pub drop: PatchDrop,
    /// Shuffle candidates before selection.
    pub shuffle: bool,
    /// What runs the encoder during selection.
    pub engine: SelectionEngine,
    seed: u64,
}

/// The candidates of one batch in processing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateOrder {
    /// Grid indices, `batch × per_image`, row-major by image.
    pub indices: Vec<i64>,
    /// Candidates per image K.
    pub per_image: usize,
    /// Chunk size L (L̂ under patch drop).
    pub chunk: usize,
}

impl SelectionPlan {
    /// A plan; `seed` drives drops and shuffles.
    pub fn new(
        grid: PatchGrid,
        buffer: DualBuffer,
        drop: PatchDrop,
        shuffle: bool,
        seed: u64,
    ) -> Self {
        Self {
            grid,
            buffer,
            eval_buffer: buffer,
            drop,
            shuffle,
            engine: SelectionEngine::default(),
            seed,
        }
    }

    /// The same plan evaluating with other buffers (M′ salient patches instead of M).
    pub fn with_eval_buffer(self, eval_buffer: DualBuffer) -> Self {
        Self {
            eval_buffer,
            ..self
        }
    }

    /// The plan for one image of `[height, width]` with a grid of its own (a slide, or a bag of
    /// features as a `1 × N` image of 1-px patches): the grid is rebuilt with the same patch
    /// size, stride and remainder policy; the buffers stay (selection keeps every patch of an
    /// image with fewer than M, and fills the sub-salient buffer with what is left).
    pub fn for_image(&self, size: [usize; 2]) -> Result<Self, TilingError> {
        let g = &self.grid;
        Ok(Self {
            grid: PatchGrid::new(size, g.patch(), g.stride(), g.remainder())?,
            ..self.clone()
        })
    }

    /// The same plan with another selection engine.
    pub fn with_engine(self, engine: SelectionEngine) -> Self {
        Self { engine, ..self }
    }

    /// Candidate patches for a batch: in training ⌈(1−r)(N−M)+M⌉ random ones per image (method.md §8),
    /// in evaluation all N; shuffled once per batch when `shuffle` is set (method.md §5, step 1).
    pub fn candidates(&self, batch: usize, mode: Mode) -> CandidateOrder {
        self.draw(None, batch, mode)
    }

    /// The candidates of one image restricted to `pool` (grid indices: the patches on tissue).
    /// Evaluation keeps the pool in the order [`SelectionPlan::candidates`] reads the whole
    /// grid in, so that a slide and the same pixels read as an image agree (selection is
    /// iterative, so order matters); training shuffles the pool's K patches and keeps
    /// ⌈(1−r)(K−M)+M⌉ of them.
    pub fn candidates_among(&self, pool: &[i64], mode: Mode) -> CandidateOrder {
        match mode {
            Mode::Train(_) => self.draw(Some(pool), 1, mode),
            Mode::Eval => {
                let mut order = self.candidates(1, mode);
                let mut keep = vec![false; self.grid.len()];
                for &i in pool {
                    keep[i as usize] = true;
                }
                order.indices.retain(|&i| keep[i as usize]);
                order.per_image = order.indices.len();
                order
            }
        }
    }

    /// [`SelectionPlan::candidates`] among `pool` (all N patches when `None`).
    fn draw(&self, pool: Option<&[i64]>, batch: usize, mode: Mode) -> CandidateOrder {
        let n = pool.map_or(self.grid.len(), <[i64]>::len);
        let m = self.buffer.salient();
        let dropping = matches!(mode, Mode::Train(_)) && self.drop.ratio() > 0.0;
        let (seed, skip) = match mode {
            Mode::Train(key) => (key.seed(self.seed), key.skip),
            Mode::Eval => (self.seed ^ 0xe7a1, 0),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut shared: Vec<usize> = (0..n).collect();
        if self.shuffle {
            shared.shuffle(&mut rng);
        }
        let grid_index = |i: usize| pool.map_or(i as i64, |p| p[i]);
        let mut indices = Vec::with_capacity(batch * n);
        let mut per_image = n;
        if dropping {
            // The drops of the images before this part of the global batch, in draw order.
            for _ in 0..skip {
                self.drop.sample(n, m, &mut rng);
            }
        }
        for _ in 0..batch {
            let mut kept = if dropping {
                self.drop.sample(n, m, &mut rng)
            } else {
                shared.clone()
            };
            if dropping && !self.shuffle {
                kept.sort_unstable();
            }
            per_image = kept.len();
            indices.extend(kept.into_iter().map(grid_index));
        }
        let chunk = if dropping {
            self.drop.chunk(self.buffer.chunk())
        } else {
            self.buffer.chunk()
        };
        CandidateOrder {
            indices,
            per_image,
            chunk,
        }
    }
}

/// Encoder + aggregator + selection plan: an IPS or DBPS classifier over huge images.
#[derive(Module, Debug)]
pub struct PatchClassifier<B: Backend> {
    /// Patch encoder F.
    pub encoder: Encoder<B>,
    /// Scorer and aggregator, with one head per task.
    pub aggregator: Aggregator<B>,
    #[module(skip)]
    plan: SelectionPlan,
}

/// Scores candidates with the aggregator's cross-attention (positions added first).
struct AttentionScorer<'a, B: Backend>(&'a Aggregator<B>);

/// An encoder that also scores every chunk it embeds against the aggregator's query tokens:
/// selection's own embeddings give the attention map over all candidates, so each candidate
/// is embedded once. Selection embeds the candidates in order, a chunk of every image at a
/// time (image-major), so the `seen` count says which grid indices a chunk holds.
struct AttentionRecorder<'a, B: Backend, E> {
    encoder: &'a E,
    aggregator: &'a Aggregator<B>,
    /// Grid indices `[B, K]` of the candidates, in processing order.
    indices: Tensor<B, 2, Int>,
    seen: std::cell::Cell<usize>,
    logits: std::cell::RefCell<Vec<Tensor<B, 4>>>,
}

impl<B: Backend, E: PatchEncoder<B>> PatchEncoder<B> for AttentionRecorder<'_, B, E> {
    fn embed_dim(&self) -> usize {
        self.encoder.embed_dim()
    }

    fn embed(&self, patches: Tensor<B, 4>) -> Tensor<B, 2> {
        let embeddings = self.encoder.embed(patches);
        let b = self.indices.dims()[0];
        let [rows, d] = embeddings.dims();
        let n = rows / b.max(1);
        let start = self.seen.replace(self.seen.get() + n);
        let positioned = self.aggregator.with_positions(
            embeddings.clone().reshape([b, n, d]),
            self.indices.clone().slice([0..b, start..start + n]),
        );
        let queries = self
            .aggregator
            .query_tokens()
            .unsqueeze_dim::<3>(0)
            .repeat_dim(0, b);
        self.logits
            .borrow_mut()
            .push(self.aggregator.scorer().logits(queries, positioned));
        embeddings
    }
}

impl<B: Backend> SalienceScorer<B> for AttentionScorer<'_, B> {
    fn score(&self, embeddings: Tensor<B, 3>, indices: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.0.salience(self.0.with_positions(embeddings, indices))
    }
}

/// What a forward pass produced: logits per task and the patches it looked at.
#[derive(Debug, Clone)]
pub struct ForwardOutput<B: Backend> {
    /// `[B, classes_t]` per task.
    pub logits: Vec<Tensor<B, 2>>,
    /// Grid indices of the salient patches `[B, M']`.
    pub salient: Tensor<B, 2, Int>,
    /// Grid indices of the sub-salient patches `[B, S']`, if any.
    pub sub_salient: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> ForwardOutput<B> {
    /// The outputs of single bags as one batch: logits stacked, index rows padded with −1 to
    /// the longest (a bag shorter than M + S has fewer picks).
    fn stack(outputs: Vec<Self>) -> Self {
        let tasks = outputs.first().map_or(0, |o| o.logits.len());
        let logits = (0..tasks)
            .map(|t| Tensor::cat(outputs.iter().map(|o| o.logits[t].clone()).collect(), 0))
            .collect();
        let pad = |rows: Vec<Option<Tensor<B, 2, Int>>>| -> Option<Tensor<B, 2, Int>> {
            let width = rows.iter().flatten().map(|r| r.dims()[1]).max()?;
            let device = rows.iter().flatten().next()?.device();
            let padded = rows
                .into_iter()
                .map(|row| {
                    let have = row.as_ref().map_or(0, |r| r.dims()[1]);
                    let filler =
                        (have < width).then(|| Tensor::full([1, width - have], -1, &device));
                    Tensor::cat(row.into_iter().chain(filler).collect(), 1)
                })
                .collect();
            Some(Tensor::cat(padded, 0))
        };
        let (salient, sub_salient): (Vec<_>, Vec<_>) = outputs
            .into_iter()
            .map(|o| (Some(o.salient), o.sub_salient))
            .unzip();
        Self {
            logits,
            salient: pad(salient).unwrap_or_else(|| Tensor::empty([0, 0], &Default::default())),
            sub_salient: pad(sub_salient),
        }
    }
}

/// Images of one size: a whole batch, or one image of a [`BatchImages::Separate`] batch.
#[derive(Debug, Clone)]
enum Uniform<B: Backend> {
    Host(Arc<HostImages>, B::Device),
    Device(Tensor<B, 4>),
    Slide(Arc<SlideImage>, B::Device),
}

impl<B: Backend> Uniform<B> {
    fn batch(&self) -> usize {
        match self {
            Self::Host(images, _) => images.batch(),
            Self::Device(images) => images.dims()[0],
            Self::Slide(..) => 1,
        }
    }

    fn device(&self) -> B::Device {
        match self {
            Self::Host(_, device) | Self::Slide(_, device) => device.clone(),
            Self::Device(images) => images.device(),
        }
    }
}

impl<B: AutodiffBackend> Uniform<B> {
    fn inner(&self) -> Uniform<B::InnerBackend> {
        match self {
            Self::Host(images, device) => Uniform::Host(Arc::clone(images), device.clone()),
            Self::Device(images) => Uniform::Device(images.clone().inner()),
            Self::Slide(slide, device) => Uniform::Slide(Arc::clone(slide), device.clone()),
        }
    }
}

/// What a training step takes from selection.
struct TrainingPicks<B: Backend> {
    /// Grid indices `[B, M]` of the salient patches, re-embedded with gradients.
    winners: Tensor<B, 2, Int>,
    /// The sub-salient bag (DBPS), embeddings without gradients.
    sub_salient: Option<PatchBag<B>>,
}

/// The candidates of `images` in processing order under `plan` (a slide's: those on tissue).
fn candidate_order<B: Backend>(
    plan: &SelectionPlan,
    images: &Uniform<B>,
    mode: Mode,
) -> Result<CandidateOrder, ModelError> {
    let pool = match images {
        Uniform::Slide(slide, _) => slide_pool(slide, &plan.grid)?,
        _ => None,
    };
    Ok(match &pool {
        Some(pool) => plan.candidates_among(pool, mode),
        None => plan.candidates(images.batch(), mode),
    })
}

/// The candidates a slide offers on `grid`: the patches its tissue mask keeps, or all.
fn slide_pool(slide: &SlideImage, grid: &PatchGrid) -> Result<Option<Vec<i64>>, ModelError> {
    let Some(mask) = &slide.tissue else {
        return Ok(None);
    };
    let pool = tissue_patches(grid, slide.size(), mask);
    if pool.is_empty() {
        return Err(ModelError::Input {
            path: slide.view.slide().path().to_path_buf(),
            reason: format!(
                "the tissue mask (Otsu threshold {}) keeps no whole patch of the {}×{} px level {}; set dataset.slides.tissue_mask to false, or use smaller patches",
                mask.threshold,
                slide.size()[0],
                slide.size()[1],
                slide.view.level()
            ),
        });
    }
    Ok(Some(pool))
}

/// Runs `per_batch` on a batch of one size, or on each image of a separate batch with its own
/// plan and stacks the results; `per_batch` is told which image of the batch it holds (`None`:
/// all of them).
fn each_size<B: Backend, Out: Backend>(
    plan: &SelectionPlan,
    images: &BatchImages<B>,
    per_batch: impl Fn(
        &SelectionPlan,
        Uniform<B>,
        Option<usize>,
    ) -> Result<ForwardOutput<Out>, ModelError>,
) -> Result<ForwardOutput<Out>, ModelError> {
    match images {
        BatchImages::Host { images, device } => per_batch(
            plan,
            Uniform::Host(Arc::clone(images), device.clone()),
            None,
        ),
        BatchImages::Device(images) => per_batch(plan, Uniform::Device(images.clone()), None),
        BatchImages::Separate { images, device } => {
            let outputs = images
                .iter()
                .enumerate()
                .map(|(index, image)| {
                    let plan = plan.for_image(image.size()).map_err(|e| match image {
                        SingleImage::Slide(slide) => ModelError::Input {
                            path: slide.view.slide().path().to_path_buf(),
                            reason: e.to_string(),
                        },
                        SingleImage::Host(_) => e.into(),
                    })?;
                    let one = match image {
                        SingleImage::Host(bag) => Uniform::Host(Arc::clone(bag), device.clone()),
                        SingleImage::Slide(slide) => {
                            Uniform::Slide(Arc::clone(slide), device.clone())
                        }
                    };
                    per_batch(&plan, one, Some(index))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ForwardOutput::stack(outputs))
        }
    }
}

impl<B: Backend> PatchClassifier<B> {
    /// Joins the parts.
    pub fn new(encoder: Encoder<B>, aggregator: Aggregator<B>, plan: SelectionPlan) -> Self {
        Self {
            encoder,
            aggregator,
            plan,
        }
    }

    /// The selection plan.
    pub fn plan(&self) -> &SelectionPlan {
        &self.plan
    }

    /// The same classifier over images of `[height, width]`: the patch grid is rebuilt with
    /// the same patch size, stride and remainder policy (prediction on images of any size the
    /// grid allows; an image with fewer patches than M + S has all of them selected).
    pub fn for_image_size(&self, size: [usize; 2]) -> Result<Self, TilingError> {
        Ok(Self {
            encoder: self.encoder.clone(),
            aggregator: self.aggregator.clone(),
            plan: self.plan.for_image(size)?,
        })
    }

    /// Attention logits `[1, H, T, K]` of the scorer's T query tokens over all K candidates
    /// of one image's `source`, embedded L at a time in inference mode: the scores `explain`
    /// shows. Memory holds one chunk of patches and the H · T · K logits.
    pub fn attention_logits<C>(&self, source: &C) -> Result<Tensor<B, 4>, ModelError>
    where
        C: CandidateChunks<B>,
        ModelError: From<C::Error>,
    {
        in_inference(|| self.inference_copy().attention_logits_now(source))
    }

    fn attention_logits_now<C>(&self, source: &C) -> Result<Tensor<B, 4>, ModelError>
    where
        C: CandidateChunks<B>,
        ModelError: From<C::Error>,
    {
        let k = source.candidates();
        let l = self.plan.eval_buffer.chunk().max(1);
        let native = self.native_encoder();
        let indices = source.indices();
        let queries = self.aggregator.query_tokens().unsqueeze_dim::<3>(0);
        let mut chunks = Vec::with_capacity(k.div_ceil(l));
        for start in (0..k).step_by(l) {
            let end = (start + l).min(k);
            let patches = source.chunk(start, end)?;
            let embeddings = match &native {
                Some(native) => native.embed(patches),
                None => self.encoder.embed(patches),
            };
            let d = embeddings.dims()[1];
            let embeddings = self.aggregator.with_positions(
                embeddings.reshape([1, end - start, d]),
                indices.clone().slice([0..1, start..end]),
            );
            chunks.push(self.aggregator.scorer().logits(queries.clone(), embeddings));
        }
        Ok(Tensor::cat(chunks, 3))
    }

    /// Picks the salient and sub-salient patches of images `[B, C, H, W]`, cutting candidates
    /// a chunk at a time (run it on a model without autodiff: the result carries no graph).
    fn select(
        &self,
        plan: &SelectionPlan,
        images: &Uniform<B>,
        mode: Mode,
    ) -> Result<Selection<B>, ModelError> {
        let order = candidate_order(plan, images, mode)?;
        self.select_among(plan, images, mode, order)
    }

    /// What a training step needs of selection: the grid indices `[B, M]` of the winners, which
    /// the gradient pass re-embeds, and the sub-salient bag. When every candidate is a winner
    /// (K ≤ M) and no sub-salient buffer is kept, there is nothing to decide, and the
    /// no-gradient pass would embed every candidate only for the embeddings to be dropped: the
    /// winners are then the candidates in their order, without it — the pass the official IPS
    /// code skips too (IPS at M = N). The winners are the same either way.
    fn select_for_training(
        &self,
        plan: &SelectionPlan,
        images: &Uniform<B>,
        draw: DrawKey,
    ) -> Result<TrainingPicks<B>, ModelError> {
        let mode = Mode::Train(draw);
        let order = candidate_order(plan, images, mode)?;
        let all_win = order.per_image > 0 && order.per_image <= plan.buffer.salient();
        if all_win && plan.buffer.sub_salient() == 0 {
            let batch = order.indices.len() / order.per_image;
            let winners = Tensor::<B, 1, Int>::from_data(
                burn::tensor::TensorData::new(order.indices, [batch * order.per_image]),
                &images.device(),
            )
            .reshape([batch, order.per_image]);
            return Ok(TrainingPicks {
                winners,
                sub_salient: None,
            });
        }
        let selection = self.select_among(plan, images, mode, order)?;
        Ok(TrainingPicks {
            winners: selection.salient.indices,
            sub_salient: selection.sub_salient,
        })
    }

    /// [`PatchClassifier::select`] over candidates already drawn.
    fn select_among(
        &self,
        plan: &SelectionPlan,
        images: &Uniform<B>,
        mode: Mode,
        order: CandidateOrder,
    ) -> Result<Selection<B>, ModelError> {
        let buffer = match mode {
            Mode::Train(_) => plan.buffer,
            Mode::Eval => plan.eval_buffer,
        }
        .with_chunk(order.chunk)?;
        let grid = &plan.grid;
        match images {
            Uniform::Host(images, device) => self.select_from(
                buffer,
                &HostCandidates::new(grid, Arc::clone(images), order, device.clone()),
            ),
            Uniform::Device(images) => {
                self.select_from(buffer, &ImageCandidates::new(grid, images.clone(), order))
            }
            Uniform::Slide(slide, device) => self.select_from(
                buffer,
                &SlideCandidates::of_image(slide, *grid, order.indices, device.clone()),
            ),
        }
    }

    fn select_from<C>(&self, buffer: DualBuffer, source: &C) -> Result<Selection<B>, ModelError>
    where
        C: CandidateChunks<B>,
        ModelError: From<C::Error>,
    {
        match self.native_encoder() {
            Some(native) => self.select_with(&native, buffer, source),
            None => self.select_with(&self.encoder, buffer, source),
        }
    }

    fn select_with<E, C>(
        &self,
        encoder: &E,
        buffer: DualBuffer,
        source: &C,
    ) -> Result<Selection<B>, ModelError>
    where
        E: PatchEncoder<B>,
        C: CandidateChunks<B>,
        ModelError: From<C::Error>,
    {
        Ok(buffer.select_from(encoder, &AttentionScorer(&self.aggregator), source)?)
    }

    /// [`PatchClassifier::forward_eval_from`], with the attention logits `[B, H, T, K]` of the
    /// scorer's query tokens over all K candidates of each image, in the source's
    /// order — what [`PatchClassifier::attention_logits`] computes, from selection's own
    /// embeddings, so that each candidate is embedded once instead of twice (`dbps explain`).
    pub fn forward_eval_with_attention<C>(
        &self,
        source: &C,
    ) -> Result<(ForwardOutput<B>, Tensor<B, 4>), ModelError>
    where
        C: CandidateChunks<B>,
        ModelError: From<C::Error>,
    {
        in_inference(|| {
            let model = self.inference_copy();
            match model.native_encoder() {
                Some(native) => model.explain_with(&native, source),
                None => model.explain_with(&model.encoder, source),
            }
        })
    }

    fn explain_with<E, C>(
        &self,
        encoder: &E,
        source: &C,
    ) -> Result<(ForwardOutput<B>, Tensor<B, 4>), ModelError>
    where
        E: PatchEncoder<B>,
        C: CandidateChunks<B>,
        ModelError: From<C::Error>,
    {
        let recorder = AttentionRecorder {
            encoder,
            aggregator: &self.aggregator,
            indices: source.indices(),
            seen: std::cell::Cell::new(0),
            logits: std::cell::RefCell::default(),
        };
        let selection = self.select_with(&recorder, self.plan.eval_buffer, source)?;
        let logits = Tensor::cat(recorder.logits.into_inner(), 3);
        Ok((
            self.aggregate(selection.salient, selection.sub_salient),
            logits,
        ))
    }

    /// The encoder frozen onto the CPU kernels, when the plan and the backend allow it. Frozen
    /// per call: the weights change with every optimizer step.
    fn native_encoder(&self) -> Option<NativeEncoder<B>> {
        let host = std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::Flex>();
        if self.plan.engine != SelectionEngine::Auto || !host {
            return None;
        }
        match NativeEncoder::freeze(&self.encoder)? {
            Ok(native) => Some(native),
            Err(e) => {
                tracing::warn!(error = %e, "selection falls back to Burn's encoder forward");
                None
            }
        }
    }

    /// Adds positions to both bags and aggregates them into logits per task.
    fn aggregate(
        &self,
        salient: PatchBag<B>,
        sub_salient: Option<PatchBag<B>>,
    ) -> ForwardOutput<B> {
        let embeddings = self
            .aggregator
            .with_positions(salient.embeddings, salient.indices.clone());
        let (sub_embeddings, sub_indices) = sub_salient
            .map(|s| {
                let indices = s.indices.clone();
                (
                    self.aggregator.with_positions(s.embeddings, s.indices),
                    indices,
                )
            })
            .unzip();
        ForwardOutput {
            logits: self.aggregator.forward(embeddings, sub_embeddings),
            salient: salient.indices,
            sub_salient: sub_indices,
        }
    }

    /// Evaluation forward on the candidates of any patch source (one image streamed from
    /// disk, a tissue-masked subset of a slide): select with the evaluation buffers, aggregate.
    pub fn forward_eval_from<C>(&self, source: &C) -> Result<ForwardOutput<B>, ModelError>
    where
        C: CandidateChunks<B>,
        ModelError: From<C::Error>,
    {
        in_inference(|| {
            let model = self.inference_copy();
            let selection = model.select_from(model.plan.eval_buffer, source)?;
            Ok(model.aggregate(selection.salient, selection.sub_salient))
        })
    }

    /// Evaluation forward on images `[B, C, H, W]`: select among all patches and aggregate the
    /// buffers' own embeddings (no re-embedding). Inference mode on every backend, autodiff
    /// included: BatchNorm on its running statistics (left unchanged), dropout off — as are the
    /// other evaluation forwards. Images that do not fit the plan's patch grid are an error.
    pub fn forward_eval(&self, images: &BatchImages<B>) -> Result<ForwardOutput<B>, ModelError> {
        in_inference(|| {
            let model = self.inference_copy();
            each_size(&model.plan, images, |plan, images, _| {
                let selection = model.select(plan, &images, Mode::Eval)?;
                Ok(model.aggregate(selection.salient, selection.sub_salient))
            })
        })
    }

    /// This classifier as evaluation runs it, on any backend: dropout off (and, inside
    /// [`in_inference`], BatchNorm on its running statistics, which stay as they are).
    fn inference_copy(&self) -> Self {
        Self {
            aggregator: self.aggregator.without_dropout(),
            ..self.clone()
        }
    }
}

impl<B: AutodiffBackend> PatchClassifier<B> {
    /// Training forward (method.md §5–6): selection runs on the inner backend with the encoder in
    /// inference mode; only the M salient patches are re-embedded with gradients, the S
    /// sub-salient embeddings join as constants. `key` places the batch in its epoch and global
    /// batch, which keys the random draws. Images that do not fit the plan's patch grid are an
    /// error.
    pub fn forward_train(
        &self,
        images: &BatchImages<B>,
        key: &BatchKey,
    ) -> Result<ForwardOutput<B>, ModelError> {
        let valid = self.valid();
        each_size(&self.plan, images, |plan, images, index| {
            let draw = match index {
                None => key.batch_draw(),
                Some(index) => key.image_draw(index),
            };
            self.train_one_size(&valid, plan, &images, draw)
        })
    }

    /// [`PatchClassifier::forward_train`] on images of one size; `valid` is this model
    /// without autodiff (what selection runs).
    fn train_one_size(
        &self,
        valid: &PatchClassifier<B::InnerBackend>,
        plan: &SelectionPlan,
        images: &Uniform<B>,
        draw: DrawKey,
    ) -> Result<ForwardOutput<B>, ModelError> {
        let TrainingPicks {
            winners,
            sub_salient,
        } = valid.select_for_training(plan, &images.inner(), draw)?;

        // The M winners are cut again from the images, for the gradient pass.
        let [batch, m] = winners.dims();
        let positions: Vec<i64> = winners.clone().into_data().iter::<i64>().collect();
        let grid = &plan.grid;
        let chosen = match images {
            Uniform::Host(images, device) => {
                cut_selected_host(grid, images, &positions, m, device)?
            }
            Uniform::Device(images) => cut_selected(grid, images, &positions, m)?,
            Uniform::Slide(slide, device) => {
                SlideCandidates::<B>::of_image(slide, *grid, positions, device.clone())
                    .chunk(0, m)?
            }
        };
        let indices = Tensor::<B, 2, Int>::from_inner(winners);
        let embeddings = self
            .encoder
            .embed(chosen)
            .reshape([batch, m, self.encoder.embed_dim()]);
        let sub_salient = sub_salient.map(|s| PatchBag {
            indices: Tensor::from_inner(s.indices),
            embeddings: Tensor::from_inner(s.embeddings),
        });
        Ok(self.aggregate(
            PatchBag {
                indices,
                embeddings,
            },
            sub_salient,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbps_tiling::RemainderPolicy;

    fn plan(drop: f64, shuffle: bool) -> SelectionPlan {
        let grid = PatchGrid::new([100, 100], 10, 10, RemainderPolicy::Drop).unwrap();
        SelectionPlan::new(
            grid,
            DualBuffer::new(10, 20, 16).unwrap(),
            PatchDrop::new(drop).unwrap(),
            shuffle,
            3,
        )
    }

    /// A tiny classifier on 20×20 images of 5×5 patches (N = 16), M and S as given.
    fn tiny(m: usize, s: usize, drop: f64) -> PatchClassifier<burn::backend::Flex> {
        use dbps_encoder::{EncoderConfig, TinyCnnConfig};
        use dbps_mil::{AggregatorConfig, AggregatorKind, AttentionSettings};
        let device = Default::default();
        let encoder = EncoderConfig::TinyCnn(TinyCnnConfig {
            in_channels: 1,
            width: 8,
        })
        .init(&device)
        .unwrap();
        let aggregator = AggregatorConfig {
            embed_dim: 8,
            tasks: vec![2],
            kind: if s == 0 {
                AggregatorKind::Ips
            } else {
                AggregatorKind::DualAttention
            },
            attention: AttentionSettings {
                heads: 2,
                d_k: 4,
                d_v: 4,
                d_inner: 8,
                ..AttentionSettings::default()
            },
        }
        .init(&device)
        .unwrap();
        let grid = PatchGrid::new([20, 20], 5, 5, RemainderPolicy::Drop).unwrap();
        let plan = SelectionPlan::new(
            grid,
            DualBuffer::new(m, s, 4).unwrap(),
            PatchDrop::new(drop).unwrap(),
            true,
            7,
        );
        PatchClassifier::new(encoder, aggregator, plan)
    }

    /// Training winners with and without the no-gradient pass: when K ≤ M and S = 0 the
    /// shortcut must give what selection gives (every candidate, in candidate order).
    #[test]
    fn training_skips_selection_only_when_it_decides_nothing() {
        use burn::tensor::Distribution;
        let device = Default::default();
        let images = Uniform::Device(Tensor::<burn::backend::Flex, 4>::random(
            [3, 1, 20, 20],
            Distribution::Uniform(0.0, 1.0),
            &device,
        ));
        let draw = DrawKey::default();
        for (m, s, drop) in [
            (16, 0, 0.0),
            (20, 0, 0.0),
            (16, 0, 0.5),
            (6, 0, 0.0),
            (6, 4, 0.0),
            (16, 4, 0.0),
        ] {
            let model = tiny(m, s, drop);
            let plan = model.plan().clone();
            let picks = model.select_for_training(&plan, &images, draw).unwrap();
            let (winners, sub) = (picks.winners, picks.sub_salient);
            let selection = model.select(&plan, &images, Mode::Train(draw)).unwrap();
            let ids = |t: Tensor<burn::backend::Flex, 2, Int>| {
                t.into_data().iter::<i64>().collect::<Vec<_>>()
            };
            assert_eq!(
                ids(winners),
                ids(selection.salient.indices),
                "M={m} S={s} r={drop}"
            );
            assert_eq!(
                sub.is_some(),
                selection.sub_salient.is_some(),
                "M={m} S={s}"
            );
        }
    }

    #[test]
    fn drop_applies_in_training_only() {
        let plan = plan(0.5, true);
        let train = plan.candidates(4, Mode::Train(DrawKey::default()));
        assert_eq!(train.per_image, 55); // ⌈0.5·90 + 10⌉
        assert_eq!(train.indices.len(), 4 * 55);
        assert_eq!(train.chunk, 8); // ⌈16·0.5⌉
        for _ in 0..3 {
            let eval = plan.candidates(4, Mode::Eval);
            assert_eq!(eval.per_image, 100);
            assert_eq!(eval.chunk, 16);
            let mut first: Vec<i64> = eval.indices[..100].to_vec();
            first.sort_unstable();
            assert_eq!(first, (0..100).collect::<Vec<_>>());
        }
    }

    /// A pool (the patches on tissue) restricts both modes: evaluation reads it in the order
    /// the whole grid is read in; training drops ⌈(1−r)(K−M)+M⌉ of its K patches, and with
    /// the pool equal to the grid draws exactly what `candidates` draws.
    #[test]
    fn candidates_among_a_pool() {
        let pool: Vec<i64> = (0..100).filter(|i| i % 3 == 0).collect(); // K = 34
        let eval = plan(0.5, true);
        let whole = eval.candidates(1, Mode::Eval).indices;
        let among = eval.candidates_among(&pool, Mode::Eval);
        let filtered: Vec<i64> = whole.into_iter().filter(|i| i % 3 == 0).collect();
        assert_eq!(among.indices, filtered);
        assert_eq!((among.per_image, among.chunk), (34, 16));

        let train = plan(0.5, true).candidates_among(&pool, Mode::Train(DrawKey::default()));
        assert_eq!(train.per_image, 22); // ⌈0.5·24 + 10⌉
        assert_eq!(train.indices.len(), 22);
        assert!(train.indices.iter().all(|i| i % 3 == 0), "{train:?}");
        let mut distinct = train.indices.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 22);

        let all: Vec<i64> = (0..100).collect();
        let (a, b) = (plan(0.5, true), plan(0.5, true));
        assert_eq!(
            a.candidates_among(&all, Mode::Train(DrawKey::default())),
            b.candidates(1, Mode::Train(DrawKey::default()))
        );
        let sorted = plan(0.5, false)
            .candidates_among(&pool, Mode::Train(DrawKey::default()))
            .indices;
        assert!(sorted.windows(2).all(|w| w[0] < w[1]), "{sorted:?}");
    }

    /// A replica holding images 2 and 3 of a global batch of 4 draws exactly what the single
    /// process holding all four draws for them, with and without patch drop; another draw
    /// number or epoch gives other draws.
    #[test]
    fn a_part_of_the_global_batch_draws_what_the_whole_batch_draws_for_it() {
        for drop in [0.0, 0.5] {
            let plan = plan(drop, true);
            let key = DrawKey {
                epoch: 3,
                draw: 7,
                skip: 0,
            };
            let whole = plan.candidates(4, Mode::Train(key));
            let part = plan.candidates(2, Mode::Train(DrawKey { skip: 2, ..key }));
            let k = whole.per_image;
            assert_eq!(part.per_image, k);
            assert_eq!(part.indices, whole.indices[2 * k..]);
            for other in [DrawKey { draw: 8, ..key }, DrawKey { epoch: 4, ..key }] {
                assert_ne!(
                    plan.candidates(4, Mode::Train(other)).indices,
                    whole.indices
                );
            }
        }
    }

    #[test]
    fn unshuffled_plan_keeps_grid_order() {
        let order = plan(0.0, false).candidates(2, Mode::Train(DrawKey::default()));
        assert_eq!(&order.indices[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(&order.indices[100..103], &[0, 1, 2]);
    }
}
