//! The content store on disk: whole files named by their content id, plus a
//! staging area for chunks uploaded ahead of a publish.
//!
//! Files are kept whole (not as loose chunks) so they can be served with
//! plain reads at disk speed; which chunk sits where inside which file is the
//! catalog's chunk index. Every write is crash-safe (see [`durable`]) and every
//! byte is checked against its digest before it is kept.

pub mod durable;
mod store;

pub use store::{ContentStore, StoreError};
