//! `computeragent exec -- CMD…`: one command in a fresh sandbox, its output streamed as it
//! comes, its exit status returned — the fast path for untrusted code (no harness, no HTTP).

use std::process::ExitCode;

use computeragent::{NetworkPolicy, RuntimeConfig, RuntimeName};

use crate::args;

/// Arguments of `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The runtime (default bwrap: single commands run in bwrap sandboxes; the VM runtimes
    /// boot harnesses).
    #[arg(long)]
    runtime: Option<RuntimeName>,
    /// Network policy: none (the default), host, or allow:DOMAIN[,DOMAIN…].
    #[arg(long, value_parser = args::network)]
    net: Option<NetworkPolicy>,
    /// Memory limit, e.g. 512M.
    #[arg(long, value_parser = args::bytes)]
    memory: Option<u64>,
    /// CPU limit, e.g. 0.5.
    #[arg(long, value_parser = args::cpus)]
    cpus: Option<u32>,
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<std::ffi::OsString>,
}

pub async fn run(
    args: ExecArgs,
    config: &RuntimeConfig,
    user: &crate::config::UserConfig,
) -> computeragent::Result<ExitCode> {
    use tokio::io::AsyncWriteExt;

    let runtime = args.runtime.or(user.runtime).unwrap_or(RuntimeName::Bwrap);
    let substrate = computeragent::runtime::open(runtime, config).await?;
    let mut spec = computeragent::BootSpec::new("exec")
        .network(
            args.net
                .clone()
                .or_else(|| user.network.clone())
                .unwrap_or(NetworkPolicy::None),
        )
        .limits(args::limits(
            args.memory.or(user.memory),
            args.cpus.or(user.cpus),
        ));
    for name in &user.env_allow {
        if let Ok(value) = std::env::var(name) {
            spec = spec.env(name.clone(), value);
        }
    }
    let mut process = substrate.spawn_command(&spec, args.command.clone()).await?;
    async fn pump(
        from: Option<substrate_core::OutputStream>,
        mut to: impl tokio::io::AsyncWrite + Unpin,
    ) {
        if let Some(mut from) = from {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.flush().await;
        }
    }
    let out = tokio::spawn(pump(process.take_stdout(), tokio::io::stdout()));
    let err = tokio::spawn(pump(process.take_stderr(), tokio::io::stderr()));
    let end = process
        .wait(args.timeout.map(std::time::Duration::from_secs))
        .await?;
    let _ = out.await;
    let _ = err.await;
    if !matches!(end.reason, substrate_core::ExitReason::Exited(_)) {
        eprintln!("computeragent: {}", end.reason);
    }
    let code = end.code.unwrap_or(128);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
