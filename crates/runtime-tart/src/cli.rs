//! Running a `tart` call: output captured, failures as errors that carry the command, its
//! status and its stderr.

use std::process::Output;

use substrate_core::{CommandSpec, Error, Result};

/// Runs `cmd` to completion; a missing program is [`Error::NotInstalled`], a non-zero exit
/// [`Error::ProcessFailed`].
pub(crate) async fn run(cmd: &CommandSpec) -> Result<Output> {
    let out = output(cmd).await?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failed(cmd, &out))
    }
}

/// Runs `cmd` to completion, whatever its status.
pub(crate) async fn output(cmd: &CommandSpec) -> Result<Output> {
    let mut command = tokio::process::Command::from(cmd.to_command());
    command
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    command.output().await.map_err(|e| spawn_error(cmd, e))
}

pub(crate) fn spawn_error(cmd: &CommandSpec, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotInstalled {
            tool: cmd.program().to_string_lossy().into_owned(),
            hint: "install Tart on a Mac with Apple Silicon (`brew install cirruslabs/cli/tart`); \
                   on Linux use the bwrap or lima runtime"
                .into(),
        }
    } else {
        Error::io(format!("run `{cmd}`"), e)
    }
}

pub(crate) fn failed(cmd: &CommandSpec, out: &Output) -> Error {
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.trim().is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    Error::ProcessFailed {
        command: cmd.to_string(),
        status: out.status.to_string(),
        stderr: tail(&stderr, 2000),
    }
}

fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim().to_owned()
}
