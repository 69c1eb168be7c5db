//! `cargo xtask readme-check`: the README's seed table (the embedded default trained with seeds
//! 0, 1, 2) cannot go stale silently.
//!
//! The table sits between `<!-- seed-table commit=… -->` and `<!-- /seed-table -->`. Without
//! options the command checks that nothing that decides the table's numbers — the model,
//! selection, encoder, kernel, tiling and data crates, the training step, the quickstart config —
//! changed between the commit it names and HEAD (what CI runs: three seeds do not fit in CI).
//! `--measure` trains the three seeds with this checkout and rewrites the table; `--runs DIR
//! --commit C` writes it from runs already made at commit C (`DIR/seed0`, `seed1`, `seed2`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use dbps_train::report::RunReport;

/// The paths whose changes can move the table's numbers (sources, not tests).
const NUMERIC_PATHS: &[&str] = &[
    "crates/dbps-mil/src",
    "crates/dbps-select/src",
    "crates/dbps-encoder/src",
    "crates/dbps-kernels/src",
    "crates/dbps-tiling/src",
    "crates/dbps-data/src",
    "crates/dbps-model/src/classifier.rs",
    "crates/dbps-model/src/loss.rs",
    "crates/dbps-model/src/step.rs",
    "crates/dbps-model/src/batch.rs",
    "crates/dbps-model/src/candidates.rs",
    "crates/dbps-model/src/epoch_order.rs",
    "crates/dbps-train/src/schedule.rs",
    "configs/quickstart.json",
];

const OPEN: &str = "<!-- seed-table commit=";
const CLOSE: &str = "<!-- /seed-table -->";
const SEEDS: [u64; 3] = [0, 1, 2];

/// Options of `cargo xtask readme-check`.
#[derive(clap::Args)]
pub struct ReadmeArgs {
    /// Train seeds 0, 1 and 2 of the embedded default with this checkout (about half an hour on
    /// 2 cores) and rewrite the table.
    #[arg(long, conflicts_with = "runs")]
    measure: bool,
    /// Write the table from finished runs `DIR/seed0`, `DIR/seed1`, `DIR/seed2`.
    #[arg(long, value_name = "DIR", requires = "commit")]
    runs: Option<PathBuf>,
    /// With --runs: the commit those runs were made at.
    #[arg(long)]
    commit: Option<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root())
        .output()
        .context("cannot run git: the check needs the repository's history")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The README and the commit its table names.
fn table_commit(readme: &str) -> Result<String> {
    let start = readme
        .find(OPEN)
        .context("README.md has no `<!-- seed-table commit=… -->` marker before its seed table")?;
    let rest = &readme[start + OPEN.len()..];
    let commit = rest.split_whitespace().next().unwrap_or_default();
    if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("the seed-table marker names no commit: write `{OPEN}<hash> -->`");
    }
    if !readme.contains(CLOSE) {
        bail!("README.md has no `{CLOSE}` after its seed table");
    }
    Ok(commit.to_string())
}

/// Files under [`NUMERIC_PATHS`] that differ between `commit` and the working tree.
fn numeric_changes(commit: &str) -> Result<Vec<String>> {
    git(&["cat-file", "-e", &format!("{commit}^{{commit}}")]).with_context(|| {
        format!("the seed table names commit {commit}, which this clone does not hold")
    })?;
    let mut args = vec!["diff", "--name-only", commit, "--"];
    args.extend_from_slice(NUMERIC_PATHS);
    Ok(git(&args)?
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// One row of the table from a finished run.
struct SeedRow {
    seed: u64,
    /// IPS then DBPS: (last, best-valid) test accuracy in %, best-valid test AUC.
    methods: [(f64, f64, Option<f64>); 2],
}

fn read_row(seed: u64, run: &Path) -> Result<SeedRow> {
    let path = run.join("metrics.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: no finished run there", path.display()))?;
    let report: RunReport =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    let figures = |name: &str| -> Result<(f64, f64, Option<f64>)> {
        let m = report
            .methods
            .iter()
            .find(|m| m.method == name)
            .with_context(|| format!("{} has no method {name}", path.display()))?;
        let acc = |e: &dbps_train::report::EvalFigures| 100.0 * e.tasks[0].accuracy;
        Ok((
            acc(&m.test_last),
            acc(&m.test_best_valid),
            m.test_best_valid.tasks[0].auc,
        ))
    };
    Ok(SeedRow {
        seed,
        methods: [figures("IPS")?, figures("DBPS")?],
    })
}

/// The table, the line that says how it was made, and the markers around them.
fn table(rows: &[SeedRow], commit: &str, machine: &str) -> String {
    let auc = |a: Option<f64>| a.map_or("–".into(), |a| format!("{a:.3}"));
    let mut out = format!(
        "{OPEN}{commit} -->\n| seed | IPS test acc (last / best valid) | DBPS test acc (last / best valid) | DBPS − IPS (last / best valid) | IPS / DBPS test AUC (best valid) |\n|---|---|---|---|---|\n"
    );
    let mean = |f: &dyn Fn(&SeedRow) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
    for r in rows {
        let [(il, ib, ia), (dl, db, da)] = r.methods;
        out += &format!(
            "| {} | {il:.2} % / {ib:.2} % | {dl:.2} % / {db:.2} % | {:+.2} / {:+.2} | {} / {} |\n",
            r.seed,
            dl - il,
            db - ib,
            auc(ia),
            auc(da)
        );
    }
    let m = |i: usize, j: usize| mean(&|r: &SeedRow| [r.methods[i].0, r.methods[i].1][j]);
    let a = |i: usize| mean(&|r: &SeedRow| r.methods[i].2.unwrap_or(f64::NAN));
    out += &format!(
        "| mean | {:.2} % / {:.2} % | {:.2} % / {:.2} % | {:+.2} / {:+.2} | {:.3} / {:.3} |\n",
        m(0, 0),
        m(0, 1),
        m(1, 0),
        m(1, 1),
        m(1, 0) - m(0, 0),
        m(1, 1) - m(0, 1),
        a(0),
        a(1)
    );
    out += &format!(
        "\n`dbps train --seed N` (N = 0, 1, 2) at commit {commit} on {machine}, tabulated by `cargo xtask readme-check`; CI checks that no code under the model, selection, encoder, kernel, tiling or data crates changed since.\n{CLOSE}"
    );
    out
}

fn machine() -> String {
    let machine = crate::bench::machine();
    format!("{} ({} threads, CPU backend)", machine.cpu, machine.threads)
}

/// Replaces the marked table in the README.
fn rewrite(readme_path: &Path, readme: &str, new_table: &str) -> Result<()> {
    let start = readme.find(OPEN).context("no seed-table marker")?;
    let end = readme[start..].find(CLOSE).context("no closing marker")? + start + CLOSE.len();
    let text = format!("{}{}{}", &readme[..start], new_table, &readme[end..]);
    let tmp = readme_path.with_extension("md.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, readme_path)
        .with_context(|| format!("cannot replace {}", readme_path.display()))
}

/// Trains the three seeds into `dir` with this checkout's `dbps`.
fn train_seeds(dir: &Path) -> Result<()> {
    crate::cargo(&["build", "--bin", "dbps"])?;
    let dbps = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("debug/dbps");
    for seed in SEEDS {
        let out = dir.join(format!("seed{seed}"));
        eprintln!("==> dbps train --seed {seed} --output {}", out.display());
        let status = Command::new(&dbps)
            .args(["--quiet", "train", "--seed", &seed.to_string(), "--output"])
            .arg(&out)
            .status()
            .with_context(|| format!("cannot start {}", dbps.display()))?;
        if !status.success() {
            bail!("dbps train --seed {seed} failed ({status})");
        }
    }
    Ok(())
}

pub fn run(args: ReadmeArgs) -> Result<()> {
    let readme_path = root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).context("cannot read README.md")?;
    let (runs, commit) = match (&args.runs, &args.commit, args.measure) {
        (Some(runs), Some(commit), _) => (runs.clone(), commit.clone()),
        (None, _, true) => {
            let head = git(&["rev-parse", "--short", "HEAD"])?;
            let dirty = numeric_changes(&head)?;
            if !dirty.is_empty() {
                bail!(
                    "commit your changes first, so the table can name the commit that made it: {}",
                    dirty.join(", ")
                );
            }
            let dir = root().join("runs/readme-seeds").join(&head);
            if dir.exists() {
                bail!(
                    "{} exists: pass it as --runs with --commit {head}, or move it aside",
                    dir.display()
                );
            }
            train_seeds(&dir)?;
            (dir, head)
        }
        _ => {
            let commit = table_commit(&readme)?;
            let changed = numeric_changes(&commit)?;
            if !changed.is_empty() {
                bail!(
                    "the README's seed table was measured at {commit}, and these files that decide its numbers changed since: {}; re-measure with `cargo xtask readme-check --measure`",
                    changed.join(", ")
                );
            }
            eprintln!("README seed table ({commit}) is current: no numeric change since");
            return Ok(());
        }
    };
    let rows = SEEDS
        .iter()
        .map(|&seed| read_row(seed, &runs.join(format!("seed{seed}"))))
        .collect::<Result<Vec<_>>>()?;
    let commit = git(&["rev-parse", "--short", &format!("{commit}^{{commit}}")])?;
    rewrite(&readme_path, &readme, &table(&rows, &commit, &machine()))?;
    eprintln!(
        "README.md: seed table rewritten from {} (commit {commit})",
        runs.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_commit() {
        let readme = format!("x\n{OPEN}abc123 -->\n| t |\n{CLOSE}\n");
        assert_eq!(table_commit(&readme).unwrap(), "abc123");
        assert!(table_commit("no table").is_err());
        assert!(table_commit(&format!("{OPEN}not-a-hash -->\n{CLOSE}")).is_err());
        assert!(table_commit(&format!("{OPEN}abc123 -->\n")).is_err());
    }
}
