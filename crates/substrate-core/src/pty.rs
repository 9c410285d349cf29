//! A fresh PTY pair the host owns, its main side as async streams: what a runtime hands a
//! program on a terminal (the replica) and the caller (the main side), never the caller's own
//! terminal.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{Error, Resizer, Result, TerminalSize};

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
pub fn open_pty(size: TerminalSize) -> Result<(OwnedFd, OwnedFd)> {
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
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Poll::Ready(Ok(()));
                }
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
pub fn streams(main: OwnedFd) -> Result<(crate::OutputStream, crate::InputStream, Resizer)> {
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
