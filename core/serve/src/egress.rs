//! A server's uplink budget for some of its callers (the hub's, for its
//! relays): one cap on what they get together, shared fairly. Each caller
//! with a response in flight gets an equal share of the cap, re-divided as
//! callers come and go, so 200 relays that start syncing after one publish
//! share the head office's link instead of saturating it, and each still
//! finishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ferry_net::api::Role;
use ferry_net::{Link, Rate};
use futures_util::StreamExt;

use crate::Caller;

/// The shared cap and the callers drawing on it.
pub struct Egress {
    bytes_per_second: u64,
    roles: Vec<Role>,
    clients: Mutex<HashMap<String, (Arc<Link>, usize)>>,
}

impl Egress {
    /// A cap of `bits_per_second` on responses to callers with one of
    /// `roles`.
    pub fn new(bits_per_second: u64, roles: &[Role]) -> Arc<Egress> {
        Arc::new(Egress {
            bytes_per_second: (bits_per_second / 8).max(1),
            roles: roles.to_vec(),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a response to `client` in flight; its share is re-divided.
    fn enter(self: &Arc<Self>, client: &str) -> Slot {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let link = {
            let entry = clients
                .entry(client.to_owned())
                .or_insert_with(|| (Arc::new(Link::new(Rate::Unlimited)), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        self.divide(&clients);
        Slot {
            egress: self.clone(),
            client: client.to_owned(),
            link,
        }
    }

    fn divide(&self, clients: &HashMap<String, (Arc<Link>, usize)>) {
        let share = (self.bytes_per_second / clients.len().max(1) as u64).max(1);
        for (link, _) in clients.values() {
            link.set_rate(Rate::BytesPerSecond(share));
        }
    }
}

/// A response in flight; dropped when its body ends.
struct Slot {
    egress: Arc<Egress>,
    client: String,
    link: Arc<Link>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut clients = self
            .egress
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = clients.get_mut(&self.client) {
            entry.1 -= 1;
            if entry.1 == 0 {
                clients.remove(&self.client);
            }
        }
        self.egress.divide(&clients);
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`) pacing responses to
/// the callers the [`Egress`] covers; mount it inside the authentication
/// layer. Others pass untouched.
pub async fn pace(State(egress): State<Arc<Egress>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = Caller::from_request_parts(&mut parts, &()).await.ok();
    let response = next.run(Request::from_parts(parts, body)).await;
    let Some(Caller(who)) = caller.filter(|c| egress.roles.contains(&c.0.role)) else {
        return response;
    };
    let slot = egress.enter(&who.id);
    let (parts, body) = response.into_parts();
    let paced = body.into_data_stream().then(move |piece| {
        let link = slot.link.clone();
        async move {
            if let Ok(bytes) = &piece {
                link.send(bytes.len() as u64).await;
            }
            piece
        }
    });
    Response::from_parts(parts, Body::from_stream(paced))
}
