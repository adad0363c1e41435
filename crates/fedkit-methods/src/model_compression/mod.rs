//! Model compression (issue 14; `[compress] use = "<name>"`): methods that prune or quantise
//! the model itself, in centralised training (`fedkit train`) and inside every federated run.
//! Each is a [`fedkit_core::Compress`]: it owns the mask the clients train under
//! ([`fedkit_core::Mask`]) and may change the global model between rounds.

pub mod lottery_ticket;
pub mod synflow;

use fedkit_core::Compress;
use fedkit_core::registry::{Entry, params_resolved};

/// Every registered model-compression method.
pub fn model_compression() -> &'static [Entry<dyn Compress>] {
    static METHODS: &[Entry<dyn Compress>] = &[
        Entry {
            name: "lottery_ticket",
            source: include_str!("lottery_ticket.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<lottery_ticket::LotteryTicket>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "synflow",
            source: include_str!("synflow.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<synflow::SynFlow>(t, "", r)?.validated()?)),
        },
    ];
    METHODS
}
