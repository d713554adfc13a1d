//! End-to-end test ground for Arc: a Kubernetes API server emulator ([`emulator`]), the test
//! environment that starts it or uses a real cluster ([`env`]), network-namespace test hosts
//! ([`netns`]) and the echo backend they run ([`echo`]). [`kubeconfig`] builds a kube client from
//! a kubeconfig file for both the environment and the emulator; [`names`] makes random object
//! names; [`secrets`] is the secret-material check run on every captured Arc log.

// Unsafe code is denied crate-wide; only the modules that call libc directly (process checks,
// `setns`, `geteuid`) allow it.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod arc;
pub mod echo;
pub mod emulator;
#[allow(unsafe_code)]
pub mod env;
pub mod kubeconfig;
pub mod names;
#[allow(unsafe_code)]
pub mod netns;
pub mod secrets;

pub use emulator::{Emulator, EmulatorConfig, RecordedRequest};
pub use env::TestEnv;
pub use netns::TestNet;
