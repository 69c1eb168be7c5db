//! Heap policy for training processes.
//!
//! A training step allocates and frees the same large buffers (feature maps, im2col blocks,
//! gradients) every step. glibc serves blocks above its mmap threshold with fresh mappings and
//! unmaps them on free, so every step page-faults all of them in again: a fifth of a
//! megapixel-MNIST step went to page faults (perf, this repository's bench). Raising the
//! threshold and the trim threshold keeps freed memory in the heap for the next step.

/// Keeps freed blocks in the process heap instead of returning them to the OS (glibc only;
/// elsewhere a no-op). Call once, early in `main`; resident memory then stays at its peak.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's mallopt parameters (malloc.h).
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes allocator tuning parameters; both values are in range.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
