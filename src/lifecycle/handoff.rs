//! Listening-socket handoff between the running process and the new one of a zero-downtime
//! upgrade (SIGUSR2).
//!
//! The parent binds a `SOCK_SEQPACKET` Unix socket in the abstract namespace under a fresh
//! random name (nothing on the file system, so it works under `ProtectSystem=strict` and
//! `PrivateTmp`), starts the new binary with that name in [`UPGRADE_SOCKET_ENV`], accepts one
//! connection and checks with `SO_PEERCRED` that it comes from the child it started. It then
//! sends one message per socket — `L<listener name>` for each data-plane listener socket (one
//! per worker, the whole `SO_REUSEPORT` group) and `A` for the admin socket — each carrying the
//! descriptor with `SCM_RIGHTS`, then `E`. The child adopts the sockets instead of binding
//! (the same open sockets: nothing queued in them is lost), starts its workers with accepting
//! paused, and answers `R` on the same connection once it is ready to serve. The parent then
//! answers `G` ("go") and stops accepting itself; only on `G` does the child start accepting.
//! Until then every connection stays queued in the shared sockets, so a child that fails or is
//! killed before `G` takes no connection with it. Sequenced packets keep every descriptor with
//! its own label.
//!
//! Message boundaries are the only framing; every message is at most [`MAX_MESSAGE`] bytes.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::proxy::listener::InheritedListener;

/// Environment variable naming the abstract Unix socket the child connects to.
pub const UPGRADE_SOCKET_ENV: &str = "ARC_UPGRADE_SOCKET";
/// Longest message of the handoff protocol (a label plus a listener name).
pub const MAX_MESSAGE: usize = 512;

/// Why a handoff step failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff socket: cannot {step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("handoff: {0}")]
    Protocol(String),
    #[error("handoff: timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("handoff: the peer closed the connection while {0}")]
    Closed(&'static str),
}

fn io_err(step: &'static str) -> impl FnOnce(rustix::io::Errno) -> HandoffError {
    move |e| HandoffError::Io {
        step,
        source: e.into(),
    }
}

/// Waits until `fd` is readable or `until` passes (`Ok(false)`).
fn wait_readable(fd: impl AsFd, until: Instant) -> Result<bool, HandoffError> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let slice = left.min(Duration::from_millis(100));
        let ts = rustix::event::Timespec {
            tv_sec: i64::try_from(slice.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(slice.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN | rustix::event::PollFlags::HUP,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io_err("poll")(e)),
        }
    }
}

fn send(sock: impl AsFd, payload: &[u8], fd: Option<&OwnedFd>) -> Result<(), HandoffError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let borrowed;
    if let Some(fd) = fd {
        borrowed = [fd.as_fd()];
        if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(HandoffError::Protocol("descriptor does not fit".into()));
        }
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(payload)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(io_err("send"))?;
    Ok(())
}

/// One protocol message: its bytes and the descriptor it carried, if any.
type Message = (Vec<u8>, Option<OwnedFd>);

/// Receives one message; `Ok(None)` when the peer closed.
fn recv(sock: impl AsFd) -> Result<Option<Message>, HandoffError> {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(io_err("receive"))?;
    let mut fd = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            for f in fds {
                // More than one descriptor in a message is a protocol error; extra ones close.
                if fd.is_none() {
                    fd = Some(f);
                }
            }
        }
    }
    if got.bytes == 0 && fd.is_none() {
        return Ok(None);
    }
    let n = got.bytes.min(buf.len());
    Ok(Some((buf.get(..n).unwrap_or_default().to_vec(), fd)))
}

/// The sockets a parent hands over.
#[derive(Debug, Default)]
pub struct Handover {
    /// Data-plane listener sockets with their listener names (every worker's socket).
    pub listeners: Vec<(String, OwnedFd)>,
    /// The admin (`observability.metrics_bind`) socket.
    pub admin: Option<OwnedFd>,
}

/// The parent's end: an abstract Unix socket the child connects to.
#[derive(Debug)]
pub struct HandoffListener {
    sock: OwnedFd,
    name: String,
}

impl HandoffListener {
    /// Binds a fresh abstract name.
    pub fn bind() -> Result<HandoffListener, HandoffError> {
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(io_err("create"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("arc-gateway-upgrade-{}-{nanos:x}", std::process::id());
        let addr = SocketAddrUnix::new_abstract_name(name.as_bytes()).map_err(io_err("name"))?;
        rustix::net::bind(&sock, &addr).map_err(io_err("bind"))?;
        rustix::net::listen(&sock, 1).map_err(io_err("listen"))?;
        Ok(HandoffListener { sock, name })
    }

    /// The value for [`UPGRADE_SOCKET_ENV`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Accepts the child `child_pid` (connections from any other process are closed) and
    /// sends it `handover`. Gives up at `until`, or when `child_alive` says the child is gone.
    pub fn hand_over(
        &self,
        child_pid: u32,
        handover: &Handover,
        until: Instant,
        child_alive: &mut dyn FnMut() -> bool,
    ) -> Result<ParentChannel, HandoffError> {
        let waited_from = Instant::now();
        let conn = loop {
            if !child_alive() {
                return Err(HandoffError::Closed(
                    "waiting for the new process to connect",
                ));
            }
            if !wait_readable(
                &self.sock,
                until.min(Instant::now() + Duration::from_millis(200)),
            )? {
                if Instant::now() >= until {
                    return Err(HandoffError::Timeout(
                        until.saturating_duration_since(waited_from),
                        "the new process to connect",
                    ));
                }
                continue;
            }
            let conn = rustix::net::accept_with(&self.sock, SocketFlags::CLOEXEC)
                .map_err(io_err("accept"))?;
            let peer = rustix::net::sockopt::socket_peercred(&conn).map_err(io_err("peercred"))?;
            if u32::try_from(peer.pid.as_raw_nonzero().get()).ok() == Some(child_pid) {
                break conn;
            }
            tracing::warn!(
                pid = peer.pid.as_raw_nonzero().get(),
                "upgrade: a process other than the new one connected to the handoff socket; closed"
            );
        };
        for (name, fd) in &handover.listeners {
            let mut msg = Vec::with_capacity(1 + name.len());
            msg.push(b'L');
            msg.extend_from_slice(name.as_bytes());
            if msg.len() > MAX_MESSAGE {
                return Err(HandoffError::Protocol(format!(
                    "listener name too long: {name}"
                )));
            }
            send(&conn, &msg, Some(fd))?;
        }
        if let Some(fd) = &handover.admin {
            send(&conn, b"A", Some(fd))?;
        }
        send(&conn, b"E", None)?;
        Ok(ParentChannel { conn })
    }
}

/// The parent's side of an established handoff: waits for the child's readiness.
#[derive(Debug)]
pub struct ParentChannel {
    conn: OwnedFd,
}

impl ParentChannel {
    /// Waits for the child's `R` until `until`; an error says why it did not come.
    pub fn wait_ready(
        &self,
        until: Instant,
        child_alive: &mut dyn FnMut() -> bool,
    ) -> Result<(), HandoffError> {
        let waited_from = Instant::now();
        loop {
            if !child_alive() {
                return Err(HandoffError::Closed(
                    "waiting for the new process to be ready",
                ));
            }
            let slice = until.min(Instant::now() + Duration::from_millis(200));
            if wait_readable(&self.conn, slice)? {
                return match recv(&self.conn)? {
                    Some((msg, _)) if msg == b"R" => Ok(()),
                    Some((msg, _)) => Err(HandoffError::Protocol(format!(
                        "unexpected message {:?}",
                        String::from_utf8_lossy(&msg)
                    ))),
                    None => Err(HandoffError::Closed(
                        "waiting for the new process to be ready",
                    )),
                };
            }
            if Instant::now() >= until {
                return Err(HandoffError::Timeout(
                    until.saturating_duration_since(waited_from),
                    "the new process to be ready",
                ));
            }
        }
    }
}

impl ParentChannel {
    /// Tells the ready child to start accepting (`G`); the caller stops its own accepting
    /// right after. An error means the child is gone or the channel broke.
    pub fn go(&self) -> Result<(), HandoffError> {
        send(&self.conn, b"G", None)
    }
}

/// What a process started by an upgrade received from its parent.
#[derive(Debug)]
pub struct Inherited {
    /// Data-plane listener sockets, for [`crate::proxy::listener::adopt_all`].
    pub listeners: Vec<InheritedListener>,
    /// The admin socket.
    pub admin: Option<TcpListener>,
    channel: OwnedFd,
}

impl Inherited {
    /// In a process started by an upgrade ([`UPGRADE_SOCKET_ENV`] set): connects to the
    /// parent and receives its sockets. `Ok(None)` in a process started normally.
    pub fn from_env(timeout: Duration) -> Result<Option<Inherited>, HandoffError> {
        let Some(name) = std::env::var_os(UPGRADE_SOCKET_ENV) else {
            return Ok(None);
        };
        let name = name.to_string_lossy().into_owned();
        Self::connect(&name, timeout).map(Some)
    }

    /// Connects to the parent's handoff socket `name` and receives the sockets.
    pub fn connect(name: &str, timeout: Duration) -> Result<Inherited, HandoffError> {
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(io_err("create"))?;
        let addr = SocketAddrUnix::new_abstract_name(name.as_bytes()).map_err(io_err("name"))?;
        rustix::net::connect(&sock, &addr).map_err(io_err("connect"))?;
        let until = Instant::now() + timeout;
        let mut listeners = Vec::new();
        let mut admin = None;
        loop {
            if !wait_readable(&sock, until)? {
                return Err(HandoffError::Timeout(timeout, "the listening sockets"));
            }
            let Some((msg, fd)) = recv(&sock)? else {
                return Err(HandoffError::Closed("sending the listening sockets"));
            };
            match (msg.split_first(), fd) {
                (Some((b'E', _)), _) => break,
                (Some((b'L', name)), Some(fd)) => {
                    let socket = listening_tcp(fd)?;
                    listeners.push(InheritedListener {
                        name: String::from_utf8_lossy(name).into_owned(),
                        socket,
                    });
                }
                (Some((b'A', _)), Some(fd)) => admin = Some(listening_tcp(fd)?),
                _ => {
                    return Err(HandoffError::Protocol(format!(
                        "unexpected message {:?}",
                        String::from_utf8_lossy(&msg)
                    )));
                }
            }
        }
        Ok(Inherited {
            listeners,
            admin,
            channel: sock,
        })
    }

    /// Splits off the readiness channel (the sockets go to the server, the channel stays).
    pub fn into_parts(self) -> (Vec<InheritedListener>, Option<TcpListener>, ReadyChannel) {
        (
            self.listeners,
            self.admin,
            ReadyChannel { conn: self.channel },
        )
    }
}

/// The child's end of the handoff connection: reports readiness, then waits for "go".
#[derive(Debug)]
pub struct ReadyChannel {
    conn: OwnedFd,
}

impl ReadyChannel {
    /// Tells the parent this process is ready to serve (its workers run, accepting paused).
    pub fn ready(&self) -> Result<(), HandoffError> {
        send(&self.conn, b"R", None)
    }

    /// Waits for the parent's "go" (at most `timeout`). Any other outcome — the parent closed
    /// the channel, gave up, or said something else — is an error: this process must then
    /// exit without having accepted anything.
    pub fn wait_go(self, timeout: Duration) -> Result<(), HandoffError> {
        let until = Instant::now() + timeout;
        if !wait_readable(&self.conn, until)? {
            return Err(HandoffError::Timeout(timeout, "the previous process's go"));
        }
        match recv(&self.conn)? {
            Some((msg, _)) if msg == b"G" => Ok(()),
            Some((msg, _)) => Err(HandoffError::Protocol(format!(
                "unexpected message {:?}",
                String::from_utf8_lossy(&msg)
            ))),
            None => Err(HandoffError::Closed("waiting for go")),
        }
    }
}

/// Checks that a received descriptor is a listening TCP socket and wraps it.
fn listening_tcp(fd: OwnedFd) -> Result<TcpListener, HandoffError> {
    let listening = rustix::net::sockopt::socket_acceptconn(&fd).map_err(io_err("inspect"))?;
    let tcp =
        rustix::net::sockopt::socket_type(&fd).map_err(io_err("inspect"))? == SocketType::STREAM;
    if !listening || !tcp {
        return Err(HandoffError::Protocol(
            "a handed-over descriptor is not a listening TCP socket".into(),
        ));
    }
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_with_their_names_and_stay_the_same_socket() {
        let parent = HandoffListener::bind().unwrap();
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [
            a.local_addr().unwrap(),
            b.local_addr().unwrap(),
            admin.local_addr().unwrap(),
        ];
        let handover = Handover {
            listeners: vec![
                ("http".into(), OwnedFd::from(a)),
                ("https".into(), OwnedFd::from(b)),
            ],
            admin: Some(OwnedFd::from(admin)),
        };
        let name = parent.name().to_string();
        let child = std::thread::spawn(move || {
            let got = Inherited::connect(&name, Duration::from_secs(5)).unwrap();
            let names: Vec<_> = got
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.socket.local_addr().unwrap()))
                .collect();
            let admin = got.admin.as_ref().map(|l| l.local_addr().unwrap());
            // The same socket: a connection queued before the handover is accepted here.
            let queued = std::net::TcpStream::connect(names[0].1).unwrap();
            let (accepted, _) = got.listeners[0].socket.accept().unwrap();
            assert_eq!(accepted.peer_addr().unwrap(), queued.local_addr().unwrap());
            let (_, _, ready) = got.into_parts();
            ready.ready().unwrap();
            ready.wait_go(Duration::from_secs(5)).unwrap();
            (names, admin)
        });
        // The test process is its own "child" here.
        let pid = std::process::id();
        let channel = parent
            .hand_over(
                pid,
                &handover,
                Instant::now() + Duration::from_secs(5),
                &mut || true,
            )
            .unwrap();
        channel
            .wait_ready(Instant::now() + Duration::from_secs(5), &mut || true)
            .unwrap();
        channel.go().unwrap();
        let (names, admin) = child.join().unwrap();
        assert_eq!(
            names,
            vec![
                ("http".to_string(), addrs[0]),
                ("https".to_string(), addrs[1])
            ]
        );
        assert_eq!(admin, Some(addrs[2]));
    }

    #[test]
    fn a_child_whose_parent_gives_up_gets_no_go() {
        let parent = HandoffListener::bind().unwrap();
        let name = parent.name().to_string();
        let child = std::thread::spawn(move || {
            let got = Inherited::connect(&name, Duration::from_secs(5)).unwrap();
            let (_, _, ready) = got.into_parts();
            ready.ready().unwrap();
            ready.wait_go(Duration::from_secs(5))
        });
        let channel = parent
            .hand_over(
                std::process::id(),
                &Handover::default(),
                Instant::now() + Duration::from_secs(5),
                &mut || true,
            )
            .unwrap();
        channel
            .wait_ready(Instant::now() + Duration::from_secs(5), &mut || true)
            .unwrap();
        // The parent decides against the child (late, failed): it closes without "go".
        drop(channel);
        let err = child.join().unwrap().unwrap_err();
        assert!(matches!(err, HandoffError::Closed(_)), "{err}");

        // And a parent that stays silent: the child gives up after its timeout.
        let name = parent.name().to_string();
        let child = std::thread::spawn(move || {
            let got = Inherited::connect(&name, Duration::from_secs(5)).unwrap();
            let (_, _, ready) = got.into_parts();
            ready.ready().unwrap();
            ready.wait_go(Duration::from_millis(200))
        });
        let _channel = parent
            .hand_over(
                std::process::id(),
                &Handover::default(),
                Instant::now() + Duration::from_secs(5),
                &mut || true,
            )
            .unwrap();
        let err = child.join().unwrap().unwrap_err();
        assert!(matches!(err, HandoffError::Timeout(..)), "{err}");
    }

    #[test]
    fn a_child_that_never_reports_ready_times_out_or_is_seen_gone() {
        let parent = HandoffListener::bind().unwrap();
        let name = parent.name().to_string();
        let child = std::thread::spawn(move || {
            let got = Inherited::connect(&name, Duration::from_secs(5)).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(got);
        });
        let channel = parent
            .hand_over(
                std::process::id(),
                &Handover::default(),
                Instant::now() + Duration::from_secs(5),
                &mut || true,
            )
            .unwrap();
        let started = Instant::now();
        let err = channel
            .wait_ready(Instant::now() + Duration::from_secs(5), &mut || true)
            .unwrap_err();
        assert!(matches!(err, HandoffError::Closed(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(4));
        child.join().unwrap();

        let err = parent
            .hand_over(
                std::process::id(),
                &Handover::default(),
                Instant::now() + Duration::from_millis(300),
                &mut || true,
            )
            .unwrap_err();
        assert!(matches!(err, HandoffError::Timeout(..)), "{err}");
        let err = parent
            .hand_over(
                std::process::id(),
                &Handover::default(),
                Instant::now() + Duration::from_secs(5),
                &mut || false,
            )
            .unwrap_err();
        assert!(matches!(err, HandoffError::Closed(_)), "{err}");
    }
}
