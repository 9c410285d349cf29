//! Credentials offered to a guest, tried in order.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use russh::client::{Handle, KeyboardInteractiveAuthResponse};
use russh::keys::PrivateKeyWithHashAlg;
use substrate_core::{Error, Secret, SshFailure};

use crate::session::Client;

/// One way to log in.
#[non_exhaustive]
#[derive(Clone)]
pub enum SshAuth {
    /// A password (tart's images use `admin`/`admin`).
    Password(Secret),
    /// Keyboard-interactive: every prompt is answered with this password.
    KeyboardInteractive(Secret),
    /// An OpenSSH private key file, with its passphrase when it has one.
    KeyFile {
        /// The private key.
        path: PathBuf,
        /// Its passphrase.
        passphrase: Option<Secret>,
    },
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshAuth::Password(_) => f.write_str("Password(<redacted>)"),
            SshAuth::KeyboardInteractive(_) => f.write_str("KeyboardInteractive(<redacted>)"),
            SshAuth::KeyFile { path, .. } => f.debug_struct("KeyFile").field("path", path).finish(),
        }
    }
}

impl SshAuth {
    fn method(&self) -> &'static str {
        match self {
            SshAuth::Password(_) => "password",
            SshAuth::KeyboardInteractive(_) => "keyboard-interactive",
            SshAuth::KeyFile { .. } => "publickey",
        }
    }

    /// Tries this credential; `Ok(false)` when the guest refused it.
    async fn offer(&self, handle: &mut Handle<Client>, user: &str) -> Result<bool, russh::Error> {
        match self {
            SshAuth::Password(password) => Ok(handle
                .authenticate_password(user, password.expose())
                .await?
                .success()),
            SshAuth::KeyboardInteractive(password) => {
                let mut reply = handle
                    .authenticate_keyboard_interactive_start(user, None)
                    .await?;
                // A server may ask several rounds (some send an empty one first).
                for _ in 0..8 {
                    match reply {
                        KeyboardInteractiveAuthResponse::Success => return Ok(true),
                        KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
                        KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                            let answers = prompts
                                .iter()
                                .map(|_| password.expose().to_owned())
                                .collect();
                            reply = handle
                                .authenticate_keyboard_interactive_respond(answers)
                                .await?;
                        }
                    }
                }
                Ok(false)
            }
            SshAuth::KeyFile { path, passphrase } => {
                let key =
                    russh::keys::load_secret_key(path, passphrase.as_ref().map(|p| p.expose()))
                        .map_err(russh::Error::from)?;
                let hash = handle.best_supported_rsa_hash().await?.flatten();
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                Ok(handle.authenticate_publickey(user, key).await?.success())
            }
        }
    }
}

/// Offers each credential in turn until one is accepted.
pub(crate) async fn authenticate(
    handle: &mut Handle<Client>,
    target: &str,
    user: &str,
    auth: &[SshAuth],
) -> substrate_core::Result<()> {
    if auth.is_empty() {
        return Err(Error::invalid(
            "SSH credentials",
            "no credential given: add a password or a key",
        ));
    }
    let mut tried = Vec::new();
    for credential in auth {
        match credential.offer(handle, user).await {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push(credential.method().to_owned()),
            Err(e) => tried.push(format!("{} ({e})", credential.method())),
        }
    }
    Err(Error::Ssh {
        target: target.to_owned(),
        failure: SshFailure::Auth,
        reason: format!(
            "user `{user}` was refused with {}; check the image's user and credentials",
            tried.join(", ")
        ),
    })
}
