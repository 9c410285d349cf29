//! What the scripted model answers.

use std::time::Duration;

use serde_json::Value;

/// One content block of a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text.
    Text(String),
    /// A tool call.
    ToolUse {
        /// Tool name (`Bash`, `Write`, …).
        name: String,
        /// Tool input.
        input: Value,
    },
}

/// One scripted answer of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Content blocks, in order.
    pub blocks: Vec<Block>,
    /// Text deltas per text block (1 = the whole text in one delta).
    pub chunks: usize,
    /// Pause between deltas.
    pub delay: Duration,
    /// Stream `message_start` and then nothing until the client goes away.
    pub hang: bool,
    /// Input tokens reported.
    pub input_tokens: u64,
    /// Output tokens reported.
    pub output_tokens: u64,
}

impl Reply {
    /// A reply of the given blocks.
    pub fn blocks(blocks: Vec<Block>) -> Self {
        Self {
            blocks,
            chunks: 1,
            delay: Duration::ZERO,
            hang: false,
            input_tokens: 100,
            output_tokens: 20,
        }
    }

    /// A text answer that ends the turn.
    pub fn text(text: impl Into<String>) -> Self {
        Self::blocks(vec![Block::Text(text.into())])
    }

    /// One tool call.
    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Self::blocks(vec![Block::ToolUse {
            name: name.into(),
            input,
        }])
    }

    /// A text answer streamed in `chunks` deltas with `delay` between them.
    pub fn slow_text(text: &str, chunks: usize, delay: Duration) -> Self {
        Self {
            chunks: chunks.max(1),
            delay,
            ..Self::text(text)
        }
    }

    /// Starts the answer and never finishes it (for cancel tests).
    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::blocks(Vec::new())
        }
    }

    /// Sets the reported token counts.
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.input_tokens = input_tokens;
        self.output_tokens = output_tokens;
        self
    }

    /// `tool_use` when any block is a tool call, else `end_turn`.
    pub fn stop_reason(&self) -> &'static str {
        if self
            .blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }))
        {
            "tool_use"
        } else {
            "end_turn"
        }
    }
}

/// The ordered replies of the main agent loop.
///
/// The reply for a request is chosen by the number of `assistant` messages already in it, so a
/// retried request gets the same reply, the request after a tool result the next one, and a
/// second user turn continues the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    /// The replies.
    pub replies: Vec<Reply>,
}

impl Script {
    /// No replies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a reply.
    pub fn reply(mut self, reply: Reply) -> Self {
        self.replies.push(reply);
        self
    }
}
