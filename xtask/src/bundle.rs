//! `cargo xtask bundle [--check]`: typecheck the harness's TypeScript and build
//! `crates/harness-bundle/dist/harness.mjs` with esbuild.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

/// The bundle's output is a pure function of these arguments and the sources.
const ESBUILD_ARGS: &[&str] = &[
    "src/main.ts",
    "--bundle",
    "--platform=node",
    "--format=esm",
    "--target=node20",
    "--external:@anthropic-ai/claude-agent-sdk",
    "--legal-comments=none",
    "--log-level=warning",
    "--banner:js=// harness.mjs: built from crates/harness-bundle/ts by `cargo xtask bundle`; do not edit.",
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => bail!("usage: cargo xtask bundle [--check]"),
    };
    let ts = workspace_root().join("crates/harness-bundle/ts");
    let dist = workspace_root().join("crates/harness-bundle/dist/harness.mjs");
    ensure_build_tools(&ts)?;
    npx(&ts, &["tsc", "-p", "."]).context("typecheck the harness (tsc)")?;
    if check {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("harness.mjs");
        build(&ts, &out)?;
        let fresh = std::fs::read(&out)?;
        let committed = std::fs::read(&dist).with_context(|| format!("read {}", dist.display()))?;
        if fresh != committed {
            bail!(
                "crates/harness-bundle/dist/harness.mjs is stale: run `cargo xtask bundle` and commit it"
            );
        }
        eprintln!("harness.mjs is up to date");
    } else {
        build(&ts, &dist)?;
        eprintln!("wrote {}", dist.display());
    }
    Ok(())
}

fn build(ts: &Path, out: &Path) -> anyhow::Result<()> {
    let mut args: Vec<String> = std::iter::once(String::from("esbuild"))
        .chain(ESBUILD_ARGS.iter().map(|s| s.to_string()))
        .collect();
    args.push(format!("--outfile={}", out.display()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    npx(ts, &refs).context("bundle the harness (esbuild)")
}

/// `npm ci` in ts/ when node_modules is missing or older than the lockfile.
fn ensure_build_tools(ts: &Path) -> anyhow::Result<()> {
    let marker = ts.join("node_modules/.package-lock.json");
    let lock = ts.join("package-lock.json");
    let fresh = match (std::fs::metadata(&marker), std::fs::metadata(&lock)) {
        (Ok(m), Ok(l)) => m.modified()? >= l.modified()?,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    eprintln!(
        "installing the harness's build tools (npm ci in {})",
        ts.display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(ts)
        .status()
        .context("run npm (install Node.js 20 or newer with npm)")?;
    if !status.success() {
        bail!("npm ci in {} failed ({status})", ts.display());
    }
    Ok(())
}

fn npx(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let bin: PathBuf = dir.join("node_modules/.bin").join(args[0]);
    let status = Command::new(&bin)
        .args(&args[1..])
        .current_dir(dir)
        .status()
        .with_context(|| format!("run {}", bin.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", args[0]);
    }
    Ok(())
}
