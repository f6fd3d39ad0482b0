//! A raw TCP HTTP/1.1 client: exact bytes out, exact bytes in.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One parsed HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// e.g. `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The body after de-chunking (if chunked).
    pub body: Vec<u8>,
    /// The raw head, status line through the blank line.
    pub head: String,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (case-insensitive).
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The head and the body as text, for failure messages.
    pub fn dump(&self) -> String {
        format!("{}{}", self.head, self.text())
    }
}

/// What came back on a connection.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Every complete response parsed from `raw`, in order.
    pub responses: Vec<RawResponse>,
    /// All bytes received.
    pub raw: Vec<u8>,
    /// Whether the server closed (EOF or reset) before the timeout.
    pub closed: bool,
}

impl Exchange {
    /// The first response; panics (showing the raw bytes) if there is none.
    pub fn first(&self) -> &RawResponse {
        self.responses.first().unwrap_or_else(|| {
            panic!(
                "no HTTP response received (closed: {}); raw bytes: {:?}",
                self.closed,
                String::from_utf8_lossy(&self.raw)
            )
        })
    }
}

/// Connects to `addr`, writes `request` (write errors after a partial write
/// are ignored: the server may answer early and close), then reads until the
/// server closes or `timeout` passes.
pub async fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<Exchange> {
    let mut c = RawClient::connect(addr).await?;
    let _ = c.send(request).await;
    let (raw, closed) = c.read_to_close(timeout).await;
    Ok(Exchange {
        responses: parse_responses(&raw),
        raw,
        closed,
    })
}

/// A raw client connection.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Closes the write half (sends FIN).
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// Reads one more chunk into the buffer; Ok(false) on EOF/reset.
    async fn fill(&mut self, deadline: Instant) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut tmp = [0u8; 64 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(false)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Ok(Err(e)) if is_reset(&e) => {
                self.eof = true;
                Ok(false)
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// Reads everything until the server closes (`true`) or `timeout`
    /// passes (`false`). Includes bytes already buffered.
    pub async fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        let closed = loop {
            match self.fill(deadline).await {
                Ok(true) => {}
                Ok(false) => break true,
                Err(_) => break false,
            }
        };
        (std::mem::take(&mut self.buf), closed)
    }

    /// Reads exactly one response. For `101` (and other 1xx) only the head
    /// is consumed; bytes after it stay buffered (see [`Self::read_exact`]).
    /// `head_request`: the request was HEAD (no body follows).
    pub async fn read_response_to(
        &mut self,
        timeout: Duration,
        head_request: bool,
    ) -> io::Result<RawResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            match parse_one(&self.buf, head_request, self.eof) {
                Parse::Done(resp, used) => {
                    self.buf.drain(..used);
                    return Ok(resp);
                }
                Parse::Invalid(msg) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{msg}: {:?}", String::from_utf8_lossy(&self.buf)),
                    ));
                }
                Parse::Incomplete => {
                    if !self.fill(deadline).await? {
                        // EOF: one last attempt (read-to-close bodies).
                        if let Parse::Done(resp, used) = parse_one(&self.buf, head_request, true) {
                            self.buf.drain(..used);
                            return Ok(resp);
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "connection closed before a complete response; got {:?}",
                                String::from_utf8_lossy(&self.buf)
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// [`Self::read_response_to`] for a non-HEAD request.
    pub async fn read_response(&mut self, timeout: Duration) -> io::Result<RawResponse> {
        self.read_response_to(timeout, false).await
    }

    /// Reads exactly `n` bytes (after any response already consumed).
    pub async fn read_exact(&mut self, n: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() < n {
            if !self.fill(deadline).await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed after {} of {n} bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Waits until the server closes the connection; `Ok(bytes)` with what
    /// arrived meanwhile, `Err` on timeout.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let (bytes, closed) = self.read_to_close(timeout).await;
        if closed { Ok(bytes) } else { Err(bytes) }
    }

    /// The underlying stream (bytes already buffered are dropped).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// The underlying stream.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

enum Parse {
    Done(RawResponse, usize),
    Incomplete,
    Invalid(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_one(buf: &[u8], head_request: bool, eof: bool) -> Parse {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Parse::Incomplete;
    };
    let head = String::from_utf8_lossy(&buf[..head_end + 4]).into_owned();
    let mut lines = head[..head_end].split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let Some(status) = parts.next().and_then(|s| s.parse::<u16>().ok()) else {
        return Parse::Invalid(format!("bad status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/") {
        return Parse::Invalid(format!("bad status line {status_line:?}"));
    }
    let reason = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Parse::Invalid(format!("bad header line {line:?}"));
        };
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    let mut resp = RawResponse {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        head,
    };
    let body_start = head_end + 4;
    let rest = &buf[body_start..];
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Parse::Done(resp, body_start);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return match dechunk(rest) {
            Some((body, used)) => {
                resp.body = body;
                Parse::Done(resp, body_start + used)
            }
            None => Parse::Incomplete,
        };
    }
    if let Some(cl) = resp.header("content-length") {
        let Ok(n) = cl.trim().parse::<usize>() else {
            return Parse::Invalid(format!("bad content-length {cl:?}"));
        };
        if rest.len() < n {
            return Parse::Incomplete;
        }
        resp.body = rest[..n].to_vec();
        return Parse::Done(resp, body_start + n);
    }
    // No framing: the body runs until the connection closes.
    if eof {
        resp.body = rest.to_vec();
        Parse::Done(resp, buf.len())
    } else {
        Parse::Incomplete
    }
}

/// Decodes a chunked body; returns (body, bytes consumed) when complete.
fn dechunk(mut buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(buf, b"\r\n")?;
        let line = std::str::from_utf8(&buf[..line_end]).ok()?;
        let size_str = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_str, 16).ok()?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let end = find(buf, b"\r\n")?;
                buf = &buf[end + 2..];
                if end == 0 {
                    return Some((body, total - buf.len()));
                }
            }
        }
        if buf.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// Parses as many complete responses as `bytes` holds (stopping at the
/// first incomplete or invalid one, or after a 101).
pub fn parse_responses(bytes: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match parse_one(&bytes[pos..], false, true) {
            Parse::Done(resp, used) => {
                let upgraded = resp.status == 101;
                out.push(resp);
                pos += used;
                if upgraded {
                    break;
                }
            }
            Parse::Incomplete | Parse::Invalid(_) => break,
        }
    }
    out
}

/// Sends one request on a new connection (with `Connection: close` unless
/// `headers` has a Connection header) and returns the first response,
/// without waiting for the connection to close (panics, showing the raw
/// bytes, if there is none within 15 s).
///
/// Adds `Host: <addr>` unless `headers` has a Host, and `Content-Length`
/// when `body` is non-empty unless `headers` sets Content-Length or
/// Transfer-Encoding.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let mut c = RawClient::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    // The server may answer early and close; a failed write shows up as
    // a missing response below.
    let _ = c.send(&bytes).await;
    let head_request = method.eq_ignore_ascii_case("HEAD");
    c.read_response_to(Duration::from_secs(15), head_request)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: no complete response: {e}"))
}

/// `GET target` via [`request`].
pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    request(addr, "GET", target, headers, b"").await
}

/// Asserts `resp` is a gateway-generated error: `status`,
/// `Content-Type: application/json`, `X-Generator: tyk.io` and exactly the
/// body `{\n    "error": "<message>"\n}`.
pub fn assert_tyk_error(resp: &RawResponse, status: u16, message: &str) {
    let ctx = assert_generated(resp, status);
    assert_eq!(
        resp.text(),
        crate::tyk_error_body(message),
        "body; {}",
        ctx()
    );
}

/// Asserts `resp` has `status`, `Content-Type: application/json` and
/// `X-Generator: tyk.io`; returns the failure context for further checks.
fn assert_generated(resp: &RawResponse, status: u16) -> impl Fn() -> String + '_ {
    let ctx = move || format!("response was:\n{}", resp.dump());
    assert_eq!(resp.status, status, "status; {}", ctx());
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?}; {}",
        ctx()
    );
    assert_eq!(
        resp.header("x-generator"),
        Some("tyk.io"),
        "x-generator; {}",
        ctx()
    );
    ctx
}

/// Asserts `resp` has `status` and the shape of a gateway-generated error
/// (JSON content type, `X-Generator: tyk.io`, body `{"error": <string>}`
/// with 4-space indent) without fixing the message.
pub fn assert_gateway_error_shape(resp: &RawResponse, status: u16) {
    let ctx = assert_generated(resp, status);
    let v: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}); {}", ctx()));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"error\" string; {}", ctx()));
    assert_eq!(
        resp.text(),
        crate::tyk_error_body(msg),
        "body layout; {}",
        ctx()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1;x=y\r\n!\r\n0\r\n\r\n";
        let r = parse_responses(raw);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].status, 200);
        assert_eq!(r[0].body, b"abc");
        assert_eq!(r[0].header("x-a"), Some("b"));
        assert_eq!(r[1].status, 404);
        assert_eq!(r[1].reason, "Not Found");
        assert_eq!(r[1].body, b"hi!");
    }

    #[test]
    fn read_to_close_body() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        let r = parse_responses(raw);
        assert_eq!(r[0].body, b"all of it");
    }

    #[test]
    fn stops_after_101() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
        let r = parse_responses(raw);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, 101);
    }
}
