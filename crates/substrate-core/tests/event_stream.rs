//! The event stream's guarantees where a real harness cannot be made to misbehave: a server
//! that skips ids, one that replays overlapping events, one that can no longer replay.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use substrate_core::{Endpoint, ErrorKind, HarnessClient};

fn frame(id: u64, kind: &str) -> String {
    let extra = if kind == "ca_session_ended" {
        r#","reason":"complete""#
    } else {
        r#","message":{"type":"system"}"#
    };
    format!(
        "event: {kind}\nid: {id}\ndata: {{\"type\":\"{kind}\",\"id\":{id},\"sessionId\":\"sess_t\"{extra}}}\n\n"
    )
}

fn sse(body: String) -> Response {
    ([("content-type", "text/event-stream")], body).into_response()
}

/// Serves `/v1/sessions/sess_t/events` with `answer(connection number, Last-Event-ID)`.
async fn serve<F>(answer: F) -> (HarnessClient, Arc<AtomicUsize>)
where
    F: Fn(usize, Option<u64>) -> Response + Send + Sync + 'static,
{
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let answer = Arc::new(answer);
    let app = Router::new().route(
        "/v1/sessions/sess_t/events",
        get(move |headers: HeaderMap| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let last = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let answer = answer.clone();
            async move { answer(n, last) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = HarnessClient::new(Endpoint::Tcp(format!("http://{addr}")), None).unwrap();
    (client, hits)
}

#[tokio::test]
async fn overlapping_replays_are_not_yielded_twice() {
    let (client, hits) = serve(|n, last| match n {
        // First connection: events 0..=2, then the connection ends without a session end.
        0 => sse((0..3).map(|i| frame(i, "sdk_message")).collect()),
        // The resume asked for events after 2; this server replays from 1 anyway.
        _ => {
            assert_eq!(last, Some(2));
            sse([
                frame(1, "sdk_message"),
                frame(2, "sdk_message"),
                frame(3, "sdk_message"),
                frame(4, "ca_session_ended"),
            ]
            .concat())
        }
    })
    .await;
    let events = client
        .events("sess_t", None)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_gap_in_ids_is_an_error_not_a_silent_skip() {
    let (client, _) =
        serve(|_, _| sse([frame(0, "sdk_message"), frame(2, "sdk_message")].concat())).await;
    let mut stream = client.events("sess_t", None).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().id, 0);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(err.to_string().contains("jumped from 0 to 2"), "{err}");
    assert!(stream.next().await.is_none(), "a failed stream stays ended");
}

#[tokio::test]
async fn a_resume_the_harness_cannot_serve_fails_with_its_code() {
    let (client, _) = serve(|n, _| match n {
        0 => sse(frame(0, "sdk_message")),
        _ => (
            StatusCode::GONE,
            [("content-type", "application/json")],
            r#"{"error":{"code":"EVENTS_EXPIRED","message":"events after 0 are no longer kept"}}"#,
        )
            .into_response(),
    })
    .await;
    let mut stream = client.events("sess_t", None).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().id, 0);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.protocol_code(), Some("EVENTS_EXPIRED"), "{err}");
}

#[tokio::test]
async fn a_stream_that_keeps_dropping_gives_up_with_a_transport_error() {
    let (client, hits) = serve(|n, _| {
        if n == 0 {
            sse(frame(0, "sdk_message"))
        } else {
            sse(String::new())
        }
    })
    .await;
    let mut stream = client.events("sess_t", None).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().id, 0);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.to_string().contains("dropped"), "{err}");
    assert!(hits.load(Ordering::SeqCst) > 2);
}
