#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod stage;

pub use stage::{StageReport, stage, staged_node_modules};

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The built harness: one ES module, run with `node harness.mjs`.
pub const HARNESS_MJS: &[u8] = include_bytes!("../dist/harness.mjs");

/// The sandbox's `package.json`: what the harness imports at run time (the agent SDK).
pub const SANDBOX_PACKAGE_JSON: &str = include_str!("../sandbox/package.json");

/// The committed lockfile of [`SANDBOX_PACKAGE_JSON`]; staging installs exactly this.
pub const SANDBOX_PACKAGE_LOCK: &str = include_str!("../sandbox/package-lock.json");

/// The harness's version (the crate's).
pub const HARNESS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Errors of writing and staging the harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The tail of its stderr.
        stderr: String,
    },
    /// Node.js is missing or too old.
    #[error("{0}")]
    Node(String),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Hex SHA-256 over the harness, the sandbox package.json and its lockfile: what a prepared VM
/// image or a staged directory is keyed by.
pub fn bundle_hash() -> String {
    let mut h = Sha256::new();
    h.update(HARNESS_MJS);
    h.update(SANDBOX_PACKAGE_JSON.as_bytes());
    h.update(SANDBOX_PACKAGE_LOCK.as_bytes());
    hex(&h.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `harness.mjs` into `dir` (atomically: temp file and rename), unless an identical
/// file is already there. Returns its path.
pub fn write_harness(dir: &Path) -> Result<PathBuf, Error> {
    let path = dir.join("harness.mjs");
    if std::fs::read(&path).is_ok_and(|existing| existing == HARNESS_MJS) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".harness.mjs.{}", std::process::id()));
    std::fs::write(&tmp, HARNESS_MJS).map_err(io_err(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io_err(format!("rename to {}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_hash_is_stable_hex() {
        assert_eq!(bundle_hash(), bundle_hash());
        assert_eq!(bundle_hash().len(), 64);
    }

    #[test]
    fn write_harness_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_harness(dir.path()).unwrap();
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(write_harness(dir.path()).unwrap(), p);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
        assert_eq!(std::fs::read(&p).unwrap(), HARNESS_MJS);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn the_bundle_reports_the_crate_version() {
        let text = String::from_utf8_lossy(HARNESS_MJS);
        assert!(
            text.contains(&format!("VERSION = \"{HARNESS_VERSION}\"")),
            "ts/src/server.ts VERSION must equal the crate version {HARNESS_VERSION}"
        );
    }

    #[test]
    fn the_bundle_imports_the_sdk_lazily_and_does_not_embed_it() {
        let text = String::from_utf8_lossy(HARNESS_MJS);
        assert!(text.contains("@anthropic-ai/claude-agent-sdk"));
        assert!(
            !text.contains("function query("),
            "the SDK must stay external"
        );
    }
}
