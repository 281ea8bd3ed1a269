//! Stream handlers (design §8): producers for `plugin/<id>/<path>` and `ds/<uid>/<path>`
//! channels that run while someone watches, with Grafana's three moments: authorize a
//! subscribe (and give its initial data), run the producer, authorize or handle a publish.
//!
//! A producer publishes through `Sender`, the same path as client publishes (the broker):
//! straight to the hub, or sequenced with history when the channel keeps it, so recovery
//! applies.

pub mod exec;
pub mod lifecycle;
pub mod testdata;

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::channel::{Channel, Scope};
use crate::channel_kind::ChannelKind;
use crate::json::CompactJson;
use crate::persist::Ack;
use crate::protocol::reply;
use crate::protocol::ErrorCode;
use lifecycle::{Lifecycle, Run, Timings};

/// A handler for one namespace (`plugin/testdata`, a configured exec handler, …).
pub trait StreamHandler: Send + Sync {
    /// May a client subscribe to `path`? `Ok(Some(json))` is the subscribe reply's `data`
    /// (for frames, the schema).
    fn subscribe(&self, path: &str) -> Result<Option<String>, ErrorCode>;

    /// One run of the producer of `path`, until `cancel` or its own end (`Ok`) or failure.
    fn run(&self, path: &str, out: Sender, cancel: CancellationToken) -> Run;

    /// A client publish: `Ok(Some(json))` is broadcast, `Ok(None)` is accepted without a
    /// broadcast, `Err` refuses it.
    fn publish(&self, path: &str, data: &RawValue) -> Result<Option<String>, ErrorCode>;
}

/// Where a producer's publications go.
#[derive(Clone)]
pub struct Sender {
    key: Arc<str>,
    broker: Broker,
    kind: ChannelKind,
}

impl Sender {
    /// The channel it publishes on.
    pub fn channel(&self) -> &Arc<str> {
        &self.key
    }

    /// Publishes one JSON document on the channel. Not valid JSON, or a full storage queue,
    /// is an error the producer sees (a failing producer is restarted with backoff).
    pub fn send(&self, json: String) -> Result<(), String> {
        let data = CompactJson::from_string(json).map_err(|e| format!("not JSON: {e}"))?;
        self.broker
            .publish(&self.key, &self.kind, data, None, Ack::Discard)
            .map_err(|_| "storage queue full".to_owned())
    }
}

/// Where client publishes on a written-back managed stream go (an MQTT bridge with
/// `publish = true` sends them to the topic the channel came from).
pub trait Writer: Send + Sync {
    /// Sends `data` (compact JSON, as the client gave it) for the channel path `path` (after
    /// `stream/<id>/`); `Err` is the error the client gets.
    fn write(&self, path: &str, data: &str) -> Result<(), ErrorCode>;
}

/// The handlers by namespace, and the producers' lifecycle.
pub struct Streams {
    /// Writers by managed stream id, registered by the bridges that write back.
    writers: std::sync::Mutex<HashMap<String, Arc<dyn Writer>>>,
    /// Swapped by a reload: channels started from then on get the new exec tables, running
    /// producers keep the handler they started with.
    handlers: ArcSwap<HashMap<String, Arc<dyn StreamHandler>>>,
    pub lifecycle: Arc<Lifecycle>,
    broker: Broker,
}

/// The built-in handlers by `scope/namespace`.
fn builtin() -> HashMap<String, Arc<dyn StreamHandler>> {
    let mut handlers: HashMap<String, Arc<dyn StreamHandler>> = HashMap::new();
    handlers.insert("plugin/testdata".into(), Arc::new(testdata::TestData));
    handlers
}

/// Every handler by `scope/namespace`, the built-in ones and the configured exec handlers:
/// the one list the channel kinds and `Streams` share.
fn handlers(exec: &[exec::Spec]) -> HashMap<String, Arc<dyn StreamHandler>> {
    let mut handlers = builtin();
    let mut by_namespace: Vec<(String, Vec<exec::Spec>)> = Vec::new();
    for spec in exec {
        match by_namespace
            .iter_mut()
            .find(|(ns, _)| *ns == spec.namespace)
        {
            Some((_, specs)) => specs.push(spec.clone()),
            None => by_namespace.push((spec.namespace.clone(), vec![spec.clone()])),
        }
    }
    for (ns, specs) in by_namespace {
        handlers.insert(ns, Arc::new(exec::Exec::new(specs)));
    }
    handlers
}

impl Streams {
    pub fn new(
        broker: Broker,
        timings: Timings,
        exec: &[exec::Spec],
        shutdown: CancellationToken,
    ) -> Arc<Streams> {
        let handlers = handlers(exec);
        let counted = broker.hub().clone();
        let watchers: lifecycle::Watchers = Arc::new(move |key| counted.num_subscribers(key));
        Arc::new(Streams {
            writers: std::sync::Mutex::new(HashMap::new()),
            handlers: ArcSwap::from_pointee(handlers),
            lifecycle: Lifecycle::new(timings, shutdown, watchers),
            broker,
        })
    }

    /// Registers the writer of managed stream `stream`.
    pub fn set_writer(&self, stream: &str, writer: Arc<dyn Writer>) {
        let mut w = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.insert(stream.to_owned(), writer);
    }

    /// The writer of a written-back managed stream's channel.
    pub fn writer(&self, channel: &Channel) -> Option<Arc<dyn Writer>> {
        let w = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.get(channel.namespace()).cloned()
    }

    /// Reloaded `[[streams.exec]]` tables.
    pub fn set_exec(&self, exec: &[exec::Spec]) {
        self.handlers.store(Arc::new(handlers(exec)));
    }

    /// The handler of a `plugin/…` or `ds/…` channel.
    pub fn handler(&self, channel: &Channel) -> Option<Arc<dyn StreamHandler>> {
        match channel.scope() {
            Scope::Plugin | Scope::Ds => {
                self.handlers.load().get(channel.scope_namespace()).cloned()
            }
            _ => None,
        }
    }

    /// A subscriber arrived (call it after the hub has it, or after handing its subscribe to
    /// the storage thread): runs the channel's producer unless it runs already. When the
    /// producer ends on its own, its subscribers get an unsubscribe push with a code that makes
    /// clients resubscribe.
    pub fn watch(&self, channel: &Channel, handler: Arc<dyn StreamHandler>, kind: ChannelKind) {
        let key = channel.key();
        self.lifecycle.ensure(key, || {
            let path: Arc<str> = Arc::from(channel.path());
            let sender = Sender {
                key: key.clone(),
                broker: self.broker.clone(),
                kind,
            };
            let start: lifecycle::Start =
                Arc::new(move |cancel| handler.run(&path, sender.clone(), cancel));
            let (hub, ended) = (self.broker.hub().clone(), key.clone());
            let on_end: lifecycle::OnEnd = Box::new(move || {
                hub.end_channel(&ended, |name| {
                    reply::unsubscribe(name, STREAM_ENDED, "stream ended")
                });
            });
            (start, on_end)
        });
    }
}

/// Unsubscribe code for a producer that ended: ≥ 2500, so clients resubscribe.
pub const STREAM_ENDED: u32 = 2500;

#[cfg(test)]
mod tests {
    /// Routing learns the built-in namespaces from a list kept beside the exec config; it must
    /// name exactly the built-in handlers.
    #[test]
    fn the_builtin_namespace_list_names_the_builtin_handlers() {
        let mut handlers: Vec<String> = super::builtin().into_keys().collect();
        handlers.sort();
        let mut listed: Vec<&str> = super::exec::config::BUILTIN_NAMESPACES.to_vec();
        listed.sort();
        assert_eq!(handlers, listed);
    }
}
