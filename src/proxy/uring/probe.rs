//! Start-up check of what this kernel's io_uring offers the driver.
//!
//! [`probe`] builds a small ring and checks, by name, everything the driver needs: the ring
//! itself (seccomp profiles and `kernel.io_uring_disabled` make `io_uring_setup` fail with
//! EPERM/ENOSYS), the opcodes (`Probe`), `IORING_FEAT_*` bits, a provided buffer ring
//! (`IORING_REGISTER_PBUF_RING`) and a real multishot receive over a socket pair. Optional
//! set-up flags (SINGLE_ISSUER, DEFER_TASKRUN, SQPOLL) and incrementally consumed buffer rings
//! (two receives sharing one buffer) are tried and reported. The result is computed once per
//! process.

use std::fmt;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use io_uring::{IoUring, Probe, cqueue, opcode, types};

use super::bufring::BufRing;

/// What the kernel offers beyond the driver's hard requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1).
    pub defer_taskrun: bool,
    /// An `IORING_SETUP_SQPOLL` ring could be created by this process.
    pub sqpoll: bool,
    /// Provided buffer rings consumed incrementally (`IOU_PBUF_RING_INC`, 6.12): two receives
    /// in a row landed in one buffer, the second after the first's bytes.
    pub incremental_buffers: bool,
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring: available (multishot accept, multishot recv, provided buffer rings"
        )?;
        for (on, name) in [
            (self.single_issuer, "SINGLE_ISSUER"),
            (self.defer_taskrun, "DEFER_TASKRUN"),
            (self.sqpoll, "SQPOLL"),
            (self.incremental_buffers, "incremental buffers"),
        ] {
            if on {
                write!(f, ", {name}")?;
            }
        }
        write!(f, ")")
    }
}

/// Why the io_uring driver cannot run here; the message names what is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UringUnavailable {
    /// `io_uring_setup` was refused (seccomp, container runtime, `kernel.io_uring_disabled`).
    #[error(
        "io_uring_setup is blocked ({reason}): the container's seccomp profile or the \
         kernel.io_uring_disabled sysctl forbids io_uring"
    )]
    Blocked { reason: String },
    /// `io_uring_setup` failed for another reason.
    #[error("io_uring_setup failed: {reason}")]
    Setup { reason: String },
    /// The kernel lacks features the driver needs.
    #[error("io_uring lacks required features: {}", missing.join(", "))]
    Missing { missing: Vec<String> },
}

static PROBED: OnceLock<Result<Support, UringUnavailable>> = OnceLock::new();

/// Checks (once per process) whether the io_uring driver can run on this kernel.
///
/// The probe rings live on a short-lived thread of their own, so whatever the kernel does
/// when they are torn down (task work, an interrupted wait) never reaches the caller's thread.
pub fn probe() -> Result<Support, UringUnavailable> {
    PROBED
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("arc-uring-probe".into())
                .spawn(probe_now)
                .map_err(|e| UringUnavailable::Setup {
                    reason: format!("cannot start the probe thread: {e}"),
                })
                .and_then(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(UringUnavailable::Setup {
                            reason: "the probe thread panicked".into(),
                        })
                    })
                })
        })
        .clone()
}

fn probe_now() -> Result<Support, UringUnavailable> {
    let ring: IoUring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => {
            let reason = e.to_string();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::ENOSYS | libc::EACCES) => {
                    UringUnavailable::Blocked { reason }
                }
                _ => UringUnavailable::Setup { reason },
            });
        }
    };
    let mut missing = Vec::new();
    let params = ring.params();
    for (ok, name) in [
        (params.is_feature_nodrop(), "IORING_FEAT_NODROP (5.5)"),
        (params.is_feature_fast_poll(), "IORING_FEAT_FAST_POLL (5.7)"),
        (params.is_feature_ext_arg(), "IORING_FEAT_EXT_ARG (5.11)"),
    ] {
        if !ok {
            missing.push(name.to_string());
        }
    }
    let mut probe = Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) => {
            for (code, name) in [
                (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
                (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
                (opcode::Send::CODE, "IORING_OP_SEND"),
                (opcode::Connect::CODE, "IORING_OP_CONNECT"),
                (opcode::LinkTimeout::CODE, "IORING_OP_LINK_TIMEOUT"),
                (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
                (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
                (opcode::Close::CODE, "IORING_OP_CLOSE"),
            ] {
                if !probe.is_supported(code) {
                    missing.push(name.to_string());
                }
            }
        }
        Err(e) => missing.push(format!("IORING_REGISTER_PROBE ({e})")),
    }
    if missing.is_empty()
        && let Err(what) = multishot_recv_works(ring)
    {
        missing.push(what);
    }
    if !missing.is_empty() {
        return Err(UringUnavailable::Missing { missing });
    }
    let single_issuer = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .build(8)
        .is_ok();
    let defer_taskrun = single_issuer
        && IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(8)
            .is_ok();
    let sqpoll = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_sqpoll(10)
        .build(8)
        .is_ok();
    let incremental_buffers = IoUring::new(8)
        .ok()
        .is_some_and(|ring| incremental_buffers_work(ring).is_ok());
    Ok(Support {
        single_issuer,
        defer_taskrun,
        sqpoll,
        incremental_buffers,
    })
}

/// Registers `bufs` on `ring` (consumed incrementally when `incremental`), arms one multishot
/// receive on one end of a socket pair, and runs `check` with the ring, the buffers and the
/// other end. Then it closes the pair and reaps the receive's last completion; the caller
/// unregisters the buffers ([`unregister`]).
pub(super) fn with_multishot_recv(
    ring: &mut IoUring,
    bufs: &mut BufRing,
    incremental: bool,
    check: impl FnOnce(&mut IoUring, &mut BufRing, &mut UnixStream) -> Result<(), String>,
) -> Result<(), String> {
    bufs.register(&ring.submitter(), incremental)
        .map_err(|e| format!("IORING_REGISTER_PBUF_RING (5.19): {e}"))?;
    let (mut a, b) = UnixStream::pair()
        .map_err(|e| format!("socketpair for the multishot test failed ({e})"))?;
    let sqe = opcode::RecvMulti::new(types::Fd(b.as_raw_fd()), bufs.bgid)
        .build()
        .user_data(1);
    // SAFETY: the entry references only the fd (alive until after the last completion is
    // reaped below or the ring is dropped) and the registered buffer group.
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| "submission queue full in probe".to_string())?;
    check(ring, bufs, &mut a)?;
    drop(a);
    // The peer closed: the multishot ends with a zero-length completion.
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter failed ({e})"))?;
    drop(b);
    Ok(())
}

/// Unregisters a probe's buffers before its ring is dropped (dropping the ring tears down its
/// requests), so they can be freed; [`BufRing`] keeps them allocated if that fails.
fn unregister(ring: &IoUring, bufs: &mut BufRing) {
    if bufs.unregister(&ring.submitter()).is_err() {
        // Kept allocated (leaked) by BufRing.
    }
}

/// Registers a provided buffer ring and runs one multishot receive over a socket pair
/// (multishot accept is older than multishot receive, so this covers both).
fn multishot_recv_works(mut ring: IoUring) -> Result<(), String> {
    let mut bufs = BufRing::new(2, 64, 0)
        .map_err(|e| format!("provided buffer ring allocation failed ({e})"))?;
    let result = with_multishot_recv(&mut ring, &mut bufs, false, |ring, _, a| {
        a.write_all(b"x")
            .map_err(|e| format!("socketpair write failed ({e})"))?;
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring_enter failed ({e})"))?;
        let cqe = ring
            .completion()
            .next()
            .ok_or_else(|| "no completion for the multishot receive test".to_string())?;
        if cqe.result() == -libc::EINVAL {
            return Err("multishot IORING_OP_RECV with buffer select (6.0)".into());
        }
        if cqe.result() != 1 || cqueue::buffer_select(cqe.flags()).is_none() {
            return Err(format!(
                "multishot receive test returned {} (flags {:#x})",
                cqe.result(),
                cqe.flags()
            ));
        }
        if !cqueue::more(cqe.flags()) {
            return Err("multishot IORING_OP_RECV (6.0): receive ended after one shot".into());
        }
        Ok(())
    });
    unregister(&ring, &mut bufs);
    result
}

/// Checks, with a one-buffer ring consumed incrementally, that two multishot receives land in
/// that buffer one after the other, the kernel keeping it (`IORING_CQE_F_BUF_MORE`): what the
/// driver relies on when it uses the mode.
fn incremental_buffers_work(mut ring: IoUring) -> Result<(), String> {
    let mut bufs = BufRing::new(1, 64, 0).map_err(|e| e.to_string())?;
    let result = with_multishot_recv(&mut ring, &mut bufs, true, |ring, bufs, a| {
        for (i, chunk) in [&b"ab"[..], &b"cde"[..]].into_iter().enumerate() {
            a.write_all(chunk).map_err(|e| e.to_string())?;
            ring.submit_and_wait(1).map_err(|e| e.to_string())?;
            let cqe = ring.completion().next().ok_or("no completion")?;
            let len = usize::try_from(cqe.result()).map_err(|_| "receive failed")?;
            let bid = cqueue::buffer_select(cqe.flags()).ok_or("no buffer")?;
            if len != chunk.len() || !cqueue::buffer_more(cqe.flags()) || !cqueue::more(cqe.flags())
            {
                return Err(format!(
                    "receive {i}: {len} bytes, flags {:#x}",
                    cqe.flags()
                ));
            }
            let start = bufs.advance(bid, len);
            if start != 2 * i || bufs.slice(bid, start, len) != Some(chunk) {
                return Err(format!("receive {i} did not continue the buffer"));
            }
        }
        Ok(())
    });
    unregister(&ring, &mut bufs);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_is_missing() {
        let e = UringUnavailable::Missing {
            missing: vec![
                "IORING_OP_CONNECT".into(),
                "IORING_FEAT_EXT_ARG (5.11)".into(),
            ],
        };
        assert_eq!(
            e.to_string(),
            "io_uring lacks required features: IORING_OP_CONNECT, IORING_FEAT_EXT_ARG (5.11)"
        );
        let b = UringUnavailable::Blocked {
            reason: "Operation not permitted (os error 1)".into(),
        };
        assert!(b.to_string().contains("seccomp"));
        let s = Support {
            single_issuer: true,
            defer_taskrun: false,
            sqpoll: true,
            incremental_buffers: true,
        };
        assert_eq!(
            s.to_string(),
            "io_uring: available (multishot accept, multishot recv, provided buffer rings, \
             SINGLE_ISSUER, SQPOLL, incremental buffers)"
        );
    }

    /// Buffer-ring incremental consumption against the kernel (here, beside the probe harness
    /// it runs in, so `bufring` does not import `probe` back): a stream of receives over two 64-byte
    /// buffers comes back intact through `advance`/`slice`/`release`, receives continue a
    /// buffer until it is full, and a full buffer goes back to the kernel and is used again.
    #[test]
    fn incremental_receives_fill_buffers_in_turn_and_recycle_them() {
        use io_uring::{IoUring, cqueue};
        use std::io::Write;

        let mut ring = IoUring::new(8).expect("io_uring");
        let mut br = BufRing::new(2, 64, 7).expect("alloc");
        let sent: Vec<u8> = (0..300u32).map(|i| (i * 7 + 1) as u8).collect();
        let mut got = Vec::new();
        let mut seen = Vec::new();
        with_multishot_recv(&mut ring, &mut br, true, |ring, br, a| {
            for chunk in sent.chunks(40) {
                a.write_all(chunk).expect("write");
                let want = got.len() + chunk.len();
                while got.len() < want {
                    ring.submit_and_wait(1).expect("enter");
                    let cqes: Vec<_> = ring.completion().map(|c| (c.result(), c.flags())).collect();
                    for (res, flags) in cqes {
                        let len = usize::try_from(res).expect("receive succeeded");
                        assert!(cqueue::more(flags), "multishot receive ended: {flags:#x}");
                        let bid = cqueue::buffer_select(flags).expect("a buffer");
                        let start = br.advance(bid, len);
                        got.extend_from_slice(br.slice(bid, start, len).expect("in the buffer"));
                        seen.push((bid, start, len, cqueue::buffer_more(flags)));
                        br.release(bid, cqueue::buffer_more(flags));
                    }
                }
            }
            Ok(())
        })
        .expect("incremental buffer rings (6.12)");
        br.unregister(&ring.submitter()).expect("unregister");
        assert_eq!(got, sent, "{seen:?}");
        // 40 bytes then 24 (buffer 0 full, given back), 16 in buffer 1, ...
        assert_eq!(seen[0], (0, 0, 40, true), "{seen:?}");
        assert_eq!(seen[1], (0, 40, 24, false), "{seen:?}");
        assert_eq!(seen[2], (1, 0, 16, true), "{seen:?}");
        // 300 bytes over 64-byte buffers: both were used more than once.
        assert!(
            seen.iter().filter(|s| s.0 == 0 && s.1 == 0).count() >= 2,
            "{seen:?}"
        );
        assert!(
            seen.iter().filter(|s| s.0 == 1 && s.1 == 0).count() >= 2,
            "{seen:?}"
        );
    }
}
