//! Bad input: a corpus of malformed, truncated, oversized and hostile packets in both encodings
//! (binary frames over TCP and WebSocket, Tinode JSON over WebSocket), requests before login,
//! forged and expired tokens, other users' topics, a flood and a client that never reads. Each
//! gets its coded error or a closed connection, while a bystander pair chats throughout; at the
//! end the bystanders' ledger is clean and their stored history complete. The client that never
//! reads is stopped being read, and the gateway's memory does not grow with its answers.

use std::sync::Arc;
use std::time::Duration;

use kefu_core::id::MsgId;
use kefu_core::proto::{
    self, Action, ActionWhat, ClientPacket, Code, Get, GetWhat, Hi, Note, NoteWhat,
};
use kefu_host::gateway::auth::TokenKey;
use kefu_tests::gateway::{self, Gateway, NewAccount, Options};
use kefu_tests::ledger::Ledger;
use kefu_tests::raw::{Got, Heard, Json, Raw, body_of, code, frame_body, frame_of, pub_packet};
use kefu_tests::sdk::{self, PASSWORD, Plan};
use kefu_tests::{Dice, WAIT, seed};
use tokio::sync::watch;

/// How a connection answered a bad input.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A `ctrl` with this code.
    Code(u16),
    /// The gateway closed the connection.
    Closed,
}

/// The first `ctrl` code (skipping pushes) or the close, within `WAIT`.
async fn answer(raw: &mut Raw) -> Answer {
    loop {
        match raw.hear(WAIT).await {
            Heard::Packet(Got::Ctrl { code, .. }) => return Answer::Code(code.0),
            Heard::Packet(_) => continue,
            Heard::Closed => return Answer::Closed,
            Heard::Silent => panic!("no answer in time"),
        }
    }
}

/// After a closing error, the connection is closed (an error `ctrl` may come first).
async fn closes(raw: &mut Raw, case: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{case}: not closed in time"
        );
        match raw.hear(WAIT).await {
            Heard::Closed => return,
            Heard::Packet(Got::Ctrl { code, .. }) if code.0 >= 400 => continue,
            Heard::Packet(Got::Ctrl { code, .. }) => panic!("{case}: answered {code:?}"),
            Heard::Packet(_) => continue,
            Heard::Silent => panic!("{case}: neither closed nor answered"),
        }
    }
}

fn hi(id: u32, ver: u16) -> ClientPacket<'static> {
    ClientPacket::Hi(Hi {
        id,
        ver,
        device: "hostile",
        platform: "linux",
        lang: "en",
        ua: "kefu-tests",
    })
}

fn publish(id: u32, topic: &str, msg_id: MsgId, content: &[u8]) -> Vec<u8> {
    frame_of(&pub_packet(id, topic, msg_id, content))
}

fn random_id(dice: &mut Dice) -> MsgId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&dice.word().to_le_bytes());
    b[8..].copy_from_slice(&dice.word().to_le_bytes());
    MsgId::from_bytes(b)
}

/// A connection that said `hi` (binary, over TCP or WebSocket).
async fn greeted(gw: &Gateway, ws: bool) -> Raw {
    let mut r = if ws {
        Raw::ws(gw.http).await
    } else {
        Raw::tcp(gw.tcp).await
    };
    r.hi().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_code_or_a_close_and_bystanders_lose_nothing() {
    let seed = seed("bad-input");
    let mut dice = Dice::new(seed, 0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pairs = sdk::pair_accounts(&data, 1);
    let ids = gateway::add_users(
        &data,
        &[
            NewAccount {
                login: "eve".into(),
                password: PASSWORD.into(),
                agent: false,
            },
            NewAccount {
                login: "carol".into(),
                password: PASSWORD.into(),
                agent: false,
            },
        ],
    );
    let eve_id = ids[0].clone();
    let opts = Options {
        flags: ["--max-content", "4096", "--rate", "100", "--burst", "200"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    };
    let mut gw = Gateway::start(&data, tmp.path(), opts).await;

    // The bystanders chat over TCP and WebSocket during everything below.
    let ledger = Arc::new(Ledger::new());
    let (stop_tx, stop) = watch::channel(false);
    let plan = Plan {
        sends: 100_000,
        window: 4,
        pace: Duration::from_millis(25),
    };
    let (agent, cust) = pairs[0].clone();
    let bystanders = [
        tokio::spawn(sdk::run_peer(
            gw.tcp_url(),
            agent,
            0,
            plan,
            ledger.clone(),
            stop.clone(),
        )),
        tokio::spawn(sdk::run_peer(
            gw.ws_url(),
            cust,
            0,
            plan,
            ledger.clone(),
            stop.clone(),
        )),
    ];

    // Carol's consultation: a topic Eve has no part in.
    let mut carol = Raw::tcp(gw.tcp).await;
    carol.session("carol", PASSWORD).await;
    let id = carol.next_id();
    let open = ClientPacket::Action(Action {
        id,
        what: ActionWhat::Open { desk: "" },
    });
    let cns = match carol.call(&open, id).await {
        Some(Got::Ctrl {
            code: Code::CREATED,
            name,
            ..
        }) => name,
        other => panic!("open: {other:?}"),
    };
    let stored_before = carol.latest(&cns).await;
    let mut cases = 0;

    for ws in [false, true] {
        let via = if ws { "ws" } else { "tcp" };
        let case = |name: &str| format!("{via}: {name}");

        // --- Framing ----------------------------------------------------------------------
        let good = frame_of(&hi(1, proto::PROTOCOL_VERSION));
        let mut bad_header = good.clone();
        bad_header[6] ^= 0xFF;
        let mut bad_body = good.clone();
        let last = bad_body.len() - 1;
        bad_body[last] ^= 0xFF;
        let mut oversized = good[..7].to_vec();
        oversized[2..6].copy_from_slice(&(200u32 * 1024 * 1024).to_le_bytes());
        oversized[6] = crc8(&oversized[..6]);
        oversized.extend(vec![0u8; 64]);
        let mut two = good.clone();
        two.extend_from_slice(&good);
        let mut garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        garbage.extend((0..2000).map(|_| dice.word() as u8));
        let framing: Vec<(&str, Vec<u8>)> = vec![
            ("bad header crc", bad_header),
            ("bad body crc", bad_body),
            ("oversized length", oversized),
            ("random garbage", garbage),
        ];
        for (name, bytes) in framing {
            let mut r = if ws {
                Raw::ws(gw.http).await
            } else {
                Raw::tcp(gw.tcp).await
            };
            if r.send_bytes(&bytes).await {
                closes(&mut r, &case(name)).await;
            }
            cases += 1;
        }
        if ws {
            // Two frames in one WebSocket message is garbage too.
            let mut r = Raw::ws(gw.http).await;
            r.send_bytes(&two).await;
            closes(&mut r, &case("two frames in one message")).await;
            cases += 1;
        } else {
            // Half a frame, then the client goes away: nothing breaks.
            let mut r = Raw::tcp(gw.tcp).await;
            r.send_bytes(&good[..good.len() / 2]).await;
            drop(r);
            cases += 1;
        }

        // --- Bodies that are not packets: 400, the session lives on -------------------------
        let hi_body = body_of(&hi(7, proto::PROTOCOL_VERSION));
        let mut trailing = hi_body.clone();
        trailing.push(0);
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("unknown tag", vec![0x7F, 1, 2, 3]),
            ("truncated hi", hi_body[..3].to_vec()),
            ("trailing bytes", trailing),
            ("bad varint", vec![0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            ("bad utf-8", vec![0, 9, 1, 1, 0xFF, 1, 0x70, 0, 0, 0]),
        ];
        for (name, body) in bodies {
            let mut r = if ws {
                Raw::ws(gw.http).await
            } else {
                Raw::tcp(gw.tcp).await
            };
            r.send_bytes(&frame_body(&body)).await;
            assert_eq!(answer(&mut r).await, Answer::Code(400), "{}", case(name));
            // Still usable afterwards.
            r.hi().await;
            cases += 1;
        }

        // --- Session order ----------------------------------------------------------------
        let mut r = if ws {
            Raw::ws(gw.http).await
        } else {
            Raw::tcp(gw.tcp).await
        };
        r.send_bytes(&publish(1, &cns, random_id(&mut dice), b"before hi"))
            .await;
        let a = answer(&mut r).await;
        assert!(
            matches!(a, Answer::Code(400..=499)),
            "{}: {a:?}",
            case("pub before hi")
        );
        r.send(&hi(2, 99)).await;
        assert_eq!(
            answer(&mut r).await,
            Answer::Code(505),
            "{}",
            case("version 99")
        );
        cases += 2;

        let mut r = greeted(&gw, ws).await;
        r.send(&hi(50, proto::PROTOCOL_VERSION)).await;
        assert_eq!(
            answer(&mut r).await,
            Answer::Code(409),
            "{}",
            case("hi twice")
        );
        assert_eq!(
            code(&r.sub(&cns, None).await),
            Some(Code::UNAUTHORIZED),
            "{}",
            case("sub before login")
        );
        r.send_bytes(&publish(51, &cns, random_id(&mut dice), b"x"))
            .await;
        assert_eq!(
            answer(&mut r).await,
            Answer::Code(401),
            "{}",
            case("pub before login")
        );
        cases += 3;

        // --- Credentials ------------------------------------------------------------------
        let mut r = greeted(&gw, ws).await;
        assert_eq!(
            code(&r.login("eve", "wrong-password").await),
            Some(Code::UNAUTHORIZED),
            "{}",
            case("wrong password")
        );
        let token = match r.login("eve", PASSWORD).await {
            Some(Got::Ctrl {
                code: Code::OK,
                token,
                ..
            }) => token,
            other => panic!("eve logs in: {other:?}"),
        };
        let mut forged = token.clone();
        let mid = forged.len() / 2;
        forged[mid] ^= 0x01;
        let mut noise = vec![0u8; 48];
        noise.iter_mut().for_each(|b| *b = dice.word() as u8);
        let key = TokenKey::load_or_create(&data.join("token.key")).expect("token key");
        let now_ms = kefu_host::gateway::context::now_ms();
        let generation = (0..4)
            .find(|g| {
                let t = key.issue(&eve_id, *g, now_ms + 3_600_000);
                key.verify(&t, now_ms).is_ok() && t.len() == token.len()
            })
            .unwrap_or(0);
        let fresh = key.issue(&eve_id, generation, now_ms + 3_600_000);
        let expired = key.issue(&eve_id, generation, now_ms - 1000);
        for (name, t, want) in [
            ("forged token", forged, Code::UNAUTHORIZED),
            ("random token", noise, Code::UNAUTHORIZED),
            ("empty token", Vec::new(), Code::UNAUTHORIZED),
            ("expired token", expired, Code::UNAUTHORIZED),
            ("fresh token (control)", fresh, Code::OK),
        ] {
            let mut r = greeted(&gw, ws).await;
            let got = code(&r.login_token(&t).await);
            assert!(
                got == Some(want)
                    || (want != Code::OK && got.is_some_and(|c| c.0 >= 400 && c.0 < 500)),
                "{}: {got:?}",
                case(name)
            );
            cases += 1;
        }

        // --- Other users' topics ----------------------------------------------------------
        let mut eve = greeted(&gw, ws).await;
        assert_eq!(code(&eve.login("eve", PASSWORD).await), Some(Code::OK));
        assert_eq!(
            code(&eve.sub(&cns, Some(0)).await),
            Some(Code::FORBIDDEN),
            "{}",
            case("sub to another's consultation")
        );
        assert_eq!(
            code(&eve.publish(&cns, random_id(&mut dice), b"let me in").await),
            Some(Code::FORBIDDEN),
            "{}",
            case("pub to another's consultation")
        );
        let id = eve.next_id();
        let get = ClientPacket::Get(Get {
            id,
            topic: &cns,
            what: GetWhat::Data {
                since: 1,
                before: 0,
                limit: 10,
            },
        });
        assert_eq!(
            code(&eve.call(&get, id).await),
            Some(Code::FORBIDDEN),
            "{}",
            case("history of another's consultation")
        );
        eve.send(&ClientPacket::Note(Note {
            topic: &cns,
            what: NoteWhat::Read,
            seq: 1,
        }))
        .await;
        assert_eq!(
            answer(&mut eve).await,
            Answer::Code(403),
            "{}",
            case("note on another's consultation")
        );
        assert_eq!(
            code(&eve.publish("bad topic!", random_id(&mut dice), b"x").await),
            Some(Code::MALFORMED),
            "{}",
            case("bad topic name")
        );
        assert_eq!(
            code(&eve.publish(&eve_id, random_id(&mut dice), b"x").await).map(|c| c.0 >= 400),
            Some(true),
            "{}",
            case("pub to oneself")
        );
        cases += 7;

        // --- A flood: 429s with RetryAfter, the session survives --------------------------
        let grp = eve.new_group().await;
        let big = vec![b'x'; 5000];
        assert_eq!(
            code(&eve.publish(&grp, random_id(&mut dice), &big).await),
            Some(Code::TOO_LARGE),
            "{}",
            case("oversized content")
        );
        cases += 1;
        // Pipelined: on TCP in one write, on WebSocket one message per frame, back to back.
        let first_id = eve.next_id() + 1;
        let frames: Vec<Vec<u8>> = (0..600u32)
            .map(|i| publish(first_id + i, &grp, random_id(&mut dice), b"flood"))
            .collect();
        for _ in 0..600 {
            eve.next_id();
        }
        if ws {
            for f in &frames {
                assert!(eve.send_bytes(f).await);
            }
        } else {
            assert!(eve.send_bytes(&frames.concat()).await);
        }
        let (mut accepted, mut limited) = (0, 0);
        for i in 0..600u32 {
            match code(&eve.ctrl(first_id + i).await) {
                Some(Code::ACCEPTED) => accepted += 1,
                Some(Code::RATE_LIMITED) => limited += 1,
                other => panic!("{}: pub {i} answered {other:?}", case("flood")),
            }
        }
        println!("[bad-input] {via} flood: {accepted} accepted, {limited} rate limited");
        assert!(limited > 0, "{}: the rate limit bites", case("flood"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            code(&eve.publish(&grp, random_id(&mut dice), b"calm").await),
            Some(Code::ACCEPTED),
            "{}",
            case("after the flood")
        );
        let latest = eve.latest(&grp).await;
        assert_eq!(
            latest,
            accepted + 1,
            "{}: exactly the accepted pubs are stored",
            case("flood")
        );
        cases += 1;
    }

    // --- JSON (Tinode dialect) over WebSocket ------------------------------------------------
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let text_of = |n: usize| {
        format!(
            "{{\"pub\":{{\"id\":\"1\",\"topic\":\"x\",\"content\":\"{}\"}}}}",
            "y".repeat(n)
        )
    };
    let long_id = format!(
        "{{\"hi\":{{\"id\":\"{}\",\"ver\":\"0.25.3\"}}}}",
        "9".repeat(100)
    );
    // (case, text, the id its answer carries, the code; None = the connection is closed)
    let json_cases: Vec<(&str, String, Option<&str>, Option<u16>)> = vec![
        ("not json", "{{{".into(), None, Some(400)),
        ("deep nesting", deep, None, Some(400)),
        (
            "unknown packet",
            r#"{"foo":{"id":"2"}}"#.into(),
            None,
            Some(400),
        ),
        (
            "two packets",
            r#"{"hi":{"id":"3","ver":"0.25.3"},"login":{"id":"3"}}"#.into(),
            None,
            Some(400),
        ),
        (
            "bad version",
            r#"{"hi":{"id":"4","ver":"x.y"}}"#.into(),
            Some("4"),
            Some(400),
        ),
        (
            "version 7",
            r#"{"hi":{"id":"5","ver":"7.0.0"}}"#.into(),
            Some("5"),
            Some(505),
        ),
        ("long id", long_id, None, Some(400)),
        // Over the JSON limit (content limit + 1 KiB): 413; over twice the frame limit the
        // WebSocket layer refuses the message and closes.
        ("oversized text", text_of(8 * 1024), None, Some(413)),
        ("huge text", text_of(300 * 1024), None, None),
    ];
    for (name, text, id, want) in json_cases {
        let mut j = Json::connect(gw.http).await;
        assert_eq!(j.call(&text, id).await, want, "json: {name}");
        cases += 1;
    }
    let mut j = Json::connect(gw.http).await;
    assert_eq!(
        j.call(
            r#"{"pub":{"id":"10","topic":"grpx","content":"early"}}"#,
            Some("10")
        )
        .await
        .map(|c| (400..500).contains(&c)),
        Some(true),
        "json: pub before hi"
    );
    assert_eq!(
        j.call(r#"{"hi":{"id":"11","ver":"0.25.3"}}"#, Some("11"))
            .await
            .map(|c| c == 200 || c == 201),
        Some(true),
        "json: hi"
    );
    assert_eq!(
        j.call(r#"{"sub":{"id":"12","topic":"me"}}"#, Some("12"))
            .await,
        Some(401),
        "json: sub before login"
    );
    assert_eq!(
        j.call(
            r#"{"login":{"id":"13","scheme":"token","secret":"Zm9yZ2VkLXRva2Vu"}}"#,
            Some("13")
        )
        .await,
        Some(401),
        "json: forged token"
    );
    assert_eq!(
        j.call(
            r#"{"login":{"id":"14","scheme":"basic","secret":"!!not base64!!"}}"#,
            Some("14")
        )
        .await
        .map(|c| (400..500).contains(&c)),
        Some(true),
        "json: bad base64"
    );
    let basic = base64_basic("eve", PASSWORD);
    assert_eq!(
        j.call(
            &format!(r#"{{"login":{{"id":"15","scheme":"basic","secret":"{basic}"}}}}"#),
            Some("15")
        )
        .await,
        Some(200),
        "json: login"
    );
    assert_eq!(
        j.call(
            &format!(r#"{{"sub":{{"id":"16","topic":"{cns}"}}}}"#),
            Some("16")
        )
        .await,
        Some(403),
        "json: another's consultation"
    );
    assert_eq!(
        j.call(
            &format!(r#"{{"pub":{{"id":"17","topic":"{cns}","content":"hi"}}}}"#),
            Some("17")
        )
        .await,
        Some(403),
        "json: pub to another's consultation"
    );
    assert_eq!(
        j.call(
            &format!(
                r#"{{"pub":{{"id":"18","topic":"{eve_id}","head":{{"kid":"ZZ"}},"content":"x"}}}}"#
            ),
            Some("18")
        )
        .await,
        Some(400),
        "json: bad message id"
    );
    assert_eq!(
        j.call(r#"{"note":{"topic":"me","what":"call","seq":1}}"#, None)
            .await,
        Some(501),
        "json: unimplemented note"
    );
    assert_eq!(
        j.call(
            r#"{"get":{"id":"19","topic":"me","what":"tags"}}"#,
            Some("19")
        )
        .await,
        Some(204),
        "json: nothing to get"
    );
    cases += 11;

    // --- A client that never reads --------------------------------------------------------
    // It asks far more than the socket buffers between it and the gateway can hold answers
    // for: the gateway must stop reading it, not queue the answers in its own memory.
    let pid = gw.pid().expect("the gateway runs");
    let rss_before = rss_kib(pid);
    let mut slow = Raw::tcp(gw.tcp).await;
    slow.session("carol", PASSWORD).await;
    let id = slow.next_id();
    let ask = frame_of(&ClientPacket::Get(Get {
        id,
        topic: "me",
        what: GetWhat::Subs,
    }));
    let many: Vec<u8> = ask
        .iter()
        .copied()
        .cycle()
        .take(ask.len() * ASKS_UNREAD)
        .collect();
    let writer = tokio::spawn(async move {
        // Writes until the gateway stops reading (never reading its answers).
        let all_written = tokio::time::timeout(Duration::from_secs(5), slow.send_bytes(&many))
            .await
            .is_ok();
        (slow, all_written)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut probe = Raw::tcp(gw.tcp).await;
    probe.session("eve", PASSWORD).await;
    let (slow, all_written) = writer.await.expect("the slow writer ran");
    let rss_after = rss_kib(pid);
    println!(
        "[bad-input] a client asked {ASKS_UNREAD} times without reading (all written: \
         {all_written}); gateway memory {rss_before} -> {rss_after} KiB"
    );
    assert!(
        !all_written,
        "the gateway kept reading a client that reads none of its answers"
    );
    assert!(
        rss_after < rss_before + RSS_GROWTH_KIB,
        "the gateway holds a non-reading client's answers in memory: {rss_before} -> {rss_after} KiB"
    );
    cases += 1;

    // --- The bystanders saw nothing of it -------------------------------------------------
    let acked_so_far = ledger.acked_count();
    let deadline = tokio::time::Instant::now() + WAIT;
    while ledger.acked_count() <= acked_so_far + 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ledger.acked_count() > acked_so_far + 5,
        "the bystanders keep chatting while a client does not read"
    );
    // Wind down: no new messages, everything made answered and delivered, then stop.
    ledger.close_books();
    assert!(
        sdk::answered(&ledger, 0, WAIT * 2).await,
        "bystander messages answered"
    );
    assert!(
        sdk::settle(&ledger, WAIT * 2).await,
        "bystander delivery settles"
    );
    stop_tx.send(true).expect("bystanders listen");
    for b in bystanders {
        tokio::time::timeout(WAIT, b)
            .await
            .expect("bystander ends")
            .expect("bystander ran");
    }
    drop(slow);
    sdk::check_histories(gw.tcp, &pairs, &ledger).await;
    let t = ledger.assert_clean("bad-input");
    assert!(t.acked > 0);
    assert_eq!(
        carol.latest(&cns).await,
        stored_before,
        "nothing was stored in the attacked topic"
    );
    println!("[bad-input] {cases} hostile cases answered; bystanders: {t}");
    assert!(gw.stop().await, "the gateway stops cleanly");
}

/// How many requests the non-reading client sends: answered in full, they would be tens of
/// MiB, far more than the loopback socket buffers hold.
const ASKS_UNREAD: usize = 400_000;

/// How much the gateway's resident memory may grow while that client does not read.
const RSS_GROWTH_KIB: u64 = 32 * 1024;

/// The resident memory of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in the process status")
}

/// CRC-8/SMBUS, the frame header check.
fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Base64 of `login:password` (Tinode's basic secret).
fn base64_basic(login: &str, password: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{login}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_helpers_match_known_values() {
    assert_eq!(crc8(b"123456789"), 0xF4);
    assert_eq!(base64_basic("alice", "secret"), "YWxpY2U6c2VjcmV0");
}
