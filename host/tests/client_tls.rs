//! `wss://` end to end: the real `kefu gateway` serves its HTTP listener over TLS with a
//! certificate made here by a test CA (rcgen); SDK clients that trust that CA chat through it,
//! a client that does not trust it is turned away with a certificate error, and bad certificate
//! files stop the gateway at start with a clear message.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kefu_host::client::{Client, ClientConfig, ClientError, MessageState, TopicEvent};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::{Bin, add_user};

const PW: &str = "secret-pass";
const WAIT: Duration = Duration::from_secs(10);

/// PEM files of one test PKI: a CA and a server certificate for 127.0.0.1 / localhost.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes a CA and a server certificate it signed, written as PEM files into `dir`.
fn make_pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("kefu test CA {name}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca self-signed");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kefu gateway");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("signed by the CA");

    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&pki.cert, cert.pem()).expect("write cert");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write key");
    pki
}

fn wss_config(gw: &Bin, login: &str, ca: Option<&Path>) -> ClientConfig {
    let mut c = support::client::config(
        format!("wss://127.0.0.1:{}", gw.http.port()),
        login,
        PW,
        WAIT,
    );
    c.extra_ca = ca.map(Path::to_path_buf);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trust_the_ca_chat_over_wss_and_others_are_turned_away() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pki = make_pki(tmp.path(), "good");
    let other = make_pki(tmp.path(), "other");
    let alice_id = add_user(&data, "alice", PW, &[]);
    let bob_id = add_user(&data, "bob", PW, &[]);
    let cert = pki.cert.to_str().expect("utf-8");
    let key = pki.key.to_str().expect("utf-8");
    let gw = Bin::start(&data, &["--tls-cert", cert, "--tls-key", key]).await;

    // Two clients that trust the test CA chat both ways over wss://.
    let a = Client::connect(wss_config(&gw, "alice", Some(&pki.ca)))
        .await
        .expect("alice logs in over wss");
    let c = Client::connect(wss_config(&gw, "bob", Some(&pki.ca)))
        .await
        .expect("bob logs in over wss");
    let mut a_sub = a.subscribe(&bob_id).expect("subscribe");
    let mut c_sub = c.subscribe(&alice_id).expect("subscribe");
    support::client::next(&mut c_sub, WAIT, |e| {
        matches!(e, TopicEvent::Subscribed { .. })
    })
    .await;
    let sent = a.publish(&bob_id, "hello over tls").expect("publish");
    let got = support::client::next(
        &mut c_sub,
        WAIT,
        |e| matches!(e, TopicEvent::Added { message, .. } if message.id == sent.id),
    )
    .await;
    let TopicEvent::Added { message, .. } = got else {
        unreachable!()
    };
    assert_eq!(message.text(), "hello over tls");
    assert_eq!(message.seq(), Some(1));
    let reply = c.publish(&alice_id, "and back").expect("publish");
    support::client::next(
        &mut a_sub,
        WAIT,
        |e| matches!(e, TopicEvent::Added { message, .. } if message.id == reply.id),
    )
    .await;
    support::client::next(&mut c_sub, WAIT, |e| {
        matches!(e, TopicEvent::Changed { id, state: MessageState::Sent, seq: Some(2) } if *id == reply.id)
    })
    .await;

    // No extra CA (only the public roots), or the wrong CA: the handshake fails on the
    // certificate and the client says so instead of pretending to be offline.
    for ca in [None, Some(other.ca.as_path())] {
        let mut cfg = wss_config(&gw, "alice", ca);
        cfg.request_timeout = Duration::from_secs(2);
        match Client::connect(cfg).await {
            Err(ClientError::Connect(why)) => assert!(
                why.to_lowercase().contains("certificate"),
                "the failure names the certificate: {why}"
            ),
            other => panic!("an untrusted gateway must be refused, got {other:?}"),
        }
    }

    // A plain ws:// client cannot speak to the TLS listener either.
    let mut plain = support::client::config(
        format!("ws://{}", gw.http),
        "alice",
        PW,
        Duration::from_secs(2),
    );
    plain.connect_timeout = Duration::from_secs(1);
    assert!(
        matches!(
            Client::connect(plain).await,
            Err(ClientError::Connect(_) | ClientError::Timeout)
        ),
        "plain WebSocket to a TLS listener fails"
    );
    // ...and the chat over wss goes on after those failed attempts.
    let again = a.publish(&bob_id, "still here").expect("publish");
    support::client::next(
        &mut c_sub,
        WAIT,
        |e| matches!(e, TopicEvent::Added { message, .. } if message.id == again.id),
    )
    .await;
}

#[test]
fn bad_certificate_files_stop_the_gateway_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(tmp.path(), "good");
    let other = make_pki(tmp.path(), "other");
    let data = tmp.path().join("data");
    let data = data.to_str().expect("utf-8");
    let missing = tmp.path().join("missing.pem");
    let cases: [(&Path, &Path, &str); 3] = [
        (&missing, &pki.key, "missing.pem"),
        (&pki.key, &pki.key, "no certificate"),
        (&pki.cert, &other.key, "certificate and key"),
    ];
    for (cert, key, says) in cases {
        let (ok, _, err) = support::kefu(&[
            "gateway",
            "--data",
            data,
            "--http",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ]);
        assert!(!ok, "the gateway must not start with {cert:?} / {key:?}");
        assert!(err.contains(says), "error {err:?} should mention {says:?}");
    }
    // One flag without the other is a usage error.
    let (ok, _, err) = support::kefu(&["gateway", "--tls-cert", pki.cert.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
}
