//! The JSON dialect over a real WebSocket and the HTTP endpoints, on 127.0.0.1: a Tinode-style
//! session, malformed JSON answered without harm, binary and JSON clients in one conversation,
//! `/healthz`, and `/metrics` moving with the traffic.

mod support;

use std::time::Duration;

use kefu_core::proto::{Acc, AuthScheme, ClientPacket, Code, NoteWhat};
use kefu_host::gateway::wire::Out;
use serde_json::json;
use support::inspect::{Ws, http_get, metric};
use support::{Gw, Raw, new_id};

#[tokio::test]
async fn a_json_client_says_hi_signs_up_subscribes_publishes_and_receives() {
    let mut gw = Gw::start().await;
    let mut jay = Ws::connect(gw.http).await;
    let hi = jay.hi().await;
    assert!(hi["code"] == 200 || hi["code"] == 201, "{hi}");
    assert_eq!(hi["params"]["kefuVer"], 1);
    let jay_id = jay.acc("jay", "Jay").await;
    assert!(jay_id.starts_with("usr"));

    let mut kim = Ws::connect(gw.http).await;
    kim.hi().await;
    let kim_id = kim.acc("kim", "Kim").await;

    let c = jay
        .call(
            "sub",
            json!({"topic": kim_id, "get": {"what": "desc data", "data": {"limit": 24}}}),
        )
        .await;
    assert_eq!(c["code"], 200, "{c}");
    let c = kim.call("sub", json!({"topic": jay_id})).await;
    assert_eq!(c["code"], 200, "{c}");

    let c = jay.publish(&kim_id, "hello kim").await;
    assert_eq!(
        (c["code"].as_u64(), c["params"]["seq"].as_u64()),
        (Some(202), Some(1)),
        "{c}"
    );
    let d = kim.data(&jay_id).await;
    assert_eq!(
        (&d["seq"], &d["content"], &d["from"]),
        (&json!(1), &json!("hello kim"), &json!(jay_id))
    );

    // A second device logs in with the password and fetches the history.
    let mut kim2 = Ws::connect(gw.http).await;
    kim2.hi().await;
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD.encode("kim:secret-pass");
    let c = kim2
        .call("login", json!({"scheme": "basic", "secret": secret}))
        .await;
    assert_eq!(
        (c["code"].as_u64(), c["params"]["user"].as_str()),
        (Some(200), Some(kim_id.as_str()))
    );
    let id = kim2.next_id();
    kim2.send(
        json!({"sub": {"id": id, "topic": jay_id, "get": {"what": "data", "data": {"since": 1}}}}),
    )
    .await;
    let d = kim2.data(&jay_id).await;
    assert_eq!(d["content"], "hello kim");

    // Kim reads it; Jay hears of it.
    kim.send(json!({"note": {"topic": jay_id, "what": "read", "seq": 1}}))
        .await;
    let info = jay.wait_for(|v| v.get("info").is_some()).await;
    assert_eq!(info["info"]["what"], "read");
    assert_eq!(info["info"]["from"], json!(kim_id));
    assert_eq!(info["info"]["seq"], 1);
    gw.stop().await;
}

#[tokio::test]
async fn malformed_json_is_answered_400_and_the_session_keeps_working() {
    let mut gw = Gw::start().await;
    let mut jay = Ws::connect(gw.http).await;
    jay.hi().await;
    jay.acc("jay", "Jay").await;
    let mut kim = Ws::connect(gw.http).await;
    kim.hi().await;
    let kim_id = kim.acc("kim", "Kim").await;

    jay.send_text("{this is not json").await;
    let c = jay.ctrl(None).await;
    assert_eq!(c["code"], 400, "{c}");

    jay.send_text(r#"{"pub":{"id":"77","topic":"no such topic!","content":"x"}}"#)
        .await;
    let c = jay.ctrl(Some("77")).await;
    assert_eq!(c["code"], 400, "{c}");

    // An unknown packet: its id is not looked for (only known packets' ids are read).
    jay.send_text(r#"{"frobnicate":{"id":"78"}}"#).await;
    let c = jay.ctrl(None).await;
    assert_eq!(c["code"], 400, "{c}");

    jay.send_text(r#"{"pub":{"id":"79","topic":"usrabc","content":12}}"#)
        .await;
    let c = jay.ctrl(Some("79")).await;
    assert_eq!(c["code"], 400, "{c}");

    // Still logged in, still publishing.
    let c = jay.publish(&kim_id, "after all that").await;
    assert_eq!(c["code"], 202, "{c}");
    gw.stop().await;
}

#[tokio::test]
async fn a_binary_client_and_a_json_client_talk_in_one_conversation() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let mut jay = Ws::connect(gw.http).await;
    jay.hi().await;
    let jay_id = jay.acc("jay", "Jay").await;

    assert_eq!(alice.sub(&jay_id, Some(0)).await.0, Code::OK);
    let c = jay.call("sub", json!({"topic": alice_id})).await;
    assert_eq!(c["code"], 200);

    let (code, _) = alice
        .publish(&jay_id, new_id(), "你好, jay".as_bytes())
        .await;
    assert_eq!(code, Code::ACCEPTED);
    let d = jay.data(&alice_id).await;
    assert_eq!((&d["seq"], &d["content"]), (&json!(1), &json!("你好, jay")));
    let kid = d["head"]["kid"].as_str().expect("the message id");
    assert_eq!(kid.len(), 32);

    let c = jay.publish(&alice_id, "hi alice").await;
    assert_eq!(
        (c["code"].as_u64(), c["params"]["seq"].as_u64()),
        (Some(202), Some(2))
    );
    let mut msgs = Vec::new();
    while msgs.len() < 2 {
        msgs.push(alice.data(&jay_id).await);
    }
    assert_eq!(
        msgs[0].msg_id.to_hex().as_slice(),
        kid.as_bytes(),
        "the same message, one id"
    );
    assert_eq!(
        (
            msgs[1].seq,
            msgs[1].content.as_slice(),
            msgs[1].from.as_str()
        ),
        (2, &b"hi alice"[..], jay_id.as_str())
    );
    alice.ack(&jay_id, 2).await;

    // Receipts cross dialects too.
    jay.send(json!({"note": {"topic": alice_id, "what": "read", "seq": 2}}))
        .await;
    let info = alice.wait_for(|o| matches!(o, Out::Info { .. })).await;
    assert_eq!(
        info,
        Out::Info {
            topic: jay_id.clone(),
            from: jay_id.clone(),
            what: NoteWhat::Read,
            seq: 2
        }
    );
    alice.note(&jay_id, NoteWhat::Read, 1).await;
    let info = jay.wait_for(|v| v.get("info").is_some()).await;
    assert_eq!(
        (&info["info"]["from"], &info["info"]["seq"]),
        (&json!(alice_id), &json!(1))
    );
    gw.stop().await;
}

#[tokio::test]
async fn healthz_says_ok() {
    let mut gw = Gw::start().await;
    let (status, body) = http_get(gw.http, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = http_get(gw.http, "/no-such-page").await;
    assert_eq!(status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn metrics_move_with_the_traffic() {
    let mut gw = Gw::start().await;
    let (status, before) = http_get(gw.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(before.trim_end().ends_with("# EOF"), "OpenMetrics text");
    let m = |text: &str, s: &str| metric(text, s);
    assert_eq!(m(&before, r#"kefu_connections{transport="tcp"}"#), 0.0);

    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    let mut jay = Ws::connect(gw.http).await;
    jay.hi().await;
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::OK);
    for i in 1..=5 {
        let (code, _) = alice
            .publish(&bob_id, new_id(), format!("m{i}").as_bytes())
            .await;
        assert_eq!(code, Code::ACCEPTED);
    }
    for i in 1..=5 {
        assert_eq!(bob.data(&alice_id).await.seq, i);
    }
    bob.ack(&alice_id, 5).await;
    let (code, _) = alice.publish("usrabcdefghijk", new_id(), b"nobody").await;
    assert_eq!(code, Code::NOT_FOUND);

    // Acks are taken in on the gateway's time: poll until they show.
    let mut after = String::new();
    for _ in 0..50 {
        after = http_get(gw.http, "/metrics").await.1;
        if m(&after, "kefu_acks_total") >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = |s: &str| m(&after, s) - m(&before, s);
    assert_eq!(m(&after, r#"kefu_connections{transport="tcp"}"#), 2.0);
    assert_eq!(m(&after, r#"kefu_connections{transport="ws"}"#), 1.0);
    assert_eq!(d(r#"kefu_connections_opened_total{transport="tcp"}"#), 2.0);
    assert_eq!(d(r#"kefu_packets_in_total{type="pub"}"#), 6.0);
    assert_eq!(d(r#"kefu_packets_in_total{type="hi"}"#), 3.0);
    assert_eq!(d(r#"kefu_packets_in_total{type="ack"}"#), 1.0);
    assert_eq!(d(r#"kefu_replies_total{type="pub",code="202"}"#), 5.0);
    assert_eq!(d(r#"kefu_replies_total{type="pub",code="404"}"#), 1.0);
    assert_eq!(d(r#"kefu_replies_total{type="sub",code="200"}"#), 1.0);
    assert_eq!(d("kefu_messages_stored_total"), 5.0);
    assert!(d("kefu_deliveries_total") >= 5.0);
    assert_eq!(d("kefu_acks_total"), 5.0);
    assert_eq!(d(r#"kefu_pubs_total{result="ok"}"#), 5.0);
    assert_eq!(d(r#"kefu_pubs_total{result="failed"}"#), 1.0);
    assert_eq!(m(&after, "kefu_sessions_logged_in"), 2.0);

    // Connections that end are no longer counted.
    drop(alice);
    drop(jay);
    let mut now = String::new();
    for _ in 0..50 {
        now = http_get(gw.http, "/metrics").await.1;
        if m(&now, r#"kefu_connections{transport="tcp"}"#) == 1.0
            && m(&now, r#"kefu_connections{transport="ws"}"#) == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m(&now, r#"kefu_connections{transport="tcp"}"#), 1.0);
    assert_eq!(m(&now, r#"kefu_connections{transport="ws"}"#), 0.0);
    assert_eq!(m(&now, "kefu_sessions_logged_in"), 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn healthz_reports_a_store_whose_disk_sync_failed() {
    let mut gw = Gw::start_with(|c| c.durable = true).await;
    // The WAL goes away before the first commit is synced: that sync fails, and from then on
    // the store refuses writes and the gateway asks to be restarted.
    std::fs::remove_file(gw.dir.path().join("kefu.db-wal")).expect("the WAL exists");
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let id = c.next_id();
    c.send(ClientPacket::Acc(Acc {
        id,
        scheme: AuthScheme::Basic,
        secret: b"ann:secret-pass",
        name: "ann",
        login: true,
    }))
    .await;
    let (code, text, _) = c.ctrl(id).await;
    assert_eq!(
        code,
        Code::INTERNAL,
        "an account the disk did not keep: {text}"
    );
    let (status, body) = http_get(gw.http, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk sync failed"), "{body}");
    gw.stop().await;
}
