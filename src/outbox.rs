//! A connection's outgoing queue, bounded in bytes.
//!
//! Everything a client is sent (replies, pushes, pings, the close frame) goes through its outbox,
//! so per-connection order is the order of `push` calls. Producers never wait: the hub pushes
//! the same encoded `Bytes` into every subscriber's outbox and moves on. A client whose queue
//! would grow past the limit is marked for close with 3008 "slow" and its queue is dropped; the
//! writer task (one per connection) drains the queue, coalescing what it finds into one frame.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::protocol::Disconnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("client is too slow: its queue is over the limit")]
    Slow,
    #[error("connection is closing")]
    Closed,
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// Most bytes queued before the client is disconnected as slow.
    limit: usize,
    /// Set once the client's connect succeeded; the writer uses it for the stale timer and pings.
    pub connected: AtomicBool,
    /// A ping went out and no pong came back yet.
    pub awaiting_pong: AtomicBool,
    /// When the connection's credentials expire, ms since the epoch; 0 = never. The writer
    /// closes the connection (3005) once this plus the grace has passed without a refresh.
    expires_at_ms: AtomicU64,
    /// Subscriptions the storage thread refused after the session recorded them; the session
    /// forgets them before handling its next message.
    refused: Mutex<Vec<Arc<str>>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// A WebSocket pong owed to the client (payload of its last ping).
    pong: Option<Bytes>,
    close: Option<Disconnect>,
}

/// What the writer takes in one go.
pub struct Drained {
    pub pong: Option<Bytes>,
    pub close: Option<Disconnect>,
}

impl Outbox {
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            limit,
            connected: AtomicBool::new(false),
            awaiting_pong: AtomicBool::new(false),
            expires_at_ms: AtomicU64::new(0),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// Records when the credentials expire (seconds since the epoch), or that they never do.
    /// The session queues a reply right after, which wakes the writer to re-arm its timer.
    pub fn set_expiry(&self, at: Option<f64>) {
        let ms = at.map_or(0, |s| (s * 1000.0).max(1.0) as u64);
        self.expires_at_ms.store(ms, Ordering::Release);
    }

    /// When the credentials expire, ms since the epoch.
    pub fn expiry_ms(&self) -> Option<u64> {
        Some(self.expires_at_ms.load(Ordering::Acquire)).filter(|&ms| ms > 0)
    }

    /// Queues one message. Never blocks beyond a short mutex section.
    pub fn push(&self, msg: Bytes) -> Result<(), PushError> {
        let mut st = self.lock();
        if st.close.is_some() {
            return Err(PushError::Closed);
        }
        if st.bytes + msg.len() > self.limit {
            st.queue = VecDeque::new();
            st.bytes = 0;
            st.close = Some(Disconnect::SLOW);
            drop(st);
            self.notify.notify_one();
            return Err(PushError::Slow);
        }
        st.bytes += msg.len();
        let was_empty = st.queue.is_empty();
        st.queue.push_back(msg);
        drop(st);
        // One wake-up per batch: the writer drains everything queued before it runs.
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Asks the writer to send a WebSocket pong (only the latest is kept, as RFC 6455 allows).
    pub fn pong(&self, payload: Bytes) {
        self.lock().pong = Some(payload);
        self.notify.notify_one();
    }

    /// Asks the writer to flush what is queued, send a close frame and stop. The first close wins.
    pub fn close(&self, d: Disconnect) {
        let mut st = self.lock();
        if st.close.is_none() {
            st.close = Some(d);
        }
        drop(st);
        self.notify.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Waits until something was queued since the last `drain`.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Moves every queued message into `into` (an emptied queue the writer keeps, so steady
    /// traffic reuses two allocations instead of making one per batch).
    pub fn drain(&self, into: &mut VecDeque<Bytes>) -> Drained {
        let mut st = self.lock();
        std::mem::swap(&mut st.queue, into);
        st.bytes = 0;
        Drained {
            pong: st.pong.take(),
            close: st.close.clone(),
        }
    }

    /// Frees the queue's allocation if nothing is queued (an idle connection keeps none).
    pub fn release(&self) {
        let mut st = self.lock();
        if st.queue.is_empty() {
            st.queue = VecDeque::new();
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that a subscription was refused by the storage thread.
    pub fn refuse_subscription(&self, key: Arc<str>) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
    }

    /// Takes the subscriptions refused since the last call.
    pub fn take_refused(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_frees_only_an_empty_queue() {
        let o = Outbox::new(1000);
        let mut mine = VecDeque::new();
        o.push(Bytes::from_static(b"a")).unwrap();
        o.drain(&mut mine);
        mine.clear();
        o.push(Bytes::from_static(b"b")).unwrap();
        o.release();
        assert_eq!(o.lock().queue.len(), 1, "a queued message stays");
        o.drain(&mut mine);
        mine.clear();
        assert!(
            o.lock().queue.capacity() > 0,
            "the writer's emptied queue came back"
        );
        o.release();
        assert_eq!(o.lock().queue.capacity(), 0);
    }

    #[test]
    fn overflow_marks_slow_and_drops_the_queue() {
        let o = Outbox::new(10);
        o.push(Bytes::from_static(b"12345")).unwrap();
        o.push(Bytes::from_static(b"12345")).unwrap();
        assert_eq!(o.queued_bytes(), 10);
        assert_eq!(o.push(Bytes::from_static(b"x")), Err(PushError::Slow));
        assert_eq!(o.queued_bytes(), 0);
        assert_eq!(o.push(Bytes::from_static(b"x")), Err(PushError::Closed));
        let mut q = VecDeque::new();
        let d = o.drain(&mut q);
        assert!(q.is_empty());
        assert_eq!(d.close, Some(Disconnect::SLOW));
    }

    #[test]
    fn close_keeps_queued_messages_and_first_close_wins() {
        let o = Outbox::new(100);
        o.push(Bytes::from_static(b"a")).unwrap();
        o.close(Disconnect::BAD_REQUEST);
        o.close(Disconnect::SHUTDOWN);
        let mut q = VecDeque::new();
        let d = o.drain(&mut q);
        assert_eq!(q.len(), 1);
        assert_eq!(d.close, Some(Disconnect::BAD_REQUEST));
    }
}
