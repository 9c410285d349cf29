//! The Messages API's streaming format: `message_start`, per block `content_block_start`,
//! deltas and `content_block_stop`, then `message_delta` and `message_stop`.

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::Stream;
use serde_json::{Value, json};

use super::rand_u64;
use super::script::{Block, Reply};

fn frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn tool_id(i: usize) -> String {
    format!("toolu_{:016x}{i}", rand_u64())
}

/// Splits `s` into `n` pieces on char boundaries.
fn split(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The whole reply as one JSON message (for `stream: false`).
pub(crate) fn whole_message(reply: &Reply, model: &str) -> Value {
    let content: Vec<Value> = reply
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": tool_id(i), "name": name, "input": input})
            }
        })
        .collect();
    json!({
        "id": format!("msg_{:016x}", rand_u64()), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": reply.stop_reason(), "stop_sequence": null,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}

/// The reply as SSE frames, with the reply's delays between text deltas.
pub(crate) fn reply_stream(
    reply: Reply,
    model: String,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    async_stream(move |tx| async move {
        let start = json!({"type": "message_start", "message": {
            "id": format!("msg_{:016x}", rand_u64()), "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}});
        if tx.send(frame("message_start", &start)).await.is_err() {
            return;
        }
        if reply.hang {
            // Keep the connection open until the client goes away.
            tx.closed().await;
            return;
        }
        let _ = tx.send(frame("ping", &json!({"type": "ping"}))).await;
        for (index, block) in reply.blocks.iter().enumerate() {
            let (start_block, deltas) = match block {
                Block::Text(text) => (
                    json!({"type": "text", "text": ""}),
                    split(text, reply.chunks)
                        .into_iter()
                        .map(|t| json!({"type": "text_delta", "text": t}))
                        .collect::<Vec<_>>(),
                ),
                Block::ToolUse { name, input } => (
                    json!({"type": "tool_use", "id": tool_id(index), "name": name, "input": {}}),
                    split(&input.to_string(), 2)
                        .into_iter()
                        .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                        .collect(),
                ),
            };
            let frames = std::iter::once(frame(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": start_block}),
            ));
            for f in frames {
                if tx.send(f).await.is_err() {
                    return;
                }
            }
            for delta in deltas {
                if !reply.delay.is_zero() {
                    tokio::time::sleep(reply.delay).await;
                }
                let f = frame(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                );
                if tx.send(f).await.is_err() {
                    return;
                }
            }
            let stop = frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
            if tx.send(stop).await.is_err() {
                return;
            }
        }
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason(), "stop_sequence": null},
            "usage": {"output_tokens": reply.output_tokens}});
        let _ = tx.send(frame("message_delta", &delta)).await;
        let _ = tx
            .send(frame("message_stop", &json!({"type": "message_stop"})))
            .await;
    })
}

/// A stream fed by a task through a small channel (the task stops when the client leaves).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(f(tx));
    futures_util::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Ok::<Bytes, Infallible>,
    )
}
