//! The egress conformance suite: what the `allow` network policy must hold in every runtime,
//! tried from inside a real sandbox.
//!
//! Each case runs in a private network namespace of the test's own ([`crate::netns`]), so
//! nothing can leave this machine whatever the code under test does. In it:
//! - a DNS server on loopback answers the names the cases use ([`crate::dns`]);
//! - "public" is the documentation address `203.0.113.10` on the namespace's loopback, with an
//!   HTTP upstream on it and a TLS "server" on its port 443;
//! - traps listen on loopback, `10.0.0.1` and `169.254.169.254` and count connections that
//!   must never happen;
//! - the scripted model, reached through the credential broker, drives the real engine, whose
//!   Bash tool speaks HTTP proxy to the proxy address the sandbox was given (`HTTPS_PROXY`).
//!
//! A runtime provides a boot function `async fn(BootSpec, SocketAddr) -> anyhow::Result<BootedHarness>`
//! that boots with the spec and makes its egress proxy ask the given DNS server, then expands
//! [`egress_conformance_suite!`](crate::egress_conformance_suite) with it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use substrate_core::client::ChatSession;
use substrate_core::protocol::CreateSession;
use substrate_core::{BootedHarness, NetworkPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::conformance::scripted_boot_spec;
use crate::dns::DnsServer;
use crate::model::{Reply, Script, ScriptedModel};

/// The address that stands for the public internet (TEST-NET-3, on the namespace's loopback).
pub const PUBLIC: &str = "203.0.113.10";

/// Addresses a trap listens on: a connection to any of them is a failure.
const TRAPS: [&str; 4] = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"];

/// The allow-list every case boots with.
pub const RULES: [&str; 3] = ["api.test", "*.api.test", "rebind.test"];

/// What the upstream answers.
const GREETING: &str = "hello from upstream";

/// The TLS alert `unrecognized_name` a refused tunnel ends with, as `od -tx1` prints it.
const ALERT_HEX: &str = "15030300020270";

/// The world a case runs in, and the sandbox under test.
#[derive(Debug)]
pub struct World {
    /// The DNS server the runtime's proxy asks.
    pub dns: DnsServer,
    /// The upstream's port (the traps listen on the same port).
    pub port: u16,
    upstream_hits: Arc<AtomicUsize>,
    trap_hits: Arc<AtomicUsize>,
    tls_bytes: Arc<Mutex<Vec<Vec<u8>>>>,
    model: ScriptedModel,
    harness: Option<BootedHarness>,
}

async fn count_and_greet(addr: SocketAddr, hits: Arc<AtomicUsize>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{GREETING}",
                    GREETING.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}

impl World {
    /// Builds the world (call inside the private namespace) and boots the sandbox with `boot`.
    pub async fn start<F, Fut>(boot: F) -> anyhow::Result<Self>
    where
        F: FnOnce(substrate_core::BootSpec, SocketAddr) -> Fut,
        Fut: Future<Output = anyhow::Result<BootedHarness>>,
    {
        let public: IpAddr = PUBLIC.parse()?;
        let probe = TcpListener::bind(SocketAddr::new(public, 0)).await?;
        let port = probe.local_addr()?.port();
        drop(probe);
        let upstream_hits = Arc::new(AtomicUsize::new(0));
        count_and_greet(SocketAddr::new(public, port), upstream_hits.clone()).await?;
        let trap_hits = Arc::new(AtomicUsize::new(0));
        for trap in TRAPS {
            count_and_greet(SocketAddr::new(trap.parse()?, port), trap_hits.clone()).await?;
        }
        let tls_bytes: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let tls = TcpListener::bind(SocketAddr::new(public, 443)).await?;
        let seen = tls_bytes.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tls.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n > 0 {
                        if let Ok(mut seen) = seen.lock() {
                            seen.push(buf[..n].to_vec());
                        }
                        let _ = s.write_all(b"tls-server-hello").await;
                    }
                });
            }
        });
        let dns = DnsServer::start("127.0.0.1".parse()?).await?;
        let model = ScriptedModel::start(Script::new()).await?;
        let spec = scripted_boot_spec("egress-conformance", &model.base_url()).network(
            NetworkPolicy::Allow(RULES.iter().map(|r| (*r).to_owned()).collect()),
        );
        let harness = boot(spec, dns.addr())
            .await
            .context("boot the sandbox under test")?;
        Ok(Self {
            dns,
            port,
            upstream_hits,
            trap_hits,
            tls_bytes,
            model,
            harness: Some(harness),
        })
    }

    /// Runs `script` with the engine's Bash tool inside the sandbox; returns what it printed.
    pub async fn sh(&self, script: &str) -> anyhow::Result<String> {
        let harness = self.harness.as_ref().context("the sandbox is gone")?;
        let command = format!("{{ {script} ; }} > egress-out.txt 2>&1; echo done");
        self.model.set_script(
            Script::new()
                .reply(Reply::tool_use("Bash", json!({ "command": command })))
                .reply(Reply::text("Ran.")),
        );
        let client = harness.client()?;
        let mut chat =
            ChatSession::start(client.clone(), CreateSession::new("claude-agent-sdk")).await?;
        let outcome = chat.ask("Run it").await?;
        ensure!(
            outcome.result_text() == Some("Ran."),
            "the engine did not finish the turn: {:?}",
            outcome.result_text()
        );
        let out = client
            .read_file(chat.session_id(), "egress-out.txt")
            .await?;
        chat.finish().await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Upstream connections so far.
    pub fn upstream_hits(&self) -> usize {
        self.upstream_hits.load(Ordering::SeqCst)
    }

    /// Fails when anything reached a forbidden address.
    pub fn assert_no_trap_reached(&self) -> anyhow::Result<()> {
        let hits = self.trap_hits.load(Ordering::SeqCst);
        ensure!(
            hits == 0,
            "{hits} connection(s) reached a forbidden address"
        );
        Ok(())
    }

    /// Shuts the sandbox down.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        if let Some(h) = self.harness.take() {
            h.shutdown().await?;
        }
        Ok(())
    }
}

/// Shell that asks the sandbox's proxy for `CONNECT target` and prints everything it gets
/// back; with `then`, sends those bytes through the tunnel first.
fn connect_script(target: &str, then: &str) -> String {
    format!(
        "p=${{HTTPS_PROXY#http://}}; p=${{p%/}}; exec 3<>/dev/tcp/${{p%:*}}/${{p##*:}} || exit 9; \
         printf 'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n{then}' >&3; \
         timeout 10 cat <&3"
    )
}

/// A plain GET through the tunnel.
const GET: &str = "GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n";

/// A minimal TLS ClientHello naming `server_name`, as `printf` escapes.
fn client_hello_escaped(server_name: &str) -> String {
    let name = server_name.as_bytes();
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    let list_len = name.len() + 3;
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record.iter().map(|b| format!("\\x{b:02x}")).collect()
}

fn status_line(output: &str) -> &str {
    output
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r')
}

fn ips(list: &[&str]) -> anyhow::Result<Vec<IpAddr>> {
    list.iter()
        .map(|a| a.parse().with_context(|| format!("parse {a}")))
        .collect()
}

/// The cases, one per property.
pub mod cases {
    use super::*;

    /// A listed name whose answer is public passes, and the bytes come back.
    pub async fn a_listed_domain_passes(w: &World) -> anyhow::Result<()> {
        w.dns.set("api.test", &ips(&[PUBLIC])?);
        let out = w
            .sh(&connect_script(&format!("api.test:{}", w.port), GET))
            .await?;
        ensure!(
            status_line(&out) == "HTTP/1.1 200 Connection Established",
            "{out}"
        );
        ensure!(out.contains(GREETING), "{out}");
        ensure!(
            w.upstream_hits() == 1,
            "upstream hits: {}",
            w.upstream_hits()
        );
        w.assert_no_trap_reached()
    }

    /// An unlisted name is denied before any lookup.
    pub async fn an_unlisted_domain_is_denied(w: &World) -> anyhow::Result<()> {
        w.dns.set("other.test", &ips(&[PUBLIC])?);
        let out = w
            .sh(&connect_script(&format!("other.test:{}", w.port), GET))
            .await?;
        ensure!(status_line(&out) == "HTTP/1.1 403 Forbidden", "{out}");
        ensure!(
            !w.dns.queries().iter().any(|q| q.starts_with("other.test")),
            "the proxy looked up a name it must refuse: {:?}",
            w.dns.queries()
        );
        ensure!(w.upstream_hits() == 0);
        Ok(())
    }

    /// Listed names answering loopback, private, metadata or IPv6 loopback are denied.
    pub async fn listed_names_with_private_answers_are_denied(w: &World) -> anyhow::Result<()> {
        for (name, answer) in [
            ("lo.api.test", "127.0.0.1"),
            ("private.api.test", "10.0.0.1"),
            ("metadata.api.test", "169.254.169.254"),
            ("lo6.api.test", "::1"),
        ] {
            w.dns.set(name, &ips(&[answer])?);
        }
        let script = ["lo", "private", "metadata", "lo6"]
            .iter()
            .map(|n| {
                format!(
                    "( {} ) | head -1",
                    connect_script(&format!("{n}.api.test:{}", w.port), GET)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let out = w.sh(&script).await?;
        let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
        ensure!(
            lines.len() == 4 && lines.iter().all(|l| *l == "HTTP/1.1 403 Forbidden"),
            "{out}"
        );
        ensure!(w.upstream_hits() == 0);
        w.assert_no_trap_reached()
    }

    /// A name whose answer changes between lookups never reaches its second address.
    pub async fn a_rebinding_name_never_reaches_its_second_address(
        w: &World,
    ) -> anyhow::Result<()> {
        w.dns
            .sequence("rebind.test", &[&ips(&[PUBLIC])?, &ips(&["127.0.0.1"])?]);
        let target = format!("rebind.test:{}", w.port);
        let out = w
            .sh(&format!(
                "( {} ) | tail -1; echo; ( {} ) | head -1",
                connect_script(&target, GET),
                connect_script(&target, GET)
            ))
            .await?;
        ensure!(
            out.contains(GREETING),
            "the first lookup's public answer did not pass: {out}"
        );
        ensure!(
            out.contains("HTTP/1.1 403 Forbidden"),
            "the second lookup's loopback answer was not denied: {out}"
        );
        ensure!(
            w.upstream_hits() == 1,
            "upstream hits: {}",
            w.upstream_hits()
        );
        w.assert_no_trap_reached()
    }

    /// Raw IPv4 and IPv6 targets are denied (no CIDR rule allows them).
    pub async fn raw_ip_literals_are_denied(w: &World) -> anyhow::Result<()> {
        let port = w.port;
        let script = [
            format!("{PUBLIC}:{port}"),
            format!("[::1]:{port}"),
            format!("10.0.0.1:{port}"),
        ]
        .iter()
        .map(|t| format!("( {} ) | head -1", connect_script(t, GET)))
        .collect::<Vec<_>>()
        .join("; ");
        let out = w.sh(&script).await?;
        let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
        ensure!(
            lines.len() == 3 && lines.iter().all(|l| *l == "HTTP/1.1 403 Forbidden"),
            "{out}"
        );
        ensure!(w.upstream_hits() == 0);
        w.assert_no_trap_reached()
    }

    /// A CONNECT to 443 whose TLS ClientHello names another host is refused with a TLS alert
    /// and nothing reaches the upstream.
    pub async fn connect_with_a_mismatching_sni_is_denied(w: &World) -> anyhow::Result<()> {
        w.dns.set("api.test", &ips(&[PUBLIC])?);
        let hex = |hello: &str| {
            format!(
                "( {} ) | od -An -tx1 | tr -d ' \\n'; echo",
                connect_script("api.test:443", hello)
            )
        };
        let out = w
            .sh(&format!(
                "{}; {}",
                hex(&client_hello_escaped("evil.test")),
                hex(&client_hello_escaped("api.test"))
            ))
            .await?;
        let mut lines = out.lines();
        let refused = lines.next().unwrap_or_default();
        let passed = lines.next().unwrap_or_default();
        ensure!(
            refused.ends_with(ALERT_HEX),
            "no TLS alert for a foreign SNI: {out}"
        );
        // "tls-server-hello" in hex: the matching name went through.
        ensure!(
            passed.ends_with("746c732d7365727665722d68656c6c6f"),
            "{out}"
        );
        let seen = w.tls_bytes.lock().map(|s| s.len()).unwrap_or(0);
        ensure!(
            seen == 1,
            "{seen} hellos reached the TLS upstream (1 expected)"
        );
        Ok(())
    }

    /// Connecting past the proxy reaches nothing: the sandbox has no route out.
    pub async fn a_direct_connection_fails(w: &World) -> anyhow::Result<()> {
        let out = w
            .sh(&format!(
                "(exec 3<>/dev/tcp/{PUBLIC}/{}) 2>/dev/null && echo reached || echo refused; \
                 (exec 3<>/dev/tcp/10.0.0.1/{}) 2>/dev/null && echo reached || echo refused",
                w.port, w.port
            ))
            .await?;
        if out.lines().any(|l| l == "reached") {
            bail!("a direct connection left the sandbox: {out}");
        }
        ensure!(
            out.lines().filter(|l| *l == "refused").count() == 2,
            "{out}"
        );
        ensure!(w.upstream_hits() == 0);
        w.assert_no_trap_reached()
    }
}

/// Runs one case: a private network namespace, a runtime, the world, the case, shutdown.
#[allow(clippy::panic)] // the test harness: a failed case must fail its test
pub fn run<B, BFut, C>(boot: B, case: C)
where
    B: FnOnce(substrate_core::BootSpec, SocketAddr) -> BFut,
    BFut: Future<Output = anyhow::Result<BootedHarness>>,
    C: for<'a> AsyncCase<'a>,
{
    let extra: Vec<IpAddr> = [PUBLIC, "10.0.0.1", "169.254.169.254"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let outcome = crate::netns::enter_private(&extra).and_then(|()| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let world = World::start(boot).await?;
            let result = case.call(&world).await;
            let finished = world.finish().await;
            result.and(finished)
        })
    });
    if let Err(e) = outcome {
        panic!("egress conformance case failed: {e:#}");
    }
}

/// An async case taking the world by reference.
pub trait AsyncCase<'a> {
    /// The case's future.
    type Fut: Future<Output = anyhow::Result<()>> + 'a;
    /// Runs the case.
    fn call(self, world: &'a World) -> Self::Fut;
}

impl<'a, F, Fut> AsyncCase<'a> for F
where
    F: FnOnce(&'a World) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + 'a,
{
    type Fut = Fut;
    fn call(self, world: &'a World) -> Fut {
        self(world)
    }
}

/// Expands to one `#[test]` per egress conformance case, each booting with `$boot`
/// (`async fn(BootSpec, SocketAddr) -> anyhow::Result<BootedHarness>`; the address is the DNS
/// server its egress proxy must ask).
#[macro_export]
macro_rules! egress_conformance_suite {
    ($boot:path) => {
        $crate::egress_conformance_suite!(@cases $boot;
            a_listed_domain_passes,
            an_unlisted_domain_is_denied,
            listed_names_with_private_answers_are_denied,
            a_rebinding_name_never_reaches_its_second_address,
            raw_ip_literals_are_denied,
            connect_with_a_mismatching_sni_is_denied,
            a_direct_connection_fails
        );
    };
    (@cases $boot:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::egress_conformance::run($boot, $crate::egress_conformance::cases::$case);
            }
        )*
    };
}
