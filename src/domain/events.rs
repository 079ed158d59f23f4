//! A published event and the checks it must pass before anything is queued, shared by
//! `PublishEvent` and `SendTestEvent` and free of transports and storage. Like the settings
//! checks, every problem of a request is reported at once.

use serde_json::{Map, Value, json};

use crate::domain::settings::{EventKind, check_interview_id};
use crate::error::{Error, FieldViolation};
use crate::pb;

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The largest `data` a publisher may attach, as JSON.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// An event that passed the checks.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub ai_interview_id: i64,
    pub kind: EventKind,
    /// `None` when the publisher sent none or an empty one.
    pub idempotency_key: Option<String>,
    /// The publisher's `data`, as JSON.
    pub data: Map<String, Value>,
}

/// Checks a `PublishEvent` request.
pub fn parse_publish(req: pb::PublishEventRequest) -> Result<NewEvent, Error> {
    let mut problems = Vec::new();
    check_interview(req.ai_interview_id, &mut problems);
    let kind = event_kind(req.event, &mut problems);
    let idempotency_key = req.idempotency_key.filter(|k| !k.is_empty());
    if let Some(key) = &idempotency_key {
        if key.chars().count() > MAX_IDEMPOTENCY_KEY {
            problems.push(FieldViolation::new(
                "idempotency_key",
                format!("too long: at most {MAX_IDEMPOTENCY_KEY} characters"),
            ));
        } else if key.chars().any(char::is_control) {
            problems.push(FieldViolation::new(
                "idempotency_key",
                "must not contain control characters; use printable text such as a UUID",
            ));
        }
    }
    let data = struct_to_json(req.data.unwrap_or_default());
    if serde_json::to_vec(&data).map_or(0, |v| v.len()) > MAX_DATA_BYTES {
        problems.push(FieldViolation::new(
            "data",
            format!("too large: at most {MAX_DATA_BYTES} bytes as JSON"),
        ));
    }

    match kind {
        Some(kind) if problems.is_empty() => Ok(NewEvent {
            ai_interview_id: req.ai_interview_id,
            kind,
            idempotency_key,
            data,
        }),
        _ => Err(Error::InvalidArgument(problems)),
    }
}

/// Checks a `SendTestEvent` request: the interview and the event it names.
pub fn parse_test(req: &pb::SendTestEventRequest) -> Result<(i64, EventKind), Error> {
    let mut problems = Vec::new();
    check_interview(req.ai_interview_id, &mut problems);
    match event_kind(req.event, &mut problems) {
        Some(kind) if problems.is_empty() => Ok((req.ai_interview_id, kind)),
        _ => Err(Error::InvalidArgument(problems)),
    }
}

/// Adds the settings rule for `ai_interview_id` to `problems` when the id breaks it.
fn check_interview(ai_interview_id: i64, problems: &mut Vec<FieldViolation>) {
    if let Err(Error::InvalidArgument(mut found)) = check_interview_id(ai_interview_id) {
        problems.append(&mut found);
    }
}

/// The event a request names; a problem when it names none.
fn event_kind(event: i32, problems: &mut Vec<FieldViolation>) -> Option<EventKind> {
    match pb::Event::try_from(event) {
        Ok(pb::Event::Start) => Some(EventKind::Start),
        Ok(pb::Event::Submission) => Some(EventKind::Submission),
        _ => {
            problems.push(FieldViolation::new(
                "event",
                "required: START or SUBMISSION",
            ));
            None
        }
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn struct_to_json(s: prost_types::Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            // Integral numbers print as integers, as the publisher most likely meant them.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                json!(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::PublishEventRequest {
        pb::PublishEventRequest {
            ai_interview_id: 42,
            event: pb::Event::Start.into(),
            data: None,
            idempotency_key: Some(String::new()),
        }
    }

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::InvalidArgument(problems) => problems.into_iter().map(|p| p.field).collect(),
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn a_good_request_passes_and_an_empty_key_counts_as_none() {
        let event = parse_publish(request()).unwrap();
        assert_eq!(event.ai_interview_id, 42);
        assert_eq!(event.kind, EventKind::Start);
        assert_eq!(event.idempotency_key, None);
        assert!(event.data.is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let big = "x".repeat(MAX_DATA_BYTES);
        let req = pb::PublishEventRequest {
            ai_interview_id: 0,
            event: 0,
            idempotency_key: Some("k".repeat(MAX_IDEMPOTENCY_KEY + 1)),
            data: Some(prost_types::Struct {
                fields: [(
                    "blob".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(big)),
                    },
                )]
                .into(),
            }),
        };
        assert_eq!(
            fields(parse_publish(req).unwrap_err()),
            ["ai_interview_id", "event", "idempotency_key", "data"]
        );
    }

    #[test]
    fn a_test_event_reports_both_problems_at_once() {
        let req = pb::SendTestEventRequest {
            ai_interview_id: -1,
            event: 0,
        };
        assert_eq!(
            fields(parse_test(&req).unwrap_err()),
            ["ai_interview_id", "event"]
        );
    }

    #[test]
    fn a_key_with_a_control_character_is_refused() {
        let mut req = request();
        req.idempotency_key = Some("start\0-42".to_owned());
        assert_eq!(fields(parse_publish(req).unwrap_err()), ["idempotency_key"]);
    }

    #[test]
    fn a_key_of_the_longest_length_passes() {
        let mut req = request();
        req.idempotency_key = Some("é".repeat(MAX_IDEMPOTENCY_KEY));
        assert!(parse_publish(req).is_ok());
    }

    #[test]
    fn integral_numbers_stay_integers() {
        let s = prost_types::Struct {
            fields: [(
                "n".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(7.0)),
                },
            )]
            .into(),
        };
        assert_eq!(Value::Object(struct_to_json(s)), json!({"n": 7}));
    }
}
