//! Running a VM tool's command on the host (`tart`, `limactl`): output captured, failures as
//! errors that carry the command, its status and the tail of its stderr.

use std::process::Output;

use substrate_core::{CommandSpec, Error, Result};

/// A host tool and how to install it, for the error when it is missing.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// What to tell a person whose host lacks it.
    pub install_hint: &'static str,
}

impl Tool {
    /// Runs `cmd` to completion; a missing program is [`Error::NotInstalled`], a non-zero exit
    /// [`Error::ProcessFailed`].
    pub async fn run(&self, cmd: &CommandSpec) -> Result<Output> {
        let out = self.output(cmd).await?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(failed(cmd, &out))
        }
    }

    /// Runs `cmd` to completion, whatever its status.
    pub async fn output(&self, cmd: &CommandSpec) -> Result<Output> {
        let mut command = tokio::process::Command::from(cmd.to_command());
        command
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        command.output().await.map_err(|e| self.spawn_error(cmd, e))
    }

    /// The error for a command that could not be started.
    pub fn spawn_error(&self, cmd: &CommandSpec, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotInstalled {
                tool: cmd.program().to_string_lossy().into_owned(),
                hint: self.install_hint.to_owned(),
            }
        } else {
            Error::io(format!("run `{cmd}`"), e)
        }
    }
}

/// The error for a command that exited unsuccessfully (its stderr, or its stdout when stderr
/// is empty).
pub fn failed(cmd: &CommandSpec, out: &Output) -> Error {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    Error::ProcessFailed {
        command: cmd.to_string(),
        status: out.status.to_string(),
        stderr: tail(&text, 2000),
    }
}

fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim().to_owned()
}

/// Whether process `pid` of this host still runs: how reapers tell a crashed run's leftovers
/// from a live run's VMs.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `<prefix><pid>-<label>-<random>`: a VM name that says which host process owns it.
pub fn vm_name(prefix: &str, label: &str) -> Result<String> {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let random = substrate_core::Secret::random_token()?;
    let suffix: String = random
        .expose()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    Ok(format!(
        "{prefix}{}-{}-{}",
        std::process::id(),
        label.trim_matches('-'),
        suffix.to_ascii_lowercase()
    ))
}

/// The owning pid in a name made by [`vm_name`] with `prefix`.
pub fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}
