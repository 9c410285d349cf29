//! Interactive programs in a VM: the program on an SSH PTY channel of the guest, in a fresh
//! workdir seeded from the host, its variables in a private file it reads and removes before
//! the program runs (never a command line). The workdir's tree comes back to the host as a
//! tar stream, unpacked so that no entry lands outside the caller's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use substrate_core::{
    CommandEnd, EnvVars, Error, ExitReason, Resizer, Result, Teardown, Terminal, TerminalRequest,
    TerminalSandbox,
};

use crate::guest::Installed;
use crate::session::{RemotePty, RemoteStatus, SshSession};

/// Where a terminal's workdir is in the guest, under the login's home.
const WORKDIR: &str = "work/terminal";

/// Starts `request` on a PTY of the guest behind `ssh`, with `vars` as its environment (on
/// top of the login's), in a fresh workdir holding the request's seed. `vm` is torn down
/// when the terminal is closed, or dropped.
///
/// The program's variables are `engine_envs` (brokered keys as placeholders), `extra_env`
/// (the forwards' addresses) and `HARNESS_NODE_MODULES`, where Claude Code's binary is.
pub async fn open_terminal(
    ssh: &SshSession,
    installed: &Installed,
    engine_envs: &EnvVars,
    extra_env: &[(String, String)],
    request: TerminalRequest,
    mut vm: Box<dyn Teardown>,
) -> Result<Terminal> {
    let vars = program_vars(installed, engine_envs, extra_env);
    let workdir = format!("{}/{WORKDIR}", installed.home);
    match start(ssh, workdir, true, vars, request).await {
        Ok((pty, workdir)) => Ok(assemble(pty, ssh.clone(), workdir, vm)),
        Err(e) => {
            if let Err(cleanup) = vm.shutdown().await {
                tracing::error!(error = %cleanup, "cleanup after a failed terminal start failed");
            }
            Err(e)
        }
    }
}

async fn start(
    ssh: &SshSession,
    workdir: String,
    fresh: bool,
    vars: BTreeMap<String, String>,
    request: TerminalRequest,
) -> Result<(RemotePty, String)> {
    request.check()?;
    let quoted_workdir = quote(&workdir);
    if fresh {
        ssh.run_checked(
            &format!("rm -rf {quoted_workdir} && mkdir -p {quoted_workdir}"),
            b"",
        )
        .await?;
    }
    if let Some(seed) = &request.seed {
        seed_workdir(ssh, seed, &workdir).await?;
    }
    let mut script = String::new();
    for (name, value) in &vars {
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::invalid(
                "terminal environment",
                format!("`{name}` is not a variable name a shell accepts"),
            ));
        }
        script.push_str(&format!("export {name}={}\n", quote(value)));
    }
    // A private file for the variables: they may carry placeholders of brokered keys.
    let env_file = ssh
        .run_checked(
            "umask 077; mkdir -p .computeragent/run; f=$(mktemp .computeragent/run/term.XXXXXX); \
             cat > \"$f\"; printf '%s' \"$HOME/$f\"",
            script.as_bytes(),
        )
        .await?;
    let env_file = String::from_utf8_lossy(&env_file).trim().to_owned();
    // `exec` at each level: no shell stays between sshd and the program to catch its signals.
    let mut command = format!(
        "exec sh -c '. \"$1\"; rm -f \"$1\"; cd \"$2\" || exit 126; shift 2; exec \"$@\"' \
         computeragent-terminal {} {quoted_workdir}",
        quote(&env_file)
    );
    for arg in &request.argv {
        let arg = arg.to_str().ok_or_else(|| {
            Error::invalid(
                "terminal",
                format!("the argument {arg:?} is not UTF-8, which an SSH command line needs"),
            )
        })?;
        command.push(' ');
        command.push_str(&quote(arg));
    }
    let pty = ssh
        .open_pty(
            &command,
            &request.term,
            request.size.cols,
            request.size.rows,
        )
        .await?;
    Ok((pty, workdir))
}

fn assemble(
    mut pty: RemotePty,
    ssh: SshSession,
    workdir: String,
    vm: Box<dyn Teardown>,
) -> Terminal {
    let output: substrate_core::OutputStream = match pty.output.take() {
        Some(output) => Box::pin(output),
        None => Box::pin(tokio::io::empty()),
    };
    let input: substrate_core::InputStream = match pty.input.take() {
        Some(input) => Box::pin(input),
        None => Box::pin(tokio::io::sink()),
    };
    let sizes = pty.resizer();
    let resizer = Resizer::new(move |size| {
        sizes.send((size.cols, size.rows)).map_err(|_| {
            Error::invalid(
                "terminal",
                "the program has ended; there is no PTY to resize",
            )
        })
    });
    Terminal::new(
        output,
        input,
        resizer,
        Box::new(GuestTerminal {
            pty: Some(pty),
            ssh,
            workdir,
            vm: Some(vm),
        }),
    )
}

/// The program's variables: the engine's (brokered keys as placeholders), the forwards'
/// addresses, and where Claude Code's binary is.
fn program_vars(
    installed: &Installed,
    engine_envs: &EnvVars,
    extra_env: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut vars = engine_envs.expose_map();
    for (name, value) in extra_env {
        vars.insert(name.clone(), value.clone());
    }
    vars.insert(
        "HARNESS_NODE_MODULES".into(),
        format!(
            "{}/{}/node_modules",
            installed.home,
            crate::guest::harness_dir()
        ),
    );
    vars
}

/// Terminals beside a booted guest's harness, over the boot's SSH connection, in the
/// harness's workdir root. Closing one ends its program; the VM stays.
#[derive(Debug)]
pub struct GuestTerminals {
    ssh: SshSession,
    installed: Installed,
    vars: BTreeMap<String, String>,
}

impl GuestTerminals {
    /// Terminals on `ssh`, with the harness's variables.
    pub fn new(
        ssh: SshSession,
        installed: Installed,
        engine_envs: &EnvVars,
        extra_env: &[(String, String)],
    ) -> Self {
        let vars = program_vars(&installed, engine_envs, extra_env);
        Self {
            ssh,
            installed,
            vars,
        }
    }
}

/// Nothing to tear down: the VM belongs to its boot.
#[derive(Debug)]
struct Borrowed;

#[async_trait]
impl Teardown for Borrowed {
    async fn shutdown(&mut self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl substrate_core::TerminalHost for GuestTerminals {
    async fn open_terminal(&self, request: TerminalRequest) -> Result<Terminal> {
        let workdir = format!("{}/work", self.installed.home);
        let (pty, workdir) = start(&self.ssh, workdir, false, self.vars.clone(), request).await?;
        Ok(assemble(pty, self.ssh.clone(), workdir, Box::new(Borrowed)))
    }
}

fn quote(text: &str) -> String {
    shell_escape::unix::escape(text.into()).into_owned()
}

/// Streams `seed`'s tree into `workdir` in the guest (host `tar`, guest `tar`).
async fn seed_workdir(ssh: &SshSession, seed: &Path, workdir: &str) -> Result<()> {
    let mut tar = substrate_core::archive::HostTar::pack(seed)?;
    let mut stdout = tar.take_output()?;
    let out = ssh
        .exec_piped(
            &format!("tar -C {} -xf -", quote(workdir)),
            Some(&mut stdout),
            None,
        )
        .await?;
    tar.finish().await?;
    if !out.status.success() {
        return Err(Error::ProcessFailed {
            command: format!("ssh {} tar -xf - (the project into the VM)", ssh.target()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// A program on a guest PTY, and the VM it runs in.
#[derive(Debug)]
struct GuestTerminal {
    pty: Option<RemotePty>,
    ssh: SshSession,
    workdir: String,
    vm: Option<Box<dyn Teardown>>,
}

/// `128 + N` for the signals a guest names.
fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim_start_matches("Custom(\"").trim_end_matches("\")");
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}

/// A guest command's end in the terms of every runtime.
pub fn command_end(status: &RemoteStatus) -> CommandEnd {
    match (
        status.code,
        status.signal.as_deref().and_then(signal_number),
    ) {
        (Some(code), _) => {
            let code = i32::try_from(code).unwrap_or(i32::MAX);
            CommandEnd {
                code: Some(code),
                reason: ExitReason::Exited(code),
            }
        }
        (None, Some(signal)) => CommandEnd {
            code: Some(128 + signal),
            reason: ExitReason::Signaled(signal),
        },
        (None, None) => CommandEnd {
            code: None,
            reason: ExitReason::Exited(-1),
        },
    }
}

#[async_trait]
impl TerminalSandbox for GuestTerminal {
    async fn wait(&mut self) -> Result<CommandEnd> {
        let pty = self
            .pty
            .as_mut()
            .ok_or_else(|| Error::invalid("terminal", "the terminal is closed"))?;
        let status = pty.wait().await;
        if status.code.is_none() && status.signal.is_none() && self.ssh.is_closed() {
            return Err(Error::Ssh {
                target: self.ssh.target().to_owned(),
                failure: substrate_core::SshFailure::Channel,
                reason: "the connection to the VM was lost before the program ended".into(),
            });
        }
        Ok(command_end(&status))
    }

    async fn workdir_on_host(&mut self, scratch: &Path) -> Result<PathBuf> {
        let archive = scratch.join("workdir.tar");
        let mut file = tokio::fs::File::create(&archive)
            .await
            .map_err(|e| Error::io(format!("create {}", archive.display()), e))?;
        let out = self
            .ssh
            .exec_piped(
                &format!("tar -C {} -cf - .", quote(&self.workdir)),
                None,
                Some(&mut file),
            )
            .await?;
        drop(file);
        if !out.status.success() {
            return Err(Error::ProcessFailed {
                command: format!(
                    "ssh {} tar -cf - (the workdir out of the VM)",
                    self.ssh.target()
                ),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let dest = scratch.join("workdir");
        let unpack_to = dest.clone();
        tokio::task::spawn_blocking(move || substrate_core::archive::unpack(&archive, &unpack_to))
            .await
            .map_err(|e| Error::io("unpack the workdir", std::io::Error::other(e)))??;
        Ok(dest)
    }

    async fn close(&mut self) -> Result<()> {
        // Closing the channel hangs the program up; the VM goes next.
        self.pty = None;
        if let Some(mut vm) = self.vm.take()
            && let Err(e) = vm.shutdown().await
        {
            self.vm = Some(vm);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ends_become_exit_codes() {
        let exited = command_end(&RemoteStatus {
            code: Some(3),
            signal: None,
        });
        assert_eq!(exited.code, Some(3));
        let signaled = command_end(&RemoteStatus {
            code: None,
            signal: Some("INT".into()),
        });
        assert_eq!(signaled.code, Some(130));
        assert_eq!(signaled.reason, ExitReason::Signaled(2));
    }

    #[test]
    fn a_hostile_archive_writes_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let archive = dir.path().join("a.tar");
        {
            let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            // A link out, then a file through it; a FIFO.
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            link.set_mode(0o777);
            builder.append_link(&mut link, "escape", &outside).unwrap();
            let mut file = tar::Header::new_gnu();
            file.set_size(4);
            file.set_mode(0o644);
            builder
                .append_data(&mut file, "escape/pwned", &b"evil"[..])
                .unwrap();
            let mut fifo = tar::Header::new_gnu();
            fifo.set_entry_type(tar::EntryType::Fifo);
            fifo.set_size(0);
            fifo.set_mode(0o644);
            builder.append_data(&mut fifo, "pipe", &b""[..]).unwrap();
            let mut good = tar::Header::new_gnu();
            good.set_size(2);
            good.set_mode(0o755);
            builder.append_data(&mut good, "ok.sh", &b"hi"[..]).unwrap();
            builder.finish().unwrap();
        }
        let dest = dir.path().join("dest");
        substrate_core::archive::unpack(&archive, &dest).unwrap();
        assert!(!outside.join("pwned").exists(), "wrote through a link out");
        assert!(!dest.join("pipe").exists(), "a FIFO was created");
        assert!(dest.join("escape").is_symlink(), "the link itself is kept");
        let ok = dest.join("ok.sh");
        assert_eq!(std::fs::read(&ok).unwrap(), b"hi");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&ok).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
}
