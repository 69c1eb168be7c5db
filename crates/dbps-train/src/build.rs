//! Building a method's classifier from a run config.

use burn::module::Module;
use burn::tensor::backend::Backend;
use dbps_data::TaskSpec;
use dbps_encoder::PatchEncoder;

use crate::config::CheckedRun;
use dbps_model::classifier::SelectionPlan;
use dbps_model::{ModelError, PatchClassifier};

use crate::Result;

/// Builds the classifier of method `index` with fresh weights.
pub fn build_classifier<B: Backend>(
    config: &CheckedRun,
    index: usize,
    tasks: &[TaskSpec],
    device: &B::Device,
) -> Result<PatchClassifier<B>> {
    let grid = config.grid();
    let plan = config.plan(index);
    let encoder = config.encoder.init::<B>(device).map_err(ModelError::from)?;
    let classes = tasks.iter().map(|t| t.classes).collect();
    let aggregator = config
        .aggregator_config(plan.aggregator, encoder.embed_dim(), classes)
        .init(device)
        .map_err(ModelError::from)?;
    let selection = SelectionPlan::new(
        grid,
        plan.buffer,
        plan.drop,
        config.train.shuffle_patches,
        config.train.seed,
    )
    .with_eval_buffer(plan.eval_buffer)
    .with_engine(config.train.selection_engine);
    let model = PatchClassifier::new(encoder, aggregator, selection);
    // Burn initialises parameters lazily, and every clone (such as the `valid()` copy that runs
    // selection) would draw its own values: materialise them once so all copies agree.
    let record = model.clone().into_record();
    Ok(model.load_record(record))
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;

    use super::*;
    use crate::RunConfig;
    use crate::datasets::Splits;
    use dbps_model::batch::ImageBatcher;

    /// Table 1 trains with M salient patches and evaluates with M′: the selection of each mode
    /// must hold its own count.
    #[test]
    fn evaluation_selects_m_eval_patches() {
        let config = RunConfig::from_json(
            r#"{
              "name": "m-eval",
              "dataset": { "synthetic_digits": { "canvas": 64, "digit_height": [10, 14], "clutter": 2, "clutter_size": 8, "sizes": [2, 2, 2] } },
              "patch": { "size": 16 },
              "encoder": { "tiny_cnn": { "in_channels": 1, "width": 4 } },
              "aggregator": { "heads": 1, "d_k": 4, "d_v": 4, "d_inner": 8 },
              "methods": [ { "name": "IPS", "m": 2, "m_eval": 5, "l": 4, "aggregator": "ips" } ],
              "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
            }"#,
            "m-eval",
        )
        .unwrap();
        let device = Default::default();
        let splits = Splits::open(&config).unwrap();
        let model = build_classifier::<Autodiff<Flex>>(&config, 0, &splits.tasks, &device).unwrap();
        let samples = (0..2).filter_map(|i| splits.train.get(i)).collect();
        let batch = ImageBatcher::new(splits.tasks.clone()).batch(samples, &device);
        assert_eq!(
            model
                .forward_train(&batch.images, &batch.key)
                .unwrap()
                .salient
                .dims(),
            [2, 2]
        );
        assert_eq!(
            model.forward_eval(&batch.images).unwrap().salient.dims(),
            [2, 5]
        );
    }
}
