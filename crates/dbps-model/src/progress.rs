//! Progress bars of long work, all drawn through one `MultiProgress` of the process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static BARS_HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides every progress bar of this process (`--quiet`: logs only).
pub fn hide_progress_bars() {
    BARS_HIDDEN.store(true, Ordering::Relaxed);
}

/// Every bar of the process draws through one `MultiProgress`, so that bars open at once (a
/// reproduction's rows around each row's training) stack instead of overwriting one line.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// A bar over `len` items with no style yet, stacked under the process's other bars, or
/// hidden after [`hide_progress_bars`].
pub fn unstyled_bar(len: u64) -> ProgressBar {
    if BARS_HIDDEN.load(Ordering::Relaxed) {
        ProgressBar::hidden()
    } else {
        bars().add(ProgressBar::new(len))
    }
}

/// Runs `print` with every bar cleared from the terminal, then draws them again below what
/// it wrote (a binary's own log lines).
pub fn suspend_bars<R>(print: impl FnOnce() -> R) -> R {
    bars().suspend(print)
}

/// A bar over `len` items of long work (data preparation, evaluation, prediction,
/// reproduction) labelled `prefix`; indicatif hides it when stderr is not a terminal, and
/// [`hide_progress_bars`] hides it always.
pub fn progress_bar(len: usize, prefix: &str) -> ProgressBar {
    let bar = unstyled_bar(len as u64).with_prefix(prefix.to_string());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({elapsed}<{eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
