//! The worker side of the lease protocol: the epoch fence its API checks
//! ([`fence`]) and the agent that registers with a scheduler and keeps the
//! lease by heartbeat ([`agent`]); and its model store, managed remotely
//! ([`models`]).

pub mod agent;
pub mod fence;
pub mod models;
