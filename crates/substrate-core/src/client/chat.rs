//! A multi-turn conversation on top of the raw protocol: sends messages, answers permission
//! requests through a callback, detects turn ends, and rolls usage up.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{EventStream, HarnessClient};
use crate::protocol::{
    CreateSession, EndReason, Event, EventKind, PermissionDecision, SessionError, Usage,
    UserMessage,
};
use crate::{Error, Result};

/// A tool-permission request, as handed to a [`PermissionHandler`].
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionRequest {
    /// The id to answer with.
    pub call_id: String,
    /// The tool.
    pub tool_name: String,
    /// Its input.
    pub input: Value,
    /// The tool_use block's id, when known.
    pub tool_use_id: Option<String>,
}

/// Decides tool permissions for a [`ChatSession`].
#[async_trait]
pub trait PermissionHandler: Send + Sync {
    /// The decision for one request.
    async fn decide(&self, request: &PermissionRequest) -> PermissionDecision;
}

/// Allows every tool call: the default, for an agent with full autonomy inside its sandbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl PermissionHandler for AllowAll {
    async fn decide(&self, _request: &PermissionRequest) -> PermissionDecision {
        PermissionDecision::allow()
    }
}

/// A [`PermissionHandler`] from a plain function.
pub fn permission_fn<F>(f: F) -> impl PermissionHandler
where
    F: Fn(&PermissionRequest) -> PermissionDecision + Send + Sync,
{
    struct FnHandler<F>(F);
    #[async_trait]
    impl<F> PermissionHandler for FnHandler<F>
    where
        F: Fn(&PermissionRequest) -> PermissionDecision + Send + Sync,
    {
        async fn decide(&self, request: &PermissionRequest) -> PermissionDecision {
            (self.0)(request)
        }
    }
    FnHandler(f)
}

/// What one turn produced.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    /// The turn's number (1-based).
    pub turn: u32,
    /// Every event of the turn, in order.
    pub events: Vec<Event>,
    /// The engine's result message, if the turn got that far.
    pub result: Option<Value>,
    /// Usage of this turn alone.
    pub usage: Usage,
    /// Set when the session ended during this turn.
    pub session_ended: Option<EndReason>,
}

impl TurnOutcome {
    /// The result's text (`result.result` for claude-agent-sdk), if any.
    pub fn result_text(&self) -> Option<&str> {
        self.result.as_ref()?.get("result")?.as_str()
    }
}

/// How a whole session ended.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// Why it ended.
    pub reason: EndReason,
    /// The engine error, for [`EndReason::Error`].
    pub error: Option<SessionError>,
    /// Turns run.
    pub turns: u32,
    /// Cumulative usage.
    pub usage: Usage,
}

/// A multi-turn conversation with one harness session.
pub struct ChatSession {
    client: HarnessClient,
    session_id: String,
    events: EventStream,
    permissions: Arc<dyn PermissionHandler>,
    usage: Usage,
    turns: u32,
    ended: Option<(EndReason, Option<SessionError>)>,
}

impl std::fmt::Debug for ChatSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSession")
            .field("session_id", &self.session_id)
            .field("turns", &self.turns)
            .field("usage", &self.usage)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ChatSession {
    /// Creates a streaming-input session and subscribes to its events (which starts the
    /// engine). Permissions are allowed unless [`ChatSession::with_permissions`] says otherwise.
    pub async fn start(client: HarnessClient, mut request: CreateSession) -> Result<Self> {
        if request.streaming_input.is_none() {
            request.streaming_input = Some(true);
        }
        let created = client.create_session(&request).await?;
        let events = match client.events(&created.session_id, None).await {
            Ok(events) => events,
            Err(e) => {
                let _ = client.delete_session(&created.session_id).await;
                return Err(e);
            }
        };
        Ok(Self {
            client,
            session_id: created.session_id,
            events,
            permissions: Arc::new(AllowAll),
            usage: Usage::default(),
            turns: 0,
            ended: None,
        })
    }

    /// Subscribes to a session created earlier (which starts its engine): for callers that
    /// put files into the workdir between creating the session and starting it.
    pub async fn attach(client: HarnessClient, session_id: impl Into<String>) -> Result<Self> {
        let session_id = session_id.into();
        let events = client.events(&session_id, None).await?;
        Ok(Self {
            client,
            session_id,
            events,
            permissions: Arc::new(AllowAll),
            usage: Usage::default(),
            turns: 0,
            ended: None,
        })
    }

    /// Decides tool permissions with `handler`.
    pub fn with_permissions(mut self, handler: impl PermissionHandler + 'static) -> Self {
        self.permissions = Arc::new(handler);
        self
    }

    /// The harness session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The client, for file routes.
    pub fn client(&self) -> &HarnessClient {
        &self.client
    }

    /// Cumulative usage so far.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Sends a message and returns the turn, whose events are read with [`Turn::next`].
    pub async fn send(&mut self, message: impl Into<UserMessage>) -> Result<Turn<'_>> {
        if let Some((reason, _)) = &self.ended {
            return Err(Error::invalid(
                "message",
                format!(
                    "session {} has ended ({reason:?}); start a new one",
                    self.session_id
                ),
            ));
        }
        self.client.send_message(&self.session_id, message).await?;
        Ok(Turn {
            usage_before: self.usage.clone(),
            chat: self,
            turn: None,
            result: None,
            done: false,
            session_ended: None,
        })
    }

    /// Sends a message and waits for the turn to end.
    pub async fn ask(&mut self, message: impl Into<UserMessage>) -> Result<TurnOutcome> {
        self.send(message).await?.finish().await
    }

    /// Interrupts the engine; the session ends `cancelled`.
    pub async fn cancel(&self) -> Result<()> {
        self.client.cancel(&self.session_id).await
    }

    /// Ends input and reads the stream to the session's end.
    pub async fn finish(mut self) -> Result<SessionSummary> {
        if self.ended.is_none() {
            match self.client.end_input(&self.session_id).await {
                // Ended meanwhile (cancelled, budget): the stream still says how.
                Err(Error::Protocol { status: 409, .. }) => {}
                other => other?,
            }
            while let Some(event) = self.events.next().await {
                let event = event?;
                self.observe(&event).await?;
            }
        }
        let (reason, error) = self.ended.clone().ok_or_else(|| {
            Error::Decode(String::from(
                "the event stream ended without ca_session_ended",
            ))
        })?;
        Ok(SessionSummary {
            reason,
            error,
            turns: self.turns,
            usage: self.usage,
        })
    }

    /// Answers permission requests and keeps the counters; shared by turns and `finish`.
    async fn observe(&mut self, event: &Event) -> Result<()> {
        match &event.kind {
            EventKind::PermissionRequest {
                call_id,
                tool_name,
                input,
                tool_use_id,
            } => {
                let request = PermissionRequest {
                    call_id: call_id.clone(),
                    tool_name: tool_name.clone(),
                    input: input.clone(),
                    tool_use_id: tool_use_id.clone(),
                };
                let decision = self.permissions.decide(&request).await;
                match self
                    .client
                    .decide_permission(&self.session_id, call_id, &decision)
                    .await
                {
                    // Already decided (timeout, cancel): the decision event will say so.
                    Err(Error::Protocol {
                        status: 409 | 404, ..
                    }) => {}
                    other => other?,
                }
            }
            EventKind::TurnStarted { turn, .. } => self.turns = self.turns.max(*turn),
            EventKind::UsageSnapshot { usage, .. } => self.usage = usage.clone(),
            EventKind::SessionEnded {
                reason,
                error,
                usage,
            } => {
                if let Some(usage) = usage {
                    self.usage = usage.clone();
                }
                self.ended = Some((*reason, error.clone()));
            }
            _ => {}
        }
        Ok(())
    }
}

/// One turn in progress. Read its events with [`Turn::next`] or wait for it with
/// [`Turn::finish`]; permission requests are answered as they pass.
pub struct Turn<'a> {
    chat: &'a mut ChatSession,
    usage_before: Usage,
    turn: Option<u32>,
    result: Option<Value>,
    done: bool,
    session_ended: Option<EndReason>,
}

impl std::fmt::Debug for Turn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("turn", &self.turn)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Turn<'_> {
    /// The next event of this turn; `None` after the turn's usage snapshot (which follows its
    /// result) or the session's end.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        let event = match self.chat.events.next().await? {
            Ok(event) => event,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if let Err(e) = self.chat.observe(&event).await {
            self.done = true;
            return Some(Err(e));
        }
        match &event.kind {
            EventKind::TurnStarted { turn, .. } => self.turn = Some(*turn),
            EventKind::SdkMessage { .. } => {
                if let Some(result) = event.as_result() {
                    self.result = Some(result.clone());
                }
            }
            EventKind::UsageSnapshot { turn, .. } if self.turn.is_none_or(|t| t == *turn) => {
                self.turn = Some(*turn);
                self.done = true;
            }
            EventKind::SessionEnded { reason, .. } => {
                self.session_ended = Some(*reason);
                self.done = true;
            }
            _ => {}
        }
        Some(Ok(event))
    }

    /// Reads the turn to its end.
    pub async fn finish(mut self) -> Result<TurnOutcome> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event?);
        }
        let usage = usage_delta(&self.chat.usage, &self.usage_before);
        Ok(TurnOutcome {
            turn: self.turn.unwrap_or(self.chat.turns),
            events,
            result: self.result,
            usage,
            session_ended: self.session_ended,
        })
    }
}

fn usage_delta(now: &Usage, before: &Usage) -> Usage {
    Usage {
        input_tokens: now.input_tokens.saturating_sub(before.input_tokens),
        output_tokens: now.output_tokens.saturating_sub(before.output_tokens),
        cache_read_input_tokens: now
            .cache_read_input_tokens
            .saturating_sub(before.cache_read_input_tokens),
        cache_creation_input_tokens: now
            .cache_creation_input_tokens
            .saturating_sub(before.cache_creation_input_tokens),
        total_cost_usd: (now.total_cost_usd - before.total_cost_usd).max(0.0),
    }
}
