//! The whole retry, without sockets: a scripted cluster behind [`ControllerLinks`] says who the
//! controller is and answers what is forwarded to it, and the test checks what was sent where and
//! what the client gets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use super::plan::NOT_CONTROLLER;
use super::tests::{create_topics_request, create_topics_response, leaves};
use super::{AdminRequest, AdminRetry, ControllerLinks, LinkError, LinkFuture, RetryError, RetryPolicy};
use crate::wire::{peek_request_header, response_correlation_id};

const VERSION: i16 = 4;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// A cluster of brokers 1–3 whose controller is `controller`; every broker but the controller
/// answers 41 to everything, the controller answers with `answer` for the topics it is sent.
struct Scripted {
    controller: i32,
    answer: i16,
    /// What each forwarded request went to: (node id, topics in it).
    forwarded: Mutex<Vec<(i32, Vec<String>)>>,
    lose_answers: bool,
}

impl Scripted {
    fn new(controller: i32, answer: i16) -> Self {
        Scripted { controller, answer, forwarded: Mutex::default(), lose_answers: false }
    }
}

impl ControllerLinks for Scripted {
    fn node_ids(&self) -> Vec<i32> {
        vec![1, 2, 3]
    }

    fn controller_as_seen_by(&self, _node_id: i32) -> LinkFuture<'_, Option<i32>> {
        Box::pin(async move { Ok(Some(self.controller)) })
    }

    fn forward<'a>(&'a self, node_id: i32, request: &'a [u8]) -> LinkFuture<'a, Bytes> {
        Box::pin(async move {
            let topics: Vec<String> = leaves_of_request(request);
            self.forwarded.lock().unwrap().push((node_id, topics.clone()));
            if self.lose_answers {
                return Err(LinkError { maybe_applied: true, reason: "connection reset".into() });
            }
            let code = if node_id == self.controller { self.answer } else { NOT_CONTROLLER };
            let results: Vec<(&str, i16)> = topics.iter().map(|t| (t.as_str(), code)).collect();
            Ok(create_topics_response(VERSION, &results))
        })
    }
}

/// The topic names of a CreateTopics request.
fn leaves_of_request(request: &[u8]) -> Vec<String> {
    let header = peek_request_header(request).unwrap();
    assert_eq!(header.api_key, ApiKey::CreateTopics as i16);
    let requested =
        super::layout::request(ApiKey::CreateTopics, VERSION, request, header.body_offset.unwrap()).unwrap();
    requested.arrays[0].entries.iter().map(|entry| String::from_utf8_lossy(&entry.key).into_owned()).collect()
}

fn policy(budget: Duration) -> RetryPolicy {
    RetryPolicy { initial_backoff: Duration::from_millis(5), max_backoff: Duration::from_millis(20), budget }
}

fn admin_request(topics: &[&str]) -> AdminRequest {
    let frame = create_topics_request(VERSION, topics);
    let body_offset = peek_request_header(&frame).unwrap().body_offset.unwrap();
    AdminRequest { api_key: ApiKey::CreateTopics, api_version: VERSION, frame, body_offset, received: Instant::now() }
}

#[tokio::test]
async fn only_the_failed_topics_go_to_the_controller_and_the_answers_merge_in_order() {
    let cluster = Arc::new(Scripted::new(2, TOPIC_ALREADY_EXISTS));
    let retry = AdminRetry::new(policy(Duration::from_secs(5)), cluster.clone());
    let request = admin_request(&["a", "b", "c"]);
    let first = create_topics_response(VERSION, &[("a", 0), ("b", NOT_CONTROLLER), ("c", NOT_CONTROLLER)]);

    let answer = retry.recover(&request, first, Some(1)).await.unwrap();

    assert_eq!(*cluster.forwarded.lock().unwrap(), [(2, vec!["b".to_owned(), "c".to_owned()])]);
    let got = leaves(ApiKey::CreateTopics, VERSION, &answer);
    let expected = [("a", 0), ("b", TOPIC_ALREADY_EXISTS), ("c", TOPIC_ALREADY_EXISTS)].map(|(t, c)| (t.to_owned(), c));
    assert_eq!(got, expected);
    assert_eq!(response_correlation_id(&answer).unwrap(), peek_request_header(&request.frame).unwrap().correlation_id);
}

#[tokio::test]
async fn a_controller_reported_by_the_broker_that_said_41_is_not_asked_again() {
    // Every broker names node 1, which answered 41: the retry tries the others instead.
    let cluster = Arc::new(Scripted::new(1, 0));
    let retry = AdminRetry::new(policy(Duration::from_millis(300)), cluster.clone());
    let request = admin_request(&["a"]);
    let first = create_topics_response(VERSION, &[("a", NOT_CONTROLLER)]);

    let answer = retry.recover(&request, first, Some(1)).await.unwrap();

    let targets: Vec<i32> = cluster.forwarded.lock().unwrap().iter().map(|(node, _)| *node).collect();
    assert_eq!(targets[..2], [2, 3], "untried brokers first: {targets:?}");
    assert_eq!(leaves(ApiKey::CreateTopics, VERSION, &answer)[0].0, "a");
}

#[tokio::test]
async fn an_answer_lost_after_sending_is_never_sent_again() {
    let cluster = Arc::new(Scripted { lose_answers: true, ..Scripted::new(2, 0) });
    let retry = AdminRetry::new(policy(Duration::from_secs(5)), cluster.clone());
    let request = admin_request(&["a"]);
    let first = create_topics_response(VERSION, &[("a", NOT_CONTROLLER)]);

    let error = retry.recover(&request, first, Some(1)).await.unwrap_err();

    assert!(matches!(error, RetryError::AnswerLost { .. }), "{error}");
    assert_eq!(cluster.forwarded.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn when_the_budget_runs_out_the_client_gets_the_last_real_answer() {
    // The "controller" keeps answering 41.
    let cluster = Arc::new(Scripted::new(2, NOT_CONTROLLER));
    let budget = Duration::from_millis(200);
    let retry = AdminRetry::new(policy(budget), cluster.clone());
    let request = admin_request(&["a"]);
    let first = create_topics_response(VERSION, &[("a", NOT_CONTROLLER)]);

    let started = Instant::now();
    let answer = retry.recover(&request, first, Some(1)).await.unwrap();

    assert!(started.elapsed() < budget + Duration::from_millis(150), "{:?}", started.elapsed());
    assert!(cluster.forwarded.lock().unwrap().len() >= 2, "it kept trying");
    assert_eq!(leaves(ApiKey::CreateTopics, VERSION, &answer), [("a".to_owned(), NOT_CONTROLLER)]);
}
