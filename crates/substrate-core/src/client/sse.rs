//! An incremental Server-Sent Events parser (the WHATWG event-stream format).

/// One dispatched SSE frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    /// The `event:` field (absent means `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field.
    pub id: Option<String>,
}

/// Feeds bytes in, gets whole frames out. Handles `\n`, `\r\n` and `\r` line endings, comment
/// lines, multi-line data, and frames split across any chunk boundary (even inside a UTF-8
/// sequence: lines are decoded only once complete).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    pending_cr: bool,
    frame: SseFrame,
    has_data: bool,
}

impl SseParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the frames it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseFrame> {
        let mut out = Vec::new();
        for &byte in chunk {
            if self.pending_cr {
                self.pending_cr = false;
                if byte == b'\n' {
                    continue; // the \n of a \r\n pair
                }
            }
            match byte {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.pending_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.buf.push(byte),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseFrame>) {
        let line = std::mem::take(&mut self.buf);
        if line.is_empty() {
            if self.has_data {
                let mut frame = std::mem::take(&mut self.frame);
                if frame.data.ends_with('\n') {
                    frame.data.pop();
                }
                out.push(frame);
            } else {
                self.frame = SseFrame::default();
            }
            self.has_data = false;
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return; // comment (keep-alive ping)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.frame.event = Some(value.to_owned()),
            "data" => {
                self.frame.data.push_str(value);
                self.frame.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.frame.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields: ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_split_anywhere() {
        let stream = b": ping\n\nevent: sdk_message\nid: 7\ndata: {\"a\":\ndata: 1}\n\nevent: x\r\ndata: \xc3\xa9\r\n\r\n";
        for split in 0..stream.len() {
            let mut p = SseParser::new();
            let mut frames = p.feed(&stream[..split]);
            frames.extend(p.feed(&stream[split..]));
            assert_eq!(frames.len(), 2, "split at {split}");
            assert_eq!(frames[0].event.as_deref(), Some("sdk_message"));
            assert_eq!(frames[0].id.as_deref(), Some("7"));
            assert_eq!(frames[0].data, "{\"a\":\n1}");
            assert_eq!(frames[1].data, "é");
        }
    }

    #[test]
    fn a_frame_without_data_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: lonely\nid: 3\n\n").is_empty());
        let frames = p.feed(b"data: x\n\n");
        assert_eq!(
            frames,
            vec![SseFrame {
                event: None,
                data: "x".into(),
                id: None
            }]
        );
    }

    #[test]
    fn lone_carriage_returns_end_lines() {
        let mut p = SseParser::new();
        let frames = p.feed(b"data: a\r\rdata: b\r\r");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].data, "b");
    }
}
