//! Interactive programs in a bwrap jail: a fresh PTY pair the host owns. The program gets the
//! replica as its stdin, stdout, stderr and controlling terminal; the caller gets the main
//! side as async streams, and resizes it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use substrate_core::{
    BootSpec, CommandEnd, Error, Resizer, Result, Terminal, TerminalRequest, TerminalSandbox,
    TerminalSize, WorkdirPolicy,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::BwrapSubstrate;
use crate::launcher::JailProcess;

fn winsize(size: TerminalSize) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn pty_error(what: &str, e: rustix::io::Errno) -> Error {
    Error::io(what.to_owned(), io::Error::from(e))
}

/// A fresh PTY: (main side, replica side), sized `size`.
pub(crate) fn open_pty(size: TerminalSize) -> Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let main = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .map_err(|e| pty_error("open a PTY", e))?;
    grantpt(&main).map_err(|e| pty_error("grant the PTY", e))?;
    unlockpt(&main).map_err(|e| pty_error("unlock the PTY", e))?;
    let name = ptsname(&main, Vec::new()).map_err(|e| pty_error("name the PTY", e))?;
    let replica = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| pty_error("open the PTY's replica", e))?;
    rustix::termios::tcsetwinsize(&main, winsize(size))
        .map_err(|e| pty_error("size the PTY", e))?;
    Ok((main, replica))
}

/// The PTY's main side as a non-blocking async stream. A read after the program and all its
/// children closed the replica fails with `EIO` on Linux: that is the end of the output.
#[derive(Debug)]
struct PtyStream(Arc<AsyncFd<OwnedFd>>);

impl PtyStream {
    fn new(main: OwnedFd) -> Result<Self> {
        rustix::io::ioctl_fionbio(&main, true)
            .map_err(|e| pty_error("make the PTY non-blocking", e))?;
        // SAFETY: an `OwnedFd` is open and names the same file description for as long as
        // it lives, which is the whole life of the `AsyncFd` that owns it.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(main) }
            .map_err(|e| Error::io("watch the PTY", io::Error::other(e.to_string())))?;
        Ok(Self(Arc::new(fd)))
    }

    fn share(&self) -> Self {
        Self(self.0.clone())
    }
}

impl AsyncRead for PtyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref().as_fd(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard
                .try_io(|fd| rustix::io::write(fd.get_ref().as_fd(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The PTY's main side as the caller's output and input streams and its resizer.
pub(crate) fn streams(
    main: OwnedFd,
) -> Result<(
    substrate_core::OutputStream,
    substrate_core::InputStream,
    Resizer,
)> {
    let stream = PtyStream::new(main)?;
    let for_resize = stream.share();
    let resizer = Resizer::new(move |size| {
        rustix::termios::tcsetwinsize(for_resize.0.get_ref(), winsize(size))
            .map_err(|e| pty_error("resize the PTY", e))
    });
    tracing::debug!(pty = stream.0.get_ref().as_raw_fd(), "terminal started");
    let input = stream.share();
    Ok((Box::pin(stream), Box::pin(input), resizer))
}

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
    let (main, replica) = open_pty(request.size)?;
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
    let (output, input, resizer) = streams(main)?;
    Ok(Terminal::new(
        output,
        input,
        resizer,
        Box::new(BwrapTerminal::new(process)),
    ))
}
