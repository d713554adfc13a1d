//! The two io drivers as a test parameter, and [`per_driver!`](crate::common::per_driver) which
//! instantiates scenarios written once for both.
//!
//! A scenario is a plain function `fn scenario(driver: Driver)`; `per_driver!(scenario, ...)`
//! makes the tests `epoll::scenario` and `io_uring::scenario` calling it, so a failure names the
//! driver and `cargo test epoll::` or `cargo test io_uring::` runs one driver only.

use arc_gateway::proxy::driver::DriverKind;

/// One of the io drivers a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Epoll,
    Uring,
}

impl Driver {
    /// The data-plane driver this stands for.
    pub fn kind(self) -> DriverKind {
        match self {
            Driver::Epoll => DriverKind::Epoll,
            Driver::Uring => DriverKind::Uring,
        }
    }

    /// The value of `io_uring.enabled` in an Arc configuration that selects this driver.
    pub fn uring_enabled(self) -> bool {
        self == Driver::Uring
    }
}

/// `per_driver!(a, b, ...)`: for each scenario function `a(driver: Driver)`, the tests
/// `epoll::a` and `io_uring::a`.
#[allow(unused_macros)]
macro_rules! per_driver {
    ($($scenario:ident),+ $(,)?) => {
        mod epoll {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($crate::common::driver::Driver::Epoll)
                }
            )+
        }
        mod io_uring {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($crate::common::driver::Driver::Uring)
                }
            )+
        }
    };
}
pub(crate) use per_driver;
