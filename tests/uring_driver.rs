//! What only the io_uring driver has, on loopback: kernel support detection, provided buffer
//! rings (shared, starved and paused receives), the fixed file table, SQPOLL, and rough
//! throughput figures. Behaviour both drivers share is in `driver_conformance.rs`; the relay
//! handler, harness and backends are `common::relay`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use arc_gateway::proxy::driver::{DriverKind, Tuning};
use arc_gateway::proxy::uring;

use common::relay::{Backend, Proxy, RelayCx, Setup, client, read_line, start_with, tuning};
use common::{serial, wait_until};

/// One io_uring worker relaying with `cx`, with `tuning`.
fn start_proxy(cx: RelayCx, max_connections: u64, tuning: Tuning) -> Proxy {
    start_with(
        DriverKind::Uring,
        cx,
        Setup {
            max_connections,
            tuning,
            ..Setup::default()
        },
    )
}

#[test]
fn probe_reports_support_on_this_kernel() {
    let support = uring::probe().expect("io_uring is available on the test kernel");
    let text = support.to_string();
    assert!(text.starts_with("io_uring: available"), "{text}");
    // Linux 6.18 has all three; the driver relies on them being detected when present.
    assert!(support.single_issuer && support.defer_taskrun, "{text}");
    assert!(support.incremental_buffers, "{text}");
}

/// `n` clients each send `req <i>` through a proxy whose upstream receive group is 4 buffers
/// of 64 KiB; the backend holds every answer until all `n` requests are in, then writes the
/// `len`-byte answers back to back (`parallel`: all at once, one writer thread per
/// connection). Checks every answer and returns how many receives ran out of buffers.
fn burst_of_answers(n: usize, len: usize, parallel: bool) -> u64 {
    let _g = serial();
    let waiting: Arc<Mutex<Vec<(TcpStream, usize)>>> = Arc::default();
    let w = Arc::clone(&waiting);
    let backend = Backend::start(move |s, _| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let Ok(i) = line.trim().trim_start_matches("req ").parse::<usize>() else {
            return;
        };
        let all = {
            let mut w = w.lock().expect("lock");
            w.push((s, i));
            if w.len() < n {
                return;
            }
            std::mem::take(&mut *w)
        };
        // The last request is in: every answer goes out.
        if parallel {
            let writers: Vec<_> = all
                .into_iter()
                .map(|(mut s, i)| thread::spawn(move || s.write_all(&response_bytes(i, len))))
                .collect();
            for w in writers {
                let _ = w.join();
            }
        } else {
            for (mut s, i) in all {
                let _ = s.write_all(&response_bytes(i, len));
            }
        }
    });
    let tuning = Tuning {
        read_buffer: 64 * 1024,
        ..tuning()
    };
    let proxy = start_proxy(RelayCx::new(backend.addr), 10_000, tuning);
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let addr = proxy.addr;
            thread::spawn(move || {
                let mut s = client(addr);
                s.write_all(format!("req {i}\n").as_bytes()).expect("send");
                let mut got = vec![0u8; len];
                s.read_exact(&mut got).expect("response");
                got == response_bytes(i, len)
            })
        })
        .collect();
    for c in clients {
        assert!(
            c.join().expect("client thread"),
            "response came back intact"
        );
    }
    assert_eq!(backend.connections(), n);
    let dry = proxy.stat(|s| &s.recv_no_buffer);
    proxy.shutdown();
    dry
}

/// 64 upstream responses of 2 KiB arrive in one burst against an upstream receive group of 4
/// buffers of 64 KiB. With incremental buffer consumption the small receives share buffers, so
/// no multishot receive runs out of buffers (without it, every receive beyond the fourth in a
/// batch ended with ENOBUFS and was armed again), and every byte arrives intact.
#[test]
fn response_burst_from_many_upstreams_shares_receive_buffers() {
    let support = uring::probe().expect("io_uring is available on the test kernel");
    assert!(support.incremental_buffers, "{support}");
    assert_eq!(
        burst_of_answers(64, 2048, false),
        0,
        "multishot receives ran out of provided buffers"
    );
}

/// 64 upstream responses of 96 KiB arrive at once (written in parallel) against an upstream
/// receive group of 4 buffers of 64 KiB: most multishot receives run out of buffers. Each such
/// socket waits for the turn's buffers to come back and is armed again a group's worth at a
/// time, so about one receive runs dry per buffer's worth of data (about 100 here). Armed again
/// at once, every starved socket failed again on every turn until its turn came: up to 700
/// wasted receives in this test, depending on how far the data piled up. Every byte arrives
/// intact.
#[test]
fn receives_that_run_out_of_buffers_wait_for_them_instead_of_storming() {
    const N: usize = 64;
    const RESPONSE: usize = 96 * 1024;
    let dry = burst_of_answers(N, RESPONSE, true);
    eprintln!("{N} bursts of {RESPONSE} bytes: {dry} receives ran out of buffers");
    assert!(
        dry <= 3 * N as u64,
        "{dry} receives ran out of buffers for {N} responses: starved sockets were armed \
         again before buffers came back"
    );
}

/// A handler that stops wanting bytes while the peer sends none (here after every message,
/// until it is passed on) costs no cancel and no re-arm: the receive stays armed. Bytes that
/// do arrive meanwhile are held back, the receive is cancelled then, and everything is
/// delivered once the handler wants it again: 100 echo rounds and then 200 messages sent back
/// to back all come back intact.
#[test]
fn a_paused_receive_is_cancelled_only_when_bytes_arrive() {
    const ROUNDS: u32 = 100;
    let _g = serial();
    let backend = Backend::echo();
    let cx = RelayCx {
        cap: 1,
        ..RelayCx::new(backend.addr)
    };
    let proxy = start_proxy(cx, 100, tuning());
    let mut s = client(proxy.addr);
    for r in 0..ROUNDS {
        // 1 KiB: receives fill the 16 KiB buffers exactly, so none is split in two completions
        // at a buffer's end (the second of which would meet the paused handler).
        let payload: Vec<u8> = (0..1024u32).map(|k| (k * 7 + r) as u8).collect();
        s.write_all(&payload).expect("send");
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got).expect("echo");
        assert!(got == payload, "round {r} came back intact");
    }
    let paused = proxy.stat(|st| &st.recv_paused);
    eprintln!("{ROUNDS} echo rounds with a handler that pauses after each: {paused} cancels");
    // Cancelling at each pause cost a cancel on each side in every round (2 * ROUNDS). A
    // message split over two completions could still meet the paused handler now and then.
    assert!(
        paused <= u64::from(ROUNDS) / 10,
        "{paused} receives cancelled in {ROUNDS} rounds where no bytes arrived while paused"
    );
    // Back to back: bytes arrive while the handler is paused, are held back and delivered.
    let mut w = s.try_clone().expect("clone");
    let all: Vec<u8> = (0..200 * 1500u32)
        .map(|k| (k * 13 + k / 1500) as u8)
        .collect();
    let expect = all.clone();
    let writer = thread::spawn(move || {
        for chunk in all.chunks(1500) {
            w.write_all(chunk).expect("send");
        }
    });
    let mut got = vec![0u8; expect.len()];
    s.read_exact(&mut got).expect("echo of the stream");
    writer.join().expect("writer");
    assert!(got == expect, "the stream came back intact");
    assert!(
        proxy.stat(|st| &st.recv_paused) > paused,
        "bytes arrived while the handler was paused, and its receive was cancelled"
    );
    drop(s);
    proxy.shutdown();
}

/// Echoes `rounds` exchanges on one new connection and checks every byte; the connection is
/// then closed.
fn echo_round_trips(addr: SocketAddr, tag: u32, rounds: u32) -> bool {
    let mut s = client(addr);
    for r in 0..rounds {
        let payload: Vec<u8> = (0..3000u32).map(|k| (k * 7 + tag * 13 + r) as u8).collect();
        if s.write_all(&payload).is_err() {
            return false;
        }
        let mut got = vec![0u8; payload.len()];
        if s.read_exact(&mut got).is_err() || got != payload {
            return false;
        }
    }
    s.shutdown(Shutdown::Both).is_ok()
}

/// Every socket (accepted and upstream) goes into the fixed file table, and slots are reused
/// safely: 200 connections one after another (each new socket takes the slot index the last
/// closed one left) exchange data intact. A slot reused before the previous socket's fixed
/// close ran would put the new connection's operations on the old socket.
#[test]
fn sockets_use_fixed_file_slots_and_reuse_them_safely() {
    let _g = serial();
    let backend = Backend::echo();
    let proxy = start_proxy(RelayCx::new(backend.addr), 10_000, tuning());
    for i in 0..200u32 {
        assert!(
            echo_round_trips(proxy.addr, i, 2),
            "connection {i} echoed intact"
        );
    }
    wait_until("all connections closed", || {
        proxy.stat(|s| &s.closed) == 200
    });
    let sockets = proxy.stat(|s| &s.accepted) + proxy.stat(|s| &s.upstream_connects);
    assert_eq!(proxy.stat(|s| &s.accepted), 200);
    assert_eq!(
        proxy.stat(|s| &s.fixed_files),
        sockets,
        "every socket was registered"
    );
    proxy.shutdown();
}

/// With a fixed file table of 4 slots, 32 concurrent connections (64 sockets) are relayed
/// intact: sockets beyond the table use their fds, side by side with registered ones.
#[test]
fn sockets_beyond_the_fixed_file_table_use_their_fds() {
    let _g = serial();
    let backend = Backend::echo();
    let tuning = Tuning {
        uring_fixed_files: 4,
        ..tuning()
    };
    let proxy = start_proxy(RelayCx::new(backend.addr), 10_000, tuning);
    let clients: Vec<_> = (0..32u32)
        .map(|i| {
            let addr = proxy.addr;
            thread::spawn(move || echo_round_trips(addr, i, 20))
        })
        .collect();
    for c in clients {
        assert!(c.join().expect("client thread"), "echoed intact");
    }
    let sockets = proxy.stat(|s| &s.accepted) + proxy.stat(|s| &s.upstream_connects);
    let fixed = proxy.stat(|s| &s.fixed_files);
    assert!(
        fixed >= 4 && fixed < sockets,
        "{fixed} of {sockets} sockets registered"
    );
    wait_until("all connections closed", || {
        proxy.stat(|s| &s.accepted) == proxy.stat(|s| &s.closed)
    });
    proxy.shutdown();
}

/// `len` bytes that differ per `i` and per position.
fn response_bytes(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k * 7 + i * 13) as u8).collect()
}

/// Rough figures for the closing note (run with `--ignored --nocapture`, release build).
#[test]
#[ignore]
fn measure_throughput_and_pooled_request_rate() {
    let _g = serial();
    const TOTAL: u64 = 1024 * 1024 * 1024;
    let backend = Backend::start(|mut s, _| {
        let mut go = [0u8; 1];
        if s.read_exact(&mut go).is_err() {
            return;
        }
        let chunk = vec![7u8; 256 * 1024];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
    });
    let proxy = start_proxy(RelayCx::new(backend.addr), 100, Tuning::default());
    let mut s = client(proxy.addr);
    let t0 = Instant::now();
    s.write_all(b"g").expect("send");
    let mut buf = vec![0u8; 1024 * 1024];
    let mut got = 0u64;
    while got < TOTAL {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "early end");
        got += n as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "throughput: 1 GiB in {secs:.2} s = {:.2} GiB/s",
        TOTAL as f64 / secs / (1024.0 * 1024.0 * 1024.0)
    );
    drop(s);
    proxy.shutdown();

    let backend = Backend::lines(false);
    let mut cx = RelayCx::new(backend.addr);
    cx.line_mode = true;
    let proxy = start_proxy(cx, 100, Tuning::default());
    let mut s = client(proxy.addr);
    let n = 20_000;
    let t0 = Instant::now();
    for _ in 0..n {
        s.write_all(b"q\n").expect("send");
        let line = read_line(&mut s);
        assert!(line.starts_with("OK"), "{line}");
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "pooled request/response: {n} sequential round trips in {secs:.2} s = {:.0}/s, \
         backend connections {}",
        n as f64 / secs,
        backend.connections()
    );
    drop(s);
    proxy.shutdown();
}

#[test]
fn sqpoll_ring_relays_too() {
    let support = uring::probe().expect("io_uring");
    if !support.sqpoll {
        eprintln!("skipped: this process may not create SQPOLL rings");
        return;
    }
    let backend = Backend::echo();
    let opts = Tuning {
        sqpoll: true,
        ..tuning()
    };
    let proxy = start_proxy(RelayCx::new(backend.addr), 100, opts);
    for i in 0..4 {
        let mut s = client(proxy.addr);
        let msg = format!("sqpoll {i}\n");
        s.write_all(msg.as_bytes()).expect("send");
        assert_eq!(read_line(&mut s), msg);
    }
    proxy.shutdown();
}
