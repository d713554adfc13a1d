//! Streaming body decoder: content-length, chunked (extensions ignored, trailers kept or
//! dropped), read-until-close and none. Input may be split at any byte; the decoder consumes
//! exactly the body's bytes and leaves whatever follows (a pipelined request) untouched.

use std::ops::Range;

use super::error::{ErrorKind, Http1Error};
use super::head::BodyKind;
use super::head::Headers;
use super::{Limits, parse, syntax};

/// Longest chunk-size line Arc accepts (size, extensions and BWS together).
pub const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { remaining: u64 },
    UntilClose,
    Size { value: u64 },
    SizeWs { value: u64 },
    Ext { value: u64 },
    SizeLf { value: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// What one [`BodyDecoder::decode`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyStep {
    /// Bytes of the input that belong to the body (framing included); never more than the
    /// input, never past the body's end.
    pub consumed: usize,
    /// Body data inside the input (`input[data]`), possibly empty.
    pub data: Range<usize>,
    /// The body is complete; `consumed` stops exactly at its end.
    pub done: bool,
}

/// Decodes one message body incrementally.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    max_body: Option<u64>,
    /// Data bytes delivered (chunked: declared by chunk sizes read so far).
    total: u64,
    /// Bytes of the current chunk-size line.
    line_len: usize,
    keep_trailers: bool,
    max_trailer: usize,
    max_trailer_lines: usize,
    trailer_lines: usize,
    trailer_bytes: usize,
    trailer_buf: Vec<u8>,
    trailers: Option<Headers>,
    /// An error met after data in the same call: the data is returned first, the error on
    /// the next call, so the events do not depend on how the input was split.
    pending: Option<Http1Error>,
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`. `limits.max_body` bounds the data (413);
    /// trailers are bounded by `max_head` (431) and `max_headers`, and kept only when
    /// `keep_trailers` (read them with [`BodyDecoder::take_trailers`]). A content-length over
    /// the limit is refused here, before any byte is read.
    pub fn new(kind: BodyKind, limits: &Limits, keep_trailers: bool) -> Result<Self, Http1Error> {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => {
                if limits.max_body.is_some_and(|max| n > max) {
                    return Err(Http1Error::with_header(
                        ErrorKind::BodyTooLarge,
                        b"Content-Length",
                    ));
                }
                State::Length { remaining: n }
            }
            BodyKind::Chunked => State::Size { value: 0 },
            BodyKind::UntilClose => State::UntilClose,
        };
        Ok(BodyDecoder {
            state,
            max_body: limits.max_body,
            total: 0,
            line_len: 0,
            keep_trailers,
            max_trailer: limits.max_head,
            max_trailer_lines: limits.max_headers,
            trailer_lines: 0,
            trailer_bytes: 0,
            trailer_buf: Vec::new(),
            trailers: None,
            pending: None,
        })
    }

    /// True once the whole body has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes seen so far (for chunked: declared by the chunk sizes read).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The trailer section of a chunked body, once done (when kept and non-empty).
    pub fn take_trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }

    /// The peer closed the connection: fine for a read-until-close body (which is then
    /// complete) or a finished one, an error otherwise.
    pub fn finish_eof(&mut self) -> Result<(), Http1Error> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(ErrorKind::IncompleteBody.into()),
        }
    }

    /// Consumes body bytes from the front of `input`: framing bytes, then at most one run of
    /// data (returned as a range of `input`), then framing bytes up to the next data or the end.
    /// After an error the decoder stays failed: the same error comes back on every call.
    pub fn decode(&mut self, input: &[u8]) -> Result<BodyStep, Http1Error> {
        if let Some(e) = &self.pending {
            return Err(e.clone());
        }
        let result = self.decode_inner(input);
        if let Err(e) = &result {
            self.pending = Some(e.clone());
        }
        result
    }

    fn decode_inner(&mut self, input: &[u8]) -> Result<BodyStep, Http1Error> {
        let mut i = 0usize;
        let mut data = 0..0;
        loop {
            if self.state == State::Done || i >= input.len() {
                break;
            }
            match self.state {
                State::Done => break,
                State::Length { remaining } => {
                    if !data.is_empty() {
                        break;
                    }
                    let n = take(remaining, input.len() - i);
                    data = i..i + n;
                    i += n;
                    self.total += n as u64;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length { remaining: left }
                    };
                }
                State::UntilClose => {
                    if !data.is_empty() {
                        break;
                    }
                    let n = input.len() - i;
                    self.total = self.total.saturating_add(n as u64);
                    if self.max_body.is_some_and(|max| self.total > max) {
                        return Err(ErrorKind::BodyTooLarge.into());
                    }
                    data = i..i + n;
                    i += n;
                }
                State::Data { remaining } => {
                    if !data.is_empty() {
                        break;
                    }
                    let n = take(remaining, input.len() - i);
                    data = i..i + n;
                    i += n;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                }
                _ => {
                    let b = input.get(i).copied().unwrap_or(0);
                    if let Err(e) = self.byte(b) {
                        if data.is_empty() {
                            return Err(e);
                        }
                        self.pending = Some(e);
                        break;
                    }
                    i += 1;
                }
            }
        }
        Ok(BodyStep {
            consumed: i,
            data,
            done: self.state == State::Done,
        })
    }

    /// One framing byte of a chunked body.
    fn byte(&mut self, b: u8) -> Result<(), Http1Error> {
        match self.state {
            State::Size { value } => {
                self.count_line()?;
                if let Some(d) = syntax::hex_value(b) {
                    if value > u64::MAX >> 4 {
                        return Err(ErrorKind::ChunkSizeOverflow.into());
                    }
                    self.state = State::Size {
                        value: value << 4 | u64::from(d),
                    };
                } else if self.line_len == 1 {
                    // No digit before this byte.
                    return Err(ErrorKind::InvalidChunkSize.into());
                } else {
                    self.state = match b {
                        b';' => State::Ext { value },
                        b' ' | b'\t' => State::SizeWs { value },
                        b'\r' => State::SizeLf { value },
                        _ => return Err(ErrorKind::InvalidChunkSize.into()),
                    };
                }
            }
            State::SizeWs { value } => {
                self.count_line()?;
                self.state = match b {
                    b' ' | b'\t' => State::SizeWs { value },
                    b';' => State::Ext { value },
                    _ => return Err(ErrorKind::InvalidChunkSize.into()),
                };
            }
            State::Ext { value } => {
                self.count_line()?;
                match b {
                    b'\r' => self.state = State::SizeLf { value },
                    b'\t' => {}
                    0..=0x1f | 0x7f => return Err(ErrorKind::InvalidChunk.into()),
                    _ => {}
                }
            }
            State::SizeLf { value } => {
                if b != b'\n' {
                    return Err(ErrorKind::InvalidChunk.into());
                }
                self.line_len = 0;
                if value == 0 {
                    self.state = State::TrailerStart;
                } else {
                    let total = self.total.checked_add(value);
                    if self
                        .max_body
                        .is_some_and(|max| total.is_none_or(|t| t > max))
                    {
                        return Err(ErrorKind::BodyTooLarge.into());
                    }
                    self.total = total.unwrap_or(u64::MAX);
                    self.state = State::Data { remaining: value };
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ErrorKind::InvalidChunk.into());
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ErrorKind::InvalidChunk.into());
                }
                self.state = State::Size { value: 0 };
            }
            State::TrailerStart => match b {
                b'\r' => self.state = State::FinalLf,
                b' ' | b'\t' => return Err(Http1Error::new(ErrorKind::InvalidTrailer)),
                b'\n' => return Err(ErrorKind::InvalidChunk.into()),
                _ => {
                    self.trailer_lines += 1;
                    if self.trailer_lines > self.max_trailer_lines {
                        return Err(ErrorKind::TooManyHeaders.into());
                    }
                    self.trailer_byte(b)?;
                    self.state = State::TrailerLine;
                }
            },
            State::TrailerLine => match b {
                b'\r' => self.state = State::TrailerLf,
                b'\n' => return Err(ErrorKind::InvalidChunk.into()),
                _ => self.trailer_byte(b)?,
            },
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ErrorKind::InvalidChunk.into());
                }
                self.trailer_byte(b'\r')?;
                self.trailer_byte(b'\n')?;
                self.state = State::TrailerStart;
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err(ErrorKind::InvalidChunk.into());
                }
                if self.keep_trailers && !self.trailer_buf.is_empty() {
                    let buf = std::mem::take(&mut self.trailer_buf);
                    self.trailers = Some(parse::parse_trailers(buf)?);
                }
                self.state = State::Done;
            }
            State::Length { .. } | State::UntilClose | State::Data { .. } | State::Done => {}
        }
        Ok(())
    }

    fn count_line(&mut self) -> Result<(), Http1Error> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(ErrorKind::ChunkLineTooLong.into());
        }
        Ok(())
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), Http1Error> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer {
            return Err(ErrorKind::HeadTooLarge.into());
        }
        if self.keep_trailers {
            self.trailer_buf.push(b);
        }
        Ok(())
    }
}

/// `min(remaining, available)` as usize.
fn take(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Writes chunked framing around body data (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkedEncoder;

/// The terminating zero-size chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The size line of one chunk, on the stack (for vectored writes).
#[derive(Debug, Clone, Copy)]
pub struct ChunkSizeLine {
    buf: [u8; 18],
    len: u8,
}

impl AsRef<[u8]> for ChunkSizeLine {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl ChunkedEncoder {
    /// `{len:x}\r\n` for a chunk of `len` bytes (send the data and `\r\n` after it).
    pub fn size_line(len: u64) -> ChunkSizeLine {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digits = (64 - len.leading_zeros()).div_ceil(4).max(1) as usize;
        let mut buf = [0u8; 18];
        for (k, slot) in buf.iter_mut().take(digits).enumerate() {
            let shift = 4 * (digits - 1 - k);
            *slot = HEX[((len >> shift) & 0xf) as usize];
        }
        buf[digits] = b'\r';
        buf[digits + 1] = b'\n';
        ChunkSizeLine {
            buf,
            len: (digits + 2) as u8,
        }
    }

    /// Appends one chunk holding `data`; nothing for empty data (an empty chunk would end
    /// the body).
    pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        syntax::push_hex(out, data.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }

    /// Appends the last chunk, the trailers (if any) and the final CRLF.
    pub fn finish(out: &mut Vec<u8>, trailers: Option<&Headers>) {
        out.extend_from_slice(b"0\r\n");
        if let Some(t) = trailers {
            for h in t.iter() {
                super::encode::push_header(out, h.name, h.value);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}
