//! Project automation: `cargo xtask <command>`.

mod bench;
mod bundle;
mod features;
mod image;
mod snapshots;
mod stage;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  bundle [--check]   build crates/harness-bundle/dist/harness.mjs from the TypeScript sources
                     (--check: fail if the committed bundle is stale)
  stage [DIR]        install the harness's node_modules (the agent SDK and its CLI) into DIR
                     (default: target/harness-stage); skipped when already up to date
  bench [bwrap|egress|vm|server|project]
                     harness start, event throughput and file transfer; with `bwrap`: jailed
                     boot, exec vs srt, 32 concurrent boots and PSS; with `egress`: proxy
                     throughput and CONNECT latency, broker time to first byte — each beside a
                     baseline measured in the same run (release build)
  image [--out DIR] [--no-build]
                     write the harness image's build context (Containerfile, harness, lockfile;
                     default target/container-image) and, where Apple's `container` exists,
                     build computeragent-harness:<bundle hash> with it
  features           check that each of the facade's feature sets pulls only its own
                     platform's dependencies (cargo tree per target; part of `test`)
  snapshots [--accept]
                     the argv snapshot tests of every runtime (--accept: write changed
                     snapshots for review in git diff)
  test [--no-lint]   install missing system packages (as root), stage, run every test, then
                     rustfmt and clippy
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "bundle" => bundle::run(rest),
        "stage" => stage::run(rest),
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "snapshots" => snapshots::run(rest),
        "image" => image::run(rest),
        "features" => features::run(),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
