//! Interactive processes: a program in a fresh sandbox on a terminal of its own (see
//! [`substrate_core::terminal`]). The caller holds the other side: read what the program
//! prints, write what a person types, resize; the program never gets the caller's own
//! terminal, so nothing it does (`TIOCSTI` among others) can reach the caller's session.
//! bwrap runs it on a PTY pair the host owns, tart and lima on an SSH PTY channel.

pub use substrate_core::{Resizer, Terminal, TerminalRequest, TerminalSize};

use substrate_core::{BootSpec, Result};

use crate::runtime::{RuntimeConfig, RuntimeName};

/// Starts `request` in a fresh sandbox of `runtime` with `spec`'s policy, limits and
/// variables.
pub async fn open(
    runtime: RuntimeName,
    config: &RuntimeConfig,
    spec: &BootSpec,
    request: TerminalRequest,
) -> Result<Terminal> {
    let substrate = crate::runtime::open(runtime, config).await?;
    substrate.open_terminal(spec, request).await
}

/// Opens `request` inside the running sandbox `id` of `runtime` (a warm sandbox of `serve`:
/// `sbx_…`): the debug shell. Closing it ends the program, not the sandbox. bwrap only, as
/// root.
pub async fn enter(
    runtime: RuntimeName,
    config: &RuntimeConfig,
    id: &str,
    request: TerminalRequest,
) -> Result<Terminal> {
    match runtime {
        #[cfg(all(feature = "bwrap", target_os = "linux"))]
        RuntimeName::Bwrap => {
            crate::runtime::bwrap_substrate(config)
                .await?
                .enter_terminal(id, request)
                .await
        }
        other => {
            let _ = (config, id, request);
            Err(substrate_core::Error::Unsupported {
                what: format!("a shell in a running {other} sandbox"),
                reason: "it is done for bwrap sandboxes; a VM of a running sandbox can be \
                         reached with `limactl shell` or `ssh` meanwhile"
                    .into(),
            })
        }
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
