//! Ferry's network layer: identities (the hub's CA, server and client
//! certificates), enrollment tokens, rustls configurations, the `/v1` API
//! types, an HTTPS client that trusts only the pinned hub CA, and the HTTPS
//! server loop that tells handlers which certificate the caller presented.

pub mod api;
mod client;
mod credentials;
mod enroll;
mod error;
mod identity;
mod link;
mod pace;
mod server;
pub mod settings;
mod size;
pub mod tasks;
mod tls;
mod token;
pub mod window;

pub use client::{BodyStream, HubClient, Response, describe_error, read_limited};
pub use credentials::{ClientCredentials, ClientInfo};
pub use enroll::enroll;
pub use error::NetError;
pub use identity::{
    CertificateAuthority, CertificateIdentity, ClientKey, IssuedCertificate, cert_sha256,
    certificate_identity, generate_client_key, pem_cert_der,
};
pub use link::{Link, Rate};
pub use pace::Pace;
pub use server::{Peer, ServerLimits, raise_fd_limit, serve, serve_with_limits};
pub use size::parse_size;
pub use tls::{client_config, fetch_ca_pinned, provider, server_config};
pub use token::EnrollmentToken;
