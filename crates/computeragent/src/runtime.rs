//! Choosing and opening a runtime: each one's name, whether it is usable on this host (and
//! the fix when not), the best isolating one when the caller does not name one, and the
//! substrate itself. A runtime that is not compiled in or cannot run here is an
//! [`Error::Unsupported`] naming what works instead — never a silent fallback, and never to
//! no isolation: the `local` runtime runs only when asked for by name.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use substrate_core::{Error, Result, Substrate};

/// A runtime, by name.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeName {
    /// Linux namespaces via bubblewrap (Linux).
    Bwrap,
    /// A Tart VM per run (macOS on Apple Silicon).
    Tart,
    /// A Lima VM per run (macOS, Linux).
    Lima,
    /// Apple's `container`, a lightweight VM per run (macOS 26+).
    AppleContainer,
    /// The harness as a plain host process: **no isolation**, development only.
    Local,
}

impl RuntimeName {
    /// Every runtime, isolating ones in the order auto-selection tries them on this OS.
    pub const ALL: [RuntimeName; 5] = if cfg!(target_os = "macos") {
        [
            RuntimeName::AppleContainer,
            RuntimeName::Tart,
            RuntimeName::Lima,
            RuntimeName::Bwrap,
            RuntimeName::Local,
        ]
    } else {
        [
            RuntimeName::Bwrap,
            RuntimeName::Lima,
            RuntimeName::AppleContainer,
            RuntimeName::Tart,
            RuntimeName::Local,
        ]
    };

    /// The stable name (`bwrap`, `tart`, `lima`, `apple-container`, `local`).
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeName::Bwrap => "bwrap",
            RuntimeName::Tart => "tart",
            RuntimeName::Lima => "lima",
            RuntimeName::AppleContainer => "apple-container",
            RuntimeName::Local => "local",
        }
    }

    /// Whether it puts a boundary between the agent and the host.
    pub fn isolates(self) -> bool {
        self != RuntimeName::Local
    }

    /// Whether it opens interactive terminals (`shell`, `claude`).
    pub fn has_terminals(self) -> bool {
        matches!(
            self,
            RuntimeName::Bwrap
                | RuntimeName::Tart
                | RuntimeName::Lima
                | RuntimeName::AppleContainer
        )
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bwrap" => Ok(RuntimeName::Bwrap),
            "tart" => Ok(RuntimeName::Tart),
            "lima" => Ok(RuntimeName::Lima),
            "apple-container" | "container" => Ok(RuntimeName::AppleContainer),
            "local" => Ok(RuntimeName::Local),
            other => Err(Error::invalid(
                format!("runtime `{other}`"),
                "known runtimes: bwrap, tart, lima, apple-container, local",
            )),
        }
    }
}

/// Where runtimes find what they boot from. Unset fields take each runtime's default.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// The staged node_modules' directory (bwrap, local); default
    /// [`crate::stage::default_stage_dir`].
    pub stage_dir: Option<PathBuf>,
    /// The prepared Tart image to clone (default `computeragent-prepared`).
    pub tart_image: Option<String>,
    /// The Lima base instance to clone (default `computeragent-base`).
    pub lima_base: Option<String>,
    /// The harness image for Apple's `container` (default: this build's).
    pub container_image: Option<String>,
    /// Host paths bound read-only at the same place in every sandbox (bwrap only so far; other
    /// runtimes refuse to open with any).
    pub read_only: Vec<PathBuf>,
    /// A project mounted into every sandbox at its own path, instead of copied (bwrap bind,
    /// Lima mount; other runtimes refuse to open with one).
    pub project_mount: Option<ProjectMount>,
}

/// A project directory mounted into the sandbox (the `rw` and `ro` project modes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectMount {
    /// The host directory (absolute).
    pub path: PathBuf,
    /// Whether the agent may write it.
    pub writable: bool,
}

/// The name a mounted project is shared into a Tart VM under.
#[cfg(tart_runtime)]
const TART_PROJECT_SHARE: &str = "project";

impl ProjectMount {
    /// Where the project appears inside a sandbox of `runtime`: at its own path, except in a
    /// Tart VM, whose shared directories appear under the guest's virtiofs mount.
    pub fn path_inside(&self, runtime: RuntimeName) -> PathBuf {
        match runtime {
            RuntimeName::Tart => PathBuf::from("/mnt/shared/project"),
            _ => self.path.clone(),
        }
    }
}

impl RuntimeConfig {
    fn stage_dir(&self) -> PathBuf {
        self.stage_dir
            .clone()
            .unwrap_or_else(crate::stage::default_stage_dir)
    }

    #[cfg(tart_runtime)]
    fn tart_image(&self) -> String {
        self.tart_image
            .clone()
            .unwrap_or_else(|| "computeragent-prepared".into())
    }

    #[cfg(feature = "lima")]
    fn lima_base(&self) -> String {
        self.lima_base
            .clone()
            .unwrap_or_else(|| "computeragent-base".into())
    }
}

/// Whether a runtime can boot here, and if not, why and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// The runtime.
    pub runtime: RuntimeName,
    /// `Ok(what was found)` or `Err(what is missing and the fix)`.
    pub status: std::result::Result<String, String>,
}

impl Availability {
    /// Whether it can boot.
    pub fn usable(&self) -> bool {
        self.status.is_ok()
    }
}

/// Checks every runtime (quick: versions and presence, no boot).
pub async fn check_all(config: &RuntimeConfig) -> Vec<Availability> {
    let mut all = Vec::new();
    for runtime in RuntimeName::ALL {
        all.push(check(runtime, config).await);
    }
    all
}

/// Checks one runtime.
pub async fn check(runtime: RuntimeName, config: &RuntimeConfig) -> Availability {
    let status = match runtime {
        RuntimeName::Bwrap => check_bwrap(config).await,
        RuntimeName::Tart => check_tart(config).await,
        RuntimeName::Lima => check_lima(config).await,
        RuntimeName::AppleContainer => check_container(config).await,
        RuntimeName::Local => node_version()
            .await
            .map(|v| format!("node {v}; NO isolation")),
    };
    Availability { runtime, status }
}

/// The first usable isolating runtime in this OS's order; an error naming each one's
/// problem when there is none.
pub async fn select(config: &RuntimeConfig) -> Result<RuntimeName> {
    select_where(config, |_| true).await
}

/// [`select`] among the runtimes that open interactive terminals (every isolating one).
pub async fn select_for_terminals(config: &RuntimeConfig) -> Result<RuntimeName> {
    select_where(config, RuntimeName::has_terminals).await
}

async fn select_where(
    config: &RuntimeConfig,
    wanted: impl Fn(RuntimeName) -> bool,
) -> Result<RuntimeName> {
    let mut reasons = Vec::new();
    for runtime in RuntimeName::ALL
        .into_iter()
        .filter(|r| r.isolates() && wanted(*r))
    {
        let availability = check(runtime, config).await;
        match availability.status {
            Ok(_) => return Ok(runtime),
            Err(why) => reasons.push(format!("{runtime}: {why}")),
        }
    }
    Err(Error::Unsupported {
        what: "an isolating runtime".into(),
        reason: format!(
            "none is usable here ({}); the `local` runtime (no isolation) runs only when named",
            reasons.join("; ")
        ),
    })
}

/// Opens `runtime` as a substrate (staging the harness's modules first where it needs them).
pub async fn open(runtime: RuntimeName, config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    if !config.read_only.is_empty() && runtime != RuntimeName::Bwrap {
        return Err(Error::Unsupported {
            what: format!("extra read-only mounts on the {runtime} runtime"),
            reason: "they are bound into bwrap sandboxes only so far; remove them from the \
                     configuration or use bwrap"
                .into(),
        });
    }
    if config.project_mount.is_some() && !runtime.has_terminals() {
        return Err(Error::Unsupported {
            what: format!("a mounted project (rw or ro) on the {runtime} runtime"),
            reason: "projects are mounted into bwrap, lima, tart and apple-container \
                     sandboxes; use the copy mode (the default) here"
                .into(),
        });
    }
    match runtime {
        RuntimeName::Bwrap => open_bwrap(config).await,
        RuntimeName::Tart => open_tart(config),
        RuntimeName::Lima => open_lima(config),
        RuntimeName::AppleContainer => open_container(config),
        RuntimeName::Local => {
            let modules = crate::stage::ensure_staged(config.stage_dir()).await?;
            Ok(Arc::new(runtime_local::LocalSubstrate::new(modules)))
        }
    }
}

/// What [`gc`] removed for one runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The runtime.
    pub runtime: RuntimeName,
    /// What was removed (boot directories, VMs, containers), or why it could not look.
    pub removed: std::result::Result<Vec<String>, String>,
}

/// Removes what crashed runs left behind on every runtime usable here (runs of live
/// processes are never touched).
pub async fn gc(config: &RuntimeConfig) -> Vec<Collected> {
    let mut all = Vec::new();
    for runtime in RuntimeName::ALL {
        if !check(runtime, config).await.usable() {
            continue;
        }
        let removed = match runtime {
            RuntimeName::Bwrap => gc_bwrap(),
            RuntimeName::Tart => gc_tart(config).await,
            RuntimeName::Lima => gc_lima(config).await,
            RuntimeName::AppleContainer => gc_container(config).await,
            RuntimeName::Local => Ok(Vec::new()),
        };
        all.push(Collected { runtime, removed });
    }
    all
}

#[cfg(all(feature = "bwrap", target_os = "linux"))]
fn gc_bwrap() -> std::result::Result<Vec<String>, String> {
    let reaped = runtime_bwrap::BwrapSubstrate::new(PathBuf::new())
        .reap_orphans()
        .map_err(|e| e.to_string())?;
    Ok(reaped
        .dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect())
}

#[cfg(not(all(feature = "bwrap", target_os = "linux")))]
fn gc_bwrap() -> std::result::Result<Vec<String>, String> {
    Ok(Vec::new())
}

#[cfg(tart_runtime)]
async fn gc_tart(config: &RuntimeConfig) -> std::result::Result<Vec<String>, String> {
    runtime_tart::TartSubstrate::new(config.tart_image())
        .reap_leftovers()
        .await
        .map(|r| r.vms)
        .map_err(|e| e.to_string())
}

#[cfg(not(tart_runtime))]
async fn gc_tart(_config: &RuntimeConfig) -> std::result::Result<Vec<String>, String> {
    Ok(Vec::new())
}

#[cfg(feature = "lima")]
async fn gc_lima(config: &RuntimeConfig) -> std::result::Result<Vec<String>, String> {
    runtime_lima::LimaSubstrate::new(runtime_lima::LimaBase::Clone(config.lima_base()))
        .reap_leftovers()
        .await
        .map(|r| r.instances)
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "lima"))]
async fn gc_lima(_config: &RuntimeConfig) -> std::result::Result<Vec<String>, String> {
    Ok(Vec::new())
}

#[cfg(container_runtime)]
async fn gc_container(config: &RuntimeConfig) -> std::result::Result<Vec<String>, String> {
    container_substrate(config)
        .reap_leftovers()
        .await
        .map(|r| r.containers)
        .map_err(|e| e.to_string())
}

#[cfg(not(container_runtime))]
async fn gc_container(_config: &RuntimeConfig) -> std::result::Result<Vec<String>, String> {
    Ok(Vec::new())
}

/// Builds what later boots of `runtime` start from: a prepared Tart image cloned from `from`
/// (a Linux image with Node.js 20+), or a Lima base instance created from the template
/// `from`. Returns the name it was built as (the config's, or the default).
pub async fn prepare(runtime: RuntimeName, from: &str, config: &RuntimeConfig) -> Result<String> {
    match runtime {
        RuntimeName::Tart => prepare_tart(from, config).await,
        RuntimeName::Lima => prepare_lima(from, config).await,
        other => Err(Error::invalid(
            format!("runtime `{other}`"),
            "only tart and lima have images to prepare (bwrap and local stage their modules on \
             first boot; apple-container's image is built by `cargo xtask image`)",
        )),
    }
}

#[cfg(tart_runtime)]
async fn prepare_tart(from: &str, config: &RuntimeConfig) -> Result<String> {
    let name = config.tart_image();
    runtime_tart::TartSubstrate::new(from)
        .prepare(from, &name, substrate_core::BootSpec::new("prepare"))
        .await?;
    Ok(name)
}

#[cfg(not(tart_runtime))]
async fn prepare_tart(_from: &str, _config: &RuntimeConfig) -> Result<String> {
    Err(not_here(
        RuntimeName::Tart,
        "Tart runs on macOS (Apple Silicon) only (and needs the `tart` feature)",
    ))
}

#[cfg(feature = "lima")]
async fn prepare_lima(from: &str, config: &RuntimeConfig) -> Result<String> {
    let name = config.lima_base();
    runtime_lima::LimaSubstrate::new(runtime_lima::LimaBase::Template(from.to_owned()))
        .build_base(
            from,
            &name,
            None,
            substrate_core::BootSpec::new("prepare").network(substrate_core::NetworkPolicy::Host),
        )
        .await?;
    Ok(name)
}

#[cfg(not(feature = "lima"))]
async fn prepare_lima(_from: &str, _config: &RuntimeConfig) -> Result<String> {
    Err(not_here(
        RuntimeName::Lima,
        "not compiled in (enable the `lima` feature)",
    ))
}

// Unused when every runtime is compiled in (Linux with the simulators' features).
#[cfg_attr(
    all(
        tart_runtime,
        container_runtime,
        feature = "bwrap",
        feature = "lima",
        target_os = "linux"
    ),
    allow(dead_code)
)]
fn not_here(runtime: RuntimeName, reason: &str) -> Error {
    Error::Unsupported {
        what: format!("the {runtime} runtime"),
        reason: reason.to_owned(),
    }
}

/// Runs `program args…`; its stdout, or why it could not run.
async fn tool_output(program: &str, args: &[&str]) -> std::result::Result<String, String> {
    match tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
    {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(if out.stderr.is_empty() {
                &out.stdout
            } else {
                &out.stderr
            })
            .trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("`{program}` is not installed"))
        }
        Err(e) => Err(format!("cannot run `{program}`: {e}")),
    }
}

async fn node_version() -> std::result::Result<String, String> {
    let version = tool_output("node", &["--version"])
        .await
        .map_err(|e| format!("{e} (install Node.js 20 or later)"))?;
    let version = version.trim().to_owned();
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 20 => Ok(version),
        _ => Err(format!(
            "node {version} is too old (install Node.js 20 or later)"
        )),
    }
}

#[cfg(all(feature = "bwrap", target_os = "linux"))]
async fn check_bwrap(config: &RuntimeConfig) -> std::result::Result<String, String> {
    let out = tool_output("bwrap", &["--version"])
        .await
        .map_err(|e| format!("{e} (`apt-get install bubblewrap`)"))?;
    let version = runtime_bwrap::BwrapVersion::parse(&out)
        .ok_or_else(|| format!("`bwrap --version` printed {out:?}"))?;
    if version < runtime_bwrap::MIN_VERSION {
        return Err(format!(
            "bwrap {version} is older than {} (upgrade bubblewrap)",
            runtime_bwrap::MIN_VERSION
        ));
    }
    let node = node_version().await?;
    let staged = if crate::stage::staged(&config.stage_dir()).is_some() {
        "modules staged"
    } else {
        "modules staged on first boot"
    };
    Ok(format!("bwrap {version}, node {node}, {staged}"))
}

#[cfg(not(all(feature = "bwrap", target_os = "linux")))]
async fn check_bwrap(_config: &RuntimeConfig) -> std::result::Result<String, String> {
    Err(if cfg!(target_os = "linux") {
        "not compiled in (enable the `bwrap` feature)".into()
    } else {
        "bubblewrap runs on Linux only".into()
    })
}

#[cfg(all(feature = "bwrap", target_os = "linux"))]
async fn open_bwrap(config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    Ok(Arc::new(bwrap_substrate(config).await?))
}

/// The bwrap substrate itself (for what only it offers, such as terminals).
#[cfg(all(feature = "bwrap", target_os = "linux"))]
pub(crate) async fn bwrap_substrate(
    config: &RuntimeConfig,
) -> Result<runtime_bwrap::BwrapSubstrate> {
    let modules = crate::stage::ensure_staged(config.stage_dir()).await?;
    let mut substrate = runtime_bwrap::BwrapSubstrate::new(modules);
    for path in &config.read_only {
        substrate = substrate.read_only(path.clone(), path.clone());
    }
    if let Some(project) = &config.project_mount {
        substrate = substrate.project(project.path.clone(), project.writable);
    }
    Ok(substrate)
}

#[cfg(not(all(feature = "bwrap", target_os = "linux")))]
async fn open_bwrap(_config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    Err(not_here(
        RuntimeName::Bwrap,
        "bubblewrap runs on Linux only (and needs the `bwrap` feature); on macOS use \
         apple-container, tart or lima",
    ))
}

#[cfg(tart_runtime)]
async fn check_tart(config: &RuntimeConfig) -> std::result::Result<String, String> {
    let version = tool_output("tart", &["--version"])
        .await
        .map_err(|e| format!("{e} (`brew install cirruslabs/cli/tart`)"))?;
    let image = config.tart_image();
    let list = tool_output("tart", &["list", "--source", "local", "--format", "json"]).await?;
    let found = runtime_tart::argv::parse_list(list.as_bytes())
        .map_err(|e| e.to_string())?
        .iter()
        .any(|vm| vm.name == image);
    if !found {
        return Err(format!(
            "tart {} has no image `{image}` (build it with `computeragent prepare --runtime tart`)",
            version.trim()
        ));
    }
    Ok(format!("tart {}, image {image}", version.trim()))
}

#[cfg(not(tart_runtime))]
async fn check_tart(_config: &RuntimeConfig) -> std::result::Result<String, String> {
    Err(if cfg!(target_os = "macos") {
        "not compiled in (enable the `tart` feature)".into()
    } else {
        "Tart runs on macOS (Apple Silicon) only".into()
    })
}

#[cfg(tart_runtime)]
fn open_tart(config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    let mut substrate = runtime_tart::TartSubstrate::new(config.tart_image());
    if let Some(project) = &config.project_mount {
        let share = runtime_tart::SharedDir {
            name: TART_PROJECT_SHARE.into(),
            path: project.path.clone(),
            read_only: !project.writable,
        };
        debug_assert_eq!(share.guest_path(), project.path_inside(RuntimeName::Tart));
        substrate = substrate.share(share);
    }
    Ok(Arc::new(substrate))
}

#[cfg(not(tart_runtime))]
fn open_tart(_config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    Err(not_here(
        RuntimeName::Tart,
        "Tart runs on macOS (Apple Silicon) only (and needs the `tart` feature); on Linux use \
         bwrap or lima",
    ))
}

#[cfg(feature = "lima")]
async fn check_lima(config: &RuntimeConfig) -> std::result::Result<String, String> {
    let version = tool_output("limactl", &["--version"])
        .await
        .map_err(|e| format!("{e} (https://lima-vm.io/docs/installation/)"))?;
    let base = config.lima_base();
    let list = tool_output("limactl", &["list", "--json"]).await?;
    let found = runtime_lima::argv::parse_list(list.as_bytes())
        .map_err(|e| e.to_string())?
        .iter()
        .any(|i| i.name == base);
    if !found {
        return Err(format!(
            "{} has no base instance `{base}` (build it with `computeragent prepare --runtime lima`)",
            version.trim()
        ));
    }
    Ok(format!("{}, base {base}", version.trim()))
}

#[cfg(not(feature = "lima"))]
async fn check_lima(_config: &RuntimeConfig) -> std::result::Result<String, String> {
    Err("not compiled in (enable the `lima` feature)".into())
}

#[cfg(feature = "lima")]
fn open_lima(config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    let mut substrate =
        runtime_lima::LimaSubstrate::new(runtime_lima::LimaBase::Clone(config.lima_base()));
    if let Some(project) = &config.project_mount {
        substrate = substrate.mount(project.path.clone(), project.writable);
    }
    Ok(Arc::new(substrate))
}

#[cfg(not(feature = "lima"))]
fn open_lima(_config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    Err(not_here(
        RuntimeName::Lima,
        "not compiled in (enable the `lima` feature)",
    ))
}

#[cfg(container_runtime)]
async fn check_container(config: &RuntimeConfig) -> std::result::Result<String, String> {
    let sub = container_substrate(config);
    let cli = sub.cli();
    let status = tool_output("container", &["system", "status"])
        .await
        .map_err(|e| format!("{e} (start it with `container system start`)"))?;
    let _ = status;
    tool_output("container", &["image", "inspect", sub.image()])
        .await
        .map_err(|_| {
            format!(
                "the image `{}` is missing (build it with `cargo xtask image`, or `{}`)",
                sub.image(),
                cli.image_pull(sub.image())
            )
        })?;
    Ok(format!("container service running, image {}", sub.image()))
}

#[cfg(not(container_runtime))]
async fn check_container(_config: &RuntimeConfig) -> std::result::Result<String, String> {
    Err(if cfg!(target_os = "macos") {
        "not compiled in (enable the `apple-container` feature)".into()
    } else {
        "Apple's `container` runs on macOS 26 or later only".into()
    })
}

#[cfg(container_runtime)]
fn container_substrate(config: &RuntimeConfig) -> runtime_applecontainer::AppleContainerSubstrate {
    let substrate = match &config.container_image {
        Some(image) => runtime_applecontainer::AppleContainerSubstrate::with_image(image),
        None => runtime_applecontainer::AppleContainerSubstrate::new(),
    };
    // Offered off macOS only under `apple-container-on-any-os`, against a simulator.
    let substrate = if cfg!(target_os = "macos") {
        substrate
    } else {
        substrate.assume_supported_host()
    };
    match &config.project_mount {
        // At its own path, as on the other runtimes.
        Some(project) => substrate.volume(runtime_applecontainer::Volume {
            host: project.path.clone(),
            guest: project.path.display().to_string(),
            read_only: !project.writable,
        }),
        None => substrate,
    }
}

#[cfg(container_runtime)]
fn open_container(config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    Ok(Arc::new(container_substrate(config)))
}

#[cfg(not(container_runtime))]
fn open_container(_config: &RuntimeConfig) -> Result<Arc<dyn Substrate>> {
    Err(not_here(
        RuntimeName::AppleContainer,
        "Apple's `container` runs on macOS 26 or later only (and needs the `apple-container` \
         feature); on Linux use bwrap or lima",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for runtime in RuntimeName::ALL {
            assert_eq!(runtime.as_str().parse::<RuntimeName>().ok(), Some(runtime));
        }
        let err = "docker".parse::<RuntimeName>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("bwrap, tart, lima, apple-container, local")));
    }

    #[test]
    fn every_isolating_runtime_opens_terminals() {
        for runtime in RuntimeName::ALL {
            assert_eq!(runtime.has_terminals(), runtime.isolates(), "{runtime}");
        }
    }

    #[test]
    fn local_is_never_an_isolating_choice() {
        assert!(!RuntimeName::Local.isolates());
        assert_eq!(RuntimeName::ALL.last(), Some(&RuntimeName::Local));
    }
}
