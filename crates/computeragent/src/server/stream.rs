//! Server-sent events out of a channel: each run or turn is driven by a task that sends its
//! events here; a client that goes away closes the channel, which the task notices.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// Events a driving task has not sent yet.
pub const BUFFER: usize = 256;

/// An SSE frame `event: name` with JSON data.
pub fn frame(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// The response streaming what `rx` receives, with keep-alive comments.
pub fn response(rx: mpsc::Receiver<Event>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}
