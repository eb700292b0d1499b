//! The server's messages, checked before tower-lsp-server reads them: that library stops reading
//! for good at the first message it cannot decode (a malformed header block, invalid JSON, JSON
//! that is no JSON-RPC message), and the editor, or whatever writes to the server, may send one.
//! A good message goes through as it came. A bad one is answered here, in the order of the
//! server's own output (a parse error, -32700, or an invalid request, -32600, with its id when it
//! has one) and goes no further; reading resumes at the next `Content-Length` header.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// The largest message taken: a document's whole text arrives in one.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The longest header line read; LSP's headers are a few dozen bytes.
const MAX_HEADER_LINE: usize = 8 * 1024;

/// A message framed for the output.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// The error response to an unreadable message.
fn error(id: Value, code: i64, message: &str) -> Vec<u8> {
    framed(json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id}).to_string().as_bytes())
}

/// `Ok` for a body tower-lsp can decode (a JSON-RPC 2.0 request, notification or response), else
/// the answer to it.
fn check(body: &[u8]) -> Result<(), Vec<u8>> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(error(Value::Null, -32700, "Parse error"));
    };
    let id = v.get("id").filter(|id| id.is_i64() || id.is_string() || id.is_null());
    let is_request = v.get("method").is_some_and(Value::is_string);
    let is_response = id.is_some() && (v.get("result").is_some() || v.get("error").is_some());
    let fits = v.get("jsonrpc") == Some(&json!("2.0"))
        && (is_request || is_response)
        && (v.get("id").is_none() || id.is_some());
    if fits { Ok(()) } else { Err(error(id.cloned().unwrap_or(Value::Null), -32600, "Invalid request")) }
}

/// One header line without its line end; `None` at the end of the input. A line longer than
/// [`MAX_HEADER_LINE`] is cut there (and then is no valid header).
async fn header_line<R: AsyncRead + Unpin>(input: &mut BufReader<R>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = (&mut *input).take(MAX_HEADER_LINE as u64).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// `Content-Length: N` (any case), with its number if it reads as one.
fn content_length(line: &[u8]) -> Option<Option<usize>> {
    let line = std::str::from_utf8(line).ok()?;
    let (name, value) = line.split_once(':')?;
    name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())
}

/// Whether a line is a header of another name (`Content-Type: ...`).
fn other_header(line: &[u8]) -> bool {
    std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(name, _)| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Copies the good messages of `input` to `output`; the answers to bad ones go to `answers`. Ends
/// with the input.
pub async fn repair<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    input: R,
    mut output: W,
    answers: mpsc::Sender<Vec<u8>>,
) -> std::io::Result<()> {
    let mut input = BufReader::new(input);
    // After a malformed block: lines are skipped until a `Content-Length` header.
    let mut resync = false;
    loop {
        let mut length: Option<Option<usize>> = None;
        let mut malformed = false;
        let mut headers = 0;
        loop {
            let Some(mut line) = header_line(&mut input).await? else { return Ok(()) };
            if resync {
                // The next header may follow the rest of a body on the same line.
                let Some(at) = line.to_ascii_lowercase().windows(15).position(|w| w == b"content-length:") else {
                    continue;
                };
                line.drain(..at);
                resync = false;
            }
            if line.is_empty() {
                if headers == 0 {
                    continue; // blank lines between messages
                }
                break;
            }
            headers += 1;
            match content_length(&line) {
                Some(n) => length = Some(n),
                None if other_header(&line) => {}
                None => malformed = true,
            }
        }
        match length {
            Some(Some(n)) if !malformed && n <= MAX_MESSAGE => {
                let mut body = vec![0; n];
                if input.read_exact(&mut body).await.is_err() {
                    return Ok(()); // the input ended mid-message
                }
                match check(&body) {
                    Ok(()) => {
                        output.write_all(&framed(&body)).await?;
                        output.flush().await?;
                    }
                    Err(answer) => {
                        let _ = answers.send(answer).await;
                    }
                }
            }
            Some(Some(n)) if !malformed => {
                // Too large: skipped whole, and answered.
                let skipped = tokio::io::copy(&mut (&mut input).take(n as u64), &mut tokio::io::sink()).await?;
                if skipped < n as u64 {
                    return Ok(());
                }
                let _ = answers.send(error(Value::Null, -32600, "Invalid request: the message is too large")).await;
            }
            _ => {
                let _ = answers.send(error(Value::Null, -32700, "Parse error: malformed headers")).await;
                resync = true;
            }
        }
    }
}

/// The server's own output, message by message, into `to` (where the answers to bad input go too,
/// so that no message is written into the middle of another). Ends with that output.
pub async fn messages<R: AsyncRead + Unpin>(from: R, to: mpsc::Sender<Vec<u8>>) -> std::io::Result<()> {
    let mut from = BufReader::new(from);
    loop {
        let mut length = None;
        loop {
            let Some(line) = header_line(&mut from).await? else { return Ok(()) };
            if line.is_empty() {
                break;
            }
            if let Some(n) = content_length(&line) {
                length = n;
            }
        }
        let Some(n) = length else { continue };
        let mut body = vec![0; n];
        from.read_exact(&mut body).await?;
        if to.send(framed(&body)).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes on to the server, and what is answered here.
    async fn repaired(input: &[u8]) -> (String, Vec<Value>) {
        let mut out = Vec::new();
        let (tx, mut rx) = mpsc::channel(16);
        repair(input, &mut out, tx).await.unwrap();
        let mut answers = Vec::new();
        while let Some(a) = rx.recv().await {
            let text = String::from_utf8(a).unwrap();
            answers.push(serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap());
        }
        (String::from_utf8(out).unwrap(), answers)
    }

    fn message(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    #[tokio::test]
    async fn good_messages_pass_and_bad_ones_are_answered_here() {
        let a = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        let b = r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#;
        let c = r#"{"jsonrpc":"2.0","id":"x","result":null}"#;
        // As they come, with another header and blank lines between.
        let input = format!(
            "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n{}\r\n\r\n{}{}",
            message(a),
            message(b),
            message(c)
        );
        let (out, answers) = repaired(input.as_bytes()).await;
        assert_eq!(out, format!("{}{}{}", message(a), message(b), message(c)));
        assert!(answers.is_empty());
        // Each bad message is answered once, and the next good one comes through.
        for (bad, code, id) in [
            ("garbage line\r\n\r\n".to_string(), -32700, Value::Null),
            ("{\"no\": \"header\"}\r\n\r\n".to_string(), -32700, Value::Null),
            ("Content-Length: many\r\n\r\nxx".to_string(), -32700, Value::Null),
            (message("{not json"), -32700, Value::Null),
            (message(r#"{"jsonrpc":"2.0","id":7}"#), -32600, json!(7)),
            (message(r#"{"jsonrpc":"1.0","id":"q","method":"x"}"#), -32600, json!("q")),
            (message(r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#), -32600, Value::Null),
            (message("[1, 2]"), -32600, Value::Null),
        ] {
            let (out, answers) = repaired(format!("{bad}{}", message(a)).as_bytes()).await;
            assert_eq!(out, message(a), "{bad:?}");
            assert_eq!(answers.len(), 1, "{bad:?}");
            assert_eq!((answers[0]["error"]["code"].as_i64(), &answers[0]["id"]), (Some(code), &id), "{bad:?}");
        }
        // Too large: skipped whole and answered.
        let mut bytes = format!("Content-Length: {}\r\n\r\n", MAX_MESSAGE + 1).into_bytes();
        bytes.extend(std::iter::repeat_n(b'x', MAX_MESSAGE + 1));
        bytes.extend(message(b).as_bytes());
        let (out, answers) = repaired(&bytes).await;
        assert_eq!((out, answers.len()), (message(b), 1));
        // A header line without end, an input that ends mid-message: no hang, no panic.
        assert_eq!(repaired(&vec![b'a'; MAX_HEADER_LINE * 3]).await.0, "");
        assert_eq!(repaired(b"Content-Length: 10\r\n\r\n{\"a\"").await.0, "");
    }

    #[tokio::test]
    async fn the_servers_output_is_passed_on_message_by_message() {
        let (tx, mut rx) = mpsc::channel(16);
        let output = format!("{}{}", message("{\"a\":1}"), message("{\"b\":2}"));
        messages(output.as_bytes(), tx).await.unwrap();
        assert_eq!(String::from_utf8(rx.recv().await.unwrap()).unwrap(), message("{\"a\":1}"));
        assert_eq!(String::from_utf8(rx.recv().await.unwrap()).unwrap(), message("{\"b\":2}"));
        assert!(rx.recv().await.is_none());
    }
}
