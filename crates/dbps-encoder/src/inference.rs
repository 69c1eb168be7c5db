//! Inference mode on any backend. Burn decides between training and inference behaviour by
//! whether the backend records gradients, so an evaluation forward on an autodiff backend
//! would normalise with batch statistics and update the running ones. Code that evaluates runs
//! inside [`in_inference`]; BatchNorm then uses its running statistics whatever the backend.

use std::cell::Cell;

thread_local! {
    static INFERENCE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every BatchNorm of this crate in inference mode on this thread (running
/// statistics, no update), then restores the previous mode, also when `f` unwinds.
pub fn in_inference<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INFERENCE.with(|mode| mode.set(self.0));
        }
    }
    let _restore = Restore(INFERENCE.with(|mode| mode.replace(true)));
    f()
}

/// True inside [`in_inference`].
pub fn inference_forced() -> bool {
    INFERENCE.with(Cell::get)
}
