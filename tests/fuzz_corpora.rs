//! Replays every fuzz corpus file and crash regression (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through the parsers, as the cargo-fuzz targets run them: none
//! may panic. The fuzzers themselves run by hand on nightly (docs/reliability.md); this test
//! keeps what they found fixed on stable, in CI.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

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
