//! Subscription deduplication: identical subscriptions of one customer share one execution.
//!
//! Thousands of phones may follow one order (a shop's screen, a family's phones, a load
//! test), each over its own websocket with the same document and variables. Executing the
//! document once per subscriber per change would cost the same work thousands of times;
//! instead the first subscriber's operation runs once, each of its results is rendered to
//! JSON once, and every identical subscription is handed the same rendered result. A
//! subscriber that joins later is sent the newest result first, which for a live status is
//! the order as it stands. This is what Apollo Router calls subscription deduplication.
//!
//! Identical means: the same signed-in customer, operation name, document text, variables
//! and extensions. Queries, mutations, anonymous and refused callers, and documents that
//! are not plain text (a persisted query's hash alone) run on their own as before.

use crate::{auth::Viewer, http::graphql::is_request_error};
use async_graphql::parser::types::OperationType;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::{sync::broadcast, task::AbortHandle};

/// Results a slow subscriber may fall behind by before it is ended (it reconnects and is
/// sent the newest result). An order has a handful of statuses, so this is never reached
/// by a subscriber that reads at all.
const BACKLOG: usize = 32;

/// One execution result, rendered once for every subscriber it goes to.
#[derive(Debug)]
pub struct Rendered {
    /// The whole response body, e.g. `{"data":{…}}`; for a request error (no `data`),
    /// `{"errors":[…]}`.
    pub body: String,
    /// For a request error, the `errors` array alone (graphql-transport-ws sends it as
    /// the `error` message's payload).
    pub request_errors: Option<String>,
}

impl Rendered {
    pub fn new(response: &async_graphql::Response) -> Self {
        if is_request_error(response) {
            let errors = serde_json::to_string(&response.errors).unwrap_or_else(|_| "[]".into());
            Self {
                body: format!("{{\"errors\":{errors}}}"),
                request_errors: Some(errors),
            }
        } else {
            Self {
                body: serde_json::to_string(response)
                    .unwrap_or_else(|_| crate::http::graphql::response_body(response).to_string()),
                request_errors: None,
            }
        }
    }
}

/// What makes two subscriptions identical.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// The key of `request` from `viewer`, when it can be shared: a subscription in plain
    /// text from a signed-in customer.
    pub fn of(viewer: &Viewer, request: &async_graphql::Request) -> Option<Self> {
        let Viewer::Customer { id, .. } = viewer else {
            return None;
        };
        if request.query.is_empty() {
            return None;
        }
        let document = async_graphql::parser::parse_query(&request.query).ok()?;
        let operation_type = match (&request.operation_name, &document.operations) {
            (None, async_graphql::parser::types::DocumentOperations::Single(op)) => op.node.ty,
            (Some(name), operations) => {
                operations
                    .iter()
                    .find(|(n, _)| n.is_some_and(|n| n.as_str() == name))?
                    .1
                    .node
                    .ty
            }
            (None, async_graphql::parser::types::DocumentOperations::Multiple(_)) => {
                return None;
            }
        };
        if operation_type != OperationType::Subscription {
            return None;
        }
        let rest = serde_json::to_string(&(
            &request.operation_name,
            &request.query,
            &request.variables,
            &request.extensions,
        ))
        .ok()?;
        Some(Self(format!("{id}\u{0}{rest}")))
    }
}

/// The newest result and the channel of the next ones, changed together under one lock so
/// a joiner sees each result exactly once.
struct Execution {
    latest: Option<Arc<Rendered>>,
    /// `None` once the execution ended: followers then drain what is queued and stop.
    next: Option<broadcast::Sender<Arc<Rendered>>>,
    followers: usize,
    task: Option<AbortHandle>,
}

struct Shared {
    execution: Mutex<Execution>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Execution> {
        self.execution
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every shared execution of this instance.
#[derive(Clone, Default)]
pub struct SharedSubscriptions {
    running: Arc<Mutex<HashMap<Key, Arc<Shared>>>>,
}

impl SharedSubscriptions {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Shared>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Executions running now.
    pub fn len(&self) -> usize {
        self.running().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the execution of `key`, starting it with `start` when none runs.
    pub fn follow<S>(&self, key: Key, start: impl FnOnce() -> S) -> Follower
    where
        S: futures_util::Stream<Item = async_graphql::Response> + Send + 'static,
    {
        let mut running = self.running();
        if let Some(shared) = running.get(&key).cloned() {
            let mut execution = shared.lock();
            if let Some(next) = &execution.next {
                let receiver = next.subscribe();
                let first = execution.latest.clone();
                execution.followers += 1;
                drop(execution);
                return Follower {
                    first,
                    receiver,
                    shared,
                    key,
                    registry: self.clone(),
                };
            }
        }
        let (sender, receiver) = broadcast::channel(BACKLOG);
        let shared = Arc::new(Shared {
            execution: Mutex::new(Execution {
                latest: None,
                next: Some(sender),
                followers: 1,
                task: None,
            }),
        });
        running.insert(key.clone(), shared.clone());
        let stream = start();
        let task = tokio::spawn(Self::run(self.clone(), key.clone(), shared.clone(), stream));
        shared.lock().task = Some(task.abort_handle());
        drop(running);
        Follower {
            first: None,
            receiver,
            shared,
            key,
            registry: self.clone(),
        }
    }

    async fn run<S>(self, key: Key, shared: Arc<Shared>, stream: S)
    where
        S: futures_util::Stream<Item = async_graphql::Response> + Send + 'static,
    {
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(stream);
        while let Some(response) = stream.next().await {
            let rendered = Arc::new(Rendered::new(&response));
            let mut execution = shared.lock();
            execution.latest = Some(rendered.clone());
            if let Some(next) = &execution.next {
                // No receiver means every follower left; the last one's drop stops us.
                let _ = next.send(rendered);
            }
        }
        // Ended: later subscribers start afresh; followers drain and stop.
        let mut running = self.running();
        if running.get(&key).is_some_and(|s| Arc::ptr_eq(s, &shared)) {
            running.remove(&key);
        }
        shared.lock().next = None;
    }
}

/// One subscriber of a shared execution; dropping it leaves (the execution stops when its
/// last follower leaves).
pub struct Follower {
    first: Option<Arc<Rendered>>,
    receiver: broadcast::Receiver<Arc<Rendered>>,
    shared: Arc<Shared>,
    key: Key,
    registry: SharedSubscriptions,
}

/// Why a follower has no more results.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The execution finished.
    Complete,
    /// This follower fell [`BACKLOG`] results behind.
    Lagged,
}

impl Follower {
    /// The next result: the newest one at joining first, then each one after it.
    pub async fn next(&mut self) -> Result<Arc<Rendered>, Ended> {
        if let Some(first) = self.first.take() {
            return Ok(first);
        }
        match self.receiver.recv().await {
            Ok(rendered) => Ok(rendered),
            Err(broadcast::error::RecvError::Closed) => Err(Ended::Complete),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(Ended::Lagged),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut running = self.registry.running();
        let mut execution = self.shared.lock();
        execution.followers -= 1;
        if execution.followers == 0 {
            if let Some(task) = execution.task.take() {
                task.abort();
            }
            execution.next = None;
            drop(execution);
            if running
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.shared))
            {
                running.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CustomerId;
    use async_graphql::{Request, Response, Value};
    use futures_util::StreamExt;
    use std::time::Duration;

    fn customer(id: &str) -> Viewer {
        Viewer::Customer {
            id: CustomerId::from_upstream(id.into()),
            session_id: "ses_1".into(),
        }
    }

    const FOLLOW: &str = "subscription($o: ID!) { orderStatusChanged(orderId: $o) { status } }";

    fn follow_request(order: &str) -> Request {
        Request::new(FOLLOW).variables(async_graphql::Variables::from_json(
            serde_json::json!({"o": order}),
        ))
    }

    #[test]
    fn only_a_customer_s_plain_subscriptions_are_shared() {
        let ada = customer("cus_ada");
        assert!(Key::of(&ada, &follow_request("ord_1")).is_some());
        assert_eq!(
            Key::of(&ada, &follow_request("ord_1")),
            Key::of(&ada, &follow_request("ord_1"))
        );
        assert_ne!(
            Key::of(&ada, &follow_request("ord_1")),
            Key::of(&ada, &follow_request("ord_2")),
            "other variables"
        );
        assert_ne!(
            Key::of(&ada, &follow_request("ord_1")),
            Key::of(&customer("cus_bob"), &follow_request("ord_1")),
            "another customer"
        );
        assert_eq!(Key::of(&Viewer::Anonymous, &follow_request("ord_1")), None);
        assert_eq!(Key::of(&Viewer::Rejected, &follow_request("ord_1")), None);
        assert_eq!(
            Key::of(&ada, &Request::new("{ me { id } }")),
            None,
            "a query"
        );
        assert_eq!(
            Key::of(&ada, &Request::new("mutation { signOut { ok } }")),
            None,
            "a mutation"
        );
        let two = "query A { me { id } } subscription B { orderStatusChanged(orderId: \"o\") { status } }";
        assert!(Key::of(&ada, &Request::new(two).operation_name("B")).is_some());
        assert_eq!(Key::of(&ada, &Request::new(two).operation_name("A")), None);
        assert_eq!(
            Key::of(&ada, &Request::new(two)),
            None,
            "no operation chosen"
        );
        assert_eq!(
            Key::of(&ada, &Request::new("subscription {")),
            None,
            "unparsable"
        );
        assert_eq!(
            Key::of(&ada, &Request::new("")),
            None,
            "a persisted query's hash alone"
        );
    }

    fn response(n: i32) -> Response {
        Response::new(Value::from_json(serde_json::json!({"n": n})).expect("a value"))
    }

    async fn next(follower: &mut Follower) -> Result<String, Ended> {
        tokio::time::timeout(Duration::from_secs(5), follower.next())
            .await
            .expect("in time")
            .map(|r| r.body.clone())
    }

    #[tokio::test]
    async fn followers_share_one_execution_and_a_late_one_starts_from_the_newest_result() {
        let shared = SharedSubscriptions::default();
        let key = Key::of(&customer("cus_ada"), &follow_request("ord_1")).expect("a key");
        let (results, stream) = tokio::sync::mpsc::unbounded_channel::<Response>();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(stream);
        let mut started = 0;
        let mut first = shared.follow(key.clone(), || {
            started += 1;
            stream
        });
        results.send(response(1)).expect("sent");
        assert_eq!(next(&mut first).await, Ok(r#"{"data":{"n":1}}"#.to_owned()));

        let mut late = shared.follow(key.clone(), || {
            started += 1;
            futures_util::stream::empty().boxed()
        });
        assert_eq!(started, 1, "one execution");
        assert_eq!(shared.len(), 1);
        assert_eq!(next(&mut late).await, Ok(r#"{"data":{"n":1}}"#.to_owned()));

        results.send(response(2)).expect("sent");
        assert_eq!(next(&mut first).await, Ok(r#"{"data":{"n":2}}"#.to_owned()));
        assert_eq!(next(&mut late).await, Ok(r#"{"data":{"n":2}}"#.to_owned()));

        // The execution ends: both are told, and the next subscriber starts afresh.
        drop(results);
        assert_eq!(next(&mut first).await, Err(Ended::Complete));
        assert_eq!(next(&mut late).await, Err(Ended::Complete));
        assert!(shared.is_empty());
    }

    #[tokio::test]
    async fn a_follower_that_falls_the_backlog_behind_is_told_and_the_others_go_on() {
        let shared = SharedSubscriptions::default();
        let key = Key::of(&customer("cus_ada"), &follow_request("ord_1")).expect("a key");
        let (results, stream) = tokio::sync::mpsc::unbounded_channel::<Response>();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(stream);
        let mut slow = shared.follow(key.clone(), || stream);
        let mut keeping_up = shared.follow(key.clone(), futures_util::stream::empty);
        let last = i32::try_from(BACKLOG).expect("small") + 5;
        for n in 1..=last {
            results.send(response(n)).expect("sent");
            assert_eq!(
                next(&mut keeping_up).await,
                Ok(format!(r#"{{"data":{{"n":{n}}}}}"#))
            );
        }
        // `slow` read nothing while more than BACKLOG results went by.
        assert_eq!(next(&mut slow).await, Err(Ended::Lagged));
        // The execution goes on for the follower that kept up.
        results.send(response(last + 1)).expect("sent");
        assert_eq!(
            next(&mut keeping_up).await,
            Ok(format!(r#"{{"data":{{"n":{}}}}}"#, last + 1))
        );
        drop(slow);
        assert_eq!(
            shared.len(),
            1,
            "the lagging follower left; the execution runs"
        );
    }

    #[tokio::test]
    async fn the_execution_stops_when_its_last_follower_leaves() {
        let shared = SharedSubscriptions::default();
        let key = Key::of(&customer("cus_ada"), &follow_request("ord_1")).expect("a key");
        let (results, stream) = tokio::sync::mpsc::unbounded_channel::<Response>();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(stream);
        let first = shared.follow(key.clone(), || stream);
        let second = shared.follow(key.clone(), futures_util::stream::empty);
        drop(first);
        assert_eq!(shared.len(), 1, "one follower left");
        drop(second);
        assert!(shared.is_empty());
        // The stream was dropped with its task.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !results.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the execution stopped");
    }

    #[test]
    fn a_request_error_is_rendered_for_both_protocols() {
        let mut error = async_graphql::ServerError::new("no", None);
        error.path = Vec::new();
        let rendered = Rendered::new(&Response::from_errors(vec![error]));
        assert_eq!(rendered.body, r#"{"errors":[{"message":"no"}]}"#);
        assert_eq!(
            rendered.request_errors.as_deref(),
            Some(r#"[{"message":"no"}]"#)
        );
    }
}
