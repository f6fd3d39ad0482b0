//! The chunked body decoder: hyper's states, so the guard and hyper agree where a body ends.

use super::HYPER_CHUNK_EXTENSIONS_LIMIT;

/// Chunked body state, byte for byte the states of hyper's decoder, so both agree on where the
/// body ends; anything hyper would fail on ends inspection instead (hyper closes after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkState {
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

pub(super) enum ChunkStep {
    /// Everything consumed; the body goes on.
    More,
    /// The body ended after this many bytes.
    Done(usize),
    Invalid,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkedBody {
    state: ChunkState,
    size: u64,
    extension_bytes: u64,
}

impl ChunkedBody {
    pub(super) fn new() -> Self {
        ChunkedBody {
            state: ChunkState::Start,
            size: 0,
            extension_bytes: 0,
        }
    }

    pub(super) fn advance(&mut self, data: &[u8]) -> ChunkStep {
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

pub(super) fn hex_digit(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}
