//! Installing the harness's run-time node_modules (the agent SDK and its native CLI) from the
//! committed lockfile, once per directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{Error, SANDBOX_PACKAGE_JSON, SANDBOX_PACKAGE_LOCK, hex, io_err};

const MARKER: &str = ".staged-lock-sha256";

/// What [`stage`] did.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The staging directory.
    pub dir: PathBuf,
    /// Its `node_modules`.
    pub node_modules: PathBuf,
    /// True when it was already up to date.
    pub skipped: bool,
    /// Time spent.
    pub duration: Duration,
}

fn lock_hash() -> String {
    let mut h = Sha256::new();
    h.update(SANDBOX_PACKAGE_JSON.as_bytes());
    h.update(SANDBOX_PACKAGE_LOCK.as_bytes());
    hex(&h.finalize())
}

/// The staged `node_modules` in `dir`, if it was staged from the current lockfile.
pub fn staged_node_modules(dir: &Path) -> Option<PathBuf> {
    let marker = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let modules = dir.join("node_modules");
    (marker.trim() == lock_hash()
        && modules
            .join("@anthropic-ai/claude-agent-sdk/package.json")
            .is_file())
    .then_some(modules)
}

/// Writes the sandbox package.json and lockfile into `dir` and runs `npm ci` there; skipped
/// when `dir` was already staged from the same lockfile.
pub fn stage(dir: &Path) -> Result<StageReport, Error> {
    let started = Instant::now();
    if let Some(node_modules) = staged_node_modules(dir) {
        return Ok(StageReport {
            dir: dir.to_path_buf(),
            node_modules,
            skipped: true,
            duration: started.elapsed(),
        });
    }
    check_node()?;
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let _ = std::fs::remove_file(dir.join(MARKER));
    std::fs::write(dir.join("package.json"), SANDBOX_PACKAGE_JSON)
        .map_err(io_err("write package.json"))?;
    std::fs::write(dir.join("package-lock.json"), SANDBOX_PACKAGE_LOCK)
        .map_err(io_err("write package-lock.json"))?;
    let args = [
        "ci",
        "--omit=dev",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ];
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            Error::Node(format!(
                "cannot run npm ({e}); install Node.js 20 or newer with npm"
            ))
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(Error::CommandFailed {
            command: format!("npm {} (in {})", args.join(" "), dir.display()),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    std::fs::write(dir.join(MARKER), lock_hash()).map_err(io_err("write the stage marker"))?;
    Ok(StageReport {
        dir: dir.to_path_buf(),
        node_modules: dir.join("node_modules"),
        skipped: false,
        duration: started.elapsed(),
    })
}

/// Node.js 20 or newer must be on PATH.
fn check_node() -> Result<(), Error> {
    let out = Command::new("node").arg("--version").output().map_err(|_| {
        Error::Node(String::from(
            "`node` was not found; install Node.js 20 or newer (https://nodejs.org, or NodeSource packages)",
        ))
    })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match parse_major(&version) {
        Some(major) if major >= 20 => Ok(()),
        _ => Err(Error::Node(format!(
            "Node.js 20 or newer is needed; `node --version` says {version:?}"
        ))),
    }
}

fn parse_major(version: &str) -> Option<u32> {
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_versions_parse() {
        assert_eq!(parse_major("v20.20.2"), Some(20));
        assert_eq!(parse_major("v18.1.0\n"), Some(18));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn an_unstaged_directory_is_not_staged() {
        let dir = tempfile::tempdir().unwrap();
        assert!(staged_node_modules(dir.path()).is_none());
        std::fs::write(dir.path().join(MARKER), "stale").unwrap();
        assert!(staged_node_modules(dir.path()).is_none());
    }
}
