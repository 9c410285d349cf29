//! Interactive processes: a program in a fresh sandbox on a PTY of its own. The caller owns
//! the PTY's main side (read what the program prints, write what a person types, resize);
//! the program gets the replica side as its terminal — never the caller's own terminal, so
//! nothing it does (`TIOCSTI` among others) can reach the caller's session.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;

use substrate_core::{BootSpec, CommandEnd, Error, Result};

use crate::runtime::{RuntimeConfig, RuntimeName};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for TerminalSize {
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

fn winsize(size: TerminalSize) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn pty_error(what: &str, e: rustix::io::Errno) -> Error {
    Error::io(what.to_owned(), std::io::Error::from(e))
}

/// A fresh PTY: (main side, replica side), the replica sized `size`.
fn open_pty(size: TerminalSize) -> Result<(OwnedFd, OwnedFd)> {
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

/// A program running on a PTY in a sandbox of its own.
#[derive(Debug)]
pub struct Terminal {
    main: OwnedFd,
    #[cfg(all(feature = "bwrap", target_os = "linux"))]
    process: runtime_bwrap::JailProcess,
}

impl Terminal {
    /// Starts `argv` in a fresh sandbox of `runtime` on a new PTY of `size`, with `spec`'s
    /// policy, limits and variables. bwrap only so far; the VM runtimes need an SSH PTY.
    ///
    /// With `seed`, that directory's tree is copied into the workdir first.
    pub async fn open(
        runtime: RuntimeName,
        config: &RuntimeConfig,
        spec: &BootSpec,
        argv: Vec<OsString>,
        size: TerminalSize,
        seed: Option<&std::path::Path>,
    ) -> Result<Self> {
        if argv.is_empty() {
            return Err(Error::invalid("terminal", "no program given"));
        }
        Self::start(runtime, config, spec, argv, size, seed).await
    }

    /// The host directory that is the program's workdir (kept after [`Terminal::wait`] when
    /// the spec keeps workdirs).
    pub fn workdir(&self) -> Option<std::path::PathBuf> {
        #[cfg(all(feature = "bwrap", target_os = "linux"))]
        {
            Some(self.process.workdir().to_path_buf())
        }
        #[cfg(not(all(feature = "bwrap", target_os = "linux")))]
        {
            None
        }
    }

    #[cfg(all(feature = "bwrap", target_os = "linux"))]
    async fn start(
        runtime: RuntimeName,
        config: &RuntimeConfig,
        spec: &BootSpec,
        argv: Vec<OsString>,
        size: TerminalSize,
        seed: Option<&std::path::Path>,
    ) -> Result<Self> {
        if runtime != RuntimeName::Bwrap {
            return Err(unsupported(runtime));
        }
        let substrate = crate::runtime::bwrap_substrate(config).await?;
        let (main, replica) = open_pty(size)?;
        let process = substrate.spawn_terminal(spec, argv, replica, seed).await?;
        Ok(Self { main, process })
    }

    #[cfg(not(all(feature = "bwrap", target_os = "linux")))]
    async fn start(
        runtime: RuntimeName,
        _config: &RuntimeConfig,
        _spec: &BootSpec,
        _argv: Vec<OsString>,
        size: TerminalSize,
        _seed: Option<&std::path::Path>,
    ) -> Result<Self> {
        let _ = open_pty(size)?;
        Err(unsupported(runtime))
    }

    /// What the program prints (blocking reads; an error or end once it and its children
    /// closed the terminal).
    pub fn reader(&self) -> Result<File> {
        self.main
            .try_clone()
            .map(File::from)
            .map_err(|e| Error::io("share the PTY", e))
    }

    /// Where what a person types goes (blocking writes).
    pub fn writer(&self) -> Result<File> {
        self.reader()
    }

    /// Tells the program its terminal's new size (it gets `SIGWINCH`).
    pub fn resize(&self, size: TerminalSize) -> Result<()> {
        rustix::termios::tcsetwinsize(&self.main, winsize(size))
            .map_err(|e| pty_error("resize the PTY", e))
    }

    /// Waits for the program to end, then removes its sandbox.
    pub async fn wait(self) -> Result<CommandEnd> {
        #[cfg(all(feature = "bwrap", target_os = "linux"))]
        {
            let exit = self.process.wait().await?;
            Ok(CommandEnd {
                code: exit.status.code(),
                reason: exit.reason,
            })
        }
        #[cfg(not(all(feature = "bwrap", target_os = "linux")))]
        {
            Err(Error::ShutDown)
        }
    }
}

fn unsupported(runtime: RuntimeName) -> Error {
    Error::Unsupported {
        what: format!("interactive sessions on the {runtime} runtime"),
        reason: "they run in bwrap sandboxes so far (Linux); VMs need an SSH PTY".into(),
    }
}

/// The size of the terminal `fd` is on, if it is one.
pub fn size_of(fd: impl std::os::fd::AsFd) -> Option<TerminalSize> {
    rustix::termios::tcgetwinsize(fd)
        .ok()
        .map(|w| TerminalSize {
            rows: w.ws_row,
            cols: w.ws_col,
        })
}
