//! The framing guard's tests: rules, limits, every split of the input, and hyper behind it.

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
    let bare: &[u8] = b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
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

/// A head too large is refused as the first message, and as the second after a good one.
fn check_too_large(first: &[u8], after_get: &[u8]) {
    check_big(first, SENTINEL, Some((0, Rejection::HeadTooLarge)));
    check_big(
        after_get,
        &with_sentinel(GET),
        Some((1, Rejection::HeadTooLarge)),
    );
}

#[test]
fn header_count_limit() {
    let ok = cat(&[&with_headers(100), GET]);
    check_big(&ok, &ok, None);
    check_too_large(&with_headers(101), &cat(&[GET, &with_headers(101)]));
    check_big(
        &with_headers(150),
        SENTINEL,
        Some((0, Rejection::HeadTooLarge)),
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
    check_too_large(&head_of(65537), &cat(&[GET, &head_of(70000), GET]));
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
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
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
                out.extend(format!("POST /f HTTP/1.1\r\nContent-Length: {len}\r\n\r\n").bytes());
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
