//! Following message boundaries: where each request head starts and ends, and whether it
//! breaks a framing rule.

use std::mem::MaybeUninit;

use super::chunked::{ChunkStep, ChunkedBody};
use super::{FramingLimits, Rejection, STACK_HEADER_SLOTS};

/// Outcome of feeding bytes to the [`Framer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
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
pub(super) enum HeadStep {
    /// Accepted; this many bytes long. The framer now expects its body.
    Accepted(usize),
    Incomplete,
    Rejected(Rejection),
    Lost,
}

pub(super) enum Parsed {
    Complete(HeadStep),
    Partial,
    TooManyHeaders,
    Invalid,
}

/// Where the framer is in the client's message stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    Head,
    Length(u64),
    Chunked(ChunkedBody),
}

/// Follows HTTP/1.1 message boundaries the way hyper's server does.
#[derive(Debug)]
pub(super) struct Framer {
    limits: FramingLimits,
    at: At,
    /// Index of the next head, as hyper will count requests.
    pub(super) next_index: u64,
    /// An Upgrade or CONNECT request was accepted: what follows may be a tunnel.
    pub(super) tunnel: bool,
    head_scan: HeadScan,
}

/// Incremental look at a head that arrives in pieces, so a slow client does not make the guard
/// re-parse the whole head on every read.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HeadScan {
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
    pub(super) fn new(limits: FramingLimits) -> Self {
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
    pub(super) fn scan(&mut self, data: &[u8], resume: bool) -> Scan {
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
pub(super) fn line_len_before(data: &[u8], lf: usize) -> usize {
    if lf > 0 && data[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    }
}

pub(super) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Digits only, as hyper requires; also no sign, no list and no overflow.
pub(super) fn parse_content_length(value: &[u8]) -> Option<u64> {
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

pub(super) enum EmptyLines {
    /// This many bytes of empty lines, then a head byte or the end of the data.
    Head(usize),
    /// This many bytes of empty lines, then a CR that ends the data.
    LoneCr(usize),
    /// A CR not followed by LF: httparse (and so hyper) rejects that.
    Invalid,
}

/// Empty lines before a request, which httparse skips (RFC 9112 section 2.2).
pub(super) fn skip_empty_lines(data: &[u8]) -> EmptyLines {
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
