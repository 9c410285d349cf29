//! The staged node_modules (the agent SDK and its Claude Code CLI) that runtimes running the
//! harness from the host (bwrap, local) bind in: found, or created once with `npm ci` from the
//! committed lockfile.

use std::path::PathBuf;

use substrate_core::{Error, Result};

/// `$COMPUTERAGENT_STAGE_DIR`, else `$XDG_CACHE_HOME/computeragent/stage`, else
/// `~/.cache/computeragent/stage`.
pub fn default_stage_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COMPUTERAGENT_STAGE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("computeragent").join("stage")
}

/// The staged `node_modules` in `dir`, if it is staged from this build's lockfile.
pub fn staged(dir: &std::path::Path) -> Option<PathBuf> {
    harness_bundle::staged_node_modules(dir)
}

/// The staged `node_modules` in `dir`, staging it first when missing or stale (about 400 MB
/// from npm, once). Concurrent processes wait on a file lock instead of racing `npm ci`.
pub async fn ensure_staged(dir: PathBuf) -> Result<PathBuf> {
    if let Some(modules) = staged(&dir) {
        return Ok(modules);
    }
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| Error::io(format!("create {}", lock_path.display()), e))?;
        lock.lock()
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?;
        let report = harness_bundle::stage(&dir).map_err(|e| Error::NotInstalled {
            tool: "the agent SDK's node_modules".into(),
            hint: format!(
                "staging them into {} failed: {e}; check that node (20+) and npm work and the \
                 npm registry is reachable, or set COMPUTERAGENT_STAGE_DIR to a staged directory",
                dir.display()
            ),
        })?;
        drop(lock);
        Ok(report.node_modules)
    })
    .await
    .map_err(|e| Error::invalid("staging", format!("the staging task failed: {e}")))?
}
