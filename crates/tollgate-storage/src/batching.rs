//! Group commit for the shared counters: on a gateway worker thread, concurrent requests of
//! one key share one Redis round trip.
//!
//! While a round trip for a key is in flight, later requests of that key on the same thread
//! wait; when it returns, all of them go in the next one, which counts the n requests with
//! one `INCRBY n` / `HINCRBY n` and admits the first ones that fit, exactly as if they had
//! reached Redis one after another (`RedisStore::count`). A lone request goes at once, so
//! nothing waits at low load; under load a hot key costs one round trip per worker per
//! round-trip time instead of one per request, which is what keeps Redis and the gateway's
//! Redis client off the top of the profile.
//!
//! Only threads that opted in with [`enable_on_this_thread`] (a gateway worker running its
//! requests as tasks of a `LocalSet`) batch. Each key's round trips run in a task of their own,
//! so a request that is dropped while it waits (its client went away) never strands the
//! others, and is not counted if it left before its batch was sent.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::oneshot;
use tollgate_session::LimitPlan;

use crate::counters::{Admitted, Limited};
use crate::redis::{CountParams, CountSpec, RedisStore, WindowCache};

type Answer = Result<Admitted, Limited>;

/// The requests of one key waiting for the next round trip.
struct Queue {
    params: CountParams,
    waiting: Vec<oneshot::Sender<Answer>>,
}

/// Queues by counter id, per store (by its id).
type Queues = Vec<(u64, HashMap<Box<str>, Queue>)>;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static QUEUES: RefCell<Queues> = const { RefCell::new(Vec::new()) };
}

/// Lets this thread batch its requests' counter updates. Call it from inside the
/// `LocalSet` that runs the thread's requests: batches run as local tasks.
pub fn enable_on_this_thread() {
    ENABLED.with(|e| e.set(true));
}

fn with_queues<T>(store: u64, f: impl FnOnce(&mut HashMap<Box<str>, Queue>) -> T) -> Option<T> {
    QUEUES
        .try_with(|all| {
            let mut all = all.borrow_mut();
            let at = match all.iter().position(|(id, _)| *id == store) {
                Some(at) => at,
                None => {
                    all.push((store, HashMap::new()));
                    all.len() - 1
                }
            };
            f(&mut all[at].1)
        })
        .ok()
}

enum Joined {
    /// Queued behind a round trip in flight.
    Queued,
    /// First of its key: a batch task must be started.
    Started,
    /// Not batched (this thread did not opt in, or the key's limits changed mid-batch).
    Alone,
}

/// Queues one request of `plan` for the next round trip of its key. `None` when this thread
/// does not batch: the caller counts the request alone.
pub(crate) fn join(
    store: &Arc<RedisStore>,
    plan: &LimitPlan,
    params: CountParams,
) -> Option<impl Future<Output = Answer> + use<>> {
    if !ENABLED.with(Cell::get) {
        return None;
    }
    let (tx, rx) = oneshot::channel();
    let joined = with_queues(store.id(), |queues| match queues.get_mut(&*plan.quota_id) {
        Some(queue) if queue.params == params => {
            queue.waiting.push(tx);
            Joined::Queued
        }
        // Requests counted under other limits cannot share a count: this one goes alone.
        Some(_) => Joined::Alone,
        None => {
            queues.insert(
                plan.quota_id.clone(),
                Queue {
                    params,
                    waiting: vec![tx],
                },
            );
            Joined::Started
        }
    })?;
    match joined {
        Joined::Alone => return None,
        Joined::Started => {
            let spec = store.count_spec(plan, params);
            tokio::task::spawn_local(run_batches(Arc::clone(store), plan.quota_id.clone(), spec));
        }
        Joined::Queued => {}
    }
    // A batch task that ended without answering (the runtime is shutting down) drops the
    // sender: the request gets the answer for an unreachable store.
    Some(async move { rx.await.unwrap_or(Err(Limited::Unavailable)) })
}

/// Removes a key's queue when its batch task ends, however it ends, so the next request
/// starts a new task instead of waiting on one that is gone.
struct QueueGuard {
    store: u64,
    id: Box<str>,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        with_queues(self.store, |queues| queues.remove(&*self.id));
    }
}

/// Sends one key's queued requests, a batch per round trip, until none are waiting.
async fn run_batches(store: Arc<RedisStore>, id: Box<str>, spec: CountSpec) {
    let guard = QueueGuard {
        store: store.id(),
        id,
    };
    let mut window = WindowCache::default();
    loop {
        // Let this thread's other ready requests (those whose bytes arrived meanwhile) reach
        // their limit check first: the batch grows at no cost in waiting.
        tokio::task::yield_now().await;
        let mut batch = with_queues(guard.store, |queues| {
            queues
                .get_mut(&*guard.id)
                .map(|q| std::mem::take(&mut q.waiting))
                .unwrap_or_default()
        })
        .unwrap_or_default();
        // Requests whose clients left while they waited are not counted.
        batch.retain(|tx| !tx.is_closed());
        if batch.is_empty() {
            // Nothing came in during the last round trip: the key is idle again. (Removing
            // the queue here, in the same poll as finding it empty, means no request can
            // have joined in between.)
            return;
        }
        let n = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let now = tollgate_session::time::unix_now();
        match store.count(&spec, n, now, &mut window).await {
            Ok((counted, followup)) => {
                for (i, tx) in (0..n).zip(batch) {
                    let _ = tx.send(counted.answer(i));
                }
                // Taking back the refused requests' counts need not hold up the next batch.
                if followup.is_some() {
                    let store = Arc::clone(&store);
                    tokio::task::spawn_local(async move { store.follow_up(followup).await });
                }
            }
            Err(_) => {
                for tx in batch {
                    let _ = tx.send(Err(Limited::Unavailable));
                }
            }
        }
    }
}
