//! A session's event stream: SSE frames → typed events, with resume after a dropped connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::HarnessClient;
use super::sse::SseParser;
use crate::protocol::Event;
use crate::{Error, Result};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// How many times in a row a dropped stream is reopened before giving up.
const MAX_RECONNECTS: u32 = 8;

/// The events of one session, in order, each exactly once.
///
/// When the connection drops before `ca_session_ended`, a subscribed stream reconnects with
/// `Last-Event-ID` and skips anything it already yielded; if the harness can no longer replay
/// what was missed, [`EventStream::next`] fails with the harness's `EVENTS_EXPIRED` error
/// rather than skip ahead. A gap in ids is an error too. After `ca_session_ended` it yields
/// `None`.
pub struct EventStream {
    client: HarnessClient,
    /// `None` for a one-shot chat stream, which cannot be reopened.
    session_id: Option<String>,
    body: Option<ByteStream>,
    parser: SseParser,
    pending: VecDeque<Event>,
    last_id: Option<u64>,
    ended: bool,
    /// An error met while parsing, reported after the events that came before it.
    failure: Option<Error>,
    reconnects: u32,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("session_id", &self.session_id)
            .field("last_id", &self.last_id)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) async fn subscribe(
        client: HarnessClient,
        session_id: String,
        after: Option<u64>,
    ) -> Result<Self> {
        let resp = client.open_events(&session_id, after).await?;
        Ok(Self {
            client,
            session_id: Some(session_id),
            body: Some(Box::pin(resp.bytes_stream())),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            last_id: after,
            ended: false,
            failure: None,
            reconnects: 0,
        })
    }

    pub(crate) fn one_shot(client: HarnessClient, resp: reqwest::Response) -> Self {
        Self {
            client,
            session_id: None,
            body: Some(Box::pin(resp.bytes_stream())),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            last_id: None,
            ended: false,
            failure: None,
            reconnects: 0,
        }
    }

    /// The id of the last event yielded.
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_id
    }

    /// The session id, for a subscribed stream.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The next event; `None` once the session has ended.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.is_session_end() {
                    self.ended = true;
                    self.pending.clear();
                    self.body = None;
                }
                return Some(Ok(event));
            }
            if let Some(err) = self.failure.take() {
                self.ended = true;
                return Some(Err(err));
            }
            if self.ended {
                return None;
            }
            let Some(body) = self.body.as_mut() else {
                if let Err(e) = self.reconnect().await {
                    self.ended = true;
                    return Some(Err(e));
                }
                continue;
            };
            match body.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = self.absorb(&chunk) {
                        self.body = None;
                        self.failure = Some(e);
                    }
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "event stream broke; will resume");
                    self.body = None;
                    if self.session_id.is_none() {
                        self.ended = true;
                        return Some(Err(self.client.transport_error(&err)));
                    }
                }
                None => {
                    self.body = None;
                    if self.session_id.is_none() {
                        self.ended = true;
                        return Some(Err(Error::Transport {
                            endpoint: self.client.endpoint().to_string(),
                            reason: String::from("the chat stream closed before ca_session_ended"),
                        }));
                    }
                }
            }
        }
    }

    /// Drains the stream to its end, returning every remaining event.
    pub async fn collect_all(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        while let Some(event) = self.next().await {
            out.push(event?);
        }
        Ok(out)
    }

    /// The stream as a [`futures_util::Stream`].
    pub fn into_stream(self) -> impl Stream<Item = Result<Event>> + Send {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|e| (e, s)) })
    }

    fn absorb(&mut self, chunk: &[u8]) -> Result<()> {
        for frame in self.parser.feed(chunk) {
            let sse_id = match frame.id.as_deref() {
                Some(raw) => Some(
                    raw.trim()
                        .parse::<u64>()
                        .map_err(|_| Error::Decode(format!("SSE id {raw:?} is not a number")))?,
                ),
                None => None,
            };
            let event = Event::from_data(&frame.data, sse_id).map_err(Error::Decode)?;
            match self.last_id {
                Some(last) if event.id <= last => continue, // replayed after a resume
                Some(last) if event.id != last + 1 => {
                    return Err(Error::Decode(format!(
                        "event ids jumped from {last} to {}: events were lost",
                        event.id
                    )));
                }
                _ => {}
            }
            self.last_id = Some(event.id);
            self.reconnects = 0;
            self.pending.push_back(event);
        }
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<()> {
        let Some(id) = self.session_id.clone() else {
            return Err(Error::Transport {
                endpoint: self.client.endpoint().to_string(),
                reason: String::from("a one-shot chat stream cannot be resumed"),
            });
        };
        loop {
            self.reconnects += 1;
            if self.reconnects > MAX_RECONNECTS {
                return Err(Error::Transport {
                    endpoint: self.client.endpoint().to_string(),
                    reason: format!(
                        "the event stream of {id} dropped {MAX_RECONNECTS} times in a row after event {:?}",
                        self.last_id
                    ),
                });
            }
            let backoff = Duration::from_millis(50 * 2u64.pow(self.reconnects.min(4)));
            tokio::time::sleep(backoff).await;
            // A new parser: a half-received frame of the dropped connection is discarded and
            // replayed by the harness.
            self.parser = SseParser::new();
            match self.client.open_events(&id, self.last_id).await {
                Ok(resp) => {
                    self.body = Some(Box::pin(resp.bytes_stream()));
                    return Ok(());
                }
                Err(e @ Error::Protocol { .. }) => return Err(e), // 404, 410: final
                Err(e) => tracing::debug!(error = %e, "event stream reconnect failed; retrying"),
            }
        }
    }
}
