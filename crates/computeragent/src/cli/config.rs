//! The user's defaults (TOML): `$COMPUTERAGENT_CONFIG`, else `config.toml` in the platform's
//! config directory (`$XDG_CONFIG_HOME/computeragent` or `~/.config/computeragent`; on macOS
//! `~/Library/Application Support/computeragent`). Options on the command line win.
//!
//! ```toml
//! runtime = "bwrap"              # default: the best isolating runtime here
//! network = "allow:api.github.com"
//! memory = "4G"
//! cpus = "2"
//! env_allow = ["GITHUB_TOKEN"]   # host variables passed to the agent (keys stay brokered)
//! read_only = ["/usr/share/dict"] # host paths bound read-only (bwrap)
//! exclude = ["node_modules", "target"] # left out of a project's copy and its change set
//! ```

use std::path::PathBuf;

use computeragent::{NetworkPolicy, RuntimeName};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    runtime: Option<String>,
    network: Option<String>,
    memory: Option<String>,
    cpus: Option<String>,
    #[serde(default)]
    env_allow: Vec<String>,
    #[serde(default)]
    read_only: Vec<PathBuf>,
    #[serde(default)]
    exclude: Vec<String>,
    stage_dir: Option<PathBuf>,
    tart_image: Option<String>,
    lima_base: Option<String>,
    container_image: Option<String>,
}

/// The user's defaults, checked.
#[derive(Debug, Default)]
pub struct UserConfig {
    /// Where it was read from, when a file existed.
    pub path: Option<PathBuf>,
    pub runtime: Option<RuntimeName>,
    pub network: Option<NetworkPolicy>,
    pub memory: Option<u64>,
    pub cpus: Option<u32>,
    pub env_allow: Vec<String>,
    pub read_only: Vec<PathBuf>,
    /// Left out of a project's copy (names or relative paths, checked).
    pub exclude: Vec<String>,
    pub stage_dir: Option<PathBuf>,
    pub tart_image: Option<String>,
    pub lima_base: Option<String>,
    pub container_image: Option<String>,
}

/// Where the file is looked for.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COMPUTERAGENT_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let base = if cfg!(target_os = "macos") {
        home.map(|h| h.join("Library/Application Support"))
    } else {
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".config")))
    };
    base.map(|b| b.join("computeragent").join("config.toml"))
}

/// Reads the user's defaults; no file means none. A mistake names the file and the key.
pub fn load() -> computeragent::Result<UserConfig> {
    let Some(path) = path() else {
        return Ok(UserConfig::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UserConfig::default()),
        Err(e) => {
            return Err(computeragent::Error::io(
                format!("read {}", path.display()),
                e,
            ));
        }
    };
    let what = |key: &str| format!("`{key}` in {}", path.display());
    let raw: Raw = toml::from_str(&text)
        .map_err(|e| computeragent::Error::invalid(path.display().to_string(), e.to_string()))?;
    let runtime = raw
        .runtime
        .map(|r| r.parse::<RuntimeName>())
        .transpose()
        .map_err(|e| computeragent::Error::invalid(what("runtime"), e.to_string()))?;
    let network = raw
        .network
        .as_deref()
        .map(computeragent::parse::network)
        .transpose()
        .map_err(|e| computeragent::Error::invalid(what("network"), e))?;
    let memory = raw
        .memory
        .as_deref()
        .map(computeragent::parse::bytes)
        .transpose()
        .map_err(|e| computeragent::Error::invalid(what("memory"), e))?;
    let cpus = raw
        .cpus
        .as_deref()
        .map(computeragent::parse::cpus)
        .transpose()
        .map_err(|e| computeragent::Error::invalid(what("cpus"), e))?;
    if let Some(bad) = raw.read_only.iter().find(|p| !p.is_absolute()) {
        return Err(computeragent::Error::invalid(
            what("read_only"),
            format!("{} is not an absolute path", bad.display()),
        ));
    }
    let exclude = raw
        .exclude
        .iter()
        .map(|e| computeragent::parse::exclude(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| computeragent::Error::invalid(what("exclude"), e))?;
    Ok(UserConfig {
        path: Some(path),
        runtime,
        network,
        memory,
        cpus,
        env_allow: raw.env_allow,
        read_only: raw.read_only,
        exclude,
        stage_dir: raw.stage_dir,
        tart_image: raw.tart_image,
        lima_base: raw.lima_base,
        container_image: raw.container_image,
    })
}
