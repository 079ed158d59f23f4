//! What was stored survives a graceful restart, and a shutdown lets in-flight requests finish.

use interview_webhooks::pb;

use crate::common::{Backend, PUT_SUCCESS, SETTINGS_PATH, TestServer};

both_backends!(
    restart_keeps_everything,
    shutdown_finishes_in_flight_requests
);

async fn restart_keeps_everything(backend: Backend) {
    let mut srv = TestServer::start(backend).await;
    let other_key = srv.create_key("acme").await;

    let full = r#"{"ai_interview_id": 1, "webhooks": {
        "start": {"status": true, "url": "https://example.com/webhook/start"},
        "submission": {"status": false, "url": "https://example.com/webhook/submission"},
        "auth": {"type": "basic", "basic": {"username": "user", "password": "pass"}}}}"#;
    let reply = srv.put(full).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, PUT_SUCCESS));
    let apikey = r#"{"ai_interview_id": 2, "webhooks": {
        "submission": {"status": true, "url": "https://example.com/webhook/submission"},
        "auth": {"type": "apikey", "status": false, "apikey": {"key": "X-Key", "value": "v"}}}}"#;
    let reply = srv.put_as(&other_key, "", apikey).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, PUT_SUCCESS));

    let mut client = srv.grpc().await;
    let rotated = client
        .rotate_signing_secret(pb::RotateSigningSecretRequest { ai_interview_id: 1 })
        .await
        .unwrap()
        .into_inner();

    let mine = srv.get(1).await;
    let theirs = srv.get_as(&other_key, 2).await;
    let grpc_before = client
        .get_webhooks(pb::GetWebhooksRequest { ai_interview_id: 1 })
        .await
        .unwrap()
        .into_inner();
    drop(client);

    srv.restart().await;

    let mut client = srv.grpc().await;
    let grpc_after = client
        .get_webhooks(pb::GetWebhooksRequest { ai_interview_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_after, grpc_before, "times and settings survive");
    assert_eq!(srv.get(1).await.body, mine.body);
    assert_eq!(srv.get_as(&other_key, 2).await.body, theirs.body);
    assert_eq!(
        srv.get_as(&other_key, 1).await.status,
        404,
        "still scoped per account"
    );

    let secret = client
        .get_signing_secret(pb::GetSigningSecretRequest { ai_interview_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secret.secret, rotated.secret);
    assert_eq!(secret.previous_expire_time, rotated.previous_expire_time);

    // The stored secrets still back their masks.
    let reply = srv
        .put(r#"{"ai_interview_id": 1, "webhooks": {"auth": {"type": "basic", "basic": {"username": "user2", "password": "********"}}}}"#)
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, PUT_SUCCESS));
    let columns = crate::settings_rest::auth_columns(&srv, 1).await;
    assert_eq!(columns.4.as_deref(), Some("pass"));
}

/// A request the server is already handling when the shutdown signal comes is finished and
/// answered, and what it wrote is kept.
async fn shutdown_finishes_in_flight_requests(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut srv = TestServer::start(backend).await;
    let body = r#"{"ai_interview_id": 5, "webhooks": {"start": {"status": true, "url": "https://example.com/in-flight"}}}"#;

    // `Expect: 100-continue` makes the server say when the handler starts reading the body:
    // from then on the request is in flight.
    let mut stream = tokio::net::TcpStream::connect(srv.http_addr).await.unwrap();
    let head = format!(
        "PUT {SETTINGS_PATH} HTTP/1.1\r\nHost: {}\r\napiKey: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        srv.http_addr,
        srv.api_key,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("100 Continue\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before 100 Continue: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }

    let addr = srv.http_addr;
    let finish = async {
        // Send the body only once the server has stopped accepting connections, so the
        // request is surely in flight during the shutdown.
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        rest
    };
    let ((), rest) = tokio::join!(srv.restart(), finish);

    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "in-flight request: {rest}"
    );
    assert!(rest.ends_with(PUT_SUCCESS), "in-flight request: {rest}");
    assert_eq!(
        srv.get_data(5).await["webhooks"]["start"]["url"],
        "https://example.com/in-flight"
    );
}
