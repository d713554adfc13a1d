//! Byte classes and small number codecs of the RFC 9110 / RFC 9112 grammar, shared by the
//! parsers and the writers.

/// Class bit: `tchar` of RFC 9110 §5.6.2 (methods, header names, coding names).
const TCHAR: u8 = 1;
/// Class bit: a byte allowed inside a field value (HTAB, SP, VCHAR, obs-text).
const FIELD: u8 = 2;
/// Class bit: a byte allowed in a request target (visible ASCII).
const TARGET: u8 = 4;
/// Class bit: a byte of a `reg-name` / IPv4 host (unreserved, pct-encoded's `%`, sub-delims).
const REG_NAME: u8 = 8;

/// One class byte per input byte, built at compile time: every per-byte check of the parser is
/// one table load and a mask instead of a chain of range comparisons.
static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        let alnum = b.is_ascii_alphanumeric();
        if alnum
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            c |= TCHAR;
        }
        if b == b'\t' || (b >= 0x20 && b <= 0x7e) || b >= 0x80 {
            c |= FIELD;
        }
        if b >= 0x21 && b <= 0x7e {
            c |= TARGET;
        }
        if alnum
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
        {
            c |= REG_NAME;
        }
        t[i] = c;
        i += 1;
    }
    t
};

#[inline(always)]
fn class(b: u8) -> u8 {
    CLASSES[usize::from(b)]
}

/// `tchar` of RFC 9110 §5.6.2: the bytes of methods, header names and coding names.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    class(b) & TCHAR != 0
}

/// A byte allowed inside a field value: HTAB, SP, VCHAR, obs-text.
#[inline]
pub(crate) fn is_field_byte(b: u8) -> bool {
    class(b) & FIELD != 0
}

/// A byte allowed in a request target (visible ASCII; Arc refuses raw non-ASCII targets).
#[inline]
pub(crate) fn is_target_byte(b: u8) -> bool {
    class(b) & TARGET != 0
}

/// A byte of a `reg-name` or IPv4 host: ALPHA / DIGIT / `-._~%!$&'()*+,;=`.
#[inline]
pub(crate) fn is_reg_name_byte(b: u8) -> bool {
    class(b) & REG_NAME != 0
}

/// Index of the first byte of `s` that is not a `tchar` (`s.len()` when all are).
#[inline]
pub(crate) fn tchar_run(s: &[u8]) -> usize {
    s.iter().position(|&b| !is_tchar(b)).unwrap_or(s.len())
}

/// `0x01` in every byte of a word.
const LO: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HI: u64 = u64::from_ne_bytes([0x80; 8]);

/// Loads 8 bytes as a little-endian word.
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(chunk);
    u64::from_le_bytes(b)
}

/// Marks (high bit set) the bytes of `w` that are zero, exact up to the first such byte: the
/// lowest marked byte is the first zero byte.
#[inline(always)]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

/// Index of the first `needle` in `s`. Head lines are short: 8 bytes at a time with word
/// operations over the first 64 bytes (no call, no setup), then the SIMD search of `memchr`
/// for long lines.
#[inline]
pub(crate) fn find_byte(needle: u8, s: &[u8]) -> Option<usize> {
    let pattern = LO.wrapping_mul(u64::from(needle));
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for c in chunks.by_ref().take(8) {
        let hit = zero_bytes(word(c) ^ pattern);
        if hit != 0 {
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = s.get(at..).unwrap_or_default();
    if rest.len() >= 8 {
        return memchr::memchr(needle, rest).map(|i| at + i);
    }
    rest.iter().position(|&b| b == needle).map(|i| at + i)
}

/// The first byte of `s` that is not a field byte, if any.
#[inline]
pub(crate) fn first_non_field_byte(s: &[u8]) -> Option<u8> {
    // Field values are mostly long runs of good bytes: a word at a time, any byte below 0x20
    // (HTAB included: such words are looked at byte by byte) or equal to 0x7f sends the word
    // to the exact per-byte check.
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    const DEL: u64 = u64::from_ne_bytes([0x7f; 8]);
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = word(c);
        let below_space = w.wrapping_sub(SPACES) & !w & HI;
        if below_space | zero_bytes(w ^ DEL) != 0
            && let Some(b) = c.iter().copied().find(|&b| !is_field_byte(b))
        {
            return Some(b);
        }
    }
    chunks
        .remainder()
        .iter()
        .copied()
        .find(|&b| !is_field_byte(b))
}

/// SP or HTAB.
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing SP/HTAB.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The non-empty elements of a comma-separated list, each trimmed of OWS.
pub(crate) fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// `1*DIGIT` as a u64; `None` for anything else (sign, spaces, hex, overflow, empty).
pub(crate) fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// The value of one hex digit.
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `n` in lowercase hex without leading zeros.
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends the low `digits` hex digits of `n`, zero-padded, lowercase.
pub(crate) fn push_hex_fixed(out: &mut Vec<u8>, n: u128, digits: u32) {
    // Two digits per byte of `n` from the big-endian bytes, into a stack buffer first: one
    // append, no 128-bit shift per digit. An odd count drops the first digit.
    let digits = digits.min(32) as usize;
    let mut buf = [0u8; 32];
    for (pair, byte) in buf.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out.extend_from_slice(buf.get(32 - digits..).unwrap_or_default());
}

/// True when `s` is lowercase hex of exactly `len` digits, not all zero.
pub(crate) fn is_nonzero_lower_hex(s: &[u8], len: usize) -> bool {
    s.len() == len
        && s.iter()
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.iter().any(|&b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte classes as first written (range comparisons), kept as the reference the
    /// table must match.
    fn reference_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }
    fn reference_field(b: u8) -> bool {
        b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
    }
    fn reference_target(b: u8) -> bool {
        (0x21..=0x7e).contains(&b)
    }
    fn reference_reg_name(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b)
    }

    #[test]
    fn class_table_matches_the_reference_for_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(is_tchar(b), reference_tchar(b), "tchar {b:#04x}");
            assert_eq!(is_field_byte(b), reference_field(b), "field {b:#04x}");
            assert_eq!(is_target_byte(b), reference_target(b), "target {b:#04x}");
            assert_eq!(
                is_reg_name_byte(b),
                reference_reg_name(b),
                "reg-name {b:#04x}"
            );
        }
    }

    #[test]
    fn runs_find_the_first_bad_byte_at_every_position() {
        for len in 0..40usize {
            for at in 0..=len {
                for bad in [0u8, b'\r', b'\n', 0x7f, 0x1f] {
                    let mut v = vec![b'a'; len];
                    if at < len {
                        v[at] = bad;
                    }
                    let want = (at < len).then_some(bad);
                    assert_eq!(first_non_field_byte(&v), want, "len {len} at {at}");
                    let mut t = vec![b'x'; len];
                    if at < len {
                        t[at] = b':';
                    }
                    assert_eq!(tchar_run(&t), at, "len {len} at {at}");
                }
            }
        }
        for len in 0..140usize {
            for at in 0..=len {
                for needle in [b'\n', b':', 0u8, 0xff] {
                    let mut v = vec![b'a'; len];
                    // Bytes around the needle that the word trick could confuse.
                    if at > 0 {
                        v[at - 1] = needle.wrapping_add(1);
                    }
                    if at < len {
                        v[at] = needle;
                    }
                    let want = (at < len).then_some(at);
                    assert_eq!(find_byte(needle, &v), want, "len {len} at {at}");
                }
            }
        }
        // Every byte value in every position of a word agrees with the per-byte check.
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut v = vec![b'x'; 20];
                v[at] = b;
                let want = (!reference_field(b)).then_some(b);
                assert_eq!(first_non_field_byte(&v), want, "{b:#04x} at {at}");
                let mut v = vec![0x80u8; 20];
                v[at] = b;
                assert_eq!(
                    first_non_field_byte(&v),
                    want,
                    "{b:#04x} at {at} (obs-text)"
                );
                assert_eq!(
                    find_byte(b'\n', &v),
                    (b == b'\n').then_some(at),
                    "{b:#04x} at {at}"
                );
            }
        }
        // obs-text and HTAB are field bytes.
        assert_eq!(first_non_field_byte(b"\x80\xff\tab cd efgh ij"), None);
    }

    #[test]
    fn decimal_refuses_signs_spaces_and_overflow() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"0042"), Some(42));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b" 5",
            b"5 ",
            b"0x5",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn number_writers() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        out.push(b' ');
        push_hex(&mut out, 0);
        out.push(b' ');
        push_hex(&mut out, 0x1a2b);
        out.push(b' ');
        push_hex_fixed(&mut out, 0xab, 4);
        out.push(b' ');
        push_hex_fixed(&mut out, 0xabc, 3);
        out.push(b' ');
        push_hex_fixed(&mut out, u128::MAX - 1, 32);
        out.push(b' ');
        push_hex_fixed(&mut out, 0x0123_4567_89ab_cdef, 16);
        let want = format!(
            "0 18446744073709551615 0 1a2b 00ab abc {}e 0123456789abcdef",
            "f".repeat(31)
        );
        assert_eq!(out, want.as_bytes());
    }

    #[test]
    fn trims_and_lists() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
        let items: Vec<&[u8]> = list_elements(b" close ,, Upgrade,").collect();
        assert_eq!(items, vec![&b"close"[..], b"Upgrade"]);
    }
}
