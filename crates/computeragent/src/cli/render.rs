//! Readable text for a run's events: what the agent says, the tools it calls and what they
//! return, permission decisions, the final answer and the usage.

use serde_json::Value;
use substrate_core::protocol::{Decision, Event, EventKind};

/// Lines of a tool's output shown (the rest is summarized).
const TOOL_OUTPUT_LINES: usize = 6;

/// The text for one event; empty when it has nothing to show.
pub fn event(event: &Event) -> String {
    match &event.kind {
        EventKind::TurnStarted { turn, .. } => format!("── turn {turn}\n"),
        EventKind::SdkMessage { message } => sdk_message(message),
        EventKind::PermissionDecision {
            decision, reason, ..
        } if *decision != Decision::Allow => format!(
            "  ! permission {}{}\n",
            format!("{decision:?}").to_ascii_lowercase(),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        EventKind::SessionEnded {
            reason,
            error: Some(error),
            ..
        } => format!("session ended ({reason:?}): {}\n", error.message),
        _ => String::new(),
    }
}

fn sdk_message(message: &Value) -> String {
    let mut out = String::new();
    match message.get("type").and_then(Value::as_str) {
        Some("assistant") => {
            for block in content(message) {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block.get("text").and_then(Value::as_str) {
                            out.push_str(text.trim_end());
                            out.push('\n');
                        }
                    }
                    Some("tool_use") => {
                        let name = block.get("name").and_then(Value::as_str).unwrap_or("tool");
                        out.push_str(&format!("▸ {name}  {}\n", tool_input(block.get("input"))));
                    }
                    _ => {}
                }
            }
        }
        Some("user") => {
            for block in content(message) {
                if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                    let failed = block.get("is_error").and_then(Value::as_bool) == Some(true);
                    let text = tool_result_text(block.get("content"));
                    let lines: Vec<&str> = text.lines().collect();
                    let mark = if failed { "✗" } else { "←" };
                    if lines.is_empty() {
                        out.push_str(&format!("  {mark} (no output)\n"));
                    }
                    for line in lines.iter().take(TOOL_OUTPUT_LINES) {
                        out.push_str(&format!("  {mark} {line}\n"));
                    }
                    if lines.len() > TOOL_OUTPUT_LINES {
                        out.push_str(&format!(
                            "  {mark} … {} more lines\n",
                            lines.len() - TOOL_OUTPUT_LINES
                        ));
                    }
                }
            }
        }
        Some("result") => {
            let subtype = message.get("subtype").and_then(Value::as_str).unwrap_or("");
            let turns = message
                .get("num_turns")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let cost = message.get("total_cost_usd").and_then(Value::as_f64);
            let usage = message.get("usage");
            let tokens = |key: &str| {
                usage
                    .and_then(|u| u.get(key))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            out.push_str(&format!(
                "{} {subtype}: {} model turn(s), {} input / {} output tokens{}\n",
                if subtype == "success" { "✓" } else { "✗" },
                turns,
                tokens("input_tokens"),
                tokens("output_tokens"),
                cost.map(|c| format!(", ${c:.4}")).unwrap_or_default()
            ));
        }
        _ => {}
    }
    out
}

fn content(message: &Value) -> Vec<&Value> {
    message
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// A tool's input in one line: a command or path when there is one, else compact JSON.
fn tool_input(input: Option<&Value>) -> String {
    let Some(input) = input else {
        return String::new();
    };
    for key in ["command", "file_path", "path", "pattern", "url"] {
        if let Some(text) = input.get(key).and_then(Value::as_str) {
            return one_line(text, 160);
        }
    }
    one_line(&input.to_string(), 160)
}

fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { '⏎' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk(message: Value) -> Event {
        Event {
            id: 1,
            ts: String::new(),
            session_id: "sess_x".into(),
            kind: EventKind::SdkMessage { message },
        }
    }

    #[test]
    fn tool_calls_results_and_the_result_read_as_text() {
        let call = sdk(
            serde_json::json!({"type": "assistant", "message": {"content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "name": "Bash", "input": {"command": "ls -l\necho hi"}}
            ]}}),
        );
        assert_eq!(event(&call), "Let me look.\n▸ Bash  ls -l⏎echo hi\n");
        let result = sdk(serde_json::json!({"type": "user", "message": {"content": [
            {"type": "tool_result", "content": [{"type": "text", "text": "a\nb"}]}
        ]}}));
        assert_eq!(event(&result), "  ← a\n  ← b\n");
        let done = sdk(
            serde_json::json!({"type": "result", "subtype": "success", "num_turns": 2,
            "total_cost_usd": 0.0125, "usage": {"input_tokens": 10, "output_tokens": 5}}),
        );
        assert_eq!(
            event(&done),
            "✓ success: 2 model turn(s), 10 input / 5 output tokens, $0.0125\n"
        );
        let long: String = (0..10).map(|i| format!("line {i}\n")).collect();
        let many = sdk(serde_json::json!({"type": "user", "message": {"content": [
            {"type": "tool_result", "content": long, "is_error": true}
        ]}}));
        assert!(event(&many).ends_with("  ✗ … 4 more lines\n"));
    }
}
