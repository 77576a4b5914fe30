//! End-to-end tests: the built `ferry` binary as real processes, over real
//! TLS sockets, on real files. One test binary, so it links once.

mod attacks;
mod bad_input;
mod enrollment;
mod examples;
mod key_rotation;
mod publish_fetch;
