//! The harness image: what it carries and where, as one recipe that both the Containerfile
//! (`cargo xtask image`) and the runtime read, so they cannot drift apart.

use std::path::{Path, PathBuf};

use substrate_core::{Error, Result};

/// The port the harness listens on inside the container.
pub const HARNESS_PORT: u16 = 7780;

/// The harness image's layout and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecipe {
    /// The image reference it is tagged as.
    pub tag: String,
    /// The base image (Node.js 20+ on Debian).
    pub base: String,
    /// Debian packages the agent's tools need (`pdftoppm` for Claude Code's PDF reads, `rg`,
    /// `git`, …).
    pub packages: Vec<String>,
    /// The non-root user the harness and the agent run as (the base image's `node`).
    pub user: String,
    /// Its uid and gid.
    pub uid: u32,
    /// Its home.
    pub home: String,
    /// Where the harness and its node_modules live (root-owned: the agent, running as
    /// [`ImageRecipe::user`], cannot change them).
    pub harness_dir: String,
}

impl ImageRecipe {
    /// The recipe of the harness of this build, tagged `computeragent-harness:<bundle hash>`.
    pub fn for_this_build() -> Self {
        Self {
            tag: default_tag(),
            base: "docker.io/library/node:22-bookworm-slim".into(),
            packages: [
                "ca-certificates",
                "git",
                "poppler-utils",
                "procps",
                "ripgrep",
            ]
            .map(String::from)
            .to_vec(),
            user: "node".into(),
            uid: 1000,
            home: "/home/node".into(),
            harness_dir: "/opt/computeragent".into(),
        }
    }

    /// Where session workdirs live.
    pub fn workdir_root(&self) -> String {
        format!("{}/work", self.home)
    }

    /// The variables the image sets for the harness (no secret among them).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PORT".into(), HARNESS_PORT.to_string()),
            // A published port reaches the container's interface, not its loopback.
            ("HARNESS_HOST".into(), "0.0.0.0".into()),
            ("HARNESS_WORKDIR_ROOT".into(), self.workdir_root()),
            (
                "HARNESS_NODE_MODULES".into(),
                format!("{}/node_modules", self.harness_dir),
            ),
        ]
    }

    /// The image's command: the harness.
    pub fn cmd(&self) -> Vec<String> {
        vec!["node".into(), format!("{}/harness.mjs", self.harness_dir)]
    }

    /// The Containerfile. The modules are installed in the build from the committed lockfile
    /// (`npm ci`), so they match the image's architecture whatever the building host's is.
    pub fn containerfile(&self) -> String {
        let env: Vec<String> = self
            .env()
            .iter()
            .map(|(k, v)| format!("    {k}={v}"))
            .collect();
        let cmd: Vec<String> = self.cmd().iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "# The computeragent harness image (written by `cargo xtask image`; do not edit).\n\
             FROM {base}\n\
             RUN apt-get update \\\n    \
             && apt-get install -y --no-install-recommends {packages} \\\n    \
             && rm -rf /var/lib/apt/lists/*\n\
             WORKDIR {dir}\n\
             COPY package.json package-lock.json ./\n\
             RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force\n\
             COPY harness.mjs ./\n\
             USER {user}\n\
             RUN mkdir -p {workdir}\n\
             WORKDIR {home}\n\
             ENV \\\n{env}\n\
             EXPOSE {port}\n\
             CMD [{cmd}]\n",
            base = self.base,
            packages = self.packages.join(" "),
            dir = self.harness_dir,
            user = self.user,
            workdir = self.workdir_root(),
            home = self.home,
            env = env.join(" \\\n"),
            port = HARNESS_PORT,
            cmd = cmd.join(", "),
        )
    }

    /// Writes the build context (Containerfile, harness, package manifest and lockfile) into
    /// `dir`; returns the Containerfile's path.
    pub fn write_context(&self, dir: &Path) -> Result<PathBuf> {
        let write = |name: &str, data: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, data)
                .map_err(|e| Error::io(format!("write {}", path.display()), e))
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        write("harness.mjs", harness_bundle::HARNESS_MJS)?;
        write(
            "package.json",
            harness_bundle::SANDBOX_PACKAGE_JSON.as_bytes(),
        )?;
        write(
            "package-lock.json",
            harness_bundle::SANDBOX_PACKAGE_LOCK.as_bytes(),
        )?;
        write("Containerfile", self.containerfile().as_bytes())?;
        Ok(dir.join("Containerfile"))
    }
}

/// `computeragent-harness:<first 12 of the bundle hash>`: an image always matches the harness
/// it was built with.
pub fn default_tag() -> String {
    let hash = harness_bundle::bundle_hash();
    format!(
        "computeragent-harness:{}",
        hash.chars().take(12).collect::<String>()
    )
}
