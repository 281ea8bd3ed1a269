//! edgelive: Grafana Live for edge and IoT devices.
//!
//! Data path: a transport (`websocket`) moves bytes; the `session` owns one client's protocol
//! state; the `hub` encodes each publication once and hands the same bytes to every
//! subscriber's bounded `outbox`. See `design.md` in the shared folder for the whole picture.

pub mod allocator;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod channel_kind;
pub mod clock;
pub mod config;
pub mod dashboards;
pub mod duration;
pub mod forward;
pub mod frame;
pub mod glob;
pub mod ha;
pub mod head;
pub mod hostport;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod origin;
pub mod outbox;
pub mod persist;
pub mod protocol;
pub mod push;
pub mod query;
pub mod ratelimit;
pub mod reload;
pub mod respond;
pub mod server;
pub mod session;
pub mod settings;
pub mod size;
pub mod state;
pub mod status;
pub mod streams;
pub mod throttle;
pub mod watchdog;
pub mod web;
pub mod websocket;
pub mod wsframe;
