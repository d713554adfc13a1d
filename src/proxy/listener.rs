//! Listener binding: the sockets the workers accept on, one per listener per worker.
//!
//! Every worker gets its own socket per configured listener, bound with `SO_REUSEPORT` so the
//! kernel spreads new connections over the workers; a zero-downtime upgrade hands the sockets
//! to the next process, which adopts them ([`adopt_all`]) instead of binding new ones. This
//! room is below both the io drivers (which accept on a [`BoundListener`]) and the worker set
//! (which binds them before any thread starts), so neither imports the other for it.

#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::proxy::tls::TlsAcceptor;

/// One configured listener, as the workers need it.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Index in the configuration's `listeners[]` (becomes [`crate::proxy::io::ConnInfo::listener`]).
    pub index: usize,
    /// The listener's configured name, for error messages.
    pub name: Arc<str>,
    /// Address to bind; port 0 picks one port shared by every worker.
    pub addr: SocketAddr,
    /// Set on https listeners: the driver terminates TLS with it before the handler sees
    /// the connection.
    pub tls: Option<Arc<TlsAcceptor>>,
}

/// A listener socket bound for one worker: non-blocking, `SO_REUSEPORT`, listening.
#[derive(Debug)]
pub struct BoundListener {
    pub spec: ListenerSpec,
    pub socket: TcpListener,
}

/// A listener socket could not be created, bound, adopted or put to listening.
#[derive(Debug, thiserror::Error)]
#[error("listener {name:?} on {addr}: cannot {step}: {source}")]
pub struct ListenerError {
    /// The listener's configured name.
    pub name: Arc<str>,
    /// The address it was to serve.
    pub addr: SocketAddr,
    /// The step that failed (`"bind"`, `"listen"`, ...).
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

/// Listen backlog of every listener socket (the kernel caps it at `somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds one listener socket for one worker: `SO_REUSEADDR` + `SO_REUSEPORT`, non-blocking,
/// dual-stack for IPv6 wildcard addresses, listening with [`LISTEN_BACKLOG`].
pub fn bind_listener(spec: &ListenerSpec) -> Result<TcpListener, ListenerError> {
    let err = |step: &'static str| {
        let name = Arc::clone(&spec.name);
        let addr = spec.addr;
        move |source: io::Error| ListenerError {
            name,
            addr,
            step,
            source,
        }
    };
    let domain = Domain::for_address(spec.addr);
    let socket = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(err("create the socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("set SO_REUSEADDR"))?;
    socket
        .set_reuse_port(true)
        .map_err(err("set SO_REUSEPORT"))?;
    if spec.addr.is_ipv6() {
        socket
            .set_only_v6(false)
            .map_err(err("clear IPV6_V6ONLY"))?;
    }
    socket
        .bind(&SockAddr::from(spec.addr))
        .map_err(err("bind"))?;
    socket.listen(LISTEN_BACKLOG).map_err(err("listen"))?;
    Ok(socket.into())
}

/// Binds `workers` sockets per listener. The first socket of a listener with port 0 picks the
/// port; the others bind that same port so every worker serves the same address.
pub fn bind_all(
    specs: &[ListenerSpec],
    workers: usize,
) -> Result<Vec<Vec<BoundListener>>, ListenerError> {
    let mut per_worker: Vec<Vec<BoundListener>> = (0..workers).map(|_| Vec::new()).collect();
    for spec in specs {
        let mut spec = spec.clone();
        for (w, slot) in per_worker.iter_mut().enumerate() {
            let socket = bind_listener(&spec)?;
            if w == 0 {
                spec.addr = socket.local_addr().map_err(|source| ListenerError {
                    name: Arc::clone(&spec.name),
                    addr: spec.addr,
                    step: "read the bound address",
                    source,
                })?;
            }
            slot.push(BoundListener {
                spec: spec.clone(),
                socket,
            });
        }
    }
    Ok(per_worker)
}

/// A listening socket handed over by the process that ran before this one (zero-downtime
/// upgrade), with the configured name of the listener it served.
#[derive(Debug)]
pub struct InheritedListener {
    pub name: String,
    pub socket: TcpListener,
}

/// Like [`bind_all`], but first adopts the inherited sockets of each listener: a listener
/// adopts the inherited sockets with its name whose address it would bind (same address, or
/// same IP when it asks for port 0). Adopted sockets are spread round robin over the workers,
/// so when this process runs fewer workers than the old one, some workers accept on several
/// sockets and no socket of the old reuse-port group is closed with connections queued in it;
/// when it runs more, the extra workers share the adopted sockets (duplicates) instead of
/// binding new ones, so the reuse-port group stays exactly the old one and a new process that
/// exits early leaves every queued connection to the old one. A listener with no inherited
/// socket is bound anew. Sockets left in `inherited` matched no listener; the caller decides
/// what to do.
pub fn adopt_all(
    specs: &[ListenerSpec],
    workers: usize,
    inherited: &mut Vec<InheritedListener>,
) -> Result<Vec<Vec<BoundListener>>, ListenerError> {
    let workers = workers.max(1);
    let mut per_worker: Vec<Vec<BoundListener>> = (0..workers).map(|_| Vec::new()).collect();
    for spec in specs {
        let mut spec = spec.clone();
        let mut adopted = Vec::new();
        let mut rest = Vec::with_capacity(inherited.len());
        for l in inherited.drain(..) {
            let fits = l.name == *spec.name
                && l.socket.local_addr().is_ok_and(|a| {
                    a == spec.addr || (spec.addr.port() == 0 && a.ip() == spec.addr.ip())
                });
            if fits {
                adopted.push(l.socket);
            } else {
                rest.push(l);
            }
        }
        *inherited = rest;
        if adopted.is_empty() {
            for (w, slot) in per_worker.iter_mut().enumerate() {
                let socket = bind_listener(&spec)?;
                if w == 0 {
                    spec.addr = bound_addr(&spec, &socket)?;
                }
                slot.push(BoundListener {
                    spec: spec.clone(),
                    socket,
                });
            }
            continue;
        }
        let count = adopted.len();
        for (j, socket) in adopted.into_iter().enumerate() {
            if j == 0 {
                spec.addr = bound_addr(&spec, &socket)?;
            }
            socket
                .set_nonblocking(true)
                .map_err(|source| ListenerError {
                    name: Arc::clone(&spec.name),
                    addr: spec.addr,
                    step: "make the inherited socket non-blocking",
                    source,
                })?;
            if let Some(slot) = per_worker.get_mut(j % workers) {
                slot.push(BoundListener {
                    spec: spec.clone(),
                    socket,
                });
            }
        }
        // Workers beyond the inherited sockets share them (duplicates of the same sockets)
        // rather than binding new ones: a new socket would join the reuse-port group at once
        // and take a share of new connections, which a new process that fails before the old
        // one says "go" would reset when it exits.
        let shared: Vec<TcpListener> = per_worker
            .iter()
            .take(count)
            .filter_map(|w| w.iter().find(|b| b.spec.index == spec.index))
            .map(|b| b.socket.try_clone())
            .collect::<io::Result<_>>()
            .map_err(|source| ListenerError {
                name: Arc::clone(&spec.name),
                addr: spec.addr,
                step: "share an inherited socket",
                source,
            })?;
        for (k, slot) in per_worker.iter_mut().skip(count).enumerate() {
            let Some(socket) = shared.get(k % shared.len().max(1)) else {
                break;
            };
            let socket = socket.try_clone().map_err(|source| ListenerError {
                name: Arc::clone(&spec.name),
                addr: spec.addr,
                step: "share an inherited socket",
                source,
            })?;
            slot.push(BoundListener {
                spec: spec.clone(),
                socket,
            });
        }
    }
    Ok(per_worker)
}

/// The (device, inode) of a socket: duplicates of one socket share it.
pub(crate) fn socket_identity(socket: &TcpListener) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(OwnedFd::from(socket.try_clone()?));
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

fn bound_addr(spec: &ListenerSpec, socket: &TcpListener) -> Result<SocketAddr, ListenerError> {
    socket.local_addr().map_err(|source| ListenerError {
        name: Arc::clone(&spec.name),
        addr: spec.addr,
        step: "read the bound address",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn spec(name: &str, addr: SocketAddr) -> ListenerSpec {
        ListenerSpec {
            index: 0,
            name: Arc::from(name),
            addr,
            tls: None,
        }
    }

    #[test]
    fn port_zero_is_shared_by_every_worker() {
        let specs = [spec("http", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))];
        let bound = bind_all(&specs, 3).unwrap();
        assert_eq!(bound.len(), 3);
        let port = bound[0][0].socket.local_addr().unwrap().port();
        assert_ne!(port, 0);
        for worker in &bound {
            assert_eq!(worker[0].socket.local_addr().unwrap().port(), port);
            assert_eq!(worker[0].spec.addr.port(), port);
        }
    }

    #[test]
    fn ipv6_wildcard_accepts_ipv4_clients() {
        let specs = [spec("v6", "[::]:0".parse().unwrap())];
        let Ok(bound) = bind_all(&specs, 1) else {
            // A host without IPv6 cannot run this check.
            return;
        };
        let port = bound[0][0].spec.addr.port();
        let client = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        assert!(client.is_ok(), "IPv4 client refused: {client:?}");
    }

    #[test]
    fn bind_error_names_the_listener_and_address() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_all(&[spec("public-https", addr)], 1).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("public-https"), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(matches!(err, ListenerError { step: "bind", .. }), "{err:?}");
    }

    fn inherit(bound: Vec<Vec<BoundListener>>) -> Vec<InheritedListener> {
        bound
            .into_iter()
            .flatten()
            .map(|b| InheritedListener {
                name: b.spec.name.to_string(),
                socket: b.socket,
            })
            .collect()
    }

    fn inode(l: &TcpListener) -> u64 {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        // "socket:[12345]"
        link.to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap()
    }

    #[test]
    fn fewer_workers_adopt_every_inherited_socket() {
        let specs = [spec("http", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))];
        let old = bind_all(&specs, 3).unwrap();
        let port = old[0][0].spec.addr.port();
        let sockets: Vec<u64> = old.iter().map(|w| inode(&w[0].socket)).collect();
        let mut inherited = inherit(old);
        let new = adopt_all(&specs, 2, &mut inherited).unwrap();
        assert!(inherited.is_empty());
        // Three sockets over two workers: none is closed (its queue would be reset).
        assert_eq!(new[0].len(), 2);
        assert_eq!(new[1].len(), 1);
        let mut adopted: Vec<u64> = new.iter().flatten().map(|b| inode(&b.socket)).collect();
        adopted.sort_unstable();
        let mut expected = sockets.clone();
        expected.sort_unstable();
        assert_eq!(adopted, expected, "the same sockets, not new ones");
        assert!(new.iter().flatten().all(|b| b.spec.addr.port() == port));
    }

    #[test]
    fn more_workers_share_the_inherited_sockets_and_bind_only_new_listeners() {
        let specs = [
            spec("http", SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            ListenerSpec {
                index: 1,
                ..spec("other", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            },
        ];
        let old = bind_all(&specs[..1], 2).unwrap();
        let port = old[0][0].spec.addr.port();
        let mut first: Vec<u64> = old.iter().map(|w| inode(&w[0].socket)).collect();
        first.sort_unstable();
        let mut inherited = inherit(old);
        // A stray socket under a name no listener has is left to the caller.
        inherited.push(InheritedListener {
            name: "gone".into(),
            socket: TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        });
        let new = adopt_all(&specs, 3, &mut inherited).unwrap();
        assert_eq!(inherited.len(), 1);
        assert_eq!(inherited[0].name, "gone");
        // Three workers over two inherited sockets: no new socket joins the group.
        let mut http: Vec<u64> = new.iter().map(|w| inode(&w[0].socket)).collect();
        http.sort_unstable();
        http.dedup();
        assert_eq!(http, first);
        for w in &new {
            assert_eq!(w.len(), 2);
            assert_eq!(w[0].socket.local_addr().unwrap().port(), port);
            assert_eq!(w[0].spec.index, 0);
            assert_eq!(w[1].spec.index, 1);
        }
        // The "other" listener was bound fresh; all its workers share one port.
        let other = new[0][1].spec.addr.port();
        assert!(
            new.iter()
                .all(|w| w[1].socket.local_addr().unwrap().port() == other)
        );
    }
}
