//! Multi-phase protocols between the server and a round's clients (secure aggregation, issue
//! 10). A [`Stage`](crate::Stage) is one-shot; these protocols take several interactive
//! exchanges, and clients may drop out before any of them.
//!
//! In phase k, every client still online sends one message to the server
//! ([`ClientPhases::client_phase`]). The server answers the clients that continue
//! ([`ServerPhases::server_phase`]): a broadcast copy or a routed message each. Messages are
//! bytes (the protocol serialises its own values), so a network transport carries the same
//! phases unchanged. [`run_phases`] runs a protocol in process (a phase's clients in parallel),
//! with faults injected per phase:
//! a client that drops out before phase k never sends again, and a message to a client can be
//! altered on its way (tampering tests).

use std::collections::BTreeMap;

use crate::{ClientId, Error, Result};

/// A protocol message.
pub type Message = Vec<u8>;

/// One client's side of a protocol.
pub trait ClientPhases: Send {
    /// Phase `k` (from 0): `inbox` is the server's message to this client after phase k - 1
    /// (empty at k = 0). Returns this client's message to the server.
    fn client_phase(&mut self, k: usize, inbox: &[u8]) -> Result<Message>;
}

/// The server's side of a protocol.
pub trait ServerPhases {
    /// How many phases the clients run.
    fn phases(&self) -> usize;
    /// Phase `k`: the messages of the clients that answered, by id. Returns the message for
    /// each client that continues into phase k + 1 (none after the last phase). An error ends
    /// the protocol (e.g. fewer survivors than the threshold).
    fn server_phase(&mut self, k: usize, messages: &BTreeMap<ClientId, Message>)
    -> Result<BTreeMap<ClientId, Message>>;
}

/// Faults injected by [`run_phases`].
pub trait Faults {
    /// Whether `client` is still online to send its phase-`k` message (once false, the engine
    /// treats it as gone for the rest of the protocol).
    fn online(&self, _k: usize, _client: ClientId) -> bool {
        true
    }
    /// The server's message to `client` before phase `k`, on its way (change it to tamper).
    fn deliver(&self, _k: usize, _client: ClientId, _msg: &mut Message) {}
}

/// No faults.
pub struct NoFaults;
impl Faults for NoFaults {}

/// Bytes a protocol run moved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Client to server, all phases and clients.
    pub up: usize,
    /// Server to client.
    pub down: usize,
    /// Wall seconds spent in the clients' and in the server's phases (for cost tables only;
    /// never part of a run's metrics).
    pub client_s: f64,
    pub server_s: f64,
}

/// Run every phase in process; a client error ends the protocol with an error naming the
/// client and the phase. The clients of a phase run on `threads` threads (contiguous id
/// ranges); their messages are collected in id order, so the result never depends on the
/// thread count.
pub fn run_phases(
    server: &mut dyn ServerPhases,
    clients: &mut BTreeMap<ClientId, Box<dyn ClientPhases>>,
    faults: &(dyn Faults + Sync),
    threads: usize,
) -> Result<Traffic> {
    let mut traffic = Traffic::default();
    let mut inbox: BTreeMap<ClientId, Message> = clients.keys().map(|&c| (c, Message::new())).collect();
    let mut gone = std::collections::BTreeSet::new();
    for k in 0..server.phases() {
        // This phase's work: the clients still online, with their inbox.
        let mut work: Vec<(ClientId, Message, &mut Box<dyn ClientPhases>)> = Vec::new();
        for (c, client) in clients.iter_mut() {
            let Some(mut msg) = inbox.remove(c) else { continue };
            if gone.contains(c) || !faults.online(k, *c) {
                gone.insert(*c);
                continue;
            }
            traffic.down += msg.len();
            faults.deliver(k, *c, &mut msg);
            work.push((*c, msg, client));
        }
        if let Some(c) = inbox.keys().next() {
            return Err(Error::Method(format!("protocol: the server addressed client {c}, not in the cohort")));
        }
        let t = std::time::Instant::now();
        let per = work.len().div_ceil(threads.max(1)).max(1);
        let results: Vec<Vec<(ClientId, Result<Message>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = work
                .chunks_mut(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk.iter_mut().map(|(c, msg, client)| (*c, client.client_phase(k, msg))).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        traffic.client_s += t.elapsed().as_secs_f64();
        let mut sent = BTreeMap::new();
        for (c, out) in results.into_iter().flatten() {
            let out = out.map_err(|e| Error::Method(format!("protocol phase {k}: client {c}: {e}")))?;
            traffic.up += out.len();
            sent.insert(c, out);
        }
        let t = std::time::Instant::now();
        inbox = server.server_phase(k, &sent)?;
        traffic.server_s += t.elapsed().as_secs_f64();
    }
    Ok(traffic)
}
