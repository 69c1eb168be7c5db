//! One DBPS training step equals the DBPS authors' code's
//! (`../shared/fixtures/dbps-official-step`, or the folder `DBPS_DBPS_STEP_FIXTURE` names), with
//! selection in the authors' rule (`"selection": "authors"`): same salient patches in the same
//! order, same sub-salient sets, and the loss, logits, gradients, parameters after AdamW and
//! running statistics within the fixture's f32 bounds. In the paper's rule the same weights
//! pick other patches (the fixture's README shows which), so this test fails there.

mod common;

use std::path::PathBuf;

use common::{Fixture, check_adamw, check_training_step, fixture_dir};

fn fixture() -> Option<PathBuf> {
    fixture_dir("DBPS_DBPS_STEP_FIXTURE", "dbps-official-step")
}

#[test]
fn one_training_step_equals_the_authors_code() {
    let Some(dir) = fixture() else { return };
    check_training_step(&Fixture::open(&dir));
}

#[test]
fn adamw_applied_to_the_authors_gradients_gives_their_parameters() {
    let Some(dir) = fixture() else { return };
    check_adamw(&Fixture::open(&dir));
}
