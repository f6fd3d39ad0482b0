//! The strict HTTP/1.1 framing guard on arbitrary client byte streams, cut into reads at
//! fuzzer-chosen points.
//!
//! Input: 4 control bytes, then `2 * n` bytes of cut positions (`n` from the control bytes),
//! then the stream. Invariants:
//! - the guard never panics and reaches EOF;
//! - what it releases is the stream unchanged, or (a head was rejected) a prefix of the stream
//!   followed by the sentinel request, with the rejection recorded in the verdict;
//! - the result does not depend on how the stream was cut into reads or on the read size
//!   (compared with the whole stream read at once), except for a malformed head that also
//!   breaks a size limit, refused with 414/431 by the guard or with 400 by hyper (see below).
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use tollgate_proxy::framing::{FramingGuard, FramingLimits, FramingVerdict, Rejection};

/// What the guard hands hyper in place of a rejected head (`framing::SENTINEL`).
const SENTINEL: &[u8] = b"GET / HTTP/1.1\r\nhost: tollgate.invalid\r\nconnection: close\r\n\r\n";

/// Hands out one chunk per read (as much as fits), then EOF; optionally `Pending` (with a
/// wake-up) before every read, as a socket without data does.
struct Chunks {
    chunks: VecDeque<Vec<u8>>,
    pending_between: bool,
    yielded: bool,
}

impl AsyncRead for Chunks {
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
        if let Some(chunk) = self.chunks.front_mut() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

struct Run {
    out: Vec<u8>,
    /// `rejection_for(i)` for every request index the stream can hold.
    verdicts: Vec<Option<Rejection>>,
}

fn run(chunks: Vec<Vec<u8>>, limits: FramingLimits, read_size: usize, pending: bool) -> Run {
    // Every request takes at least one byte of the stream, so no head index goes beyond it.
    let checked_indices = chunks.iter().map(Vec::len).sum::<usize>() as u64 + 1;
    let verdict = Arc::new(FramingVerdict::default());
    let script = Chunks {
        chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        pending_between: pending,
        yielded: false,
    };
    let mut guard = FramingGuard::new(script, limits, Arc::clone(&verdict));
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    // Every poll either makes progress or yields once before making progress; the bound only
    // turns a hang into a failure.
    let mut polls = 0usize;
    loop {
        polls += 1;
        assert!(polls < 1_000_000, "the guard does not reach EOF");
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => break,
            Poll::Ready(Ok(())) => out.extend_from_slice(read.filled()),
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => {}
        }
    }
    let verdicts = (0..checked_indices)
        .map(|i| verdict.rejection_for(i))
        .collect();
    Run { out, verdicts }
}

fn limits(ctl: &[u8]) -> FramingLimits {
    if ctl[0] & 1 == 0 {
        return FramingLimits::default();
    }
    // Small limits so 414 and 431 are reachable with short inputs. The head limit stays
    // above the request line limit (as in the defaults): with a head limit below it, a long
    // request line is refused with 431 or 414 depending on where the reads end.
    let max_request_line = 4 + usize::from(ctl[1]);
    FramingLimits {
        max_request_line,
        max_head_bytes: max_request_line + 2 + 4 * usize::from(ctl[2]),
        max_headers: usize::from((ctl[0] >> 1) % 16),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((ctl, rest)) = data.split_at_checked(4) else {
        return;
    };
    let cuts = usize::from(ctl[3] >> 4);
    let Some((cut_bytes, stream)) = rest.split_at_checked(2 * cuts) else {
        return;
    };
    let limits = limits(ctl);
    let read_size = [1, 7, 300, 16 * 1024][usize::from(ctl[3] & 3)];
    let pending = ctl[3] & 4 != 0;

    let mut at: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    at.sort_unstable();
    at.dedup();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for &cut in at.iter().chain(std::iter::once(&stream.len())) {
        chunks.push(stream[prev..cut].to_vec());
        prev = cut;
    }

    let cut_run = run(chunks, limits, read_size, pending);

    // Unchanged, or a prefix of the stream and the sentinel with a rejection on record.
    if cut_run.out != stream {
        let sentinel_at = cut_run.out.len().checked_sub(SENTINEL.len());
        let rejected = sentinel_at.is_some_and(|k| {
            cut_run.out[k..] == *SENTINEL && stream.get(..k) == Some(&cut_run.out[..k])
        });
        assert!(
            rejected,
            "output is neither the stream nor a prefix of it plus the sentinel"
        );
        assert!(
            cut_run.verdicts.iter().any(Option::is_some),
            "a head was replaced but no rejection was recorded"
        );
    }
    assert!(
        cut_run.verdicts.iter().filter(|v| v.is_some()).count() <= 1,
        "more than one request rejected"
    );

    // Reading the whole stream at once decides the same, with one known exception: a head
    // that breaks a size limit and is also malformed. When a read ends while the head is
    // still well-formed, the guard refuses it by the limit (414/431); when the malformed part
    // arrives before the guard looks, it gives up and hyper refuses it (400). Either way the
    // request is refused, so that difference is tolerated; any other is not.
    let whole = run(vec![stream.to_vec()], limits, 16 * 1024, false);
    if whole.out == cut_run.out {
        // After an Upgrade the bytes pass unchanged and later heads are only recorded: the
        // same exception shows as a limit rejection on one side and none on the other.
        for (w, c) in whole.verdicts.iter().zip(&cut_run.verdicts) {
            assert!(
                w == c
                    || matches!(
                        (w, c),
                        (None, Some(Rejection::UriTooLong | Rejection::HeadTooLarge))
                            | (Some(Rejection::UriTooLong | Rejection::HeadTooLarge), None)
                    ),
                "verdict depends on the cuts: {:?} vs {:?}",
                whole.verdicts,
                cut_run.verdicts
            );
        }
        return;
    }
    let (limited, other) = if whole.out == stream {
        (&cut_run, &whole)
    } else {
        (&whole, &cut_run)
    };
    assert!(
        other.out == stream && other.verdicts.iter().all(Option::is_none),
        "output depends on the cuts: {} vs {} bytes",
        whole.out.len(),
        cut_run.out.len()
    );
    assert!(
        limited
            .verdicts
            .iter()
            .flatten()
            .all(|r| matches!(r, Rejection::UriTooLong | Rejection::HeadTooLarge)),
        "a framing rejection depends on the cuts: {:?} vs {:?}",
        whole.verdicts,
        cut_run.verdicts
    );
});
