//! Interactive programs in a bwrap jail: a fresh PTY pair the host owns. The program gets the
//! replica as its stdin, stdout, stderr and controlling terminal; the caller gets the main
//! side as async streams, and resizes it.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use substrate_core::{
    BootSpec, CommandEnd, Error, Result, Terminal, TerminalRequest, TerminalSandbox, WorkdirPolicy,
};

use crate::BwrapSubstrate;
use crate::launcher::JailProcess;

/// One terminal's jail. The jail is waited for by a task of its own, so that waiting can be
/// given up and taken again (a resize, say, interrupts the caller's wait) without dropping
/// the jail. Its workdir is kept past the program's end, so that the caller can read it, and
/// removed by `close`.
#[derive(Debug)]
struct BwrapTerminal {
    /// Ends the jail when sent, or when dropped.
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// The program's exit, or `None` when it was killed.
    waiter: Option<tokio::task::JoinHandle<Option<Result<CommandEnd>>>>,
    end: Option<CommandEnd>,
    workdir: PathBuf,
    /// The boot directory that holds the workdir.
    boot_dir: Option<PathBuf>,
}

impl BwrapTerminal {
    fn new(process: JailProcess) -> Self {
        let workdir = process.workdir().to_path_buf();
        let boot_dir = workdir.parent().map(Path::to_path_buf);
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let waiter = tokio::spawn(async move {
            let mut waiting = Box::pin(process.wait());
            tokio::select! {
                exit = &mut waiting => Some(exit.map(|exit| CommandEnd {
                    code: exit.status.code(),
                    reason: exit.reason,
                })),
                // Sent or dropped: dropping the wait drops the jail, which kills it.
                _ = killed => None,
            }
        });
        Self {
            kill: Some(kill),
            waiter: Some(waiter),
            end: None,
            workdir,
            boot_dir,
        }
    }
}

#[async_trait]
impl TerminalSandbox for BwrapTerminal {
    async fn wait(&mut self) -> Result<CommandEnd> {
        if let Some(end) = self.end {
            return Ok(end);
        }
        let waiter = self
            .waiter
            .as_mut()
            .ok_or_else(|| Error::invalid("terminal", "the terminal is closed"))?;
        let waited = waiter.await;
        self.waiter = None;
        match waited {
            Ok(Some(Ok(end))) => {
                self.end = Some(end);
                Ok(end)
            }
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Err(Error::invalid("terminal", "the terminal was closed")),
            Err(e) => Err(Error::io(
                "wait for the terminal's jail",
                io::Error::other(e.to_string()),
            )),
        }
    }

    async fn workdir_on_host(&mut self, _scratch: &Path) -> Result<PathBuf> {
        Ok(self.workdir.clone())
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.await;
        }
        if let Some(dir) = self.boot_dir.take() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", dir.display()), e)),
            }
        }
        Ok(())
    }
}

impl Drop for BwrapTerminal {
    fn drop(&mut self) {
        // Dropping the sender ends the jail; the kept boot directory goes here.
        drop(self.kill.take());
        if let Some(dir) = self.boot_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub(crate) async fn open(
    sub: &BwrapSubstrate,
    spec: &BootSpec,
    request: TerminalRequest,
) -> Result<Terminal> {
    request.check()?;
    if request.seed.is_some() && spec.limits.disk_bytes.is_some() {
        return Err(Error::Unsupported {
            what: "a workdir size cap on a terminal with a project".into(),
            reason: "the capped workdir is an image that is unmounted when the program ends, \
                     so its changes could not be read; drop the disk limit"
                .into(),
        });
    }
    // The workdir outlives the program (its changes are read), until `close`.
    let spec = spec
        .clone()
        .workdir(WorkdirPolicy::Keep)
        .env("TERM", request.term.clone())
        .env(
            "HARNESS_NODE_MODULES",
            format!("{}/node_modules", crate::jail::HARNESS_DIR),
        );
    let (main, replica) = substrate_core::pty::open_pty(request.size)?;
    let process = sub
        .spawn_terminal(
            &spec,
            request.argv,
            replica,
            request.seed.as_deref().map(|dir| {
                if request.move_seed {
                    crate::Seed::Move(dir)
                } else {
                    crate::Seed::Copy(dir)
                }
            }),
        )
        .await?;
    let (output, input, resizer) = substrate_core::pty::streams(main)?;
    Ok(Terminal::new(
        output,
        input,
        resizer,
        Box::new(BwrapTerminal::new(process)),
    ))
}
