//! A TCP relay from the container network's gateway to a host Unix socket: how a container,
//! which reaches no host loopback and no host socket, reaches the boot's credential broker.

use std::path::PathBuf;

use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

/// Accepts on a bound listener and pipes each connection to `socket`; stops when dropped.
#[derive(Debug)]
pub(crate) struct TcpRelay {
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Serves `listener` until dropped.
    pub(crate) fn start(listener: TcpListener, socket: PathBuf) -> Self {
        let task = tokio::spawn(async move {
            loop {
                let (mut inbound, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %e, "broker relay: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let socket = socket.clone();
                tokio::spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    match UnixStream::connect(&socket).await {
                        Ok(mut outbound) => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "broker relay: broker unreachable");
                        }
                    }
                });
            }
        });
        Self { task }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
