//! The bench's PNG charts.

use std::path::Path;

use anyhow::Result;

use super::Results;
use crate::chart::{Bar, DBPS, OTHER, TORCH, bar_chart};

/// `steps.png`, `memory_vs_n.png`, `encoders.png`.
pub fn write_charts(out: &Path, r: &Results) -> Result<()> {
    let torch_bars = |configs: &[(&str, &str)],
                      value: &dyn Fn(&super::Reference) -> Option<f64>| {
        let mut bars = Vec::new();
        for (config, label) in configs {
            for tuned in [false, true] {
                let key = super::reference::key(config, tuned);
                if let Some(v) = r.reference.get(&key).and_then(value) {
                    bars.push(Bar {
                        label: format!("PyTorch {label}{}", if tuned { " tuned" } else { "" }),
                        value: v,
                        color: TORCH,
                    });
                }
            }
        }
        bars
    };

    let mut steps: Vec<Bar> = r
        .steps
        .iter()
        .filter(|row| !row.method.starts_with("IPS M=100") || row.n == 900)
        .map(|row| Bar {
            label: format!("dbps {} {}", short(&row.geometry), row.method),
            value: row.ms_median,
            color: DBPS,
        })
        .collect();
    steps.extend(torch_bars(
        &[
            ("mnist_ips", "MNIST IPS M=100"),
            ("cqu_ips_m12", "CQU IPS M=12"),
            ("cqu_ips_m108", "CQU IPS M=108"),
        ],
        &|x| x.ms_per_step,
    ));
    bar_chart(
        &out.join("steps.png"),
        "Training step (batch 16, median)",
        "ms",
        &steps,
    )?;

    let mut memory: Vec<Bar> = r
        .steps
        .iter()
        .filter(|row| row.method.starts_with("IPS M=100"))
        .map(|row| Bar {
            label: format!("step, N = {}", row.n),
            value: row.peak_rss_growth_bytes as f64 / 1e6,
            color: DBPS,
        })
        .collect();
    memory.extend(r.selection.iter().map(|x| Bar {
        label: format!("selection phase, N = {}", x.n),
        value: x.peak_rss_growth_bytes as f64 / 1e6,
        color: OTHER,
    }));
    bar_chart(
        &out.join("memory_vs_n.png"),
        "Peak-RSS growth vs N (megapixel MNIST, IPS M=100 L=100)",
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
    encoders.extend(torch_bars(
        &[
            ("enc_r18_2stage_1ch_50px", "MNIST"),
            ("enc_r18_4stage_100px", "CQU"),
        ],
        &|x| x.patches_per_s,
    ));
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
