//! The committed `dist/harness.mjs` is the build of `ts/`: typecheck and rebuild, then compare.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::Path;
use std::process::Command;

#[test]
fn committed_bundle_matches_the_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
    let out = Command::new(cargo)
        .args(["xtask", "bundle", "--check"])
        .current_dir(&root)
        .output()
        .expect("run `cargo xtask bundle --check` (needs Node.js 20+ and npm)");
    assert!(
        out.status.success(),
        "`cargo xtask bundle --check` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
