//! Building a method's classifier from a run config.

use burn::module::Module;
use burn::tensor::backend::Backend;
use dbps_data::TaskSpec;
use dbps_encoder::PatchEncoder;

use crate::config::RunConfig;
use crate::{PatchClassifier, Result, SelectionPlan};

/// Builds the classifier of method `index` with fresh weights.
pub fn build_classifier<B: Backend>(
    config: &RunConfig,
    index: usize,
    tasks: &[TaskSpec],
    device: &B::Device,
) -> Result<PatchClassifier<B>> {
    let grid = config.grid()?;
    let plan = config.method_plan(index, grid.len())?;
    let encoder = config.encoder.init::<B>(device)?;
    let classes = tasks.iter().map(|t| t.classes).collect();
    let aggregator = config
        .aggregator_config(plan.aggregator, encoder.embed_dim(), classes)
        .init(device)?;
    let selection = SelectionPlan::new(
        grid,
        plan.buffer,
        plan.drop,
        config.train.shuffle_patches,
        config.train.seed,
    )
    .with_engine(config.train.selection_engine);
    let model = PatchClassifier::new(encoder, aggregator, selection);
    // Burn initialises parameters lazily, and every clone (such as the `valid()` copy that runs
    // selection) would draw its own values: materialise them once so all copies agree.
    let record = model.clone().into_record();
    Ok(model.load_record(record))
}
