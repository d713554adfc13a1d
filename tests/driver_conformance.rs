//! One conformance suite for both io drivers: every scenario is written once against the driver
//! entry contract (`DriverEntry` / `DriverParams`, started by `common::relay`) and runs as
//! `epoll::<scenario>` and `io_uring::<scenario>`. The relay handler (`common::relay::Relay`)
//! stands in for the proxy core so what is tested is the driver: accepting, relaying with back
//! pressure, the upstream pool, connect errors and timeouts, the connection limit, handler
//! timers, half-close, lingering close, stopping, and TLS termination.
//!
//! Tests of one driver's own machinery (io_uring buffer rings, fixed files, SQPOLL) stay in
//! that driver's file. Scenarios run one at a time ([`common::serial`]): some read the process
//! RSS or measure time.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arc_gateway::proxy::driver::Tuning;
use arc_gateway::proxy::io::UpstreamError;
use arc_gateway::proxy::listener::ListenerSpec;
use arc_gateway::proxy::tls::TlsAcceptorConfig;
use arc_gateway::proxy::worker::{WorkerConfig, WorkerSet};

use common::relay::{
    Backend, CAP, Proxy, RelayCx, Setup, client, exchange, full_backlog_listener, read_line, start,
    start_with, tls_client, tuning,
};
use common::tls::{flight_and_response_are_single_records, proxy_acceptor};
use common::{Driver, closed_port, per_driver, rss_kib, serial, wait_until};

/// Starts `driver` with one worker behind TLS (`proxy.test`); the client config trusts it.
fn start_tls(
    driver: Driver,
    cx: RelayCx,
    settings: &TlsAcceptorConfig,
    tuning: Tuning,
) -> (Proxy, Arc<rustls::ClientConfig>) {
    let (acceptor, client_config) = proxy_acceptor(settings);
    let setup = Setup {
        tls: Some(acceptor),
        tuning,
        ..Setup::default()
    };
    (start_with(driver.kind(), cx, setup), client_config)
}

// ---------------------------------------------------------------- relaying

/// 64 concurrent clients on two workers each send 200 000 bytes while reading them back
/// through an echo backend: every byte comes back, one fresh upstream per client, and every
/// connection is counted accepted and closed.
fn relays_many_concurrent_connections(driver: Driver) {
    let _g = serial();
    let backend = Backend::echo();
    let cx = RelayCx::new(backend.addr);
    let proxy = start_with(
        driver.kind(),
        cx.clone(),
        Setup {
            workers: 2,
            ..Setup::default()
        },
    );
    let clients: Vec<_> = (0..64u32)
        .map(|i| {
            let addr = proxy.addr;
            thread::spawn(move || {
                let mut s = client(addr);
                let payload: Vec<u8> = (0..200_000u32).map(|k| (k * 31 + i) as u8).collect();
                let mut r = s.try_clone().expect("clone");
                let expect = payload.clone();
                let reader = thread::spawn(move || {
                    let mut got = vec![0u8; expect.len()];
                    r.read_exact(&mut got).expect("echo back");
                    got == expect
                });
                s.write_all(&payload).expect("send");
                let ok = reader.join().expect("reader");
                s.shutdown(Shutdown::Both).ok();
                ok
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert!(
            c.join().expect("client thread"),
            "client {i}: payload came back intact"
        );
    }
    assert_eq!(proxy.stat(|s| &s.accepted), 64);
    assert_eq!(backend.connections(), 64);
    assert_eq!(cx.fresh.load(Ordering::Relaxed), 64);
    wait_until("all connections closed", || proxy.stat(|s| &s.closed) == 64);
    proxy.finish();
}

/// A client that reads nothing holds back a backend sending 64 MiB: the backend stalls far
/// short of the total, the relay's buffers and the process RSS stay bounded, and then every
/// byte arrives in order, followed by the end of the stream.
fn slow_client_holds_back_a_fast_backend_with_bounded_memory(driver: Driver) {
    let _g = serial();
    const TOTAL: u64 = 64 * 1024 * 1024;
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = Arc::clone(&sent);
    let done = Arc::new(AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    let backend = Backend::start(move |mut s, _| {
        // Read the request, or closing with it unread would reset the connection.
        let mut first = [0u8; 3];
        if s.read_exact(&mut first).is_err() {
            return;
        }
        let chunk: Vec<u8> = (0..64 * 1024).map(|k| (k % 251) as u8).collect();
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n as u64;
            sent2.fetch_add(n as u64, Ordering::Relaxed);
        }
        done2.store(true, Ordering::SeqCst);
    });
    let cx = RelayCx::new(backend.addr);
    let proxy = start(driver.kind(), cx.clone());
    let rss_before = rss_kib();
    let mut s = client(proxy.addr);
    s.write_all(b"go\n").expect("send");
    // Do not read for a while: the backend must stall on full buffers.
    thread::sleep(Duration::from_millis(1500));
    let stalled_at = sent.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(500));
    let later = sent.load(Ordering::Relaxed);
    assert!(stalled_at > 0, "backend started sending");
    assert!(
        later < 32 * 1024 * 1024,
        "backend pushed {later} bytes into a client that reads nothing: not back-pressured"
    );
    assert!(
        later - stalled_at < 4 * 1024 * 1024,
        "backend kept sending while stalled ({stalled_at} -> {later})"
    );
    let mut rss_peak = rss_kib();
    // Now read everything and check it.
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let t0 = Instant::now();
    while got < TOTAL && t0.elapsed() < Duration::from_secs(60) {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "end of stream after {got} bytes");
        for (i, &b) in buf[..n].iter().enumerate() {
            let pos = got + i as u64;
            assert_eq!(b, ((pos % (64 * 1024)) % 251) as u8, "byte {pos}");
        }
        got += n as u64;
        if got % (8 * 1024 * 1024) < n as u64 {
            rss_peak = rss_peak.max(rss_kib());
        }
    }
    assert_eq!(got, TOTAL, "all bytes arrived");
    wait_until("the backend wrote everything", || {
        done.load(Ordering::SeqCst)
    });
    drop(backend);
    // The backend closes; the relay flushes and closes the client.
    assert_eq!(s.read(&mut buf).expect("end of stream"), 0);
    rss_peak = rss_peak.max(rss_kib());
    // What a handler may hold beyond its cap: epoll hands over at most one 64 KiB read after
    // the handler stopped wanting bytes; io_uring hands over at once what arrived while its
    // receive was being cancelled, at most the upstream receive group (256 KiB of buffers with
    // incremental consumption, 512 KiB without).
    let slack = match driver {
        Driver::Epoll => 64 * 1024,
        Driver::Uring => {
            let support = arc_gateway::proxy::uring::probe().expect("io_uring");
            if support.incremental_buffers {
                256 * 1024
            } else {
                512 * 1024
            }
        }
    };
    let max_buffered = cx.max_buffered.load(Ordering::Relaxed);
    assert!(
        max_buffered <= CAP + slack,
        "handler buffered {max_buffered} bytes"
    );
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "back-pressure: backend stalled at {stalled_at} bytes; handler max buffer \
         {max_buffered}; RSS growth {growth} KiB"
    );
    assert!(
        growth < 16 * 1024,
        "RSS grew by {growth} KiB while relaying 64 MiB"
    );
    drop(s);
    proxy.finish();
}

/// A client half-closes after its request: the response direction stays open and the whole
/// answer arrives.
fn half_close_keeps_the_response_direction_open(driver: Driver) {
    let _g = serial();
    let backend = Backend::start(|mut s, _| {
        let mut req = [0u8; 5];
        if s.read_exact(&mut req).is_ok() {
            thread::sleep(Duration::from_millis(150));
            let _ = s.write_all(b"world");
        }
    });
    let cx = RelayCx {
        close_on_eof: false,
        ..RelayCx::new(backend.addr)
    };
    let proxy = start(driver.kind(), cx);
    let mut s = client(proxy.addr);
    s.write_all(b"hello").expect("send");
    s.shutdown(Shutdown::Write).expect("half close");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"world");
    proxy.finish();
}

/// The relay answers and closes (flushed) while the client still sends megabytes the relay
/// never reads: the close lingers, so the answer and a clean end of stream arrive instead of
/// a reset.
fn flushed_close_lingers_so_unread_client_bytes_do_not_reset_the_response(driver: Driver) {
    let _g = serial();
    let proxy = start(driver.kind(), RelayCx::new(closed_port()));
    let mut s = client(proxy.addr);
    let mut w = s.try_clone().expect("clone");
    // The request plus bytes the proxy never asks for: closing with them unread would reset.
    let writer = thread::spawn(move || {
        let mut req = b"x\n".to_vec();
        req.resize(8 * 1024 * 1024, b'y');
        let _ = w.write_all(&req);
    });
    assert_eq!(read_line(&mut s), "ERR Connect\n");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest)
            .expect("clean end of stream, not a reset"),
        0
    );
    writer.join().expect("writer");
    proxy.finish();
}

// ---------------------------------------------------------------- the upstream pool

/// In line mode the upstream goes back to the pool after each answer: a second request and a
/// second client connection (while the first is still open) reuse the one backend connection,
/// and the pool gauge shows it idle.
fn pooled_upstream_is_reused_across_requests_and_connections(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(false);
    let cx = RelayCx::lines(backend.addr);
    let proxy = start(driver.kind(), cx.clone());
    let mut a = client(proxy.addr);
    assert_eq!(exchange(&mut a, "one\n"), "OK 1\n");
    // The release is processed with the response; give a parked receive time to cancel.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        exchange(&mut a, "two\n"),
        "OK 1\n",
        "same upstream connection"
    );
    thread::sleep(Duration::from_millis(50));
    let mut b = client(proxy.addr);
    assert_eq!(
        exchange(&mut b, "three\n"),
        "OK 1\n",
        "reused by another client connection"
    );
    assert_eq!(backend.connections(), 1, "backend saw one connection");
    assert_eq!(cx.fresh.load(Ordering::Relaxed), 1);
    assert_eq!(cx.reused.load(Ordering::Relaxed), 2);
    assert_eq!(proxy.stat(|s| &s.pool_reused), 2);
    assert_eq!(proxy.stat(|s| &s.upstream_connects), 1);
    wait_until("the pool gauge shows the idle connection", || {
        cx.idle() == 1
    });
    drop((a, b));
    proxy.finish();
}

/// The backend closes a pooled connection after answering: the idle worker notices, drops it
/// (gauge back to 0), and the next request gets a fresh connection without an error.
fn idle_pooled_connection_closed_by_backend_is_dropped_and_replaced(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(true);
    let cx = RelayCx::lines(backend.addr);
    let proxy = start(driver.kind(), cx.clone());
    let mut s = client(proxy.addr);
    assert_eq!(exchange(&mut s, "one\n"), "OK 1\n");
    // The backend closed its side after answering: the worker sees it while idle.
    wait_until("stale pooled connection dropped", || {
        proxy.stat(|s| &s.pool_stale) == 1
    });
    wait_until("the pool gauge drops the stale connection", || {
        cx.idle() == 0
    });
    assert_eq!(
        exchange(&mut s, "two\n"),
        "OK 2\n",
        "a fresh backend connection served it"
    );
    assert!(cx.errors().is_empty(), "no request failed");
    assert_eq!(backend.connections(), 2);
    assert_eq!(proxy.stat(|s| &s.pool_reused), 0);
    drop(s);
    proxy.finish();
}

/// A refused connect reaches the handler as `UpstreamError::Connect`, is counted, and the
/// client gets the answer followed by a clean close.
fn refused_connect_is_reported_as_upstream_error(driver: Driver) {
    let _g = serial();
    let cx = RelayCx::new(closed_port());
    let proxy = start(driver.kind(), cx.clone());
    let mut s = client(proxy.addr);
    assert_eq!(exchange(&mut s, "x\n"), "ERR Connect\n");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).expect("end of stream"),
        0,
        "closed after the flushed answer"
    );
    assert_eq!(cx.errors(), vec![UpstreamError::Connect]);
    assert_eq!(proxy.stat(|s| &s.upstream_connect_errors), 1);
    proxy.finish();
}

/// A connect that hangs (the backend's accept queue is full) ends as
/// `UpstreamError::ConnectTimeout` after the pool's connect timeout.
fn connect_to_a_full_backlog_times_out(driver: Driver) {
    let _g = serial();
    let (_listener, _fillers, addr) =
        full_backlog_listener().expect("a loopback listener with a full accept queue");
    let mut cx = RelayCx::new(addr);
    cx.limits.connect_timeout = Duration::from_millis(300);
    let proxy = start(driver.kind(), cx.clone());
    let mut s = client(proxy.addr);
    let t0 = Instant::now();
    assert_eq!(exchange(&mut s, "x\n"), "ERR ConnectTimeout\n");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "timed out after {took:?}"
    );
    assert_eq!(cx.errors(), vec![UpstreamError::ConnectTimeout]);
    drop(s);
    proxy.finish();
}

// ---------------------------------------------------------------- limits, timers, stopping

/// With `max_connections: 2`, a third connection is closed unserved (end of stream or reset,
/// nothing else) and counted refused; the two open ones are unharmed, and a slot given back is
/// usable.
fn max_connections_refuses_extra_connections_without_harming_open_ones(driver: Driver) {
    let _g = serial();
    let backend = Backend::echo();
    let setup = Setup {
        max_connections: 2,
        ..Setup::default()
    };
    let proxy = start_with(driver.kind(), RelayCx::new(backend.addr), setup);
    let mut a = client(proxy.addr);
    let mut b = client(proxy.addr);
    for s in [&mut a, &mut b] {
        assert_eq!(exchange(s, "ping\n"), "ping\n");
    }
    let mut c = client(proxy.addr);
    let mut buf = [0u8; 8];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("third connection was served: {other:?}"),
    }
    assert_eq!(proxy.stat(|s| &s.refused), 1);
    assert_eq!(proxy.stat(|s| &s.accepted), 2);
    for s in [&mut a, &mut b] {
        assert_eq!(
            exchange(s, "again\n"),
            "again\n",
            "open connections unharmed"
        );
    }
    // Closing one frees a slot.
    drop(a);
    wait_until("slot given back", || proxy.stat(|s| &s.closed) == 1);
    let mut d = client(proxy.addr);
    assert_eq!(
        exchange(&mut d, "late\n"),
        "late\n",
        "a freed slot is usable"
    );
    assert_eq!(proxy.stat(|s| &s.refused), 1);
    drop((b, c, d));
    proxy.finish();
}

/// The handler's deadline fires on the driver's timer: client activity pushes it back, then
/// the handler answers `TIMEOUT` and closes, on time.
fn handler_deadline_fires_on_timer(driver: Driver) {
    let _g = serial();
    let backend = Backend::echo();
    let cx = RelayCx {
        idle_timeout: Some(Duration::from_millis(800)),
        ..RelayCx::new(backend.addr)
    };
    let proxy = start(driver.kind(), cx);
    let mut s = client(proxy.addr);
    let t0 = Instant::now();
    // Activity pushes the deadline back.
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(200));
        assert_eq!(exchange(&mut s, "tick\n"), "tick\n");
    }
    let last = Instant::now();
    assert_eq!(read_line(&mut s), "TIMEOUT\n");
    let (took, idle) = (t0.elapsed(), last.elapsed());
    assert!(
        took >= Duration::from_millis(1350) && took < Duration::from_secs(5),
        "timer fired after {took:?}"
    );
    assert!(
        idle >= Duration::from_millis(600) && idle < Duration::from_secs(3),
        "timer fired {idle:?} after the last activity"
    );
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).expect("end of stream"),
        0,
        "closed by the idle timer"
    );
    proxy.finish();
}

/// The handler's deadline can also close without flushing: an idle client is cut on time, with
/// nothing more sent.
fn handler_deadline_closes_without_flush(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(false);
    let cx = RelayCx {
        idle_timeout: Some(Duration::from_millis(200)),
        idle_flush: false,
        ..RelayCx::lines(backend.addr)
    };
    let proxy = start(driver.kind(), cx);
    let mut s = client(proxy.addr);
    assert_eq!(
        exchange(&mut s, "REQ\n"),
        "OK 1\n",
        "activity pushes the deadline back"
    );
    let t0 = Instant::now();
    let mut rest = Vec::new();
    assert!(
        matches!(s.read_to_end(&mut rest), Ok(0) | Err(_)),
        "closed by the idle timer with nothing sent, got {rest:?}"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "idle close after {took:?}"
    );
    proxy.finish();
}

/// Stopping closes the listeners at once, serves open connections during the grace period,
/// cuts them after it, and then the workers return.
fn stop_closes_listeners_lets_work_finish_then_cuts_idle_connections(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(false);
    let setup = Setup {
        workers: 2,
        tuning: Tuning {
            stop_grace: Duration::from_millis(400),
            ..tuning()
        },
        ..Setup::default()
    };
    let proxy = start_with(driver.kind(), RelayCx::lines(backend.addr), setup);
    let addr = proxy.addr;
    let mut idle = client(addr);
    assert!(exchange(&mut idle, "REQ\n").starts_with("OK "));

    let t0 = Instant::now();
    proxy.stop_handle().stop();
    // Within the grace period, an open connection is still served.
    assert!(
        exchange(&mut idle, "REQ\n").starts_with("OK "),
        "served during grace"
    );
    let joiner = thread::spawn(move || proxy.shutdown());
    let mut rest = Vec::new();
    assert!(
        matches!(idle.read_to_end(&mut rest), Ok(0) | Err(_)),
        "cut after the grace, got {rest:?}"
    );
    joiner.join().expect("stopped cleanly");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "stopped after {took:?}"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "listeners are closed"
    );
}

/// With no connection open, stopping is prompt (no grace period is waited out).
fn idle_stop_is_prompt(driver: Driver) {
    let _g = serial();
    let proxy = start(driver.kind(), RelayCx::new(closed_port()));
    thread::sleep(Duration::from_millis(50));
    let took = proxy.shutdown();
    assert!(took < Duration::from_millis(500), "stop took {took:?}");
}

/// The worker set runs this driver's entry on two workers: each request gets one upstream
/// checkout (fresh or pooled), pooled upstreams are reused, and every connection is counted.
fn worker_set_serves_the_relay(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(false);
    let cx = RelayCx::lines(backend.addr);
    let config = WorkerConfig {
        driver: driver.kind(),
        workers: 2,
        listeners: vec![ListenerSpec {
            index: 0,
            name: Arc::from("test"),
            addr: "127.0.0.1:0".parse().expect("address"),
            tls: None,
        }],
        conn_limit: Arc::new(arc_gateway::proxy::io::ConnLimit::new(100)),
        tuning: tuning(),
        accept_paused: false,
    };
    let set = WorkerSet::spawn::<common::relay::Relay, _>(config, move |_| cx.clone())
        .expect("spawn the workers");
    assert_eq!(set.driver(), driver.kind());
    let addr = set.local_addrs()[0];
    for _ in 0..4 {
        let mut c = client(addr);
        assert!(exchange(&mut c, "REQ\n").starts_with("OK "));
        assert!(exchange(&mut c, "REQ\n").starts_with("OK "));
    }
    wait_until("all connections closed", || set.total(|s| &s.closed) == 4);
    assert_eq!(set.total(|s| &s.accepted), 4);
    assert_eq!(
        set.total(|s| &s.upstream_connects) + set.total(|s| &s.pool_reused),
        8,
        "one upstream checkout per request, fresh or pooled"
    );
    assert!(
        set.total(|s| &s.pool_reused) > 0,
        "the workers reuse pooled upstreams"
    );
    let t0 = Instant::now();
    set.stop();
    set.join().expect("workers stopped cleanly");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------- TLS

/// A TLS listener terminates TLS (the handler sees the SNI) and relays plaintext, with a pooled
/// upstream behind it; the client's close_notify ends the connection and is answered by one.
fn tls_listener_terminates_tls_and_relays_plaintext(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(false);
    let cx = RelayCx::lines(backend.addr);
    let (proxy, client_config) =
        start_tls(driver, cx.clone(), &TlsAcceptorConfig::default(), tuning());
    let mut c = tls_client(proxy.addr, &client_config);
    assert_eq!(exchange(&mut c, "REQ\n"), "OK 1\n");
    assert_eq!(
        exchange(&mut c, "REQ\n"),
        "OK 1\n",
        "pooled upstream behind a TLS client"
    );
    assert_eq!(cx.infos(), vec![(true, Some("proxy.test".to_string()))]);
    // A clean TLS close from the client ends the connection, answered by close_notify.
    c.conn.send_close_notify();
    c.flush().expect("flush");
    let mut rest = Vec::new();
    let end = c.read_to_end(&mut rest);
    assert!(end.is_ok(), "the proxy closed with close_notify: {end:?}");
    assert!(rest.is_empty(), "no stray bytes: {rest:?}");
    wait_until("TLS connection closed", || proxy.stat(|s| &s.closed) == 1);
    proxy.finish();
}

/// 40 rounds of 48 KiB through TLS and an echo backend come back intact and in order.
fn tls_bulk_echo_round_trips_in_order(driver: Driver) {
    let _g = serial();
    let backend = Backend::echo();
    let (proxy, client_config) = start_tls(
        driver,
        RelayCx::new(backend.addr),
        &TlsAcceptorConfig::default(),
        tuning(),
    );
    let mut c = tls_client(proxy.addr, &client_config);
    let chunk = 48 * 1024;
    let mut back = vec![0u8; chunk];
    for round in 0..40u32 {
        let data: Vec<u8> = (0..chunk as u32).map(|i| (i ^ round) as u8).collect();
        c.write_all(&data).expect("send");
        c.read_exact(&mut back).expect("echo");
        assert!(back == data, "round {round} came back different");
    }
    drop(c);
    proxy.finish();
}

/// A plaintext client on a TLS listener gets an alert (or nothing) and no handler; an open TLS
/// connection is unharmed and new TLS clients are served.
fn failed_tls_handshake_closes_only_that_connection(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(false);
    let cx = RelayCx::lines(backend.addr);
    let (proxy, client_config) =
        start_tls(driver, cx.clone(), &TlsAcceptorConfig::default(), tuning());

    // A TLS client that stays open while the other one fails.
    let mut good = tls_client(proxy.addr, &client_config);
    assert_eq!(exchange(&mut good, "REQ\n"), "OK 1\n");

    let mut plain = client(proxy.addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        got.first() == Some(&0x15) || got.is_empty(),
        "expected a TLS alert or nothing, got {got:?}"
    );
    assert_eq!(
        cx.infos().len(),
        1,
        "no handler was made for the failed handshake"
    );

    assert_eq!(
        exchange(&mut good, "REQ\n"),
        "OK 1\n",
        "the open TLS connection is unharmed"
    );
    let mut again = tls_client(proxy.addr, &client_config);
    assert!(
        exchange(&mut again, "REQ\n").starts_with("OK "),
        "the worker still serves new TLS clients"
    );
    drop((good, again));
    proxy.finish();
}

/// A client that never starts its handshake is closed after the handshake timeout and its
/// connection freed.
fn stalled_tls_handshake_times_out(driver: Driver) {
    let _g = serial();
    let backend = Backend::echo();
    let tuning = Tuning {
        tls_handshake_timeout: Duration::from_millis(300),
        ..tuning()
    };
    let (proxy, _) = start_tls(
        driver,
        RelayCx::new(backend.addr),
        &TlsAcceptorConfig::default(),
        tuning,
    );
    let mut silent = client(proxy.addr);
    let t0 = Instant::now();
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    wait_until("connection freed", || proxy.stat(|s| &s.closed) == 1);
    proxy.finish();
}

/// With resumption off, the handshake flight and a response each leave as single records.
fn tls_flight_and_response_leave_as_single_records(driver: Driver) {
    let _g = serial();
    let backend = Backend::lines(false);
    let (proxy, client_config) = start_tls(
        driver,
        RelayCx::lines(backend.addr),
        &TlsAcceptorConfig {
            session_cache_entries: 0,
            session_tickets: false,
            ..TlsAcceptorConfig::default()
        },
        tuning(),
    );
    flight_and_response_are_single_records(proxy.addr, &client_config);
    proxy.finish();
}

per_driver!(
    relays_many_concurrent_connections,
    slow_client_holds_back_a_fast_backend_with_bounded_memory,
    half_close_keeps_the_response_direction_open,
    flushed_close_lingers_so_unread_client_bytes_do_not_reset_the_response,
    pooled_upstream_is_reused_across_requests_and_connections,
    idle_pooled_connection_closed_by_backend_is_dropped_and_replaced,
    refused_connect_is_reported_as_upstream_error,
    connect_to_a_full_backlog_times_out,
    max_connections_refuses_extra_connections_without_harming_open_ones,
    handler_deadline_fires_on_timer,
    handler_deadline_closes_without_flush,
    stop_closes_listeners_lets_work_finish_then_cuts_idle_connections,
    idle_stop_is_prompt,
    worker_set_serves_the_relay,
    tls_listener_terminates_tls_and_relays_plaintext,
    tls_bulk_echo_round_trips_in_order,
    failed_tls_handshake_closes_only_that_connection,
    stalled_tls_handshake_times_out,
    tls_flight_and_response_leave_as_single_records,
);
