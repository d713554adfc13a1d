//! Head parsing: an incremental scanner that finds the end of a head while enforcing the line
//! discipline and the size/count limits on partial input, then a strict parser of the complete
//! head into an owned [`RequestHead`] / [`ResponseHead`].

use super::Limits;
use super::error::{ErrorKind, Http1Error};
use super::framing;
use super::head::{
    BodyKind, Field, Headers, Method, RequestHead, ResponseHead, Span, Version, flags,
};
use super::syntax::{
    find_byte, first_non_field_byte, is_field_byte, is_ows, is_reg_name_byte, is_target_byte,
    is_tchar, tchar_run,
};

/// Where a head scan stands; kept between calls so partial input is never rescanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HeadScanner {
    /// Start of the start-line (after skipped empty lines).
    start: usize,
    /// Start of the next line to examine.
    pos: usize,
    /// Header lines seen so far.
    lines: usize,
    /// The start-line has been seen.
    started: bool,
}

/// Result of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// More bytes are needed.
    Partial,
    /// A complete head occupies `start..end`; `end` bytes are consumed with it.
    Complete { start: usize, end: usize },
}

impl HeadScanner {
    /// Examines `buf` (which starts where the head starts and holds at least the bytes seen at
    /// the previous call). `strict` refuses bare LF (requests); otherwise LF alone ends a line.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        strict: bool,
    ) -> Result<Scan, Http1Error> {
        let window = buf.get(..limits.max_head.min(buf.len())).unwrap_or(buf);
        loop {
            let rest = window.get(self.pos..).unwrap_or_default();
            let Some(i) = find_byte(b'\n', rest) else {
                return if buf.len() >= limits.max_head {
                    Err(ErrorKind::HeadTooLarge.into())
                } else {
                    Ok(Scan::Partial)
                };
            };
            let lf = self.pos + i;
            let has_cr = i > 0 && window.get(lf - 1) == Some(&b'\r');
            if !has_cr && strict {
                return Err(ErrorKind::BareLf.into());
            }
            let content_len = if has_cr { i - 1 } else { i };
            let next = lf + 1;
            if content_len == 0 {
                if self.started {
                    return Ok(Scan::Complete {
                        start: self.start,
                        end: next,
                    });
                }
                // Empty lines before the start-line are ignored (RFC 9112 §2.2).
                self.start = next;
            } else if !self.started {
                self.started = true;
            } else {
                self.lines += 1;
                if self.lines > limits.max_headers {
                    return Err(ErrorKind::TooManyHeaders.into());
                }
            }
            self.pos = next;
        }
    }
}

/// The error for a byte that is not allowed where it stands.
fn bad_byte(b: u8, otherwise: ErrorKind) -> ErrorKind {
    match b {
        0 => ErrorKind::NulByte,
        b'\r' => ErrorKind::BareCr,
        b'\n' => ErrorKind::BareLf,
        _ => otherwise,
    }
}

/// Lines of a complete head (without their CRLF / LF), the final empty line excluded.
fn lines(head: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = head.get(pos..)?;
        let i = find_byte(b'\n', rest)?;
        let line_start = pos;
        pos += i + 1;
        let line = rest.get(..i)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            None
        } else {
            Some((line_start, line))
        }
    })
}

/// Parses one header line (`line` starts at `offset` of the buffer) into a field.
#[inline]
fn parse_field(line: &[u8], offset: usize) -> Result<Field, Http1Error> {
    // One pass over the name: a colon is not a tchar, so the first non-tchar byte is the colon
    // of a well-formed line; anything else takes the error path below.
    let run = tchar_run(line);
    if run == 0 || line.get(run) != Some(&b':') {
        return Err(field_error(line));
    }
    let colon = run;
    let raw_value = line.get(colon + 1..).unwrap_or_default();
    if let Some(b) = first_non_field_byte(raw_value) {
        return Err(Http1Error::with_header(
            bad_byte(b, ErrorKind::InvalidHeaderValue),
            line.get(..colon).unwrap_or_default(),
        ));
    }
    let lead = raw_value
        .iter()
        .position(|&b| !is_ows(b))
        .unwrap_or(raw_value.len());
    let trail = raw_value
        .iter()
        .rev()
        .take(raw_value.len() - lead)
        .position(|&b| !is_ows(b))
        .unwrap_or(0);
    let value_start = offset + colon + 1 + lead;
    let value_end = offset + line.len() - trail;
    Ok(Field {
        name: Span::new(offset, offset + colon),
        value: Span::new(value_start, value_end),
    })
}

/// The error of a header line whose name is empty, not a token, or not followed by a colon.
#[cold]
fn field_error(line: &[u8]) -> Http1Error {
    if line.first().is_some_and(|&b| is_ows(b)) {
        return ErrorKind::ObsFold.into();
    }
    let colon = memchr::memchr(b':', line);
    let name = line.get(..colon.unwrap_or(line.len())).unwrap_or_default();
    if let Some(bad) = name.iter().position(|&b| !is_tchar(b)) {
        let b = name.get(bad).copied().unwrap_or(0);
        let kind = if is_ows(b)
            && colon.is_some()
            && name
                .get(bad..)
                .unwrap_or_default()
                .iter()
                .all(|&c| is_ows(c))
        {
            ErrorKind::WhitespaceBeforeColon
        } else {
            bad_byte(b, ErrorKind::InvalidHeaderName)
        };
        return Http1Error::with_header(kind, name.get(..bad).unwrap_or_default());
    }
    if colon.is_none() {
        return Http1Error::with_header(ErrorKind::InvalidHeaderName, name);
    }
    ErrorKind::InvalidHeaderName.into()
}

/// Parses the header lines of `buf` that follow the start-line into `fields`.
fn parse_fields<'a>(
    mut it: impl Iterator<Item = (usize, &'a [u8])>,
    fields: &mut Vec<Field>,
) -> Result<(), Http1Error> {
    for (offset, line) in &mut it {
        fields.push(parse_field(line, offset)?);
    }
    Ok(())
}

/// Parses a trailer section (header lines, each ending CRLF, no final empty line needed).
pub(crate) fn parse_trailers(buf: Vec<u8>) -> Result<Headers, Http1Error> {
    let mut fields = Vec::new();
    {
        let mut with_end = lines(&buf).peekable();
        parse_fields(&mut with_end, &mut fields).map_err(|e| match e.header() {
            Some(h) => Http1Error::with_header(ErrorKind::InvalidTrailer, h.as_bytes()),
            None => Http1Error::new(ErrorKind::InvalidTrailer),
        })?;
    }
    Ok(Headers { buf, fields })
}

/// The version token of a start-line.
fn parse_version(v: &[u8]) -> Result<Version, Http1Error> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(ErrorKind::UnsupportedVersion.into())
        }
        _ => Err(bad_byte(
            v.iter()
                .copied()
                .find(|&b| b == 0 || b == b'\r')
                .unwrap_or(b'x'),
            ErrorKind::InvalidVersion,
        )
        .into()),
    }
}

/// Parses a complete request head at the front of `buf`: `Ok(None)` when more bytes are
/// needed, else the head and the bytes it occupies (leading empty lines included). Enforces
/// `limits.max_head` and `limits.max_headers` on partial input too.
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, Http1Error> {
    let mut scanner = HeadScanner::default();
    match scanner.scan(buf, limits, true)? {
        Scan::Partial => Ok(None),
        Scan::Complete { start, end } => {
            let head = buf.get(start..end).unwrap_or_default();
            Ok(Some((
                build_request(Headers::from_head(head), limits)?,
                end,
            )))
        }
    }
}

/// Builds a request head from `store`, whose `buf` holds exactly the head's bytes (start-line
/// to the final empty line); its `fields` list is reused (cleared) for the parsed fields.
pub(crate) fn build_request(store: Headers, limits: &Limits) -> Result<RequestHead, Http1Error> {
    let Headers { buf, mut fields } = store;
    fields.clear();
    let mut it = lines(&buf);
    let (_, line) = it.next().ok_or(ErrorKind::InvalidMethod)?;

    // method SP request-target SP HTTP-version, single spaces.
    let sp1 = line
        .iter()
        .position(|&b| !is_tchar(b))
        .ok_or(ErrorKind::InvalidMethod)?;
    if sp1 == 0 || line.get(sp1) != Some(&b' ') {
        let b = line.get(sp1).copied().unwrap_or(b' ');
        return Err(bad_byte(b, ErrorKind::InvalidMethod).into());
    }
    let method_bytes = line.get(..sp1).unwrap_or_default();
    let method = Method::from_bytes(method_bytes);
    let after = line.get(sp1 + 1..).unwrap_or_default();
    let tlen = after
        .iter()
        .position(|&b| !is_target_byte(b))
        .ok_or(ErrorKind::InvalidVersion)?;
    if tlen == 0 || after.get(tlen) != Some(&b' ') {
        let b = after.get(tlen).copied().unwrap_or(b' ');
        return Err(bad_byte(b, ErrorKind::InvalidTarget).into());
    }
    let target = after.get(..tlen).unwrap_or_default();
    let version = parse_version(after.get(tlen + 1..).unwrap_or_default())?;
    if method == Method::Connect {
        return Err(ErrorKind::ConnectRefused.into());
    }
    let target_start = sp1 + 1;
    let mut f = 0u8;
    let (path, authority) = classify_target(target, target_start, method, &mut f)?;

    fields.reserve(16);
    parse_fields(it, &mut fields)?;

    let mut host: Option<Span> = None;
    let mut fr = framing::FramingFields::default();
    for field in &fields {
        let name = field.name.get(&buf);
        let value = field.value.get(&buf);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if host.is_some() {
                    return Err(Http1Error::with_header(ErrorKind::DuplicateHost, name));
                }
                if !valid_host(value) {
                    return Err(Http1Error::with_header(ErrorKind::InvalidHost, name));
                }
                host = Some(field.value);
            }
            // Expect is ignored on HTTP/1.0 (RFC 9110 §10.1.1).
            6 if name.eq_ignore_ascii_case(b"expect") && version == Version::Http11 => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    f |= flags::EXPECT_CONTINUE;
                } else {
                    return Err(Http1Error::with_header(
                        ErrorKind::UnsupportedExpectation,
                        name,
                    ));
                }
            }
            _ => fr.add(name, value)?,
        }
    }
    let framing::FramingFields {
        flags: framing_flags,
        content_length,
        codings,
    } = fr;
    f |= framing_flags;

    if version == Version::Http11 && host.is_none() {
        return Err(ErrorKind::MissingHost.into());
    }
    if let (Some(a), Some(h)) = (authority, host) {
        let scheme_default = if target
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"https"))
        {
            443
        } else {
            80
        };
        if !same_authority(a.get(&buf), h.get(&buf), scheme_default) {
            return Err(Http1Error::with_header(ErrorKind::HostMismatch, b"Host"));
        }
    }

    let body = match (codings, content_length) {
        (Some(_), Some(_)) => {
            return Err(Http1Error::with_header(
                ErrorKind::ContentLengthWithTransferEncoding,
                b"Transfer-Encoding",
            ));
        }
        (Some(c), None) => {
            if version == Version::Http10 {
                return Err(Http1Error::with_header(
                    ErrorKind::TransferEncodingHttp10,
                    b"Transfer-Encoding",
                ));
            }
            if !c.final_chunked || c.misplaced_chunked {
                return Err(Http1Error::with_header(
                    ErrorKind::TransferEncodingNotChunked,
                    b"Transfer-Encoding",
                ));
            }
            if c.unknown {
                return Err(Http1Error::with_header(
                    ErrorKind::UnsupportedTransferCoding,
                    b"Transfer-Encoding",
                ));
            }
            BodyKind::Chunked
        }
        (None, Some(n)) => {
            if limits.max_body.is_some_and(|max| n > max) {
                return Err(Http1Error::with_header(
                    ErrorKind::BodyTooLarge,
                    b"Content-Length",
                ));
            }
            BodyKind::Length(n)
        }
        (None, None) => BodyKind::None,
    };

    Ok(RequestHead {
        method,
        method_span: Span::new(0, sp1),
        target: Span::new(target_start, target_start + tlen),
        path,
        authority,
        host,
        version,
        body,
        flags: f,
        headers: Headers { buf, fields },
    })
}

/// Splits the request target into the origin-form part and the absolute-form authority.
fn classify_target(
    target: &[u8],
    at: usize,
    method: Method,
    f: &mut u8,
) -> Result<(Span, Option<Span>), Http1Error> {
    let whole = Span::new(at, at + target.len());
    match target.first() {
        Some(b'/') => Ok((whole, None)),
        Some(b'*') if target.len() == 1 && method == Method::Options => Ok((whole, None)),
        _ => {
            let rest_at = if target
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"http://"))
            {
                7
            } else if target
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"https://"))
            {
                8
            } else {
                return Err(ErrorKind::InvalidTarget.into());
            };
            let rest = target.get(rest_at..).unwrap_or_default();
            let alen = rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            let authority = rest.get(..alen).unwrap_or_default();
            // No userinfo, no empty host.
            if authority.is_empty() || authority.contains(&b'@') || !valid_host(authority) {
                return Err(ErrorKind::InvalidTarget.into());
            }
            let path = rest.get(alen..).unwrap_or_default();
            if path.first().is_some_and(|&b| b != b'/') {
                // `http://host?q` has an empty path: origin-form needs a leading slash, which
                // Arc does not invent; refuse the odd form.
                return Err(ErrorKind::InvalidTarget.into());
            }
            *f |= flags::ABSOLUTE_FORM;
            let a_start = at + rest_at;
            Ok((
                Span::new(a_start + alen, at + target.len()),
                Some(Span::new(a_start, a_start + alen)),
            ))
        }
    }
}

/// `uri-host [ ":" port ]`: reg-name / IPv4 / bracketed IP literal, optional digits port.
/// An empty value is allowed (RFC 9112 §3.2 for targets without authority).
pub(crate) fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    let (host, port) = split_host_port(v);
    if let Some(p) = port
        && (!p.iter().all(u8::is_ascii_digit) || p.len() > 5)
    {
        return false;
    }
    if let Some(inner) = host.strip_prefix(b"[") {
        let Some(inner) = inner.strip_suffix(b"]") else {
            return false;
        };
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'));
    }
    !host.is_empty() && host.iter().all(|&b| is_reg_name_byte(b))
}

/// Splits `host[:port]` (IP literals bracketed).
pub(crate) fn split_host_port(v: &[u8]) -> (&[u8], Option<&[u8]>) {
    let search_from = if v.first() == Some(&b'[') {
        v.iter().position(|&b| b == b']').unwrap_or(v.len())
    } else {
        0
    };
    match v
        .get(search_from..)
        .and_then(|r| r.iter().rposition(|&b| b == b':'))
    {
        Some(i) => {
            let c = search_from + i;
            (
                v.get(..c).unwrap_or_default(),
                Some(v.get(c + 1..).unwrap_or_default()),
            )
        }
        None => (v, None),
    }
}

/// Same host (case-insensitive) and same port, an absent port meaning the scheme's default.
fn same_authority(a: &[u8], b: &[u8], default_port: u16) -> bool {
    let (ha, pa) = split_host_port(a);
    let (hb, pb) = split_host_port(b);
    let port = |p: Option<&[u8]>| match p {
        None | Some(b"") => Some(u32::from(default_port)),
        Some(d) => super::syntax::parse_decimal(d).and_then(|n| u32::try_from(n).ok()),
    };
    ha.eq_ignore_ascii_case(hb) && port(pa) == port(pb)
}

/// Parses a complete response head at the front of `buf`, like [`parse_request_head`]. A bare
/// LF is accepted as a line end in responses (RFC 9112 §2.2 lets a recipient do so); bare CR,
/// obs-fold and CL with TE are still refused. Framing depends on the request: see
/// [`framing::response_framing`].
pub fn parse_response_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(ResponseHead, usize)>, Http1Error> {
    let mut scanner = HeadScanner::default();
    match scanner.scan(buf, limits, false)? {
        Scan::Partial => Ok(None),
        Scan::Complete { start, end } => {
            let head = buf.get(start..end).unwrap_or_default();
            Ok(Some((build_response(Headers::from_head(head))?, end)))
        }
    }
}

/// Builds a response head from `store` (see [`build_request`]).
pub(crate) fn build_response(store: Headers) -> Result<ResponseHead, Http1Error> {
    let Headers { buf, mut fields } = store;
    fields.clear();
    let mut it = lines(&buf);
    let (_, line) = it.next().ok_or(ErrorKind::InvalidStatus)?;
    let version = match line.get(..8) {
        Some(b"HTTP/1.1") => Version::Http11,
        Some(b"HTTP/1.0") => Version::Http10,
        Some(v) => {
            return Err(parse_version(v)
                .err()
                .unwrap_or(ErrorKind::InvalidVersion.into()));
        }
        None => return Err(ErrorKind::InvalidStatus.into()),
    };
    let code = match line.get(8..12) {
        Some([b' ', a, b, c]) if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(ErrorKind::InvalidStatus.into()),
    };
    if !(100..=599).contains(&code) {
        return Err(ErrorKind::InvalidStatus.into());
    }
    let reason = match line.get(12..) {
        None | Some([]) => Span::new(12, 12),
        Some([b' ', rest @ ..]) => {
            if let Some(&b) = rest.iter().find(|&&b| !is_field_byte(b)) {
                return Err(bad_byte(b, ErrorKind::InvalidStatus).into());
            }
            Span::new(13, line.len())
        }
        Some(_) => return Err(ErrorKind::InvalidStatus.into()),
    };

    fields.reserve(16);
    parse_fields(it, &mut fields)?;
    let mut f = 0u8;
    let mut fr = framing::FramingFields::default();
    for field in &fields {
        fr.add(field.name.get(&buf), field.value.get(&buf))?;
    }
    let framing::FramingFields {
        flags: framing_flags,
        content_length,
        codings,
    } = fr;
    f |= framing_flags;
    if codings.is_some() && content_length.is_some() {
        return Err(Http1Error::with_header(
            ErrorKind::ContentLengthWithTransferEncoding,
            b"Transfer-Encoding",
        ));
    }
    let chunked = codings.map(|c| c.final_chunked && !c.misplaced_chunked);
    Ok(ResponseHead {
        status: code,
        reason,
        version,
        content_length,
        chunked,
        flags: f,
        headers: Headers { buf, fields },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header-line parser as first written (separate colon search, name scan, value scan
    /// and trim), kept as the reference the one-pass parser must agree with.
    fn reference_parse_field(line: &[u8], offset: usize) -> Result<Field, Http1Error> {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let ows = |b: u8| b == b' ' || b == b'\t';
        let field_byte = |b: u8| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80;
        if line.first().is_some_and(|&b| ows(b)) {
            return Err(ErrorKind::ObsFold.into());
        }
        let colon = line.iter().position(|&b| b == b':');
        let name = &line[..colon.unwrap_or(line.len())];
        if let Some(bad) = name.iter().position(|&b| !tchar(b)) {
            let b = name[bad];
            let kind = if ows(b) && colon.is_some() && name[bad..].iter().all(|&c| ows(c)) {
                ErrorKind::WhitespaceBeforeColon
            } else {
                bad_byte(b, ErrorKind::InvalidHeaderName)
            };
            return Err(Http1Error::with_header(kind, &name[..bad]));
        }
        let Some(colon) = colon else {
            return Err(Http1Error::with_header(ErrorKind::InvalidHeaderName, name));
        };
        if name.is_empty() {
            return Err(ErrorKind::InvalidHeaderName.into());
        }
        let raw_value = &line[colon + 1..];
        if let Some(&b) = raw_value.iter().find(|&&b| !field_byte(b)) {
            return Err(Http1Error::with_header(
                bad_byte(b, ErrorKind::InvalidHeaderValue),
                name,
            ));
        }
        let start = raw_value
            .iter()
            .position(|&b| !ows(b))
            .unwrap_or(raw_value.len());
        let end = raw_value
            .iter()
            .rposition(|&b| !ows(b))
            .map_or(start, |i| i + 1);
        let value_start = offset + colon + 1 + start;
        Ok(Field {
            name: Span::new(offset, offset + colon),
            value: Span::new(value_start, value_start + (end - start)),
        })
    }

    fn check(line: &[u8]) {
        for offset in [0, 17] {
            assert_eq!(
                parse_field(line, offset),
                reference_parse_field(line, offset),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn every_byte_at_every_position_of_header_lines() {
        let templates: [&[u8]; 6] = [
            b"Name: value",
            b"X-A:b",
            b"a: \t v w \t",
            b"Host:",
            b": x",
            b"Accept-Encoding:  gzip, br  ",
        ];
        for t in templates {
            check(t);
            for at in 0..=t.len() {
                for b in 0..=255u8 {
                    // Replace the byte at `at`, and insert it there.
                    let mut replaced = t.to_vec();
                    if at < t.len() {
                        replaced[at] = b;
                        check(&replaced);
                    }
                    let mut inserted = t.to_vec();
                    inserted.insert(at, b);
                    check(&inserted);
                }
            }
        }
    }

    #[test]
    fn generated_header_lines_agree_with_the_reference() {
        // Bytes that matter to the grammar, weighted towards the interesting ones.
        const ALPHABET: &[u8] = b"aZ09-_:: \t\t\r\n\0\x7f\x80\xff,;\"(@";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let len = (next() % 24) as usize;
            let line: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            check(&line);
        }
    }

    #[test]
    fn host_values_use_the_reg_name_class() {
        for b in 0..=255u8 {
            let host = [b'a', b, b'b'];
            let reference = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
            // `:` splits off a port (`b` is not digits), so it is refused like other bytes.
            assert_eq!(valid_host(&host), reference, "{b:#04x}");
        }
    }
}
