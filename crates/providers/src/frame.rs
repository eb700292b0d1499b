//! Stream framing: Server-Sent Events (OpenAI, Anthropic, Gemini with `alt=sse`) and
//! newline-delimited JSON (Ollama), decoded incrementally from arbitrary byte chunks.

use super::{Framing, UpstreamError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One dispatched SSE event: its `event:` name (if any) and its `data:` lines joined by `\n`.
    Sse { event: Option<String>, data: String },
    /// One non-empty NDJSON line.
    Line(String),
}

/// Longest line accepted from a provider; a longer one is a protocol error, not unbounded memory.
const MAX_LINE: usize = 8 * 1024 * 1024;

pub struct Framer {
    framing: Framing,
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl Framer {
    pub fn new(framing: Framing) -> Self {
        Self { framing, buf: Vec::new(), event: None, data: None }
    }

    /// Adds bytes; complete frames are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Frame>) -> Result<(), UpstreamError> {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line)
                .map_err(|_| UpstreamError::Protocol("the stream is not valid UTF-8".into()))?;
            let line = line.to_owned();
            self.line(&line, out);
            start = end + 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(UpstreamError::Protocol(format!("a stream line exceeded {MAX_LINE} bytes")));
        }
        Ok(())
    }

    /// The stream ended: dispatches what a last line without a newline completes.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if !self.buf.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            let rest = rest.trim_end_matches('\r').to_owned();
            self.line(&rest, out);
        }
        if matches!(self.framing, Framing::Sse) {
            self.line("", out);
        }
    }

    fn line(&mut self, line: &str, out: &mut Vec<Frame>) {
        match self.framing {
            Framing::Ndjson => {
                if !line.trim().is_empty() {
                    out.push(Frame::Line(line.to_owned()));
                }
            }
            Framing::Sse => {
                if line.is_empty() {
                    if let Some(data) = self.data.take() {
                        out.push(Frame::Sse { event: self.event.take(), data });
                    }
                    self.event = None;
                    return;
                }
                if line.starts_with(':') {
                    return;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "event" => self.event = Some(value.to_owned()),
                    "data" => match &mut self.data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => self.data = Some(value.to_owned()),
                    },
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framing: Framing, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(framing);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out).unwrap();
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn sse_events_survive_any_split_of_the_bytes() {
        let text = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: line1\r\ndata: line2\r\n\r\ndata: [DONE]\n\n";
        let expected = vec![
            Frame::Sse { event: Some("message_start".into()), data: "{\"a\":1}".into() },
            Frame::Sse { event: None, data: "line1\nline2".into() },
            Frame::Sse { event: None, data: "[DONE]".into() },
        ];
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            assert_eq!(frames(Framing::Sse, &[&bytes[..split], &bytes[split..]]), expected, "split at {split}");
        }
    }

    #[test]
    fn a_multibyte_character_split_across_chunks_is_kept_whole() {
        let text = "data: h\u{e9}llo \u{1f980}\n\n".as_bytes();
        for split in 0..text.len() {
            assert_eq!(
                frames(Framing::Sse, &[&text[..split], &text[split..]]),
                vec![Frame::Sse { event: None, data: "h\u{e9}llo \u{1f980}".into() }]
            );
        }
    }

    #[test]
    fn ndjson_lines_including_a_last_one_without_newline() {
        assert_eq!(
            frames(Framing::Ndjson, &[b"{\"a\":1}\n\n{\"b\"", b":2}"]),
            vec![Frame::Line("{\"a\":1}".into()), Frame::Line("{\"b\":2}".into())]
        );
    }
}
