//! One SSH connection to a guest: connect (with retry), exec, upload, detached spawn, forwards.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelMsg, ChannelOpenFailure, Disconnect};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use substrate_core::{Error, PhaseProbe, Result, SshFailure};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

use crate::auth::{SshAuth, authenticate};
use crate::host_key::HostKeyPolicy;

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Credentials, tried in order.
    pub auth: Vec<SshAuth>,
    /// How the guest's host key is checked.
    pub host_keys: HostKeyPolicy,
    /// Keepalive interval; three missed replies close the connection.
    pub keepalive: Duration,
    /// How long one connection attempt may take.
    pub attempt_timeout: Duration,
    /// Whether a refused login is retried like a refused connection (for guests that add the
    /// login's key while sshd is already up, as cloud-init does).
    pub retry_auth: bool,
}

impl SshTarget {
    /// A target with a 15 s keepalive and 10 s per attempt.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        auth: Vec<SshAuth>,
        host_keys: HostKeyPolicy,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            auth,
            host_keys,
            keepalive: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(10),
            retry_auth: false,
        }
    }

    /// `user@host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Where a port the guest forwards to the host ends.
#[derive(Debug, Clone)]
pub enum ForwardTarget {
    /// A Unix socket on the host (the credential broker, the egress proxy).
    Unix(PathBuf),
}

/// The russh event handler: checks the host key, routes forwarded connections.
pub struct Client {
    target: String,
    policy: HostKeyPolicy,
    refusal: Arc<Mutex<Option<String>>>,
    remote_forwards: Arc<Mutex<HashMap<u32, ForwardTarget>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.policy.check(&self.target, key),
            PublicKeyOrCertificate::Certificate(_) => Err(
                "the guest presented a host certificate; only plain host keys are checked".into(),
            ),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(reason) => {
                if let Ok(mut slot) = self.refusal.lock() {
                    *slot = Some(reason);
                }
                Ok(false)
            }
        }
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        let target = self
            .remote_forwards
            .lock()
            .ok()
            .and_then(|m| m.get(&connected_port).cloned());
        let Some(ForwardTarget::Unix(path)) = target else {
            tracing::warn!(
                connected_address,
                connected_port,
                "refused a forward nobody asked for"
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let mut guest = channel.into_stream();
            match UnixStream::connect(&path).await {
                Ok(mut host) => {
                    let _ = tokio::io::copy_bidirectional(&mut guest, &mut host).await;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "forward target unreachable")
                }
            }
            let _ = guest.shutdown().await;
        });
        Ok(())
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    /// The exit code, when it exited.
    pub code: Option<u32>,
    /// The signal's name, when a signal ended it.
    pub signal: Option<String>,
}

impl RemoteStatus {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for RemoteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.signal) {
            (Some(code), _) => write!(f, "exit status: {code}"),
            (None, Some(signal)) => write!(f, "signal: {signal}"),
            (None, None) => f.write_str("no exit status (connection lost)"),
        }
    }
}

/// Which stream a chunk of output came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A finished remote command.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    /// How it ended.
    pub status: RemoteStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// A command on a guest PTY (see [`SshSession::open_pty`]). Dropping it closes the channel,
/// which hangs the command up.
pub struct RemotePty {
    /// What the command prints, once; ends when the channel closes.
    pub output: Option<tokio::io::DuplexStream>,
    /// Where keys go, once.
    pub input: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    resize: tokio::sync::mpsc::UnboundedSender<(u16, u16)>,
    end: tokio::sync::oneshot::Receiver<RemoteStatus>,
    task: JoinHandle<()>,
}

impl fmt::Debug for RemotePty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotePty").finish_non_exhaustive()
    }
}

impl RemotePty {
    /// A handle that passes a new size (columns, rows) to the guest's PTY.
    pub fn resizer(&self) -> tokio::sync::mpsc::UnboundedSender<(u16, u16)> {
        self.resize.clone()
    }

    /// Waits for the command to end and its channel to close.
    pub async fn wait(&mut self) -> RemoteStatus {
        (&mut self.end).await.unwrap_or(RemoteStatus {
            code: None,
            signal: None,
        })
    }
}

impl Drop for RemotePty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A host 127.0.0.1 port that leads to a port on the guest's loopback. Stops with `Drop`.
#[derive(Debug)]
pub struct LocalForward {
    addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl LocalForward {
    /// The host address to connect to.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for LocalForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An authenticated connection to a guest. Clones share the connection.
#[derive(Clone)]
pub struct SshSession {
    handle: Arc<Handle<Client>>,
    target: String,
    remote_forwards: Arc<Mutex<HashMap<u32, ForwardTarget>>>,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn channel_error(target: &str, what: &str, e: impl fmt::Display) -> Error {
    Error::Ssh {
        target: target.to_owned(),
        failure: SshFailure::Channel,
        reason: format!("{what}: {e}"),
    }
}

impl SshSession {
    /// One connection attempt: TCP, handshake, host key, login.
    pub async fn connect(target: &SshTarget) -> Result<Self> {
        let described = target.describe();
        let refusal = Arc::new(Mutex::new(None));
        let remote_forwards = Arc::new(Mutex::new(HashMap::new()));
        let handler = Client {
            target: described.clone(),
            policy: target.host_keys.clone(),
            refusal: refusal.clone(),
            remote_forwards: remote_forwards.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(target.keepalive),
            keepalive_max: 3,
            nodelay: true,
            inactivity_timeout: None,
            ..client::Config::default()
        });
        let connecting = client::connect(config, (target.host.as_str(), target.port), handler);
        let connected = tokio::time::timeout(target.attempt_timeout, connecting).await;
        let mut handle = match connected {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                let refused = refusal.lock().ok().and_then(|mut r| r.take());
                return Err(match refused {
                    Some(reason) => Error::Ssh {
                        target: described,
                        failure: SshFailure::HostKey,
                        reason,
                    },
                    None => Error::Ssh {
                        target: described,
                        failure: SshFailure::Connect,
                        reason: e.to_string(),
                    },
                });
            }
            Err(_) => {
                return Err(Error::Ssh {
                    target: described,
                    failure: SshFailure::Connect,
                    reason: format!("no SSH handshake within {:?}", target.attempt_timeout),
                });
            }
        };
        authenticate(&mut handle, &described, &target.user, &target.auth).await?;
        Ok(Self {
            handle: Arc::new(handle),
            target: described,
            remote_forwards,
        })
    }

    /// Connects, retrying while the guest is not up yet, until the caller's deadline (run it
    /// inside a boot phase). A changed host key is never retried; a refused login only when
    /// the target says so.
    pub async fn connect_with_retry(
        target: &SshTarget,
        probe: Option<&PhaseProbe>,
    ) -> Result<Self> {
        let mut delay = Duration::from_millis(100);
        loop {
            match Self::connect(target).await {
                Ok(session) => return Ok(session),
                Err(e) => {
                    let retry = match e.kind() {
                        substrate_core::ErrorKind::Ssh(SshFailure::Connect) => true,
                        substrate_core::ErrorKind::Ssh(SshFailure::Auth) => target.retry_auth,
                        _ => false,
                    };
                    if !retry {
                        return Err(e);
                    }
                    if let Some(probe) = probe {
                        probe.saw(e.to_string());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// `user@host:port`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `command` through the login shell, feeding `stdin` (then end of input), and hands
    /// every chunk of output to `on_output` as it arrives.
    pub async fn exec_streaming(
        &self,
        command: &str,
        stdin: &[u8],
        mut on_output: impl FnMut(OutputStream, &[u8]) + Send,
    ) -> Result<RemoteStatus> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| channel_error(&self.target, "open a session channel", e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| channel_error(&self.target, "start a command", e))?;
        if !stdin.is_empty() {
            channel
                .data_bytes(stdin.to_vec())
                .await
                .map_err(|e| channel_error(&self.target, "write to a command", e))?;
        }
        channel
            .eof()
            .await
            .map_err(|e| channel_error(&self.target, "close a command's input", e))?;
        let mut status = RemoteStatus {
            code: None,
            signal: None,
        };
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => on_output(OutputStream::Stdout, &data),
                ChannelMsg::ExtendedData { data, ext: 1 } => on_output(OutputStream::Stderr, &data),
                ChannelMsg::ExitStatus { exit_status } => status.code = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    status.signal = Some(format!("{signal_name:?}"));
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok(status)
    }

    /// Runs `command` with `input` streamed to its stdin (then end of input) and `stdout`
    /// streamed into `out`; its stderr is collected. For trees too large to hold in memory.
    pub async fn exec_piped(
        &self,
        command: &str,
        input: Option<&mut (dyn tokio::io::AsyncRead + Unpin + Send)>,
        out: Option<&mut (dyn tokio::io::AsyncWrite + Unpin + Send)>,
    ) -> Result<RemoteOutput> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| channel_error(&self.target, "open a session channel", e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| channel_error(&self.target, "start a command", e))?;
        let (mut read, write) = channel.split();
        let feed = async {
            if let Some(input) = input {
                write
                    .data(input)
                    .await
                    .map_err(|e| channel_error(&self.target, "write to a command", e))?;
            }
            write
                .eof()
                .await
                .map_err(|e| channel_error(&self.target, "close a command's input", e))
        };
        let drain = async {
            let mut out = out;
            let mut status = RemoteStatus {
                code: None,
                signal: None,
            };
            let mut stderr = Vec::new();
            let mut stdout = Vec::new();
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } => match out.as_mut() {
                        Some(out) => out
                            .write_all(&data)
                            .await
                            .map_err(|e| Error::io("write a command's output", e))?,
                        None => stdout.extend_from_slice(&data),
                    },
                    ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => status.code = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        status.signal = Some(format!("{signal_name:?}"));
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            if let Some(out) = out.as_mut() {
                out.flush()
                    .await
                    .map_err(|e| Error::io("write a command's output", e))?;
            }
            Ok::<_, Error>(RemoteOutput {
                status,
                stdout,
                stderr,
            })
        };
        let (fed, drained) = tokio::join!(feed, drain);
        let output = drained?;
        // A command that exits without reading all its input is judged by its status.
        if let Err(e) = fed
            && output.status.success()
        {
            return Err(e);
        }
        Ok(output)
    }

    /// Runs `command` on a fresh PTY of the guest (`term`, `cols`×`rows`): what an
    /// interactive session runs on. The returned handle carries the terminal's output and
    /// input, its resizes and the command's end.
    pub async fn open_pty(
        &self,
        command: &str,
        term: &str,
        cols: u16,
        rows: u16,
    ) -> Result<RemotePty> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| channel_error(&self.target, "open a session channel", e))?;
        channel
            .request_pty(true, term, u32::from(cols), u32::from(rows), 0, 0, &[])
            .await
            .map_err(|e| channel_error(&self.target, "ask for a PTY", e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| channel_error(&self.target, "start a command on the PTY", e))?;
        let (mut read, write) = channel.split();
        let input = write.make_writer();
        let (mut to_caller, output) = tokio::io::duplex(64 * 1024);
        let (resize, mut resizes) = tokio::sync::mpsc::unbounded_channel::<(u16, u16)>();
        let (ended, end) = tokio::sync::oneshot::channel();
        let target = self.target.clone();
        let task = tokio::spawn(async move {
            let mut status = RemoteStatus {
                code: None,
                signal: None,
            };
            let mut resizing = true;
            loop {
                tokio::select! {
                    msg = read.wait() => match msg {
                        Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                            // A caller that stopped reading no longer gets output; the
                            // command still runs to its end.
                            let _ = to_caller.write_all(&data).await;
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => {
                            status.code = Some(exit_status);
                        }
                        Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                            status.signal = Some(format!("{signal_name:?}"));
                        }
                        Some(ChannelMsg::Close) | None => break,
                        Some(_) => {}
                    },
                    size = resizes.recv(), if resizing => match size {
                        Some((cols, rows)) => {
                            if let Err(e) = write
                                .window_change(u32::from(cols), u32::from(rows), 0, 0)
                                .await
                            {
                                tracing::debug!(%target, error = %e, "a resize did not reach the guest");
                            }
                        }
                        None => resizing = false,
                    },
                }
            }
            drop(to_caller);
            let _ = write.close().await;
            let _ = ended.send(status);
        });
        Ok(RemotePty {
            output: Some(output),
            input: Some(Box::new(input)),
            resize,
            end,
            task,
        })
    }

    /// Runs `command` and collects its output.
    pub async fn run(&self, command: &str, stdin: &[u8]) -> Result<RemoteOutput> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let status = self
            .exec_streaming(command, stdin, |stream, data| match stream {
                OutputStream::Stdout => stdout.extend_from_slice(data),
                OutputStream::Stderr => stderr.extend_from_slice(data),
            })
            .await?;
        Ok(RemoteOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Runs `command` and fails with [`Error::ProcessFailed`] unless it exits with 0. The
    /// command is shown in the error: it must carry no secret (secrets go on stdin).
    pub async fn run_checked(&self, command: &str, stdin: &[u8]) -> Result<Vec<u8>> {
        let out = self.run(command, stdin).await?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(Error::ProcessFailed {
                command: format!("ssh {} {command}", self.target),
                status: out.status.to_string(),
                stderr: tail(&out.stderr, 2000),
            })
        }
    }

    /// Writes `data` to `path` on the guest over SFTP, created with `mode` (a relative path is
    /// under the login's home). The file is written to a temporary name and renamed, so a
    /// reader never sees half of it.
    pub async fn upload(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let sftp = self.sftp().await?;
        let tmp = format!("{path}.part");
        let mut attrs = FileAttributes::empty();
        attrs.permissions = Some(mode);
        let mut file = sftp
            .open_with_flags_and_attributes(
                tmp.clone(),
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                attrs,
            )
            .await
            .map_err(|e| channel_error(&self.target, &format!("create {tmp}"), e))?;
        file.write_all(data)
            .await
            .map_err(|e| channel_error(&self.target, &format!("write {tmp}"), e))?;
        file.shutdown()
            .await
            .map_err(|e| channel_error(&self.target, &format!("close {tmp}"), e))?;
        let mut attrs = FileAttributes::empty();
        attrs.permissions = Some(mode);
        sftp.set_metadata(tmp.clone(), attrs)
            .await
            .map_err(|e| channel_error(&self.target, &format!("chmod {tmp}"), e))?;
        // SFTP's rename refuses to replace; POSIX rename through the shell does not.
        let _ = sftp.remove_file(path.to_owned()).await;
        sftp.rename(tmp.clone(), path.to_owned())
            .await
            .map_err(|e| channel_error(&self.target, &format!("rename {tmp}"), e))?;
        let _ = sftp.close().await;
        Ok(())
    }

    async fn sftp(&self) -> Result<SftpSession> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| channel_error(&self.target, "open an SFTP channel", e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| channel_error(&self.target, "start SFTP", e))?;
        SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| channel_error(&self.target, "start SFTP", e))
    }

    /// Starts `command` detached from this connection (`setsid`, stdin from /dev/null,
    /// output appended to `log`) and returns its pid. `secret_stdin` reaches the program as an
    /// open file descriptor 3 of a mode-0600 file that is removed before the program runs, so
    /// secrets appear in no command line and no file survives. Needs a Linux guest
    /// (`setsid`, `mktemp`).
    pub async fn spawn_detached(
        &self,
        command: &str,
        log: &str,
        secret_stdin: &[u8],
    ) -> Result<u32> {
        let log = shell_escape::unix::escape(log.into());
        // A background job of a non-interactive shell leads no process group, so `setsid`
        // makes it a session leader without forking again: `$!` is the program's pid.
        let script = format!(
            "set -eu; umask 077; f=$(mktemp); cat > \"$f\"; exec 3<\"$f\"; rm -f \"$f\"; \
             setsid {command} </dev/null >>{log} 2>&1 & echo $!"
        );
        let out = self.run_checked(&script, secret_stdin).await?;
        let text = String::from_utf8_lossy(&out);
        text.trim().parse().map_err(|_| {
            channel_error(
                &self.target,
                "start a detached process",
                format!("no pid came back (got {:?})", text.trim()),
            )
        })
    }

    /// Listens on a fresh host 127.0.0.1 port and carries each connection to
    /// `guest_port` on the guest's own loopback (direct-tcpip).
    pub async fn forward_local(&self, guest_port: u16) -> Result<LocalForward> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::io("listen on a host port for the forward", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("read the forward's host port", e))?;
        let handle = self.handle.clone();
        let target = self.target.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut inbound, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, say: back off instead of spinning.
                        tracing::warn!(error = %e, "the forward could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = inbound.set_nodelay(true);
                let handle = handle.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let opened = handle
                        .channel_open_direct_tcpip(
                            "127.0.0.1",
                            u32::from(guest_port),
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await;
                    match opened {
                        Ok(channel) => {
                            let mut stream = channel.into_stream();
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut stream).await;
                        }
                        Err(e) => {
                            tracing::debug!(%target, guest_port, error = %e, "forward refused");
                        }
                    }
                });
            }
        });
        Ok(LocalForward { addr, task })
    }

    /// Asks the guest to listen on its own 127.0.0.1:`guest_port` and carries each connection
    /// to `to` on the host (tcpip-forward): how a VM reaches the credential broker and the
    /// egress proxy without any route to the host.
    pub async fn forward_remote(&self, guest_port: u16, to: ForwardTarget) -> Result<()> {
        if let Ok(mut map) = self.remote_forwards.lock() {
            map.insert(u32::from(guest_port), to);
        }
        self.handle
            .tcpip_forward("127.0.0.1", u32::from(guest_port))
            .await
            .map_err(|e| {
                channel_error(
                    &self.target,
                    &format!("listen on the guest's 127.0.0.1:{guest_port}"),
                    e,
                )
            })?;
        Ok(())
    }

    /// Whether the connection is still up.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Closes the connection (its forwards end with it).
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// The last `max` bytes of `bytes`, as text.
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
