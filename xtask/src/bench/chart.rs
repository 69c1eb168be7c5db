//! The bench's PNG charts.

use std::path::Path;

use anyhow::Result;

use super::Results;
use crate::chart::{Bar, DBPS, OTHER, TORCH, bar_chart};

/// `steps.png`, `memory_vs_n.png`, `encoders.png`.
pub fn write_charts(out: &Path, r: &Results) -> Result<()> {
    let mut steps = Vec::new();
    for row in &r.steps {
        steps.push(Bar {
            label: format!("dbps {} {}", short(&row.geometry), row.method),
            value: row.figures.ms_per_step,
            color: DBPS,
        });
    }
    for (config, label) in [
        ("mnist_ips", "PyTorch MNIST IPS M=100"),
        ("cqu_ips_m12", "PyTorch CQU IPS M=12"),
    ] {
        if let Some(ms) = r.reference.get(config).and_then(|x| x.ms_per_step) {
            steps.push(Bar {
                label: label.into(),
                value: ms,
                color: TORCH,
            });
        }
    }
    bar_chart(
        &out.join("steps.png"),
        "Training step (batch 16)",
        "ms",
        &steps,
    )?;

    let memory: Vec<Bar> = r
        .memory_vs_n
        .iter()
        .filter_map(|row| {
            Some(Bar {
                label: format!("N = {}", row.n),
                value: row.figures.peak_step_bytes? as f64 / 1e6,
                color: DBPS,
            })
        })
        .collect();
    bar_chart(
        &out.join("memory_vs_n.png"),
        "Peak step memory vs N (megapixel MNIST, IPS M=100 L=100)",
        "MB",
        &memory,
    )?;

    let mut encoders: Vec<Bar> = r
        .encoders
        .iter()
        .map(|e| Bar {
            label: format!("dbps {} {}", e.engine, short(&e.geometry)),
            value: e.patches_per_s,
            color: if e.engine == "native" { DBPS } else { OTHER },
        })
        .collect();
    for (config, label) in [
        ("enc_r18_2stage_1ch_50px", "PyTorch MNIST"),
        ("enc_r18_4stage_100px", "PyTorch CQU"),
    ] {
        if let Some(rate) = r.reference.get(config).and_then(|x| x.patches_per_s) {
            encoders.push(Bar {
                label: label.into(),
                value: rate,
                color: TORCH,
            });
        }
    }
    bar_chart(
        &out.join("encoders.png"),
        "No-gradient encoder throughput (batch 64)",
        "patches/s",
        &encoders,
    )
}

/// The first word of a geometry name (`megapixel MNIST 1500²` → `MNIST`).
fn short(geometry: &str) -> &str {
    if geometry.starts_with("megapixel") {
        "MNIST"
    } else {
        geometry.split_whitespace().next().unwrap_or(geometry)
    }
}
