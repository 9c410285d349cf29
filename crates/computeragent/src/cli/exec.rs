//! `computeragent exec -- CMD…`: one command in a fresh sandbox, its output streamed as it
//! comes, its exit status returned — the fast path for untrusted code (no harness, no HTTP).

use std::process::ExitCode;

use computeragent::{RuntimeConfig, RuntimeName};

use crate::args;

/// Arguments of `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Runtime (default bwrap: single commands run in bwrap sandboxes; the VM runtimes boot
    /// harnesses), network policy and limits.
    #[command(flatten)]
    sandbox: args::SandboxArgs,
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

    let runtime = args.sandbox.runtime(user).unwrap_or(RuntimeName::Bwrap);
    let substrate = computeragent::runtime::open(runtime, config).await?;
    let mut spec = computeragent::BootSpec::new("exec")
        .network(args.sandbox.network(user))
        .limits(args.sandbox.limits(user));
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
