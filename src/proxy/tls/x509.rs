//! A deliberately small X.509 reader: it walks the DER of one certificate just far enough to
//! report what the control API shows about it (subject common name, DNS and IP subject
//! alternative names, validity window). It never checks signatures or trust; rustls and webpki
//! do the real parsing when the certificate is used. Every access is bounds-checked: malformed
//! input yields [`X509Error`], never a panic.

use std::net::IpAddr;

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate DER: {0}")]
pub struct X509Error(pub &'static str);

/// What the certificate says about itself, as far as Arc reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCert {
    /// The subject's common name, when present and a string.
    pub common_name: Option<String>,
    /// `dNSName` entries of the subject alternative name extension, as written.
    pub dns_names: Vec<String>,
    /// `iPAddress` entries of the subject alternative name extension.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity, seconds since the Unix epoch (UTC).
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch (UTC).
    pub not_after: i64,
}

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;
const TAG_SAN_DNS: u8 = 0x82;
const TAG_SAN_IP: u8 = 0x87;

/// 2.5.29.17, subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.4.3, commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// A cursor over a run of DER TLVs.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one TLV, returning its tag and contents.
    fn next(&mut self) -> Result<(u8, &'a [u8]), X509Error> {
        let (&tag, after_tag) = self
            .rest
            .split_first()
            .ok_or(X509Error("unexpected end of data"))?;
        if tag & 0x1f == 0x1f {
            return Err(X509Error("multi-byte tags are not used in certificates"));
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(X509Error("missing length"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return Err(X509Error("unsupported length encoding"));
            }
            let (len_bytes, rest) = after_len
                .split_at_checked(count)
                .ok_or(X509Error("truncated length"))?;
            after_len = rest;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        let (contents, rest) = after_len
            .split_at_checked(len)
            .ok_or(X509Error("length runs past the end of the data"))?;
        self.rest = rest;
        Ok((tag, contents))
    }

    /// Reads one TLV that must carry `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], X509Error> {
        match self.next()? {
            (t, contents) if t == tag => Ok(contents),
            _ => Err(X509Error(what)),
        }
    }
}

/// Reads the reported fields from one DER certificate.
pub fn parse(der: &[u8]) -> Result<ParsedCert, X509Error> {
    let mut outer = Der::new(der);
    let cert = outer.expect(TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
    let mut cert = Der::new(cert);
    let tbs = cert.expect(TAG_SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut tbs = Der::new(tbs);
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.next()?;
    }
    tbs.expect(TAG_INTEGER, "serial number missing")?;
    tbs.expect(TAG_SEQUENCE, "signature algorithm missing")?;
    tbs.expect(TAG_SEQUENCE, "issuer missing")?;
    let validity = tbs.expect(TAG_SEQUENCE, "validity missing")?;
    let mut validity = Der::new(validity);
    let not_before = parse_time(validity.next()?)?;
    let not_after = parse_time(validity.next()?)?;
    let subject = tbs.expect(TAG_SEQUENCE, "subject missing")?;
    let common_name = common_name(subject)?;
    tbs.expect(TAG_SEQUENCE, "subject public key info missing")?;

    let mut parsed = ParsedCert {
        common_name,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        not_before,
        not_after,
    };
    while !tbs.is_empty() {
        let (tag, contents) = tbs.next()?;
        if tag == TAG_EXTENSIONS {
            let list = Der::new(contents).expect(TAG_SEQUENCE, "extensions are not a SEQUENCE")?;
            read_extensions(list, &mut parsed)?;
        }
    }
    Ok(parsed)
}

fn read_extensions(list: &[u8], parsed: &mut ParsedCert) -> Result<(), X509Error> {
    let mut list = Der::new(list);
    while !list.is_empty() {
        let ext = list.expect(TAG_SEQUENCE, "extension is not a SEQUENCE")?;
        let mut ext = Der::new(ext);
        let oid = ext.expect(TAG_OID, "extension id missing")?;
        if ext.peek_tag() == Some(TAG_BOOLEAN) {
            ext.next()?;
        }
        let value = ext.expect(TAG_OCTET_STRING, "extension value missing")?;
        if oid == OID_SUBJECT_ALT_NAME {
            let names = Der::new(value).expect(TAG_SEQUENCE, "subjectAltName is not a SEQUENCE")?;
            let mut names = Der::new(names);
            while !names.is_empty() {
                match names.next()? {
                    (TAG_SAN_DNS, name) => {
                        let name = std::str::from_utf8(name)
                            .map_err(|_| X509Error("dNSName is not ASCII"))?;
                        parsed.dns_names.push(name.to_owned());
                    }
                    (TAG_SAN_IP, ip) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(ip) {
                            parsed.ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(ip) {
                            parsed.ip_addresses.push(IpAddr::from(v6));
                        } else {
                            return Err(X509Error("iPAddress has a bad length"));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Finds the first commonName attribute of a Name (RDNSequence).
fn common_name(name: &[u8]) -> Result<Option<String>, X509Error> {
    let mut rdns = Der::new(name);
    while !rdns.is_empty() {
        let set = rdns.expect(TAG_SET, "name component is not a SET")?;
        let mut set = Der::new(set);
        while !set.is_empty() {
            let atv = set.expect(TAG_SEQUENCE, "attribute is not a SEQUENCE")?;
            let mut atv = Der::new(atv);
            let oid = atv.expect(TAG_OID, "attribute type missing")?;
            let (_, value) = atv.next()?;
            if oid == OID_COMMON_NAME {
                return Ok(Some(String::from_utf8_lossy(value).into_owned()));
            }
        }
    }
    Ok(None)
}

/// Parses UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) into Unix seconds.
fn parse_time((tag, text): (u8, &[u8])) -> Result<i64, X509Error> {
    let (year, rest) = match tag {
        TAG_UTC_TIME => {
            let (yy, rest) = text.split_at_checked(2).ok_or(X509Error("short UTCTime"))?;
            let yy = digits(yy)?;
            // RFC 5280 4.1.2.5.1: 50..=99 are 19xx, 00..=49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        TAG_GENERALIZED_TIME => {
            let (yyyy, rest) = text
                .split_at_checked(4)
                .ok_or(X509Error("short GeneralizedTime"))?;
            (digits(yyyy)?, rest)
        }
        _ => return Err(X509Error("validity time has an unknown type")),
    };
    if rest.len() != 11 || rest.last() != Some(&b'Z') {
        return Err(X509Error("validity time is not of the form ..MMDDHHMMSSZ"));
    }
    let field = |i: usize| -> Result<i64, X509Error> {
        rest.get(i..i + 2)
            .ok_or(X509Error("short validity time"))
            .and_then(digits)
    };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(X509Error("validity time is out of range"));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn digits(bytes: &[u8]) -> Result<i64, X509Error> {
    bytes.iter().try_fold(0i64, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + i64::from(b - b'0'))
        } else {
            Err(X509Error("non-digit in validity time"))
        }
    })
}

/// Days since 1970-01-01 for a proleptic Gregorian date (month 1..=12).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Shift the year to start in March so the leap day is the last day of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn times_parse_in_both_encodings() {
        assert_eq!(parse_time((TAG_UTC_TIME, b"700101000000Z")), Ok(0));
        assert_eq!(
            parse_time((TAG_GENERALIZED_TIME, b"20380119031408Z")),
            Ok(2_147_483_648)
        );
        assert_eq!(
            parse_time((TAG_UTC_TIME, b"491231235959Z")),
            Ok(2_524_607_999)
        );
        assert!(parse_time((TAG_UTC_TIME, b"7001010000Z")).is_err());
        assert!(parse_time((TAG_UTC_TIME, b"701301000000Z")).is_err());
        assert!(parse_time((TAG_UTC_TIME, b"70010100000aZ")).is_err());
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x30]).is_err());
        assert!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(parse(b"-----BEGIN CERTIFICATE-----").is_err());
    }

    #[test]
    fn every_prefix_of_a_real_certificate_fails_cleanly() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["a.example".to_owned(), "10.1.2.3".to_owned()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        let full = parse(&der).unwrap();
        assert_eq!(full.dns_names, vec!["a.example".to_owned()]);
        assert_eq!(full.ip_addresses, vec![IpAddr::from([10, 1, 2, 3])]);
        for cut in 0..der.len() {
            assert!(parse(&der[..cut]).is_err(), "prefix of {cut} bytes parsed");
        }
    }
}
