//! Message bodies passed through as they are: a cursor that knows where a body ends (by
//! length, by chunked coding, or at the close of the connection) and a relay that copies
//! exactly that much from one side to the other, a buffer at a time.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How a message's body is delimited (RFC 9112 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding, passed through unchanged.
    Chunked,
    /// Everything until the sender closes (answers only).
    UntilClose,
}

/// Why a body could not be passed on.
#[derive(Debug)]
pub enum RelayError {
    /// The sender's bytes are not a valid body (bad chunk sizes).
    Malformed(&'static str),
    /// The sender closed or failed before the body ended.
    Source,
    /// The receiver closed or failed.
    Sink,
    /// The sender sent nothing for the idle timeout.
    Idle,
}

/// Where in a body the relay is.
#[derive(Debug)]
pub struct Cursor {
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where in the chunked coding: a size line, chunk data, or the trailer section.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Hex digits of a chunk size (`digits` so far).
    Size { size: u64, digits: u8 },
    /// A chunk extension, up to the line's end (`left`: bytes it may still take).
    Extension { size: u64, left: u16 },
    /// The line feed ending a size line.
    SizeLf { size: u64 },
    /// Chunk data still to come.
    Data(u64),
    /// The CR LF after chunk data (`cr_seen`).
    DataEnd { cr_seen: bool },
    /// A trailer line (or the final empty line): `len` bytes of it so far, `cr` seen.
    Trailer { len: u16, cr: bool, total: u16 },
}

/// Longest chunk extension or trailer line, and all trailers together.
const MAX_LINE: u16 = 4096;
const MAX_TRAILERS: u16 = 16 * 1024;

impl Cursor {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0 }),
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Whether the whole body has gone through.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// How many of `bytes` (which follow what was taken before) belong to the body.
    pub fn take(&mut self, bytes: &[u8]) -> Result<usize, RelayError> {
        match &mut self.state {
            State::Done => Ok(0),
            State::UntilClose => Ok(bytes.len()),
            State::Length(left) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                if *left == 0 {
                    self.state = State::Done;
                }
                Ok(n as usize)
            }
            State::Chunked(chunk) => {
                let mut at = 0;
                while at < bytes.len() {
                    match step(chunk, &bytes[at..])? {
                        (used, false) => at += used,
                        (used, true) => {
                            self.state = State::Done;
                            return Ok(at + used);
                        }
                    }
                }
                Ok(at)
            }
        }
    }

    /// The sender closed: fine only for a body that runs until the close.
    fn closed(&mut self) -> Result<(), RelayError> {
        match self.state {
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            State::Done => Ok(()),
            _ => Err(RelayError::Source),
        }
    }
}

/// Advances the chunked coding over the start of `bytes`: bytes used, and whether the body
/// ended there.
fn step(chunk: &mut Chunk, bytes: &[u8]) -> Result<(usize, bool), RelayError> {
    let bad = RelayError::Malformed;
    match *chunk {
        Chunk::Data(left) => {
            let n = left.min(bytes.len() as u64);
            *chunk = if n == left {
                Chunk::DataEnd { cr_seen: false }
            } else {
                Chunk::Data(left - n)
            };
            return Ok((n as usize, false));
        }
        Chunk::Size { size, digits } => {
            let b = bytes[0];
            *chunk = match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 15 {
                        return Err(bad("a chunk size is too large"));
                    }
                    let v = (b as char).to_digit(16).unwrap_or(0);
                    Chunk::Size {
                        size: size * 16 + u64::from(v),
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(bad("a chunk size is missing")),
                b';' | b' ' | b'\t' => Chunk::Extension {
                    size,
                    left: MAX_LINE,
                },
                b'\r' => Chunk::SizeLf { size },
                _ => return Err(bad("a chunk size line is malformed")),
            };
        }
        Chunk::Extension { size, left } => {
            *chunk = match bytes[0] {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => return Err(bad("a chunk size line is malformed")),
                _ if left == 0 => return Err(bad("a chunk extension is too long")),
                _ => Chunk::Extension {
                    size,
                    left: left - 1,
                },
            };
        }
        Chunk::SizeLf { size } => {
            if bytes[0] != b'\n' {
                return Err(bad("a chunk size line is malformed"));
            }
            *chunk = if size == 0 {
                Chunk::Trailer {
                    len: 0,
                    cr: false,
                    total: 0,
                }
            } else {
                Chunk::Data(size)
            };
        }
        Chunk::DataEnd { cr_seen } => {
            *chunk = match (cr_seen, bytes[0]) {
                (false, b'\r') => Chunk::DataEnd { cr_seen: true },
                (true, b'\n') => Chunk::Size { size: 0, digits: 0 },
                _ => return Err(bad("chunk data does not end with CRLF")),
            };
        }
        Chunk::Trailer { len, cr, total } => {
            let b = bytes[0];
            if total >= MAX_TRAILERS {
                return Err(bad("the trailer section is too long"));
            }
            match (cr, b) {
                (true, b'\n') if len == 0 => return Ok((1, true)),
                (true, b'\n') => {
                    *chunk = Chunk::Trailer {
                        len: 0,
                        cr: false,
                        total: total + 1,
                    }
                }
                (false, b'\r') => {
                    *chunk = Chunk::Trailer {
                        len,
                        cr: true,
                        total: total + 1,
                    }
                }
                (false, _) if len < MAX_LINE && b != b'\n' => {
                    *chunk = Chunk::Trailer {
                        len: len + 1,
                        cr: false,
                        total: total + 1,
                    }
                }
                _ => return Err(bad("a trailer line is malformed")),
            }
        }
    }
    Ok((1, false))
}

/// Reads more into `buf` (at least one byte), waiting at most `idle`; `Ok(false)` when
/// the sender closed.
pub async fn fill<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<bool, RelayError> {
    buf.reserve(READ_CHUNK);
    match tokio::time::timeout(idle, src.read_buf(buf)).await {
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(_)) => Err(RelayError::Source),
        Err(_) => Err(RelayError::Idle),
    }
}

/// How much a read asks for at once.
const READ_CHUNK: usize = 16 * 1024;

/// Copies the rest of a body from `buf` and then `src` to `dst`, leaving in `buf` whatever
/// follows the body (a pipelined request).
pub async fn relay<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    cursor: &mut Cursor,
    idle: Duration,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if !buf.is_empty() && !cursor.done() {
            let n = cursor.take(buf)?;
            // A receiver that takes nothing for the idle timeout is given up on.
            match tokio::time::timeout(idle, dst.write_all(&buf[..n])).await {
                Ok(Ok(())) => {}
                _ => return Err(RelayError::Sink),
            }
            buf.advance(n);
        }
        if cursor.done() {
            return Ok(());
        }
        if !fill(src, buf, idle).await? {
            return cursor.closed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(framing: Framing, parts: &[&[u8]]) -> Result<(usize, bool), RelayError> {
        let mut c = Cursor::new(framing);
        let mut used = 0;
        for p in parts {
            used += c.take(p)?;
            if c.done() {
                break;
            }
        }
        Ok((used, c.done()))
    }

    #[test]
    fn chunked_bodies_end_where_the_coding_says_even_split_byte_by_byte() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        assert_eq!(feed_all(Framing::Chunked, &[body]).unwrap(), (end, true));
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(feed_all(Framing::Chunked, &bytes).unwrap(), (end, true));
        let plain = b"0\r\n\r\n";
        assert_eq!(feed_all(Framing::Chunked, &[plain]).unwrap(), (5, true));
        let partial = b"a\r\n0123";
        assert_eq!(feed_all(Framing::Chunked, &[partial]).unwrap(), (7, false));
    }

    #[test]
    fn bad_chunking_is_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"4\r\nWikiXX",
            b"1234567890abcdef0\r\n",
            b"4\n",
        ] {
            assert!(
                feed_all(Framing::Chunked, &[bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lengths_stop_at_their_end() {
        assert_eq!(
            feed_all(Framing::Length(3), &[b"ab", b"cdef"]).unwrap(),
            (3, true)
        );
        assert_eq!(feed_all(Framing::Empty, &[b"abc"]).unwrap(), (0, true));
        assert_eq!(
            feed_all(Framing::UntilClose, &[b"abc"]).unwrap(),
            (3, false)
        );
    }
}
