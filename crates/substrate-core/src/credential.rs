//! Credentials the sandbox uses but never holds.
//!
//! A brokered upstream is an HTTP(S) service whose secret stays on the host: the engine inside
//! gets a base URL on the sandbox's own loopback and a per-boot placeholder instead of the
//! secret; the host's broker accepts only requests carrying the placeholder, puts the secret in
//! its place and forwards them. The model's key is brokered by default whenever one is given
//! (see [`CredentialMode`]); callers declare further upstreams (a GitHub token, a package
//! registry) with [`BrokeredUpstream`].

use crate::error::{Error, Result};
use crate::secret::Secret;

/// How the credentials a boot is given reach the engine.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CredentialMode {
    /// Credentials stay on the host and are filled in by the broker. The model's key
    /// (`ANTHROPIC_API_KEY`, `ANTHROPIC_AUTH_TOKEN`, `CLAUDE_CODE_OAUTH_TOKEN` among the
    /// engine's variables) is brokered without being asked. The default.
    #[default]
    Brokered,
    /// The engine's variables go into the sandbox as given, real keys included: anything the
    /// agent runs can read and send them anywhere its network allows. Unsafe.
    UnsafeKeysInSandbox,
}

/// One header of a brokered upstream that carries a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialHeader {
    /// The header's name, lower-case (`x-api-key`, `authorization`).
    pub header: String,
    /// What precedes the secret in the header's value (`""`, `"Bearer "`, `"token "`).
    pub prefix: String,
    /// The real credential.
    pub secret: Secret,
    /// The engine variable that receives the placeholder (`ANTHROPIC_API_KEY`, `GH_TOKEN`).
    pub placeholder_env: Option<String>,
}

/// An upstream whose credentials the host's broker fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokeredUpstream {
    /// A short name (`anthropic`, `github`): the path prefix inside the sandbox and the name
    /// in audit events. Lower-case letters, digits and `-`.
    pub name: String,
    /// Where requests go: `https://host[:port][/path]` (plain `http://` only for loopback).
    pub base_url: String,
    /// The credential headers. A request must carry the placeholder of at least one.
    pub credentials: Vec<CredentialHeader>,
    /// The engine variable that receives the upstream's URL inside the sandbox
    /// (`ANTHROPIC_BASE_URL`, `GITHUB_API_URL`).
    pub url_env: Option<String>,
}

impl BrokeredUpstream {
    /// An upstream named `name` at `base_url`, with no credential yet.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            credentials: Vec::new(),
            url_env: None,
        }
    }

    /// Adds a credential: `header: {prefix}{secret}`, its placeholder in `placeholder_env`.
    pub fn credential(
        mut self,
        header: impl Into<String>,
        prefix: impl Into<String>,
        secret: Secret,
        placeholder_env: Option<&str>,
    ) -> Self {
        self.credentials.push(CredentialHeader {
            header: header.into().to_ascii_lowercase(),
            prefix: prefix.into(),
            secret,
            placeholder_env: placeholder_env.map(str::to_owned),
        });
        self
    }

    /// Sets the engine variable that receives the in-sandbox URL.
    pub fn url_env(mut self, name: impl Into<String>) -> Self {
        self.url_env = Some(name.into());
        self
    }

    /// Checks the declaration, naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        let what = format!("brokered upstream `{}`", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::invalid(
                what,
                "its name must be lower-case letters, digits and `-` (it becomes a URL path)",
            ));
        }
        let rest = match (
            self.base_url.strip_prefix("https://"),
            self.base_url.strip_prefix("http://"),
        ) {
            (Some(rest), _) => rest,
            (None, Some(rest)) => {
                let host = rest.split(['/', '?']).next().unwrap_or_default();
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                    return Err(Error::invalid(
                        what,
                        format!(
                            "`{}` is plain http to another machine: the secret would cross \
                             the network unencrypted; use https://",
                            self.base_url
                        ),
                    ));
                }
                rest
            }
            (None, None) => {
                return Err(Error::invalid(
                    what,
                    format!("`{}` is not an http(s):// URL", self.base_url),
                ));
            }
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::invalid(
                what,
                format!("`{}` has no host", self.base_url),
            ));
        }
        if self.credentials.is_empty() {
            return Err(Error::invalid(
                what,
                "it has no credential header to fill in",
            ));
        }
        for c in &self.credentials {
            if c.header.is_empty()
                || !c
                    .header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Error::invalid(
                    what,
                    format!("`{}` is not a header name", c.header),
                ));
            }
            if c.secret.expose().is_empty() {
                return Err(Error::invalid(
                    what,
                    format!("the secret for `{}` is empty", c.header),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> BrokeredUpstream {
        BrokeredUpstream::new("github", "https://api.github.com")
            .credential(
                "Authorization",
                "Bearer ",
                Secret::new("ghp_x"),
                Some("GH_TOKEN"),
            )
            .url_env("GITHUB_API_URL")
    }

    #[test]
    fn a_sound_declaration_passes_and_headers_are_lower_cased() {
        let up = github();
        up.validate().unwrap();
        assert_eq!(up.credentials[0].header, "authorization");
        assert!(!format!("{up:?}").contains("ghp_x"));
    }

    #[test]
    fn bad_declarations_name_what_is_wrong() {
        let cases = [
            (
                BrokeredUpstream {
                    name: "Git Hub".into(),
                    ..github()
                },
                "name",
            ),
            (
                BrokeredUpstream {
                    base_url: "ftp://x".into(),
                    ..github()
                },
                "http(s)",
            ),
            (
                BrokeredUpstream {
                    base_url: "http://api.github.com".into(),
                    ..github()
                },
                "unencrypted",
            ),
            (
                BrokeredUpstream {
                    base_url: "https:///x".into(),
                    ..github()
                },
                "no host",
            ),
            (
                BrokeredUpstream {
                    credentials: vec![],
                    ..github()
                },
                "no credential",
            ),
            (
                github().credential("bad header", "", Secret::new("x"), None),
                "header name",
            ),
            (
                github().credential("x-key", "", Secret::new(""), None),
                "empty",
            ),
        ];
        for (up, needle) in cases {
            let err = up.validate().unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains("brokered upstream"),
                "{needle}: {err}"
            );
        }
        BrokeredUpstream {
            base_url: "http://127.0.0.1:9/v1".into(),
            ..github()
        }
        .validate()
        .unwrap();
    }
}
