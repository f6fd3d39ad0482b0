//! Strict HTTP/1.1 request framing between the client socket and hyper's HTTP/1 server.
//!
//! hyper accepts framings that are ambiguous to other HTTP implementations (Content-Length next
//! to Transfer-Encoding, repeated Content-Length, `gzip, chunked`, ...) and has no nginx-style
//! 414/431 limits. A proxy that lets such a request through can be used for request smuggling,
//! so the guard follows the message boundaries of the byte stream and, when a head breaks a
//! rule, hides it and everything after it from hyper. hyper reads a stand-in request in its
//! place, which the service answers with the rejection's status before closing the connection.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper parses this in place of a rejected head; `connection: close` keeps hyper from waiting
/// for another request after the error response.
const SENTINEL: &[u8] = b"GET / HTTP/1.1\r\nhost: tollgate.invalid\r\nconnection: close\r\n\r\n";

/// hyper fails a chunked body once its chunk extensions reach this many bytes; the guard gives
/// up at the same point so it never stops inspecting a body hyper still accepts.
const HYPER_CHUNK_EXTENSIONS_LIMIT: u64 = 16 * 1024;

/// Header slots kept on the stack; `max_headers + 1` above this needs a heap allocation per head.
const STACK_HEADER_SLOTS: usize = 128;

/// Read size while a split head is being completed in the guard's own buffer.
const HELD_READ_SIZE: usize = 8 * 1024;

/// After a rejection client bytes are read and dropped; yield after this many reads so a client
/// that keeps sending cannot monopolise the task.
const DISCARD_READS_PER_POLL: usize = 16;

/// The held buffer is given back after a head that needed this much room.
const HELD_KEEP_CAPACITY: usize = 32 * 1024;

/// What the guard decided about one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Ambiguous or invalid message framing: 400.
    BadFraming,
    /// Request line longer than [`FramingLimits::max_request_line`]: 414.
    UriTooLong,
    /// Head longer than [`FramingLimits::max_head_bytes`] or with more than
    /// [`FramingLimits::max_headers`] headers: 431.
    HeadTooLarge,
}

impl Rejection {
    pub fn status(self) -> StatusCode {
        match self {
            Rejection::BadFraming => StatusCode::BAD_REQUEST,
            Rejection::UriTooLong => StatusCode::URI_TOO_LONG,
            Rejection::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Rejection::BadFraming => "Bad Request",
            Rejection::UriTooLong => "URI Too Long",
            Rejection::HeadTooLarge => "Request Header Fields Too Large",
        }
    }

    fn code(self) -> u64 {
        match self {
            Rejection::BadFraming => 1,
            Rejection::UriTooLong => 2,
            Rejection::HeadTooLarge => 3,
        }
    }

    fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(Rejection::BadFraming),
            2 => Some(Rejection::UriTooLong),
            3 => Some(Rejection::HeadTooLarge),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FramingLimits {
    /// Longest accepted request line, without its line ending.
    pub max_request_line: usize,
    /// Longest accepted head: request line, headers and the blank line.
    pub max_head_bytes: usize,
    /// Most header fields accepted in one head.
    pub max_headers: usize,
}

impl Default for FramingLimits {
    fn default() -> Self {
        FramingLimits {
            max_request_line: 8192,
            max_head_bytes: 65536,
            max_headers: 100,
        }
    }
}

/// Shared between the guard (reader side) and the per-connection service.
#[derive(Debug, Default)]
pub struct FramingVerdict {
    /// `(index + 1) << 2 | kind`, 0 while nothing is rejected: one word, so a reader never sees
    /// the index of one rejection with the kind of another.
    rejected: AtomicU64,
    passthrough: AtomicBool,
}

impl FramingVerdict {
    /// Called by the service for the n-th request it receives on this connection (0-based).
    /// Returns the rejection if that request is the sentinel standing for a rejected head.
    pub fn rejection_for(&self, request_index: u64) -> Option<Rejection> {
        let word = self.rejected.load(Ordering::Acquire);
        if word == 0 || word >> 2 != request_index.saturating_add(1).min(u64::MAX >> 2) {
            return None;
        }
        Rejection::from_code(word & 3)
    }

    /// Called by the service when it answers 101 or forwards an Upgrade request: stop
    /// inspecting; later bytes are tunnel data.
    pub fn stop_inspecting(&self) {
        self.passthrough.store(true, Ordering::Release);
    }

    fn record(&self, index: u64, kind: Rejection) {
        let slot = index.saturating_add(1).min(u64::MAX >> 2);
        // Only the first rejection is meaningful: nothing after it reaches hyper in order.
        let _ = self.rejected.compare_exchange(
            0,
            (slot << 2) | kind.code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn passthrough_requested(&self) -> bool {
        self.passthrough.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Heads are checked before hyper sees them.
    Inspect,
    /// After an Upgrade or CONNECT request the rest may be tunnel data, so nothing is held back
    /// or replaced. Heads are still followed: if the upgrade did not happen, hyper reads them as
    /// requests, and a broken one is recorded so the service refuses it by its index.
    Shadow,
    Passthrough,
    /// The sentinel is being handed out; after it, client bytes are dropped.
    Rejected {
        sentinel_sent: usize,
    },
}

/// Sits between the client socket and hyper's HTTP/1 server; see the module docs.
pub struct FramingGuard<T> {
    inner: T,
    verdict: Arc<FramingVerdict>,
    framer: Framer,
    mode: Mode,
    /// Bytes read from `inner` that the reader has not seen: `held[start..ready]` are cleared
    /// for release, `held[ready..end]` is a head that is not complete yet. Its length is
    /// initialised capacity, so reads into it need no zeroing.
    held: Vec<u8>,
    start: usize,
    ready: usize,
    end: usize,
    /// Shadow mode: copy of a released head that is not complete yet.
    shadow_head: Vec<u8>,
}

impl<T> FramingGuard<T> {
    pub fn new(inner: T, limits: FramingLimits, verdict: Arc<FramingVerdict>) -> Self {
        FramingGuard {
            inner,
            verdict,
            framer: Framer::new(limits),
            mode: Mode::Inspect,
            held: Vec::new(),
            start: 0,
            ready: 0,
            end: 0,
            shadow_head: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn stop(&mut self) {
        match self.mode {
            Mode::Inspect => self.ready = self.end,
            Mode::Shadow => self.shadow_head = Vec::new(),
            Mode::Passthrough | Mode::Rejected { .. } => return,
        }
        self.mode = Mode::Passthrough;
    }

    fn release_held(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.ready - self.start);
        buf.put_slice(&self.held[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.ready = 0;
            self.end = 0;
            if self.held.len() > HELD_KEEP_CAPACITY {
                self.held = Vec::new();
            }
        }
    }

    fn hold(&mut self, bytes: &[u8]) {
        // Only called with an empty held buffer.
        if self.held.len() < bytes.len() {
            self.held.resize(bytes.len(), 0);
        }
        self.held[..bytes.len()].copy_from_slice(bytes);
        self.start = 0;
        self.ready = 0;
        self.end = bytes.len();
    }

    fn put_sentinel(&mut self, buf: &mut ReadBuf<'_>) {
        if let Mode::Rejected { sentinel_sent } = &mut self.mode {
            let n = buf.remaining().min(SENTINEL.len() - *sentinel_sent);
            buf.put_slice(&SENTINEL[*sentinel_sent..*sentinel_sent + n]);
            *sentinel_sent += n;
        }
    }

    /// Acts on a scan of `held[ready..end]`, which starts with the held head.
    fn apply_held_scan(&mut self, scan: Scan) {
        let tunnel = self.framer.tunnel;
        match scan {
            Scan::Done => self.ready = self.end,
            Scan::Partial(at) if tunnel => {
                self.shadow_head.clear();
                self.shadow_head
                    .extend_from_slice(&self.held[self.ready + at..self.end]);
                self.ready = self.end;
            }
            Scan::Partial(at) => self.ready += at,
            Scan::Reject { at, index, kind } => {
                self.verdict.record(index, kind);
                if tunnel {
                    self.ready = self.end;
                    self.mode = Mode::Passthrough;
                } else {
                    self.ready += at;
                    self.end = self.ready;
                    self.mode = Mode::Rejected { sentinel_sent: 0 };
                }
                return;
            }
            Scan::Lost => {
                self.ready = self.end;
                self.mode = Mode::Passthrough;
                return;
            }
        }
        if tunnel {
            self.mode = Mode::Shadow;
        }
    }
}

impl<T: AsyncRead + Unpin> FramingGuard<T> {
    /// Reads more of a split head into `held`; returns the number of bytes read.
    fn poll_fill_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start > 0 {
            self.held.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.ready -= self.start;
            self.start = 0;
        }
        if self.held.len() < self.end + HELD_READ_SIZE {
            self.held.resize(self.end + HELD_READ_SIZE, 0);
        }
        let mut read = ReadBuf::new(&mut self.held[self.end..]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// The common case: read straight into the caller's buffer and cut an incomplete head back
    /// out of it. Returns `false` when nothing could be released yet.
    fn poll_direct(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let after = buf.filled().len();
        if after == before {
            return Poll::Ready(Ok(true));
        }
        let scan = self.framer.scan(&buf.filled()[before..], false);
        let tunnel = self.framer.tunnel;
        match scan {
            Scan::Done => {}
            Scan::Partial(at) if tunnel => {
                self.shadow_head.clear();
                self.shadow_head
                    .extend_from_slice(&buf.filled()[before + at..]);
            }
            Scan::Partial(at) => {
                self.hold(&buf.filled()[before + at..]);
                buf.set_filled(before + at);
                if at == 0 {
                    return Poll::Ready(Ok(false));
                }
            }
            Scan::Reject { at, index, kind } => {
                self.verdict.record(index, kind);
                if tunnel {
                    self.mode = Mode::Passthrough;
                } else {
                    buf.set_filled(before + at);
                    self.mode = Mode::Rejected { sentinel_sent: 0 };
                    self.put_sentinel(buf);
                }
                return Poll::Ready(Ok(true));
            }
            Scan::Lost => {
                self.mode = Mode::Passthrough;
                return Poll::Ready(Ok(true));
            }
        }
        if tunnel {
            self.mode = Mode::Shadow;
        }
        Poll::Ready(Ok(true))
    }

    fn poll_shadow(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let scan = if self.shadow_head.is_empty() {
            let scan = self.framer.scan(fresh, false);
            if let Scan::Partial(at) = scan {
                self.shadow_head.extend_from_slice(&fresh[at..]);
            }
            scan
        } else {
            self.shadow_head.extend_from_slice(fresh);
            let scan = self.framer.scan(&self.shadow_head, true);
            match scan {
                Scan::Done => self.shadow_head.clear(),
                Scan::Partial(at) => {
                    self.shadow_head.drain(..at);
                }
                Scan::Reject { .. } | Scan::Lost => {}
            }
            scan
        };
        match scan {
            Scan::Done | Scan::Partial(_) => {}
            Scan::Reject { index, kind, .. } => {
                self.verdict.record(index, kind);
                self.mode = Mode::Passthrough;
                self.shadow_head = Vec::new();
            }
            Scan::Lost => {
                self.mode = Mode::Passthrough;
                self.shadow_head = Vec::new();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_rejected(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Mode::Rejected { sentinel_sent } = self.mode
            && sentinel_sent < SENTINEL.len()
        {
            self.put_sentinel(buf);
            return Poll::Ready(Ok(()));
        }
        // An immediate EOF would make hyper (without half-close) drop the connection before the
        // service has answered the sentinel, so EOF is only reported once the client sends it.
        for _ in 0..DISCARD_READS_PER_POLL {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            let got = buf.filled().len() - before;
            buf.set_filled(before);
            if got == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FramingGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if matches!(this.mode, Mode::Inspect | Mode::Shadow) && this.verdict.passthrough_requested()
        {
            this.stop();
        }
        loop {
            if this.start < this.ready {
                this.release_held(buf);
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Passthrough => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Mode::Rejected { .. } => return this.poll_rejected(cx, buf),
                Mode::Shadow => return this.poll_shadow(cx, buf),
                Mode::Inspect if this.ready < this.end => {
                    if ready!(this.poll_fill_held(cx))? == 0 {
                        // EOF inside a head: hyper gets to report the truncated request.
                        this.ready = this.end;
                        this.mode = Mode::Passthrough;
                        continue;
                    }
                    let scan = this.framer.scan(&this.held[this.ready..this.end], true);
                    this.apply_held_scan(scan);
                }
                Mode::Inspect => {
                    if ready!(this.poll_direct(cx, buf))? {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FramingGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: fmt::Debug> fmt::Debug for FramingGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramingGuard")
            .field("inner", &self.inner)
            .field("mode", &self.mode)
            .field("next_index", &self.framer.next_index)
            .finish_non_exhaustive()
    }
}

/// Outcome of feeding bytes to the [`Framer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// All bytes belong to checked messages.
    Done,
    /// `data[..at]` is checked; `data[at..]` starts a head that is not complete yet.
    Partial(usize),
    /// `data[..at]` is checked; the head starting at `at` is head number `index` and rejected.
    Reject {
        at: usize,
        index: u64,
        kind: Rejection,
    },
    /// The guard cannot follow the stream any more; hyper judges the rest on its own.
    Lost,
}

/// Result of looking at one head.
enum HeadStep {
    /// Accepted; this many bytes long. The framer now expects its body.
    Accepted(usize),
    Incomplete,
    Rejected(Rejection),
    Lost,
}

enum Parsed {
    Complete(HeadStep),
    Partial,
    TooManyHeaders,
    Invalid,
}

/// Where the framer is in the client's message stream.
#[derive(Debug, Clone, Copy)]
enum At {
    Head,
    Length(u64),
    Chunked(ChunkedBody),
}

/// Follows HTTP/1.1 message boundaries the way hyper's server does.
#[derive(Debug)]
struct Framer {
    limits: FramingLimits,
    at: At,
    /// Index of the next head, as hyper will count requests.
    next_index: u64,
    /// An Upgrade or CONNECT request was accepted: what follows may be a tunnel.
    tunnel: bool,
    head_scan: HeadScan,
}

/// Incremental look at a head that arrives in pieces, so a slow client does not make the guard
/// re-parse the whole head on every read.
#[derive(Debug, Default, Clone, Copy)]
struct HeadScan {
    scanned: usize,
    first_lf: Option<usize>,
    lf_count: usize,
    parsed_len: usize,
}

impl HeadScan {
    /// Scans the bytes not seen yet; true if a blank line (possible end of head) was among them.
    fn update(&mut self, head: &[u8]) -> bool {
        let mut blank_line = false;
        let mut pos = self.scanned;
        while let Some(off) = head
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let lf = pos + off;
            self.lf_count += 1;
            if self.first_lf.is_none() {
                self.first_lf = Some(lf);
            } else if head[lf - 1] == b'\n' || (head[lf - 1] == b'\r' && head[lf - 2] == b'\n') {
                blank_line = true;
            }
            pos = lf + 1;
        }
        self.scanned = head.len();
        blank_line
    }
}

impl Framer {
    fn new(limits: FramingLimits) -> Self {
        Framer {
            limits,
            at: At::Head,
            next_index: 0,
            tunnel: false,
            head_scan: HeadScan::default(),
        }
    }

    /// Feeds the next bytes of the stream. With `resume`, `data` starts with the incomplete
    /// head reported by the previous call (plus what arrived since).
    fn scan(&mut self, data: &[u8], resume: bool) -> Scan {
        let mut i = 0;
        while i < data.len() {
            match &mut self.at {
                At::Length(left) => {
                    let avail = data.len() - i;
                    let take = usize::try_from(*left).map_or(avail, |left| left.min(avail));
                    i += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.at = At::Head;
                    }
                }
                At::Chunked(body) => match body.advance(&data[i..]) {
                    ChunkStep::More => i = data.len(),
                    ChunkStep::Done(used) => {
                        i += used;
                        self.at = At::Head;
                    }
                    ChunkStep::Invalid => return Scan::Lost,
                },
                At::Head => {
                    match skip_empty_lines(&data[i..]) {
                        EmptyLines::Invalid => return Scan::Lost,
                        EmptyLines::LoneCr(n) => return Scan::Partial(i + n),
                        EmptyLines::Head(n) => i += n,
                    }
                    if i == data.len() {
                        break;
                    }
                    match self.head(&data[i..], resume && i == 0) {
                        HeadStep::Accepted(len) => i += len,
                        HeadStep::Incomplete => return Scan::Partial(i),
                        HeadStep::Rejected(kind) => {
                            return Scan::Reject {
                                at: i,
                                index: self.next_index,
                                kind,
                            };
                        }
                        HeadStep::Lost => return Scan::Lost,
                    }
                }
            }
        }
        Scan::Done
    }

    fn head(&mut self, head: &[u8], resume: bool) -> HeadStep {
        if !resume {
            // Usually the whole head is here: one parse decides.
            return match self.parse(head) {
                Parsed::Complete(step) => step,
                Parsed::TooManyHeaders => HeadStep::Rejected(self.too_many_headers(head)),
                Parsed::Invalid => HeadStep::Lost,
                Parsed::Partial => {
                    self.head_scan = HeadScan::default();
                    self.head_scan.update(head);
                    self.head_scan.parsed_len = head.len();
                    match self.partial_limit(head) {
                        Some(kind) => HeadStep::Rejected(kind),
                        None => HeadStep::Incomplete,
                    }
                }
            };
        }
        let had_request_line = self.head_scan.first_lf.is_some();
        let blank_line = self.head_scan.update(head);
        let limit = self.partial_limit(head);
        // Parse again only when it can tell something new; the doubling rule still catches
        // garbage early (hyper reports that with its own 400) at amortised linear cost.
        let parse_now = blank_line
            || limit.is_some()
            || (!had_request_line && self.head_scan.first_lf.is_some())
            || head.len() >= self.head_scan.parsed_len.saturating_mul(2);
        if !parse_now {
            return HeadStep::Incomplete;
        }
        self.head_scan.parsed_len = head.len();
        match self.parse(head) {
            Parsed::Complete(step) => step,
            Parsed::TooManyHeaders => HeadStep::Rejected(self.too_many_headers(head)),
            Parsed::Invalid => HeadStep::Lost,
            Parsed::Partial => match limit {
                Some(kind) => HeadStep::Rejected(kind),
                None => HeadStep::Incomplete,
            },
        }
    }

    /// A limit an incomplete head already exceeds, judged from `head_scan`.
    fn partial_limit(&self, head: &[u8]) -> Option<Rejection> {
        let line_len = match self.head_scan.first_lf {
            Some(lf) => line_len_before(head, lf),
            // A trailing CR may still be the start of the line ending.
            None => head.len() - usize::from(head.last() == Some(&b'\r')),
        };
        if line_len > self.limits.max_request_line {
            return Some(Rejection::UriTooLong);
        }
        // Incomplete, so the finished head will be longer than what is here.
        if head.len() >= self.limits.max_head_bytes {
            return Some(Rejection::HeadTooLarge);
        }
        // Request line plus more than `max_headers` complete header lines, and no blank line.
        if self.head_scan.lf_count >= self.limits.max_headers.saturating_add(2) {
            return Some(Rejection::HeadTooLarge);
        }
        None
    }

    fn too_many_headers(&self, head: &[u8]) -> Rejection {
        match head.iter().position(|&b| b == b'\n') {
            Some(lf) if line_len_before(head, lf) > self.limits.max_request_line => {
                Rejection::UriTooLong
            }
            _ => Rejection::HeadTooLarge,
        }
    }

    fn parse(&mut self, head: &[u8]) -> Parsed {
        // One slot more than allowed, so "one too many" parses and is counted, not an error.
        let slots = self.limits.max_headers.saturating_add(1);
        if slots <= STACK_HEADER_SLOTS {
            let mut headers = [const { MaybeUninit::uninit() }; STACK_HEADER_SLOTS];
            self.parse_into(head, &mut headers[..slots])
        } else {
            let mut headers = Vec::new();
            headers.resize_with(slots, MaybeUninit::uninit);
            self.parse_into(head, &mut headers)
        }
    }

    fn parse_into<'b>(
        &mut self,
        head: &'b [u8],
        slots: &mut [MaybeUninit<httparse::Header<'b>>],
    ) -> Parsed {
        // Same parser and default configuration as hyper's server, so both agree on where the
        // head ends and what its headers are.
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, slots) {
            Ok(httparse::Status::Complete(len)) => Parsed::Complete(self.check(&req, &head[..len])),
            Ok(httparse::Status::Partial) => Parsed::Partial,
            Err(httparse::Error::TooManyHeaders) => Parsed::TooManyHeaders,
            Err(_) => Parsed::Invalid,
        }
    }

    fn check(&mut self, req: &httparse::Request<'_, '_>, head: &[u8]) -> HeadStep {
        let line_len = head
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |lf| line_len_before(head, lf));
        if line_len > self.limits.max_request_line {
            return HeadStep::Rejected(Rejection::UriTooLong);
        }
        if head.len() > self.limits.max_head_bytes || req.headers.len() > self.limits.max_headers {
            return HeadStep::Rejected(Rejection::HeadTooLarge);
        }

        let mut content_lengths = 0usize;
        let mut length = None;
        let mut transfer_encodings = 0usize;
        let mut chunked = false;
        let mut upgrade = false;
        for header in req.headers.iter() {
            let name = header.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                content_lengths += 1;
                length = parse_content_length(header.value);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encodings += 1;
                chunked = trim_ows(header.value).eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            }
        }
        let http10 = req.version == Some(0);
        if http10 && transfer_encodings > 0 {
            // hyper refuses Transfer-Encoding in HTTP/1.0 itself and closes the connection.
            return HeadStep::Lost;
        }
        if transfer_encodings > 1
            || (transfer_encodings == 1 && !chunked)
            || (transfer_encodings > 0 && content_lengths > 0)
            || content_lengths > 1
            || (content_lengths == 1 && length.is_none())
        {
            return HeadStep::Rejected(Rejection::BadFraming);
        }

        self.at = if chunked {
            At::Chunked(ChunkedBody::new())
        } else {
            match length {
                Some(n) if n > 0 => At::Length(n),
                _ => At::Head,
            }
        };
        self.next_index += 1;
        // hyper only upgrades HTTP/1.1 requests, but every CONNECT.
        if req.method == Some("CONNECT") || (upgrade && !http10) {
            self.tunnel = true;
        }
        HeadStep::Accepted(head.len())
    }
}

/// Length of the line ending at the LF at `lf`, without its line ending.
fn line_len_before(data: &[u8], lf: usize) -> usize {
    if lf > 0 && data[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    }
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Digits only, as hyper requires; also no sign, no list and no overflow.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

enum EmptyLines {
    /// This many bytes of empty lines, then a head byte or the end of the data.
    Head(usize),
    /// This many bytes of empty lines, then a CR that ends the data.
    LoneCr(usize),
    /// A CR not followed by LF: httparse (and so hyper) rejects that.
    Invalid,
}

/// Empty lines before a request, which httparse skips (RFC 9112 section 2.2).
fn skip_empty_lines(data: &[u8]) -> EmptyLines {
    let mut i = 0;
    loop {
        match data.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') => match data.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return EmptyLines::Invalid,
                None => return EmptyLines::LoneCr(i),
            },
            _ => return EmptyLines::Head(i),
        }
    }
}

/// Chunked body state, byte for byte the states of hyper's decoder, so both agree on where the
/// body ends; anything hyper would fail on ends inspection instead (hyper closes after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

enum ChunkStep {
    /// Everything consumed; the body goes on.
    More,
    /// The body ended after this many bytes.
    Done(usize),
    Invalid,
}

#[derive(Debug, Clone, Copy)]
struct ChunkedBody {
    state: ChunkState,
    size: u64,
    extension_bytes: u64,
}

impl ChunkedBody {
    fn new() -> Self {
        ChunkedBody {
            state: ChunkState::Start,
            size: 0,
            extension_bytes: 0,
        }
    }

    fn advance(&mut self, data: &[u8]) -> ChunkStep {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() {
            if self.state == Data {
                let avail = data.len() - i;
                let take = usize::try_from(self.size).map_or(avail, |size| size.min(avail));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Start, _) => match hex_digit(b) {
                    Some(digit) => {
                        self.size = digit;
                        Size
                    }
                    None => return ChunkStep::Invalid,
                },
                (Size, _) => match hex_digit(b) {
                    Some(digit) => {
                        match self.size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                            Some(size) => self.size = size,
                            None => return ChunkStep::Invalid,
                        }
                        Size
                    }
                    None => match b {
                        b'\t' | b' ' => SizeLws,
                        b';' => Extension,
                        b'\r' => SizeLf,
                        _ => return ChunkStep::Invalid,
                    },
                },
                (SizeLws, b'\t' | b' ') => SizeLws,
                (SizeLws, b';') => Extension,
                (SizeLws | Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return ChunkStep::Invalid,
                (Extension, _) => {
                    self.extension_bytes += 1;
                    if self.extension_bytes >= HYPER_CHUNK_EXTENSIONS_LIMIT {
                        return ChunkStep::Invalid;
                    }
                    Extension
                }
                (SizeLf, b'\n') if self.size == 0 => EndCr,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Start,
                (EndCr, b'\r') => EndLf,
                (Trailer, b'\r') => TrailerLf,
                (EndCr | Trailer, _) => Trailer,
                (TrailerLf, b'\n') => EndCr,
                (EndLf, b'\n') => return ChunkStep::Done(i),
                (SizeLws | SizeLf | DataCr | DataLf | TrailerLf | EndLf | Data, _) => {
                    return ChunkStep::Invalid;
                }
            };
        }
        ChunkStep::More
    }
}

fn hex_digit(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}
