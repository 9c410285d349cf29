//! `computeragent shell --into ID --server URL`: a terminal inside a warm sandbox of a
//! running `serve`, over its WebSocket terminal route (any runtime the server's sandbox can
//! open terminals on). The bearer token comes from `COMPUTERAGENT_TOKEN`, never a flag, so
//! it stays out of the process list.

use std::ffi::OsString;
use std::process::ExitCode;

use computeragent::terminal::size_of;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::tty::{KeyReader, RawMode, SessionSignal, SessionSignals};

fn invalid(message: impl Into<String>) -> computeragent::Error {
    computeragent::Error::invalid("shell --into", message)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The route's `ws://` address for `server` (an `http://` base URL).
fn terminal_url(server: &str, id: &str, argv: &[String]) -> computeragent::Result<String> {
    let base = server.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        return Err(invalid(format!(
            "`{server}` is not an http:// or https:// URL of a `computeragent serve`"
        )));
    };
    if base.starts_with("wss://") {
        return Err(invalid(
            "https servers are not supported by this client yet; reach the server over \
             http:// (for example through an SSH tunnel)",
        ));
    }
    let size = size_of(std::io::stdin()).unwrap_or_default();
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let command = serde_json::to_string(argv).map_err(|e| invalid(e.to_string()))?;
    Ok(format!(
        "{base}/v1/sandboxes/{}/terminal?rows={}&cols={}&term={}&command={}",
        encode(id),
        size.rows,
        size.cols,
        encode(&term),
        encode(&command)
    ))
}

pub async fn shell_into(
    server: &str,
    id: &str,
    argv: Vec<OsString>,
) -> computeragent::Result<ExitCode> {
    let token = std::env::var("COMPUTERAGENT_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| invalid("set COMPUTERAGENT_TOKEN to one of the server's bearer tokens"))?;
    let argv: Vec<String> = if argv.is_empty() {
        vec!["bash".into(), "-l".into()]
    } else {
        argv.iter()
            .map(|a| {
                a.to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(format!("the argument {a:?} is not UTF-8")))
            })
            .collect::<computeragent::Result<_>>()?
    };
    let url = terminal_url(server, id, &argv)?;
    let mut request = url
        .into_client_request()
        .map_err(|e| invalid(format!("the server URL: {e}")))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| invalid("COMPUTERAGENT_TOKEN holds characters a header cannot"))?;
    request.headers_mut().insert("authorization", bearer);
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                invalid(format!(
                    "the server answered {}: {}",
                    response.status(),
                    body.trim()
                ))
            }
            other => invalid(format!("could not reach {server}: {other}")),
        })?;
    let (mut to_server, mut from_server) = socket.split();

    let mut signals = SessionSignals::watch()?;
    let raw = RawMode::enter(&signals)?;
    let (keys, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let reader = KeyReader::spawn(keys)?;
    let mut stdout = tokio::io::stdout();
    let mut failure = None;
    let mut ended_by = None;
    let code = loop {
        tokio::select! {
            message = from_server.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = stdout.write_all(&bytes).await;
                    let _ = stdout.flush().await;
                }
                Some(Ok(Message::Text(text))) => {
                    let value: serde_json::Value =
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                    if let Some(exit) = value.get("exit") {
                        break exit["code"].as_i64().and_then(|c| i32::try_from(c).ok()).unwrap_or(128);
                    }
                    if let Some(error) = value.get("error") {
                        failure = Some(error["message"].as_str().unwrap_or("unknown").to_owned());
                        break 1;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break 1,
                Some(Err(e)) => {
                    failure = Some(e.to_string());
                    break 1;
                }
                Some(Ok(_)) => {}
            },
            Some(bytes) = typed.recv() => {
                if to_server.send(Message::Binary(bytes.into())).await.is_err() {
                    break 1;
                }
            }
            signal = signals.next() => match signal {
                SessionSignal::Resized => {
                    if let Some(size) = size_of(std::io::stdin()) {
                        let resize = serde_json::json!({"resize": {"rows": size.rows, "cols": size.cols}});
                        let _ = to_server.send(Message::Text(resize.to_string().into())).await;
                    }
                }
                SessionSignal::Ended { name, code } => {
                    ended_by = Some(name);
                    break i32::from(code);
                }
            },
        }
    };
    reader.stop().await;
    let _ = to_server.send(Message::Close(None)).await;
    drop(raw);
    if let Some(name) = ended_by {
        eprintln!("computeragent: the session was ended by {name}; the sandbox keeps running");
    }
    if let Some(message) = failure {
        return Err(invalid(message));
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_command_encoded_and_refuse_other_schemes() {
        let url = terminal_url(
            "http://127.0.0.1:9000/",
            "sbx_1",
            &["sh".into(), "-c".into(), "a b".into()],
        )
        .unwrap();
        assert!(
            url.starts_with("ws://127.0.0.1:9000/v1/sandboxes/sbx_1/terminal?rows="),
            "{url}"
        );
        assert!(
            url.ends_with("&command=%5B%22sh%22%2C%22-c%22%2C%22a%20b%22%5D"),
            "{url}"
        );
        assert!(terminal_url("ftp://x", "sbx_1", &[]).is_err());
    }
}
