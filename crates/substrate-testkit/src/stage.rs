//! Finding (and, once per machine, creating) the staged node_modules the harness's engine needs.

use std::path::PathBuf;

/// The staging directory: `$COMPUTERAGENT_STAGE_DIR`, else `target/harness-stage` in this
/// workspace (where `cargo xtask stage` puts it).
pub fn stage_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COMPUTERAGENT_STAGE_DIR") {
        return PathBuf::from(dir);
    }
    workspace_root().join("target").join("harness-stage")
}

/// The workspace root, from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(manifest)
}

/// The staged `node_modules`, staging it first when missing or stale (`npm ci`, about 15 s and
/// 400 MB once). Concurrent test processes wait on a file lock instead of racing `npm ci`.
pub fn ensure_staged() -> Result<PathBuf, String> {
    let dir = stage_dir();
    if let Some(modules) = harness_bundle::staged_node_modules(&dir) {
        return Ok(modules);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let report = harness_bundle::stage(&dir).map_err(|e| {
        format!(
            "staging the harness's node_modules into {} failed: {e}\n\
             run `cargo xtask stage` to see the whole output",
            dir.display()
        )
    })?;
    drop(lock);
    Ok(report.node_modules)
}
