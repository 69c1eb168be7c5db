//! Replays every fuzz corpus file and crash regression (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through the parsers, as the cargo-fuzz targets run them: none
//! may panic. The fuzzers themselves run by hand on nightly (docs/reliability.md); this test
//! keeps what they found fixed on stable, in CI.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

/// The fuzzers' allocation cap (`-malloc_limit_mb=1024`), kept here: an allocation larger
/// than this fails (and the process aborts, failing the test), so an input that once made a
/// parser size a buffer by an unchecked number stays a failure on stable too.
const MAX_ALLOCATION: usize = 1 << 30;

struct CappedAllocator;

// SAFETY: every call is forwarded to the system allocator unchanged, or refused with null,
// which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`; `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

#[test]
fn every_corpus_file_and_regression_is_parsed_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, run) in harness::TARGETS {
        let mut files = Vec::new();
        for folder in ["corpus", "regressions"] {
            let dir = root.join(folder).join(target);
            // A target without crash regressions has no folder (git keeps no empty ones).
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            files.extend(entries.map(|e| e.unwrap().path()));
        }
        files.sort();
        assert!(!files.is_empty(), "no corpus for fuzz target `{target}`");
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                panic!("fuzz target `{target}` panics on {}", file.display());
            }
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} fuzz inputs");
}
