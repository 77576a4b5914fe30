//! Support for Ferry's end-to-end tests: run the built `ferry` binary as real
//! processes (a hub, enrolled clients), put a tampering mirror or a faulty
//! TCP link (a proxy that cuts, trickles or refuses) between a client and
//! the hub, and make and compare directory trees.
//!
//! Everything a test starts is stopped, and everything it writes lives in a
//! temporary directory that is removed, when the test's values drop, also
//! when the test fails.

pub mod agent;
pub mod mirror;
pub mod netns;
pub mod plugins;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod tree;

pub use mirror::{Mirror, Tamper};
pub use process::{Client, Hub, Run, ferry};
