//! The scheduler: a lease-based registry of workers and an OpenAI gateway
//! that routes each request to a live, healthy worker serving its model.
//!
//! - [`lease`]: the protocol's rules as pure functions; [`node`]: the data.
//! - [`store`]: the `Store` trait and the memory store; [`embedded`]: the
//!   durable default (redb).
//! - [`policy`]: which eligible node gets a request.
//! - [`clock`]: the monotonic clock leases are timed with.
//! - [`service`]: configuration, eligibility, picking, the sweep loop;
//!   [`registry`]: the lease API; [`gateway`]: forwarding with failover;
//!   [`http`]: the router; [`metrics`]: the gateway's Prometheus metrics;
//!   [`node_models`]: a node's model store managed through the scheduler.
//! - [`health`]: active health checks' state machine and figures; [`watch`]:
//!   the rounds that run them and note lapses, restarts, unserved models;
//!   [`events`]: the alerts they raise.

pub mod clock;
pub mod embedded;
pub mod events;
pub mod gateway;
pub mod health;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod node_models;
pub mod policy;
pub mod redis_store;
pub mod registry;
pub mod service;
pub mod store;
pub mod watch;
