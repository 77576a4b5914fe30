//! End-to-end tests: the built `ferry` binary as real processes, over real
//! TLS sockets, on real files. One test binary, so it links once.

mod agents;
mod attacks;
mod bad_input;
mod enrollment;
mod examples;
mod fetch_chunks;
mod key_rotation;
mod plugin_cli;
mod plugin_defaults;
mod plugin_examples;
mod plugin_hot_swap;
mod plugin_installers;
mod plugin_sandbox;
mod publish_fetch;
mod relay;
mod relay_faults;
mod revocations;
mod server_limits;
mod settings;
mod tuf_interop;
