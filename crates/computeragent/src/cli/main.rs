//! `computeragent`: run a coding agent in a fresh sandbox from the command line.

mod args;
mod config;
mod doctor;
mod exec;
mod project;
mod remote;
mod render;
mod run;
mod shell;
mod tty;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use computeragent::{RuntimeConfig, RuntimeName};

/// Run coding agents in a fresh, isolated sandbox per run.
#[derive(Debug, Parser)]
#[command(name = "computeragent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the agent SDK's node_modules are staged (bwrap, local).
    #[arg(
        long,
        global = true,
        env = "COMPUTERAGENT_STAGE_DIR",
        value_name = "DIR"
    )]
    stage_dir: Option<PathBuf>,
    /// The prepared Tart image boots clone.
    #[arg(long, global = true, value_name = "IMAGE")]
    tart_image: Option<String>,
    /// The Lima base instance boots clone.
    #[arg(long, global = true, value_name = "NAME")]
    lima_base: Option<String>,
    /// The harness image for Apple's `container`.
    #[arg(long, global = true, value_name = "IMAGE")]
    container_image: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// What is installed and usable here, each with the fix when it is not.
    Doctor,
    /// Run the agent on a prompt in a fresh sandbox and stream what it does.
    Run(run::RunArgs),
    /// Run one command in a fresh sandbox; its output streams and its status is returned.
    Exec(exec::ExecArgs),
    /// A login shell (or any program) in a fresh sandbox, on a real terminal.
    Shell(shell::ShellArgs),
    /// Claude Code, interactive, with full autonomy in a fresh sandbox (gone when it exits).
    Claude(shell::ClaudeArgs),
    /// Boot sandboxes and print the isolation-probe table (bwrap).
    Probe,
    /// Build what later boots start from: a prepared Tart image or a Lima base instance.
    Prepare {
        /// tart or lima.
        #[arg(long)]
        runtime: RuntimeName,
        /// The image (tart) or template (lima) to build from.
        #[arg(long)]
        from: String,
    },
    /// Remove what crashed runs left behind (runs of live processes are never touched).
    Gc,
    /// Serve runs and warm sandboxes over HTTP to many callers (bearer tokens, admission).
    Serve {
        /// The configuration (TOML: bind, max_concurrent_runs, tokens, engine_env, groups).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen here instead of the configuration's address (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        bind: Option<std::net::SocketAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| String::from("warn")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let user = match config::load() {
        Ok(user) => user,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = RuntimeConfig {
        stage_dir: cli.stage_dir.or(user.stage_dir.clone()),
        tart_image: cli.tart_image.or(user.tart_image.clone()),
        lima_base: cli.lima_base.or(user.lima_base.clone()),
        container_image: cli.container_image.or(user.container_image.clone()),
        read_only: user.read_only.clone(),
        project_mount: None,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Doctor => doctor::run(&config, user.path.as_deref(), user.runtime).await,
            Command::Run(args) => run::run(args, &config, &user).await,
            Command::Exec(args) => exec::run(args, &config, &user).await,
            Command::Shell(args) => shell::run(args, &config, &user).await,
            Command::Claude(args) => shell::claude(args, &config, &user).await,
            Command::Probe => probe(&config).await,
            Command::Prepare { runtime, from } => {
                let name = computeragent::runtime::prepare(runtime, &from, &config).await?;
                println!("prepared {runtime} `{name}` from {from}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Gc => gc(&config).await,
            Command::Serve { config: file, bind } => serve(file, bind, config).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    file: Option<PathBuf>,
    bind: Option<std::net::SocketAddr>,
    runtimes: RuntimeConfig,
) -> computeragent::Result<ExitCode> {
    use computeragent::server::{Server, ServerConfig};
    let mut config = match &file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| computeragent::Error::io(format!("read {}", path.display()), e))?;
            ServerConfig::from_toml(&text)?
        }
        None => ServerConfig::default(),
    };
    if let Some(bind) = bind {
        config.bind = bind;
    }
    if let Ok(tokens) = std::env::var("COMPUTERAGENT_TOKENS") {
        config.tokens.extend(
            tokens
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from),
        );
    }
    if config.tokens.is_empty() {
        let token = substrate_core::Secret::random_token()?;
        eprintln!("no token configured; this one is valid until the server stops:");
        eprintln!("  Authorization: Bearer {}", token.expose());
        config.tokens.push(token.expose().to_owned());
    }
    match std::env::var("ANTHROPIC_API_KEY") {
        Ok(key) if !key.trim().is_empty() => {
            // Brokered by every runtime: it stays on this host.
            config
                .engine_env
                .entry("ANTHROPIC_API_KEY".into())
                .or_insert(key);
        }
        _ if !config.engine_env.contains_key("ANTHROPIC_API_KEY") => {
            eprintln!(
                "warning: ANTHROPIC_API_KEY is not set: runs reach no model unless a group lets requests set it"
            );
        }
        _ => {}
    }
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| computeragent::Error::io(format!("listen on {}", config.bind), e))?;
    if !config.bind.ip().is_loopback() {
        eprintln!(
            "warning: listening on {}, reachable beyond this host",
            config.bind
        );
    }
    eprintln!("serving on http://{}", config.bind);
    let server = Server::with_runtimes(config, runtimes);
    server.serve(listener, shutdown_signal()).await?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(all(target_os = "linux", feature = "bwrap"))]
async fn probe(config: &RuntimeConfig) -> computeragent::Result<ExitCode> {
    let stage = config
        .stage_dir
        .clone()
        .unwrap_or_else(computeragent::stage::default_stage_dir);
    let modules = computeragent::stage::ensure_staged(stage).await?;
    let substrate = runtime_bwrap::BwrapSubstrate::new(modules);
    let results = runtime_bwrap::probe::run_probes(&substrate).await?;
    print!("{}", runtime_bwrap::probe::table(&results));
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        eprintln!("{failed} of {} probes failed", results.len());
        return Ok(ExitCode::FAILURE);
    }
    println!("all {} probes passed", results.len());
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(all(target_os = "linux", feature = "bwrap")))]
async fn probe(_config: &RuntimeConfig) -> computeragent::Result<ExitCode> {
    Err(computeragent::Error::Unsupported {
        what: "`computeragent probe`".into(),
        reason: "the isolation probes run bubblewrap sandboxes: Linux with the `bwrap` feature"
            .into(),
    })
}

async fn gc(config: &RuntimeConfig) -> computeragent::Result<ExitCode> {
    let mut failed = false;
    for collected in computeragent::runtime::gc(config).await {
        match collected.removed {
            Ok(removed) if removed.is_empty() => {
                println!("{}: nothing left over", collected.runtime)
            }
            Ok(removed) => {
                for item in removed {
                    println!("{}: removed {item}", collected.runtime);
                }
            }
            Err(e) => {
                failed = true;
                println!("{}: could not look: {e}", collected.runtime);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
