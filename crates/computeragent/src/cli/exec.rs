//! `computeragent exec -- CMD…`: one command in a fresh sandbox, its output streamed as it
//! comes, its exit status returned — the fast path for untrusted code (no harness, no HTTP).

use std::process::ExitCode;

use computeragent::{NetworkPolicy, RuntimeConfig, RuntimeName};

use crate::args;

/// Arguments of `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The runtime (only bwrap runs single commands so far).
    #[arg(long, default_value = "bwrap")]
    runtime: RuntimeName,
    /// Network policy: none, host, or allow:DOMAIN[,DOMAIN…].
    #[arg(long, default_value = "none", value_parser = args::network)]
    net: NetworkPolicy,
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

#[cfg(all(target_os = "linux", feature = "bwrap"))]
pub async fn run(args: ExecArgs, config: &RuntimeConfig) -> computeragent::Result<ExitCode> {
    use tokio::io::AsyncWriteExt;

    if args.runtime != RuntimeName::Bwrap {
        return Err(unsupported(args.runtime));
    }
    let stage = config
        .stage_dir
        .clone()
        .unwrap_or_else(computeragent::stage::default_stage_dir);
    let modules = computeragent::stage::ensure_staged(stage).await?;
    let substrate = runtime_bwrap::BwrapSubstrate::new(modules);
    let spec = computeragent::BootSpec::new("exec")
        .network(args.net.clone())
        .limits(args::limits(args.memory, args.cpus));
    let mut process = substrate.spawn(&spec, args.command.clone()).await?;
    let copy = |from: Option<tokio::process::ChildStdout>| async move {
        if let Some(mut from) = from {
            let mut to = tokio::io::stdout();
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.flush().await;
        }
    };
    let copy_err = |from: Option<tokio::process::ChildStderr>| async move {
        if let Some(mut from) = from {
            let mut to = tokio::io::stderr();
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.flush().await;
        }
    };
    let out = tokio::spawn(copy(process.take_stdout()));
    let err = tokio::spawn(copy_err(process.take_stderr()));
    let exit = process
        .wait_for(args.timeout.map(std::time::Duration::from_secs))
        .await?;
    let _ = out.await;
    let _ = err.await;
    if !matches!(exit.reason, substrate_core::ExitReason::Exited(_)) {
        eprintln!("computeragent: {}", exit.reason);
    }
    let code = exit.status.code().unwrap_or(128);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(not(all(target_os = "linux", feature = "bwrap")))]
pub async fn run(args: ExecArgs, _config: &RuntimeConfig) -> computeragent::Result<ExitCode> {
    Err(unsupported(args.runtime))
}

fn unsupported(runtime: RuntimeName) -> computeragent::Error {
    computeragent::Error::Unsupported {
        what: format!("`exec` on {runtime}"),
        reason: "single commands run in bwrap sandboxes (Linux) so far; use `computeragent run` \
                 on the other runtimes"
            .into(),
    }
}
