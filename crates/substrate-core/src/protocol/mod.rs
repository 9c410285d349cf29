//! Harness protocol v1: the JSON bodies of every route and the events of the stream.
//!
//! The normative description is `docs/protocol-v1.md`; these types follow it field by field.
//! Unknown fields sent by a newer harness are ignored, so a client keeps working.

mod events;

pub use events::{EndReason, Event, EventKind, PermissionDecisionBy, SessionError, Usage};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The name of the Claude Agent SDK engine.
pub const ENGINE_CLAUDE_AGENT_SDK: &str = "claude-agent-sdk";

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always true when the harness answers.
    pub ok: bool,
    /// The harness's version.
    pub version: String,
    /// The protocol version it speaks.
    #[serde(default)]
    pub protocol: Option<u32>,
    /// Engines by name.
    #[serde(default)]
    pub engines: BTreeMap<String, EngineCapabilities>,
}

/// What an engine supports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EngineCapabilities {
    /// More messages can be sent while a session lives.
    pub streaming_input: bool,
    /// Partial (token-level) messages can be streamed.
    pub partial_messages: bool,
    /// Tool permissions can be decided by the client.
    pub permission_callback: bool,
    /// Engine sessions can be resumed.
    pub sessions: bool,
    /// A cost budget can be set.
    pub budget: bool,
}

/// A user message: plain text, or a structured message with content blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserMessage {
    /// Plain text.
    Text(String),
    /// `{"role": "user", "content": …}` with a string or content blocks.
    Structured {
        /// Always `user`.
        role: String,
        /// A string or an array of content blocks.
        content: Value,
    },
}

impl From<&str> for UserMessage {
    fn from(text: &str) -> Self {
        UserMessage::Text(text.to_owned())
    }
}

impl From<String> for UserMessage {
    fn from(text: String) -> Self {
        UserMessage::Text(text)
    }
}

/// Engine options; all optional. `extra` is passed to the engine verbatim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct EngineOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// `default`, `acceptEdits`, `bypassPermissions`, `plan`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disallowed_tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_partial_messages: Option<bool>,
    /// An engine session id to resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// How a file's `content` is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    #[default]
    Utf8,
    /// Base64 of arbitrary bytes.
    Base64,
}

/// One file to write into the workdir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSpec {
    /// Relative to the workdir; goes through the path jail.
    pub path: String,
    /// The content, in `encoding`.
    pub content: String,
    /// How `content` is encoded.
    #[serde(default)]
    pub encoding: Encoding,
    /// Unix mode bits (e.g. `0o755`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl FileSpec {
    /// A UTF-8 text file.
    pub fn text(path: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            content: content.into(),
            encoding: Encoding::Utf8,
            mode: None,
        }
    }
}

/// Where the agent's own files come from; materialised into the workdir at session creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceSpec {
    /// Inline files.
    Files {
        /// The files.
        files: Vec<FileSpec>,
    },
    /// A git repository, cloned shallow.
    Git {
        /// Clone URL.
        url: String,
        /// Branch or tag.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// A directory the runtime made visible to the harness, copied in.
    Dir {
        /// Absolute path as the harness sees it.
        path: String,
    },
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    /// Engine name, e.g. [`ENGINE_CLAUDE_AGENT_SDK`].
    pub engine: String,
    /// A caller-chosen id (`sess_…`); the harness picks one otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Opaque caller identity, echoed back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    /// Environment for the engine. Values may be secrets: never log this struct's JSON.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub envs: BTreeMap<String, String>,
    /// Messages queued before the engine starts.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub messages: Vec<UserMessage>,
    /// Whether more messages may follow (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming_input: Option<bool>,
    /// Engine options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<EngineOptions>,
    /// The agent's source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    /// Files written into the workdir.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub attachments: Vec<FileSpec>,
}

impl CreateSession {
    /// A session of `engine` with everything else default.
    pub fn new(engine: impl Into<String>) -> Self {
        Self {
            engine: engine.into(),
            session_id: None,
            identity: None,
            envs: BTreeMap::new(),
            messages: Vec::new(),
            streaming_input: None,
            options: None,
            source: None,
            attachments: Vec::new(),
        }
    }
}

/// `201` answer of `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    /// The session's id.
    pub session_id: String,
    /// Its engine.
    pub engine: String,
    /// What the engine supports.
    #[serde(default)]
    pub capabilities: EngineCapabilities,
    /// Path of its event stream.
    pub events_url: String,
    /// The session's workdir, as the harness sees it.
    #[serde(default)]
    pub workdir: Option<String>,
}

/// Where a session is in its life.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Created; the engine has not started.
    Created,
    /// The engine is working on a turn.
    Running,
    /// The engine waits for the next message.
    Idle,
    /// Finished.
    Ended,
}

/// `GET /v1/sessions/:id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Id.
    pub session_id: String,
    /// Engine.
    pub engine: String,
    /// State.
    pub state: SessionState,
    /// Creation time, ISO 8601.
    pub created_at: String,
    /// Turns started so far.
    #[serde(default)]
    pub turns: u32,
    /// The last event's id.
    #[serde(default)]
    pub last_event_id: Option<u64>,
    /// Why it ended, once ended.
    #[serde(default)]
    pub end_reason: Option<EndReason>,
    /// The identity given at creation.
    #[serde(default)]
    pub identity: Option<Value>,
    /// Its workdir.
    #[serde(default)]
    pub workdir: Option<String>,
}

/// `202` answer of `POST …/messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Messages waiting, including this one.
    pub queued: u32,
}

/// A client's answer to a permission request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Run the tool as asked.
    Allow,
    /// Refuse.
    Deny,
    /// Run the tool with another input.
    Modify,
}

/// `POST …/permission/:callId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionDecision {
    /// The decision.
    pub decision: Decision,
    /// The replacement input, for [`Decision::Modify`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Why (told to the model on deny).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PermissionDecision {
    /// Allow as asked.
    pub fn allow() -> Self {
        Self {
            decision: Decision::Allow,
            input: None,
            reason: None,
        }
    }

    /// Deny, telling the model why.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            decision: Decision::Deny,
            input: None,
            reason: Some(reason.into()),
        }
    }

    /// Allow with a replaced input.
    pub fn modify(input: Value) -> Self {
        Self {
            decision: Decision::Modify,
            input: Some(input),
            reason: None,
        }
    }
}

/// `POST /v1/chat`: a one-shot session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRequest {
    /// Everything of a session creation.
    #[serde(flatten)]
    pub session: CreateSession,
    /// The one message.
    pub message: UserMessage,
    /// Keep the session (and its files) after the stream ends.
    #[serde(default)]
    pub keep: bool,
}

/// `PUT fs/file` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWritten {
    /// The path written.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Kind of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (listed, never followed).
    Symlink,
}

/// One entry of `GET fs/tree`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeEntry {
    /// Relative to the workdir.
    pub path: String,
    /// Kind.
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Size in bytes.
    pub size: u64,
    /// Unix mode bits.
    pub mode: u32,
    /// Modification time, ms since the epoch.
    pub mtime_ms: f64,
}

/// `GET fs/tree` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// The listed path.
    pub path: String,
    /// Entries, sorted by path.
    pub entries: Vec<TreeEntry>,
}

/// `POST fs/edit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EditRequest {
    /// File to edit.
    pub path: String,
    /// Text to find.
    pub old_string: String,
    /// Replacement.
    pub new_string: String,
    /// Replace every occurrence (else exactly one must exist).
    #[serde(default)]
    pub replace_all: bool,
}

/// `POST fs/edit` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditResult {
    /// The file edited.
    pub path: String,
    /// How many occurrences were replaced.
    pub replacements: u32,
}

/// `POST fs/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkdirRequest {
    /// Directory to create.
    pub path: String,
    /// Create parents too.
    pub recursive: bool,
}

/// `POST fs/move`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    /// Source.
    pub from: String,
    /// Destination.
    pub to: String,
    /// Replace an existing destination.
    pub overwrite: bool,
}

/// The error envelope of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// Inside [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: String,
    /// Message for people.
    pub message: String,
    /// Extra details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_session_serialises_as_the_spec_says() {
        let mut req = CreateSession::new(ENGINE_CLAUDE_AGENT_SDK);
        req.messages.push("hello".into());
        req.streaming_input = Some(false);
        req.source = Some(SourceSpec::Git {
            url: "https://example.com/r.git".into(),
            reference: Some("main".into()),
        });
        req.options = Some(EngineOptions {
            max_turns: Some(3),
            ..EngineOptions::default()
        });
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({
                "engine": "claude-agent-sdk",
                "messages": ["hello"],
                "streamingInput": false,
                "options": {"maxTurns": 3},
                "source": {"type": "git", "url": "https://example.com/r.git", "ref": "main"}
            })
        );
    }

    #[test]
    fn chat_request_flattens_the_session() {
        let req = ChatRequest {
            session: CreateSession::new("claude-agent-sdk"),
            message: "hi".into(),
            keep: true,
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"engine": "claude-agent-sdk", "message": "hi", "keep": true})
        );
    }

    #[test]
    fn structured_messages_round_trip() {
        let msg: UserMessage = serde_json::from_value(
            json!({"role": "user", "content": [{"type": "text", "text": "x"}]}),
        )
        .unwrap();
        assert!(matches!(msg, UserMessage::Structured { .. }));
        let text: UserMessage = serde_json::from_value(json!("plain")).unwrap();
        assert_eq!(text, UserMessage::Text("plain".into()));
    }

    #[test]
    fn health_tolerates_unknown_fields() {
        let h: Health = serde_json::from_value(json!({
            "ok": true, "version": "0.1.0", "protocol": 1, "future": [1],
            "engines": {"claude-agent-sdk": {"streamingInput": true, "budget": true, "new": 1}}
        }))
        .unwrap();
        assert!(h.engines["claude-agent-sdk"].streaming_input);
    }
}
