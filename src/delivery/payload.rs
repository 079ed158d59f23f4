//! What a receiver gets: the JSON body and the delivery id.

use std::fmt::Write as _;

use rand::RngCore as _;
use serde_json::{Map, Value, json};

use crate::domain::settings::EventKind;

/// The body's `type` for an event.
pub fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Start => "ai_interview.started",
        EventKind::Submission => "ai_interview.submitted",
    }
}

/// A new delivery id, `msg_` and 32 hex digits, sent as `webhook-id` on every attempt: the
/// Unix time in ms (12 digits) then 80 random bits. Ids in creation order are appended at the
/// end of the outbox's indexes rather than all over them, so one commit of many publishes
/// rewrites a few index pages instead of one per event (BENCHMARKS.md).
pub fn new_delivery_id() -> String {
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let millis = crate::storage::now_ms().max(0) as u64 & 0xffff_ffff_ffff;
    let mut id = format!("msg_{millis:012x}");
    for byte in random {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// The body: `{"type", "timestamp", "data": {"ai_interview_id", ...publisher's data}}`. The
/// interview id always wins over a publisher's key of the same name.
pub fn body(
    kind: EventKind,
    ai_interview_id: i64,
    data: Map<String, Value>,
    now_ms: i64,
) -> String {
    let mut data = data;
    data.insert("ai_interview_id".to_owned(), json!(ai_interview_id));
    let timestamp = crate::pb::timestamp(now_ms).to_string();
    json!({
        "type": event_type(kind),
        "timestamp": timestamp,
        "data": data,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_type_timestamp_and_data_with_the_interview_id() {
        let mut data = Map::new();
        data.insert("candidate".into(), json!("ada"));
        data.insert("ai_interview_id".into(), json!("forged"));
        let body: Value = serde_json::from_str(&body(EventKind::Submission, 42, data, 0)).unwrap();

        assert_eq!(body["type"], "ai_interview.submitted");
        assert_eq!(body["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(body["data"]["ai_interview_id"], 42);
        assert_eq!(body["data"]["candidate"], "ada");
    }

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = new_delivery_id();
        assert!(a.starts_with("msg_") && a.len() == 36);
        assert_ne!(a, new_delivery_id());
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let first = new_delivery_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_delivery_id();
        assert!(first < second, "{first} then {second}");
        assert!(second[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
