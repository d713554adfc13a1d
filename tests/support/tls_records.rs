//! TLS record-level checks shared by the io driver tests: what a server sends, record by
//! record, during a handshake and for a response.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads from `sock` until `n` whole TLS records arrived (bounded by time) and returns their
/// (content type, length) and bytes; a partial record beyond them fails the test.
pub fn read_tls_records(sock: &mut TcpStream, n: usize) -> (Vec<(u8, usize)>, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut records = Vec::new();
        let mut pos = 0;
        while let Some(h) = bytes.get(pos..pos + 5) {
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if bytes.len() < pos + 5 + len {
                break;
            }
            records.push((h[0], len));
            pos += 5 + len;
        }
        if records.len() >= n && pos == bytes.len() {
            return (records, bytes);
        }
        assert!(Instant::now() < deadline, "got {records:?} of {n} records");
        match sock.read(&mut buf) {
            Ok(0) => panic!("closed after {records:?}"),
            Ok(k) => bytes.extend_from_slice(&buf[..k]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Hands received ciphertext to the client session.
pub fn client_takes(conn: &mut rustls::ClientConnection, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes).unwrap();
        conn.process_new_packets().unwrap();
    }
}

/// With resumption off, the server's handshake flight is ServerHello (plus a compatibility
/// ChangeCipherSpec) and ONE encrypted record; after the client's Finished no ticket follows;
/// a response leaves as one record.
pub fn flight_and_response_are_single_records(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    conn.write_tls(&mut sock).unwrap();
    let (first, bytes) = read_tls_records(&mut sock, 1);
    assert_eq!(first[0].0, 22, "ServerHello first: {first:?}");
    let (records, bytes) = if first.iter().any(|r| r.0 == 23) {
        (first, bytes)
    } else {
        let (more, rest) = read_tls_records(&mut sock, 1);
        let mut all = first;
        all.extend(more);
        let mut b = bytes;
        b.extend(rest);
        (all, b)
    };
    let encrypted: Vec<_> = records.iter().filter(|r| r.0 == 23).collect();
    assert_eq!(
        encrypted.len(),
        1,
        "the encrypted flight is one record: {records:?}"
    );
    client_takes(&mut conn, &bytes);
    assert!(!conn.is_handshaking());
    conn.writer().write_all(b"REQ\n").unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    let (records, bytes) = read_tls_records(&mut sock, 1);
    assert_eq!(
        records.len(),
        1,
        "no ticket, one response record: {records:?}"
    );
    client_takes(&mut conn, &bytes);
    let mut line = Vec::new();
    // Ends with WouldBlock once the plaintext is taken; what was read is kept.
    let _ = conn.reader().read_to_end(&mut line);
    assert_eq!(line, b"OK 1\n");
    // Nothing else follows (no NewSessionTicket).
    let mut buf = [0u8; 64];
    match sock.read(&mut buf) {
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("unexpected bytes after the response: {other:?}"),
    }
}
