//! The events of a session's stream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Decision, UserMessage};

/// One event of a session's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id: 0, 1, 2, … per session, never repeated.
    pub id: u64,
    /// When the harness emitted it, ISO 8601.
    pub ts: String,
    /// The session it belongs to.
    pub session_id: String,
    /// What happened.
    pub kind: EventKind,
}

/// Why a session ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Every turn ran and input ended.
    Complete,
    /// Cancelled by the client.
    Cancelled,
    /// The engine failed.
    Error,
    /// The cost budget ran out.
    BudgetExceeded,
}

/// Token and cost counts, cumulative for the session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Estimated cost in USD.
    pub total_cost_usd: f64,
}

/// An engine error carried by `ca_session_ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionError {
    /// Stable code.
    pub code: String,
    /// Message.
    pub message: String,
}

/// Who decided a permission request.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionDecisionBy {
    /// The client, through the permission route.
    Client,
    /// Nobody answered in time: denied.
    Timeout,
    /// The session was cancelled: denied.
    Cancel,
}

/// What an event says.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum EventKind {
    /// The engine started.
    #[serde(rename = "ca_session_started")]
    SessionStarted {
        /// Engine name.
        engine: String,
        /// Workdir as the harness sees it.
        #[serde(default)]
        workdir: Option<String>,
    },
    /// A turn began with this message.
    #[serde(rename = "ca_turn_started")]
    TurnStarted {
        /// 1-based turn number.
        turn: u32,
        /// The message.
        message: UserMessage,
    },
    /// The engine's own message, verbatim.
    #[serde(rename = "sdk_message")]
    SdkMessage {
        /// For claude-agent-sdk an `SDKMessage` (`system`, `assistant`, `user`, `result`, …).
        message: Value,
    },
    /// The engine asks whether a tool may run.
    #[serde(rename = "ca_permission_request")]
    PermissionRequest {
        /// Answer with this id.
        call_id: String,
        /// The tool.
        tool_name: String,
        /// Its input.
        input: Value,
        /// The tool_use block's id, when known.
        #[serde(default)]
        tool_use_id: Option<String>,
    },
    /// A permission request was decided.
    #[serde(rename = "ca_permission_decision")]
    PermissionDecision {
        /// The request's id.
        call_id: String,
        /// The decision.
        decision: Decision,
        /// Why.
        #[serde(default)]
        reason: Option<String>,
        /// Who decided.
        by: PermissionDecisionBy,
    },
    /// Cumulative usage after a turn.
    #[serde(rename = "ca_usage_snapshot")]
    UsageSnapshot {
        /// The turn that just ended.
        turn: u32,
        /// Cumulative usage.
        usage: Usage,
    },
    /// The session ended; the last event of every stream.
    #[serde(rename = "ca_session_ended")]
    SessionEnded {
        /// Why.
        reason: EndReason,
        /// The engine error, for `error`.
        #[serde(default)]
        error: Option<SessionError>,
        /// Final cumulative usage.
        #[serde(default)]
        usage: Option<Usage>,
    },
    /// An event kind this client does not know (from a newer harness): kept, not dropped.
    #[serde(skip)]
    Other {
        /// Its type name.
        type_name: String,
        /// Its whole data object.
        data: Value,
    },
}

const KNOWN_TYPES: &[&str] = &[
    "ca_session_started",
    "ca_turn_started",
    "sdk_message",
    "ca_permission_request",
    "ca_permission_decision",
    "ca_usage_snapshot",
    "ca_session_ended",
];

impl Event {
    /// Parses one event's `data` JSON. `sse_id` is the frame's `id:` line and wins over the
    /// body's `id` when both exist.
    pub fn from_data(data: &str, sse_id: Option<u64>) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(data).map_err(|e| format!("event data is not JSON: {e}"))?;
        let type_name = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or("event data has no `type`")?
            .to_owned();
        let id = sse_id
            .or_else(|| value.get("id").and_then(Value::as_u64))
            .ok_or_else(|| format!("event `{type_name}` has no id"))?;
        let ts = value
            .get("ts")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let session_id = value
            .get("sessionId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = if KNOWN_TYPES.contains(&type_name.as_str()) {
            serde_json::from_value(value)
                .map_err(|e| format!("event `{type_name}` (id {id}) is malformed: {e}"))?
        } else {
            EventKind::Other {
                type_name,
                data: value,
            }
        };
        Ok(Self {
            id,
            ts,
            session_id,
            kind,
        })
    }

    /// The event's type name, as on the wire.
    pub fn type_name(&self) -> &str {
        match &self.kind {
            EventKind::SessionStarted { .. } => "ca_session_started",
            EventKind::TurnStarted { .. } => "ca_turn_started",
            EventKind::SdkMessage { .. } => "sdk_message",
            EventKind::PermissionRequest { .. } => "ca_permission_request",
            EventKind::PermissionDecision { .. } => "ca_permission_decision",
            EventKind::UsageSnapshot { .. } => "ca_usage_snapshot",
            EventKind::SessionEnded { .. } => "ca_session_ended",
            EventKind::Other { type_name, .. } => type_name,
        }
    }

    /// The engine's result message, when this event carries one (it ends a turn).
    pub fn as_result(&self) -> Option<&Value> {
        match &self.kind {
            EventKind::SdkMessage { message }
                if message.get("type").and_then(Value::as_str) == Some("result") =>
            {
                Some(message)
            }
            _ => None,
        }
    }

    /// The event as the harness sent it: its kind's fields with `type`, `id`, `ts` and
    /// `sessionId` (for NDJSON output and for relaying it).
    pub fn to_json(&self) -> Value {
        let mut value = match &self.kind {
            EventKind::Other { data, .. } => data.clone(),
            kind => {
                let mut value = serde_json::to_value(kind).unwrap_or(Value::Null);
                // Absent optional fields are absent on the wire, not null.
                if let Value::Object(map) = &mut value {
                    map.retain(|_, v| !v.is_null());
                }
                value
            }
        };
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), Value::from(self.id));
            map.insert("ts".into(), Value::from(self.ts.clone()));
            map.insert("sessionId".into(), Value::from(self.session_id.clone()));
        }
        value
    }

    /// Whether this is the session's last event.
    pub fn is_session_end(&self) -> bool {
        matches!(self.kind, EventKind::SessionEnded { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_known_kind() {
        let e = Event::from_data(
            r#"{"type":"ca_permission_request","id":4,"ts":"t","sessionId":"sess_a","callId":"c1","toolName":"Bash","input":{"command":"ls"}}"#,
            Some(4),
        )
        .unwrap();
        assert_eq!(e.id, 4);
        assert_eq!(e.session_id, "sess_a");
        assert!(
            matches!(e.kind, EventKind::PermissionRequest { ref tool_name, .. } if tool_name == "Bash")
        );

        let end = Event::from_data(
            r#"{"type":"ca_session_ended","id":9,"sessionId":"s","reason":"budget_exceeded","usage":{"inputTokens":3,"totalCostUsd":0.5}}"#,
            None,
        )
        .unwrap();
        assert!(end.is_session_end());
        match end.kind {
            EventKind::SessionEnded { reason, usage, .. } => {
                assert_eq!(reason, EndReason::BudgetExceeded);
                assert_eq!(usage.unwrap().input_tokens, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_turn_back_into_their_wire_json() {
        let wire = r#"{"type":"ca_permission_request","id":4,"ts":"t","sessionId":"sess_a","callId":"c1","toolName":"Bash","input":{"command":"ls"}}"#;
        let e = Event::from_data(wire, Some(4)).unwrap();
        assert_eq!(e.to_json(), serde_json::from_str::<Value>(wire).unwrap());
        let other = r#"{"type":"ca_future","id":1,"ts":"t","sessionId":"s","x":2}"#;
        let e = Event::from_data(other, Some(1)).unwrap();
        assert_eq!(e.to_json(), serde_json::from_str::<Value>(other).unwrap());
    }

    #[test]
    fn unknown_kinds_are_kept() {
        let e = Event::from_data(r#"{"type":"ca_future","id":1,"x":2}"#, Some(1)).unwrap();
        assert_eq!(e.type_name(), "ca_future");
        assert!(matches!(e.kind, EventKind::Other { ref data, .. } if data["x"] == 2));
    }

    #[test]
    fn result_messages_are_recognised() {
        let e = Event::from_data(
            r#"{"type":"sdk_message","id":3,"message":{"type":"result","subtype":"success"}}"#,
            Some(3),
        )
        .unwrap();
        assert!(e.as_result().is_some());
    }

    #[test]
    fn malformed_known_kinds_are_errors_not_silently_other() {
        let err = Event::from_data(r#"{"type":"ca_turn_started","id":1}"#, Some(1)).unwrap_err();
        assert!(err.contains("ca_turn_started"), "{err}");
    }
}
