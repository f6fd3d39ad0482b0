//! Strict HTTP/1.1 request framing in front of hyper's HTTP/1 server.
//!
//! hyper accepts framings that other HTTP implementations read differently (Content-Length with
//! Transfer-Encoding, repeated Content-Length, `gzip, chunked`) and has no 414/431 limits; a
//! proxy that passes such requests on can be used for request smuggling. The guard refuses them
//! before hyper sees their bytes.

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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicU64;
    use std::task::Waker;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    const SMUGGLE: &[u8] =
        b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    const BAD: &[u8] = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    /// Hands out its chunks one read at a time, then EOF, or Pending for ever if `hang`.
    struct Script {
        chunks: VecDeque<Vec<u8>>,
        hang: bool,
        pending_between: bool,
        yielded: bool,
    }

    impl Script {
        fn new(chunks: Vec<Vec<u8>>) -> Self {
            Script {
                chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
                hang: false,
                pending_between: false,
                yielded: false,
            }
        }

        fn hanging(chunks: Vec<Vec<u8>>) -> Self {
            Script {
                hang: true,
                ..Script::new(chunks)
            }
        }
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pending_between && !self.yielded {
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.yielded = false;
            let hang = self.hang;
            let Some(chunk) = self.chunks.front_mut() else {
                return if hang {
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(()))
                };
            };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
            Poll::Ready(Ok(()))
        }
    }

    struct Run {
        out: Vec<u8>,
        verdict: Arc<FramingVerdict>,
        heads: u64,
        eof: bool,
        /// The guard still knew where it was in the stream at the end.
        follows: bool,
    }

    /// Reads everything through a guard with `read_size` buffers; stops at EOF or when the
    /// guard stays pending after the script ran out.
    fn run_with(script: Script, limits: FramingLimits, read_size: usize) -> Run {
        let verdict = Arc::new(FramingVerdict::default());
        let mut guard = FramingGuard::new(script, limits, Arc::clone(&verdict));
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        let mut chunk = vec![0u8; read_size];
        let mut idle = 0;
        let eof = loop {
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut guard).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break true,
                Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
                Poll::Ready(Err(e)) => panic!("read failed: {e}"),
                Poll::Pending if guard.get_ref().chunks.is_empty() => {
                    idle += 1;
                    if idle > 3 {
                        break false;
                    }
                }
                Poll::Pending => {}
            }
        };
        Run {
            out,
            verdict,
            heads: guard.framer.next_index,
            eof,
            follows: guard.mode != Mode::Passthrough,
        }
    }

    fn run_all(chunks: Vec<Vec<u8>>) -> Run {
        run_with(Script::new(chunks), FramingLimits::default(), 16 * 1024)
    }

    /// The input in one piece, one byte per read, and cut in two at every position.
    fn splits(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut all = vec![
            vec![input.to_vec()],
            input.iter().map(|&b| vec![b]).collect(),
        ];
        for k in 1..input.len() {
            all.push(vec![input[..k].to_vec(), input[k..].to_vec()]);
        }
        all
    }

    /// For inputs too large to cut everywhere: around the ends and every `step` bytes.
    fn sampled_splits(input: &[u8], step: usize) -> Vec<Vec<Vec<u8>>> {
        let mut all = vec![
            vec![input.to_vec()],
            input.iter().map(|&b| vec![b]).collect(),
        ];
        let len = input.len();
        let mut cuts: Vec<usize> = (1..4).chain((1..4).map(|d| len - d)).collect();
        cuts.extend((step..len).step_by(step));
        for k in cuts {
            all.push(vec![input[..k].to_vec(), input[k..].to_vec()]);
        }
        all
    }

    fn assert_verdict(verdict: &FramingVerdict, expected: Option<(u64, Rejection)>) {
        for index in 0..8 {
            let want = expected.and_then(|(k, kind)| (k == index).then_some(kind));
            assert_eq!(verdict.rejection_for(index), want, "request {index}");
        }
    }

    fn show(bytes: &[u8]) -> String {
        String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
    }

    /// Every way of cutting `input`, read with several buffer sizes, gives `expected` and the
    /// expected verdict.
    fn check_runs(
        cuts: Vec<Vec<Vec<u8>>>,
        limits: FramingLimits,
        expected: &[u8],
        rejected: Option<(u64, Rejection)>,
        follows: bool,
    ) {
        for chunks in cuts {
            for (read_size, pending_between) in [(16 * 1024, false), (7, true), (1, false)] {
                let mut script = Script::new(chunks.clone());
                script.pending_between = pending_between;
                let run = run_with(script, limits, read_size);
                assert!(
                    run.out == expected,
                    "cut into {:?} read by {read_size}: got {:?}, want {:?}",
                    chunks.iter().map(Vec::len).collect::<Vec<_>>(),
                    show(&run.out),
                    show(expected),
                );
                assert!(run.eof);
                assert_eq!(
                    run.follows,
                    follows,
                    "guard lost track: {:?}",
                    show(expected)
                );
                assert_verdict(&run.verdict, rejected);
            }
        }
    }

    fn check(input: &[u8], expected: &[u8], rejected: Option<(u64, Rejection)>) {
        check_runs(
            splits(input),
            FramingLimits::default(),
            expected,
            rejected,
            true,
        );
    }

    /// The guard gives up on `input` and hands all of it to hyper.
    fn check_given_up(input: &[u8], rejected: Option<(u64, Rejection)>) {
        check_runs(
            splits(input),
            FramingLimits::default(),
            input,
            rejected,
            false,
        );
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn with_sentinel(prefix: &[u8]) -> Vec<u8> {
        cat(&[prefix, SENTINEL])
    }

    #[test]
    fn simple_get_passes_unchanged() {
        check(GET, GET, None);
        assert_eq!(run_all(vec![GET.to_vec()]).heads, 1);
    }

    #[test]
    fn pipelined_requests_and_empty_lines_between_them_pass() {
        let input = cat(&[b"\r\n", GET, GET, b"\r\n\n", GET, b"\n"]);
        check(&input, &input, None);
        assert_eq!(run_all(vec![input]).heads, 3);
    }

    #[test]
    fn httparse_skips_empty_lines_before_a_request() {
        // The guard releases these lines before the head; hyper's parser must skip them too.
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut headers);
        let input = b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            req.parse(input),
            Ok(httparse::Status::Complete(input.len()))
        );
        assert_eq!(req.path, Some("/"));
    }

    #[test]
    fn content_length_body_is_skipped_not_parsed() {
        let post = cat(&[
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: ",
            SMUGGLE.len().to_string().as_bytes(),
            b"\r\n\r\n",
            SMUGGLE,
        ]);
        let input = cat(&[&post, GET]);
        check(&input, &input, None);
        assert_eq!(run_all(vec![input]).heads, 2);
        // The request after the body is still inspected.
        check(
            &cat(&[&post, BAD]),
            &with_sentinel(&post),
            Some((1, Rejection::BadFraming)),
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_passes() {
        let post: &[u8] = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;name=value\r\nhello\r\n\
            1a ; a=b;c\r\nb\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\n\
            A\t;x\r\n0123456789\r\n\
            0;last\r\nExpires: never\r\nX-Note: GET / HTTP/1.1\r\n\r\n";
        let input = cat(&[post, GET]);
        check(&input, &input, None);
        assert_eq!(run_all(vec![input]).heads, 2);
        check(
            &cat(&[post, BAD]),
            &with_sentinel(post),
            Some((1, Rejection::BadFraming)),
        );
        let bare: &[u8] =
            b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        check(
            &cat(&[bare, BAD]),
            &with_sentinel(bare),
            Some((1, Rejection::BadFraming)),
        );
    }

    const BAD_FRAMING: &[&str] = &[
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "content-LENGTH: 0\r\nTRANSFER-encoding: chunked",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 0\r\nContent-Length: 0",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: chunked,",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding:",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        "Content-Length: +5",
        "Content-Length: -1",
        "Content-Length: 5 5",
        "Content-Length: 5,5",
        "Content-Length: 0x5",
        "Content-Length: 5.0",
        "Content-Length:",
        "Content-Length: 18446744073709551616",
    ];

    #[test]
    fn each_framing_rule_rejects() {
        for headers in BAD_FRAMING {
            let head = format!("POST /r HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n");
            let input = cat(&[head.as_bytes(), b"hello", GET]);
            check(&input, SENTINEL, Some((0, Rejection::BadFraming)));
            // As the second pipelined request, the first one still goes through first.
            let input = cat(&[GET, head.as_bytes(), b"0\r\n\r\n", GET]);
            check(
                &input,
                &with_sentinel(GET),
                Some((1, Rejection::BadFraming)),
            );
        }
    }

    #[test]
    fn empty_lines_before_a_rejected_head_are_released() {
        let input = cat(&[GET, b"\r\n\r\n", BAD]);
        check(
            &input,
            &with_sentinel(&cat(&[GET, b"\r\n\r\n"])),
            Some((1, Rejection::BadFraming)),
        );
    }

    #[test]
    fn transfer_encoding_chunked_in_any_case_with_whitespace_passes() {
        for te in ["chunked", "Chunked", "CHUNKED", " chunked ", "\tchunked"] {
            let input = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            );
            let input = cat(&[input.as_bytes(), GET]);
            check(&input, &input, None);
        }
    }

    #[test]
    fn http10_transfer_encoding_is_left_to_hyper() {
        let input = cat(&[
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            BAD,
        ]);
        check_given_up(&input, None);
    }

    fn request_line(len: usize) -> Vec<u8> {
        let mut line = b"GET /".to_vec();
        line.resize(len - b" HTTP/1.1".len(), b'a');
        line.extend_from_slice(b" HTTP/1.1");
        assert_eq!(line.len(), len);
        line
    }

    fn check_big(input: &[u8], expected: &[u8], rejected: Option<(u64, Rejection)>) {
        check_runs(
            sampled_splits(input, 997),
            FramingLimits::default(),
            expected,
            rejected,
            true,
        );
    }

    #[test]
    fn request_line_limit() {
        let ok = cat(&[&request_line(8192), b"\r\nHost: x\r\n\r\n"]);
        check_big(&ok, &ok, None);
        let uri = cat(&[b"GET /", &vec![b'u'; 7999], b" HTTP/1.1\r\nHost: x\r\n\r\n"]);
        check_big(&uri, &uri, None);
        let long = cat(&[&request_line(8193), b"\r\nHost: x\r\n\r\n"]);
        check_big(&long, SENTINEL, Some((0, Rejection::UriTooLong)));
        let bare_lf = cat(&[&request_line(8193), b"\nHost: x\n\n"]);
        check_big(&bare_lf, SENTINEL, Some((0, Rejection::UriTooLong)));
        check_big(
            &cat(&[GET, &long]),
            &with_sentinel(GET),
            Some((1, Rejection::UriTooLong)),
        );
    }

    fn with_headers(count: usize) -> Vec<u8> {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..count {
            head.extend_from_slice(format!("X-Header-{i}: {i}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    #[test]
    fn header_count_limit() {
        let ok = cat(&[&with_headers(100), GET]);
        check_big(&ok, &ok, None);
        check_big(
            &with_headers(101),
            SENTINEL,
            Some((0, Rejection::HeadTooLarge)),
        );
        check_big(
            &with_headers(150),
            SENTINEL,
            Some((0, Rejection::HeadTooLarge)),
        );
        check_big(
            &cat(&[GET, &with_headers(101)]),
            &with_sentinel(GET),
            Some((1, Rejection::HeadTooLarge)),
        );
    }

    /// A head of exactly `len` bytes.
    fn head_of(len: usize) -> Vec<u8> {
        let mut head = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        head.resize(len - 4, b'f');
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    #[test]
    fn head_size_limit() {
        let ok = cat(&[&head_of(65536), GET]);
        check_big(&ok, &ok, None);
        check_big(
            &head_of(65537),
            SENTINEL,
            Some((0, Rejection::HeadTooLarge)),
        );
        check_big(
            &cat(&[GET, &head_of(70000), GET]),
            &with_sentinel(GET),
            Some((1, Rejection::HeadTooLarge)),
        );
    }

    #[test]
    fn configured_limits_apply() {
        let limits = FramingLimits {
            max_request_line: 24,
            max_head_bytes: 60,
            max_headers: 2,
        };
        let cases: [(&[u8], Option<Rejection>); 5] = [
            (b"GET /1234567890 HTTP/1.1\r\n\r\n", None),
            (
                b"GET /12345678901 HTTP/1.1\r\n\r\n",
                Some(Rejection::UriTooLong),
            ),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", None),
            (
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                Some(Rejection::HeadTooLarge),
            ),
            (
                b"GET / HTTP/1.1\r\nA: 0123456789012345678901234567890123456789\r\n\r\n",
                Some(Rejection::HeadTooLarge),
            ),
        ];
        for (input, rejection) in cases {
            let expected = if rejection.is_some() { SENTINEL } else { input };
            check_runs(
                splits(input),
                limits,
                expected,
                rejection.map(|kind| (0, kind)),
                true,
            );
        }
    }

    #[test]
    fn many_headers_use_heap_slots() {
        let limits = FramingLimits {
            max_headers: 300,
            ..FramingLimits::default()
        };
        let ok = cat(&[&with_headers(300), GET]);
        check_runs(sampled_splits(&ok, 499), limits, &ok, None, true);
        check_runs(
            sampled_splits(&with_headers(301), 499),
            limits,
            SENTINEL,
            Some((0, Rejection::HeadTooLarge)),
            true,
        );
    }

    /// Runs `chunks` through a guard whose client then goes quiet without closing.
    fn run_stalled(chunks: Vec<Vec<u8>>) -> Run {
        run_with(Script::hanging(chunks), FramingLimits::default(), 16 * 1024)
    }

    #[test]
    fn incomplete_head_is_held_back() {
        let run = run_stalled(vec![b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec()]);
        assert!(run.out.is_empty() && !run.eof);
        let run = run_stalled(vec![cat(&[GET, b"POST / HTTP/1.1\r\nContent-Le"])]);
        assert_eq!(run.out, GET);
        // A lone CR could still start an empty line.
        let run = run_stalled(vec![cat(&[GET, b"\r"])]);
        assert_eq!(run.out, GET);
        // At EOF hyper gets what there is and reports the truncated request itself.
        check_given_up(&cat(&[GET, b"POST / HTTP/1.1\r\nHost"]), None);
    }

    #[test]
    fn oversized_partial_heads_are_rejected_without_waiting() {
        let cases = [
            (cat(&[b"GET /", &vec![b'a'; 9000]]), Rejection::UriTooLong),
            (request_line(8193), Rejection::UriTooLong),
            (cat(&[&request_line(8193), b"\r"]), Rejection::UriTooLong),
            {
                let head = with_headers(101);
                (head[..head.len() - 2].to_vec(), Rejection::HeadTooLarge)
            },
            (head_of(70000)[..65536].to_vec(), Rejection::HeadTooLarge),
        ];
        for (input, kind) in cases {
            for chunks in sampled_splits(&input, 1499) {
                let run = run_stalled(chunks);
                assert!(run.out == SENTINEL, "got {:?}", show(&run.out));
                assert_verdict(&run.verdict, Some((0, kind)));
            }
        }
        // At the limits: still waiting for the rest.
        for input in [
            request_line(8192),
            cat(&[&request_line(8192), b"\r"]),
            with_headers(100),
            head_of(70000)[..65535].to_vec(),
        ] {
            let input = &input[..input.len() - usize::from(input.ends_with(b"\r\n\r\n")) * 2];
            let run = run_stalled(vec![input.to_vec()]);
            assert!(run.out.is_empty() && !run.eof, "got {:?}", show(&run.out));
            assert_verdict(&run.verdict, None);
        }
    }

    #[test]
    fn rejection_drops_later_bytes_and_ends_at_client_eof() {
        let run = run_stalled(vec![cat(&[GET, BAD]), GET.to_vec(), BAD.to_vec()]);
        assert_eq!(run.out, with_sentinel(GET));
        assert!(!run.eof, "EOF must wait for the client");
        let run = run_all(vec![cat(&[GET, BAD]), GET.to_vec()]);
        assert_eq!(run.out, with_sentinel(GET));
        assert!(run.eof);
    }

    #[test]
    fn upgrade_switches_to_passthrough() {
        let upgrade: &[u8] =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        // The tunnel bytes are still watched in case the upgrade does not happen: a broken head
        // is recorded under the index hyper would give it, then the guard stops looking.
        let input = cat(&[upgrade, SMUGGLE, b"\x81\x05hello\r\n\r\n", BAD]);
        check_given_up(&input, Some((1, Rejection::BadFraming)));
        let input = cat(&[upgrade, b"\x81\x05hello", BAD]);
        check_given_up(&input, None);
        let connect: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        let input = cat(&[
            connect,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            BAD,
        ]);
        check_given_up(&input, None);
        check_given_up(&cat(&[connect, BAD]), Some((1, Rejection::BadFraming)));
        let input = cat(&[connect, GET, GET]);
        check(&input, &input, None);
        // hyper does not upgrade HTTP/1.0, so neither does the guard.
        let old: &[u8] = b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n";
        check(
            &cat(&[old, BAD]),
            &with_sentinel(old),
            Some((1, Rejection::BadFraming)),
        );
    }

    #[test]
    fn after_an_upgrade_request_oversized_heads_are_recorded_not_held() {
        let upgrade: &[u8] = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        let input = cat(&[upgrade, GET, &request_line(9000)]);
        let run = run_stalled(vec![input.clone()]);
        assert!(run.out == input, "got {:?}", show(&run.out));
        assert_verdict(&run.verdict, Some((2, Rejection::UriTooLong)));
        let input = cat(&[upgrade, b"GET / HTTP/1.1\r\nHost"]);
        let run = run_stalled(vec![input.clone()]);
        assert!(run.out == input, "tunnel bytes are never held back");
    }

    fn poll_once<T: AsyncRead + Unpin>(guard: &mut FramingGuard<T>) -> Poll<Vec<u8>> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut storage = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(guard).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(buf.filled().to_vec()),
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => Poll::Pending,
        }
    }

    #[test]
    fn stop_inspecting_releases_held_bytes_and_passes_the_rest() {
        let verdict = Arc::new(FramingVerdict::default());
        let partial = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        let mut guard = FramingGuard::new(
            Script::hanging(vec![partial.clone()]),
            FramingLimits::default(),
            Arc::clone(&verdict),
        );
        assert_eq!(poll_once(&mut guard), Poll::Pending);
        verdict.stop_inspecting();
        assert_eq!(poll_once(&mut guard), Poll::Ready(partial));
        guard.inner.chunks.push_back(BAD.to_vec());
        assert_eq!(poll_once(&mut guard), Poll::Ready(BAD.to_vec()));
        assert_verdict(&verdict, None);
    }

    #[test]
    fn stream_the_guard_cannot_follow_goes_to_hyper_untouched() {
        let inputs: [&[u8]; 6] = [
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\rGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: y\r\n folded\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ];
        for input in inputs {
            let input = cat(&[input, BAD]);
            check_given_up(&input, None);
        }
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            &b"zz\r\n"[..],
            b"5\nhello\r\n",
            b"5;a\nhello\r\n",
            b"2\r\nhiX\r\n",
            b"0\r\n\r\r",
            b" 5\r\nhello\r\n",
            b"11111111111111111\r\n",
        ] {
            let input = cat(&[GET, chunked, body, BAD]);
            check_given_up(&input, None);
        }
        // Extensions up to hyper's limit are still followed.
        let long_ext = cat(&[
            chunked,
            b"1;",
            &vec![b'e'; 16 * 1024 - 3],
            b"\r\nx\r\n0\r\n\r\n",
        ]);
        let run = run_all(vec![cat(&[&long_ext, BAD])]);
        assert!(
            run.out == with_sentinel(&long_ext),
            "got {:?}",
            show(&run.out)
        );
        let too_long = cat(&[
            chunked,
            b"1;",
            &vec![b'e'; 16 * 1024],
            b"\r\nx\r\n0\r\n\r\n",
            BAD,
        ]);
        let run = run_with(
            Script::new(vec![too_long.clone()]),
            FramingLimits::default(),
            4096,
        );
        assert!(run.out == too_long && !run.follows);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut guard = FramingGuard::new(
            client,
            FramingLimits::default(),
            Arc::new(FramingVerdict::default()),
        );
        assert_eq!(
            guard.is_write_vectored(),
            guard.get_ref().is_write_vectored()
        );
        guard.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let slices = [io::IoSlice::new(b"a: b\r\n"), io::IoSlice::new(b"\r\n")];
        let n = guard.write_vectored(&slices).await.unwrap();
        guard.flush().await.unwrap();
        guard.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, &b"HTTP/1.1 200 OK\r\na: b\r\n\r\n"[..17 + n]);
    }

    #[test]
    fn guard_is_send_for_send_io() {
        fn send<T: Send>() {}
        send::<FramingGuard<tokio::net::TcpStream>>();
        send::<Arc<FramingVerdict>>();
    }

    #[test]
    fn rejection_statuses() {
        assert_eq!(Rejection::BadFraming.status(), StatusCode::BAD_REQUEST);
        assert_eq!(Rejection::UriTooLong.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(
            Rejection::HeadTooLarge.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        for kind in [
            Rejection::BadFraming,
            Rejection::UriTooLong,
            Rejection::HeadTooLarge,
        ] {
            assert_eq!(Some(kind.message()), kind.status().canonical_reason());
        }
        assert_verdict(&FramingVerdict::default(), None);
    }

    /// Serves `input` with hyper behind the guard, answering like the gateway does: the
    /// rejection for a sentinel, else `index:body length`. Returns everything hyper wrote.
    async fn through_hyper(input: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let verdict = Arc::new(FramingVerdict::default());
        let guard = FramingGuard::new(server, FramingLimits::default(), Arc::clone(&verdict));
        let next = Arc::new(AtomicU64::new(0));
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let verdict = Arc::clone(&verdict);
                async move {
                    let response = match verdict.rejection_for(index) {
                        Some(rejection) => http::Response::builder()
                            .status(rejection.status())
                            .header("connection", "close")
                            .body(Full::new(Bytes::from_static(
                                rejection.message().as_bytes(),
                            ))),
                        None => {
                            let body = req.into_body().collect().await?.to_bytes();
                            http::Response::builder()
                                .body(Full::new(Bytes::from(format!("{index}:{}", body.len()))))
                        }
                    };
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response?)
                }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(guard), service)
            .with_upgrades();
        let task = tokio::spawn(conn);
        // Like a real client, keep the write side open while waiting for the answers.
        client.write_all(input).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .unwrap();
        let _ = task.await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn statuses(responses: &str) -> Vec<&str> {
        responses
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|r| r.get(..3).unwrap_or(r))
            .collect()
    }

    #[tokio::test]
    async fn hyper_answers_the_sentinel_in_order() {
        let out = through_hyper(&cat(&[GET, BAD, GET])).await;
        assert_eq!(statuses(&out), ["200", "400"], "{out}");
        assert!(out.contains("0:0") && out.ends_with("Bad Request"), "{out}");
        let out = through_hyper(&cat(&[GET, &with_headers(101)])).await;
        assert_eq!(statuses(&out), ["200", "431"], "{out}");
        let out = through_hyper(&cat(&[&request_line(8193), b"\r\n\r\n"])).await;
        assert_eq!(statuses(&out), ["414"], "{out}");
    }

    #[tokio::test]
    async fn declined_upgrade_does_not_open_a_smuggling_hole() {
        let upgrade: &[u8] =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let out = through_hyper(&cat(&[upgrade, GET, BAD])).await;
        assert_eq!(statuses(&out), ["200", "200", "400"], "{out}");
    }

    #[derive(Debug, Clone)]
    enum Message {
        Get {
            path: String,
            empty_lines: usize,
        },
        Fixed(Vec<u8>),
        Chunked {
            chunks: Vec<Vec<u8>>,
            extension: bool,
            trailer: bool,
        },
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..120),
            1 => Just(SMUGGLE.to_vec()),
            1 => Just(b"0\r\n\r\n".to_vec()),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            ("[a-z0-9/._-]{0,24}", 0..3usize)
                .prop_map(|(path, empty_lines)| Message::Get { path, empty_lines }),
            body().prop_map(Message::Fixed),
            (
                proptest::collection::vec(body().prop_filter("chunk", |c| !c.is_empty()), 0..4),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(chunks, extension, trailer)| Message::Chunked {
                    chunks,
                    extension,
                    trailer,
                }),
        ]
    }

    fn encode(messages: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        for message in messages {
            match message {
                Message::Get { path, empty_lines } => {
                    out.extend(b"\r\n".repeat(*empty_lines));
                    out.extend(format!("GET /{path} HTTP/1.1\r\nHost: h\r\n\r\n").bytes());
                }
                Message::Fixed(body) => {
                    let len = body.len();
                    out.extend(
                        format!("POST /f HTTP/1.1\r\nContent-Length: {len}\r\n\r\n").bytes(),
                    );
                    out.extend(body);
                }
                Message::Chunked {
                    chunks,
                    extension,
                    trailer,
                } => {
                    out.extend(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
                    for chunk in chunks {
                        let ext = if *extension { ";e=1" } else { "" };
                        out.extend(format!("{:X}{ext}\r\n", chunk.len()).bytes());
                        out.extend(chunk);
                        out.extend(b"\r\n");
                    }
                    out.extend(b"0\r\n");
                    if *trailer {
                        out.extend(b"X-Trailer: GET / HTTP/1.1\r\n");
                    }
                    out.extend(b"\r\n");
                }
            }
        }
        out
    }

    fn cut(input: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let mut rest = input;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk.to_vec());
            rest = tail;
        }
        chunks
    }

    proptest! {
        #[test]
        fn valid_streams_pass_unchanged(
            messages in proptest::collection::vec(message(), 1..6),
            sizes in proptest::collection::vec(1..80usize, 1..20),
            read_size in 1..2048usize,
            pending_between in any::<bool>(),
        ) {
            let input = encode(&messages);
            let mut script = Script::new(cut(&input, &sizes));
            script.pending_between = pending_between;
            let run = run_with(script, FramingLimits::default(), read_size);
            prop_assert!(run.out == input);
            prop_assert!(run.eof && run.follows);
            prop_assert_eq!(run.heads, messages.len() as u64);
            for index in 0..=messages.len() as u64 {
                prop_assert_eq!(run.verdict.rejection_for(index), None);
            }
        }

        #[test]
        fn bad_request_after_valid_ones_is_replaced(
            messages in proptest::collection::vec(message(), 0..5),
            bad in proptest::sample::select(BAD_FRAMING),
            sizes in proptest::collection::vec(1..80usize, 1..20),
            read_size in 1..2048usize,
        ) {
            let good = encode(&messages);
            let head = format!("PUT /r HTTP/1.1\r\nHost: x\r\n{bad}\r\n\r\n");
            let input = cat(&[&good, head.as_bytes(), b"0\r\n\r\n", GET]);
            let script = Script::new(cut(&input, &sizes));
            let run = run_with(script, FramingLimits::default(), read_size);
            prop_assert!(run.out == with_sentinel(&good));
            let index = messages.len() as u64;
            prop_assert_eq!(run.verdict.rejection_for(index), Some(Rejection::BadFraming));
            prop_assert_eq!(run.verdict.rejection_for(index + 1), None);
        }
    }
}
