//! Strict HTTP/1.1 request framing in front of hyper's HTTP/1 server.
//!
//! hyper accepts framings that other HTTP implementations read differently (Content-Length with
//! Transfer-Encoding, repeated Content-Length, `gzip, chunked`) and has no 414/431 limits; a
//! proxy that passes such requests on can be used for request smuggling. The guard refuses them
//! before hyper sees their bytes.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use head::{Framer, Scan};

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

mod chunked;
mod head;
#[cfg(test)]
mod tests;
