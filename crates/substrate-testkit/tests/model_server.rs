//! The scripted model speaks the Messages API the way the CLI expects.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::time::Duration;

use serde_json::{Value, json};
use substrate_core::client::SseParser;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

fn request(assistant_turns: usize, stream: bool) -> Value {
    let mut messages = vec![json!({"role": "user", "content": "hi"})];
    for _ in 0..assistant_turns {
        messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": "x"}]}));
        messages.push(json!({"role": "user", "content": "more"}));
    }
    json!({"model": "claude-test-1", "stream": stream, "messages": messages, "tools": [{"name": "Bash"}]})
}

async fn post(model: &ScriptedModel, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", model.base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Reassembles a streamed answer the way a client does.
async fn reassemble(resp: reqwest::Response) -> (Vec<String>, Value) {
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let bytes = resp.bytes().await.unwrap();
    let frames = SseParser::new().feed(&bytes);
    let names: Vec<String> = frames
        .iter()
        .map(|f| f.event.clone().unwrap_or_default())
        .collect();
    let mut message = Value::Null;
    let mut partial = String::new();
    for f in &frames {
        let data: Value = serde_json::from_str(&f.data).unwrap();
        match f.event.as_deref() {
            Some("message_start") => message = data["message"].clone(),
            Some("content_block_start") => {
                message["content"]
                    .as_array_mut()
                    .unwrap()
                    .push(data["content_block"].clone());
                partial.clear();
            }
            Some("content_block_delta") => {
                let block = message["content"]
                    .as_array_mut()
                    .unwrap()
                    .last_mut()
                    .unwrap();
                match data["delta"]["type"].as_str() {
                    Some("text_delta") => {
                        let text = format!(
                            "{}{}",
                            block["text"].as_str().unwrap(),
                            data["delta"]["text"].as_str().unwrap()
                        );
                        block["text"] = json!(text);
                    }
                    Some("input_json_delta") => {
                        partial.push_str(data["delta"]["partial_json"].as_str().unwrap());
                        block["input"] = serde_json::from_str(&partial).unwrap_or(Value::Null);
                    }
                    other => panic!("delta {other:?}"),
                }
            }
            Some("message_delta") => message["stop_reason"] = data["delta"]["stop_reason"].clone(),
            _ => {}
        }
    }
    (names, message)
}

#[tokio::test]
async fn streamed_tool_use_reassembles_to_the_scripted_input() {
    let input = json!({"command": "echo \"quoted\" > out.txt", "description": "é"});
    let model = ScriptedModel::start(Script::new().reply(Reply::tool_use("Bash", input.clone())))
        .await
        .unwrap();
    let (names, message) = reassemble(post(&model, &request(0, true)).await).await;
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(
        message["model"], "claude-test-1",
        "the model name is echoed"
    );
    assert_eq!(message["stop_reason"], "tool_use");
    let block = &message["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "Bash");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["input"], input);
}

#[tokio::test]
async fn replies_are_chosen_by_the_number_of_assistant_messages() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::text("zero"))
            .reply(Reply::text("one")),
    )
    .await
    .unwrap();
    for (turns, expected) in [(1, "one"), (0, "zero"), (0, "zero"), (1, "one")] {
        let body: Value = post(&model, &request(turns, false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["content"][0]["text"], expected,
            "{turns} assistant messages"
        );
        assert_eq!(body["stop_reason"], "end_turn");
    }
    assert!(model.unexpected().is_empty(), "{:?}", model.unexpected());
    assert_eq!(model.model_requests().len(), 4);
}

#[tokio::test]
async fn side_queries_do_not_consume_the_script_and_exhaustion_is_recorded() {
    let model = ScriptedModel::start(Script::new().reply(Reply::text("main")))
        .await
        .unwrap();
    let side = json!({"model": "m", "messages": [{"role": "user", "content": "title?"}]});
    let body: Value = post(&model, &side).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "ok");
    let (_, main) = reassemble(post(&model, &request(0, true)).await).await;
    assert_eq!(main["content"][0]["text"], "main");
    assert!(model.unexpected().is_empty());
    let (_, past) = reassemble(post(&model, &request(1, true)).await).await;
    assert_eq!(past["content"][0]["text"], "script exhausted");
    assert_eq!(
        model.unexpected(),
        vec![String::from("script exhausted: no reply #1")]
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_recorded() {
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let resp = reqwest::get(format!("{}/v1/models", model.base_url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(model.unexpected(), vec![String::from("GET /v1/models")]);
}

#[tokio::test]
async fn a_hanging_reply_does_not_wedge_the_server() {
    let model = ScriptedModel::start(Script::new().reply(Reply::hang()))
        .await
        .unwrap();
    let resp = post(&model, &request(0, true)).await;
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "a hanging reply sends nothing more"
    );
    drop(stream);
    model.set_script(Script::new().reply(Reply::text("after")));
    let body: Value = post(&model, &request(0, false)).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "after");
}

#[tokio::test]
async fn slow_text_arrives_in_the_asked_number_of_deltas() {
    let model = ScriptedModel::start(Script::new().reply(Reply::slow_text(
        "abcdefghij",
        5,
        Duration::from_millis(1),
    )))
    .await
    .unwrap();
    let (names, message) = reassemble(post(&model, &request(0, true)).await).await;
    assert_eq!(
        names.iter().filter(|n| *n == "content_block_delta").count(),
        5
    );
    assert_eq!(message["content"][0]["text"], "abcdefghij");
}
