//! Typed label values of Arc's metrics.
//!
//! Every label with a closed set of values is an enum here, so the hot path indexes fixed
//! arrays by [`index`](StatusClass::index) instead of hashing label strings, and the exported
//! spelling lives in exactly one place ([`as_str`](StatusClass::as_str)). Adding a value is one
//! line in the enum's list; arrays sized by `COUNT` grow with it.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Declares a label enum with its exported spellings, `ALL`, `COUNT`, `index()` and the
/// prometheus-client label value encoding.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order (`ALL[i].index() == i`).
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Number of values; the length of arrays indexed by [`Self::index`].
            pub const COUNT: usize = Self::ALL.len();

            /// The label value as exported.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $value, )+
                }
            }

            /// Position in [`Self::ALL`]; used to index fixed per-worker arrays.
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// Class of an HTTP status code (`status_class` label).
    pub enum StatusClass {
        /// 100–199.
        Informational => "1xx",
        /// 200–299.
        Success => "2xx",
        /// 300–399.
        Redirection => "3xx",
        /// 400–499.
        ClientError => "4xx",
        /// 500–599.
        ServerError => "5xx",
    }
}

impl StatusClass {
    /// Classifies a status code. Codes below 200 count as `1xx` and codes of 500 and above as
    /// `5xx` (the codec refuses codes outside 100–599, so those never reach a counter).
    pub const fn from_status(status: u16) -> Self {
        match status {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

label_enum! {
    /// Why Arc answered with an error of its own or gave up on a request (`reason` label of
    /// `arc_errors_total`). The comment on each value names the status Arc returns.
    pub enum ErrorReason {
        /// 400: malformed or smuggling-prone request.
        BadRequest => "bad_request",
        /// 431: request head over `limits.max_head`.
        HeadTooLarge => "head_too_large",
        /// 431: more headers than `limits.max_headers`.
        TooManyHeaders => "too_many_headers",
        /// 413: body over `limits.max_body`.
        BodyTooLarge => "body_too_large",
        /// Connection closed: head not complete within `limits.header_read_timeout`.
        HeaderReadTimeout => "header_read_timeout",
        /// 403: source address denied.
        Forbidden => "forbidden",
        /// 429: rate limited.
        RateLimited => "rate_limited",
        /// 404: no route matched.
        NoRoute => "no_route",
        /// 502: connecting to the upstream failed.
        UpstreamConnect => "upstream_connect",
        /// 502: the upstream's response could not be parsed.
        UpstreamInvalidResponse => "upstream_invalid_response",
        /// The upstream closed or reset the connection mid-response.
        UpstreamReset => "upstream_reset",
        /// 503: the upstream has no (healthy) endpoint.
        NoEndpoints => "no_endpoints",
        /// 503: circuit breaker open.
        CircuitOpen => "circuit_open",
        /// 503: waited too long in the concurrency queue.
        QueueTimeout => "queue_timeout",
        /// 504: the upstream did not answer in time.
        UpstreamTimeout => "upstream_timeout",
        /// TLS handshake with the client failed.
        TlsHandshake => "tls_handshake",
        /// 502: the TLS handshake with an HTTPS upstream failed.
        UpstreamTls => "upstream_tls",
    }
}

label_enum! {
    /// Why a new downstream connection was refused (`reason` label of
    /// `arc_connections_refused_total`).
    pub enum RefuseReason {
        /// Over `max_connections`.
        MaxConnections => "max_connections",
        /// The process is draining and no longer takes connections.
        Draining => "draining",
    }
}

label_enum! {
    /// Outcome of taking an upstream connection from the per-worker pool (`result` label).
    pub enum PoolResult {
        /// An idle pooled connection was reused.
        Hit => "hit",
        /// A new connection had to be opened.
        Miss => "miss",
    }
}

label_enum! {
    /// The io driver a worker runs (`driver` label of `arc_io_driver`).
    pub enum IoDriver {
        /// The io_uring driver.
        IoUring => "io_uring",
        /// The epoll fallback driver.
        Epoll => "epoll",
    }
}

label_enum! {
    /// Outcome of a configuration reload (`result` label of `arc_config_reload_total`).
    pub enum ReloadResult {
        /// The new configuration was applied.
        Success => "success",
        /// The new configuration was rejected; the old one keeps serving.
        Failure => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_all() {
        for (i, v) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        for (i, v) in ErrorReason::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        for (i, v) in RefuseReason::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        assert_eq!(StatusClass::COUNT, 5);
        assert_eq!(PoolResult::COUNT, 2);
        assert_eq!(IoDriver::COUNT, 2);
        assert_eq!(ReloadResult::COUNT, 2);
    }

    #[test]
    fn label_values_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for v in ErrorReason::ALL {
            let s = v.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(seen.insert(s), "duplicate {s}");
        }
    }

    #[test]
    fn status_classes() {
        let cases = [
            (100, "1xx"),
            (101, "1xx"),
            (200, "2xx"),
            (204, "2xx"),
            (299, "2xx"),
            (301, "3xx"),
            (308, "3xx"),
            (400, "4xx"),
            (404, "4xx"),
            (431, "4xx"),
            (499, "4xx"),
            (500, "5xx"),
            (504, "5xx"),
            (599, "5xx"),
            (0, "1xx"),
            (999, "5xx"),
        ];
        for (status, class) in cases {
            assert_eq!(StatusClass::from_status(status).as_str(), class, "{status}");
        }
    }
}

label_enum! {
    /// What the XDP program decided for a packet to a listener port (`action` label of
    /// `arc_xdp_packets_total`).
    pub enum XdpAction {
        /// Passed on to the network stack.
        Passed => "passed",
        /// Dropped: the source is in `xdp.deny_cidrs`.
        Denied => "denied",
        /// Dropped: a new SYN over the source's `xdp.syn_limit`.
        SynLimited => "syn_limited",
        /// Headers too short or malformed to judge; passed to the stack.
        ParseError => "parse_error",
    }
}
