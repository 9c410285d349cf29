//! substrate-ssh against a real OpenSSH sshd: a simulated guest (its own network namespace and
//! disk) started through the `tart` simulator. Needs root and openssh-server, as the VM
//! runtimes' tests do.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::process::{Child, Command};
use std::time::Duration;

use substrate_core::{ErrorKind, Secret, SshFailure};
use substrate_ssh::{ForwardTarget, HostKeyPolicy, OutputStream, SshAuth, SshSession, SshTarget};
use substrate_testkit::guestsim::{GUEST_PASSWORD, GUEST_USER, SimTools};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running guest of its own; stopped and deleted on drop.
struct Guest {
    tools: SimTools,
    _dir: tempfile::TempDir,
    run: Child,
    ip: String,
}

impl Guest {
    fn start() -> Self {
        SimTools::check_host().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tools = SimTools::install(&dir.path().join("bin"), &dir.path().join("home")).unwrap();
        let tart = |args: &[&str]| {
            let out = Command::new(tools.tart())
                .env("TART_HOME", tools.store().root())
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "tart {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        tart(&["create", "--linux", "image"]);
        tart(&["clone", "image", "vm"]);
        let run = Command::new(tools.tart())
            .env("TART_HOME", tools.store().root())
            .args(["run", "vm", "--no-graphics"])
            .spawn()
            .unwrap();
        let ip = tart(&["ip", "vm", "--wait", "10"]).trim().to_owned();
        // An address comes with the VM; sshd may still be starting: wait until it accepts, so
        // that each test sees the failure it is about and not a refused connection.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect((ip.as_str(), 22)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd in the guest never accepted"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            tools,
            _dir: dir,
            run,
            ip,
        }
    }

    fn target(&self, auth: Vec<SshAuth>) -> SshTarget {
        SshTarget::new(
            self.ip.clone(),
            22,
            GUEST_USER,
            auth,
            HostKeyPolicy::AcceptAnyInsecure,
        )
    }

    fn password(&self) -> SshTarget {
        self.target(vec![SshAuth::Password(Secret::new(GUEST_PASSWORD))])
    }

    async fn connect(&self) -> SshSession {
        tokio::time::timeout(
            Duration::from_secs(20),
            SshSession::connect_with_retry(&self.password(), None),
        )
        .await
        .unwrap()
        .unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new(self.tools.tart())
            .env("TART_HOME", self.tools.store().root())
            .args(["delete", "vm"])
            .status();
        let _ = self.run.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_method_and_a_refusal() {
    let guest = Guest::start();
    guest.connect().await.close().await;
    let kbd = guest.target(vec![SshAuth::KeyboardInteractive(Secret::new(
        GUEST_PASSWORD,
    ))]);
    SshSession::connect(&kbd).await.unwrap().close().await;
    let key = guest.target(vec![SshAuth::KeyFile {
        path: guest.tools.store().client_key().unwrap(),
        passphrase: None,
    }]);
    SshSession::connect(&key).await.unwrap().close().await;
    let wrong = guest.target(vec![
        SshAuth::Password(Secret::new("wrong")),
        SshAuth::KeyboardInteractive(Secret::new("wrong")),
    ]);
    let err = SshSession::connect(&wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ssh(SshFailure::Auth), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "a password in a message: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_key_is_checked() {
    let guest = Guest::start();
    let mut target = guest.password();
    target.host_keys = HostKeyPolicy::Pinned(vec!["SHA256:not-this-one".into()]);
    let err = SshSession::connect(&target).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ssh(SshFailure::HostKey), "{err}");
    // The guest's real key, read from its image, passes.
    let public = std::fs::read_to_string(
        guest
            .tools
            .store()
            .config("vm")
            .unwrap()
            .layers
            .last()
            .unwrap()
            .join("etc/ssh/ssh_host_ed25519_key.pub"),
    )
    .unwrap();
    let key = russh_key(&public);
    target.host_keys = HostKeyPolicy::Pinned(vec![substrate_ssh::fingerprint(&key)]);
    SshSession::connect(&target).await.unwrap().close().await;
}

fn russh_key(line: &str) -> russh::keys::PublicKey {
    russh::keys::PublicKey::from_openssh(line.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_output_and_status_and_upload_keeps_the_mode() {
    let guest = Guest::start();
    let ssh = guest.connect().await;
    let mut chunks = Vec::new();
    let status = ssh
        .exec_streaming(
            "echo out; echo err >&2; cat; exit 3",
            b"from stdin\n",
            |s, d| {
                chunks.push((s, String::from_utf8_lossy(d).into_owned()));
            },
        )
        .await
        .unwrap();
    assert_eq!(status.code, Some(3));
    let stdout: String = chunks
        .iter()
        .filter(|(s, _)| *s == OutputStream::Stdout)
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(stdout, "out\nfrom stdin\n");
    assert!(
        chunks
            .iter()
            .any(|(s, d)| *s == OutputStream::Stderr && d == "err\n")
    );
    let err = ssh.run_checked("exit 5", b"").await.unwrap_err();
    assert!(err.to_string().contains("exit status: 5"), "{err}");

    ssh.upload("tool.sh", b"#!/bin/sh\necho tool ran\n", 0o750)
        .await
        .unwrap();
    let out = ssh
        .run_checked("stat -c %a tool.sh && ./tool.sh && ls", b"")
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("750\ntool ran\n"), "{out}");
    assert!(!out.contains(".part"), "{out}");
    ssh.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_process_gets_its_secret_on_fd_3_and_nowhere_else() {
    let guest = Guest::start();
    let ssh = guest.connect().await;
    let secret = format!("secret-{}", Secret::random_token().unwrap().expose());
    let pid = ssh
        .spawn_detached(
            "sh -c 'cat <&3 > got.txt; sleep 30'",
            "detached.log",
            secret.as_bytes(),
        )
        .await
        .unwrap();
    // The connection that started it is gone; the process is not.
    ssh.close().await;
    let ssh = guest.connect().await;
    ssh.run_checked(&format!("kill -0 {pid}"), b"")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = ssh.run_checked("cat got.txt", b"").await.unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), secret);
    // In no command line, no environment, no file left in /tmp.
    let dump = ssh
        .run_checked(
            "for p in /proc/[0-9]*; do cat $p/cmdline $p/environ 2>/dev/null; done; \
             cat /tmp/* 2>/dev/null; true",
            b"",
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&dump).contains(&secret));
    let commands = guest.tools.guest_commands("vm").join("\n");
    assert!(!commands.contains(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_carry_bytes_both_ways() {
    let guest = Guest::start();
    let ssh = guest.connect().await;
    // Guest → host: a remote forward on the guest's loopback to a host Unix socket.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("echo.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(b"host says: ").await;
                let _ = s.write_all(&buf[..n]).await;
            });
        }
    });
    ssh.forward_remote(4555, ForwardTarget::Unix(socket))
        .await
        .unwrap();
    let out = ssh
        .run_checked(
            "bash -c 'exec 3<>/dev/tcp/127.0.0.1/4555; printf ping >&3; head -c 15 <&3'",
            b"",
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "host says: ping");

    // Host → guest: a local forward to a listener on the guest's loopback.
    ssh.spawn_detached(
        "node -e \"require('http').createServer((q, s) => s.end('guest says hi')).listen(4556, '127.0.0.1')\"",
        "server.log",
        b"",
    )
    .await
    .unwrap();
    let forward = ssh.forward_local(4556).await.unwrap();
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(forward.addr()).await {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
            body.clear();
            let _ = s.read_to_string(&mut body).await;
            if body.contains("guest says hi") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.contains("guest says hi"), "{body:?}");
    ssh.close().await;
}
