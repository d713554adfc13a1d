//! End-to-end test ground for Arc: a Kubernetes API server emulator ([`emulator`]), the test
//! environment that starts it or uses a real cluster ([`env`]), network-namespace test hosts
//! ([`netns`]) and the echo backend they run ([`echo`]); [`names`] makes random object names.

pub mod arc;
pub mod echo;
pub mod emulator;
pub mod env;
pub mod names;
pub mod netns;

pub use emulator::{Emulator, EmulatorConfig, RecordedRequest};
pub use env::TestEnv;
pub use netns::TestNet;
