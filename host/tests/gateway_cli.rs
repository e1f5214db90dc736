//! The `kefu` command's account tools against the real binary: `user add` prints an id that
//! logs in, refuses a taken name, and works when several run at once on one data folder;
//! `device add` prints a token that logs in and fails when altered; `--no-signup` closes online
//! account creation.

mod support;

use base64::Engine;
use kefu_core::proto::{AuthScheme, ClientPacket, Code};
use kefu_host::gateway::wire::Params;
use kefu_host::store::Store;
use support::{Bin, Raw, add_user, kefu, kefu_command, outcome};

/// Runs `kefu user add` for each of `logins` as processes all started before any is waited
/// for, on the data folder `data`; each one's (success, stdout, stderr).
fn add_users_at_once(data: &str, logins: &[String]) -> Vec<(bool, String, String)> {
    let children: Vec<_> = logins
        .iter()
        .map(|login| {
            kefu_command(&[
                "user",
                "add",
                login,
                "--password",
                "pw-at-once",
                "--data",
                data,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kefu user add spawns")
        })
        .collect();
    children
        .into_iter()
        .map(|c| outcome(c.wait_with_output().expect("kefu user add ends")))
        .collect()
}

/// Several `kefu user add` at once on a fresh data folder all race to create the database and
/// switch it to WAL mode; that switch used to fail now and then with "database is locked"
/// (SQLite tries its exclusive lock once, without the busy timeout). Rounds of eight at once on
/// a fresh folder, then eight more at once on the same, now existing, folder: every one
/// succeeds with its own id, every account is stored under its login and logs in.
#[tokio::test]
async fn eight_user_adds_at_once_on_one_folder_all_succeed_and_log_in() {
    const ROUNDS: usize = 12;
    const AT_ONCE: usize = 8;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf-8");
        let mut accounts = Vec::new();
        for wave in ["new", "existing"] {
            let logins: Vec<String> = (0..AT_ONCE).map(|i| format!("{wave}{i}")).collect();
            for (login, (ok, id, err)) in logins.iter().zip(add_users_at_once(data, &logins)) {
                assert!(
                    ok,
                    "round {round}: kefu user add {login} on a {wave} folder failed: {err}"
                );
                assert!(
                    id.starts_with("usr"),
                    "round {round}: {login} printed {id:?}"
                );
                accounts.push((login.clone(), id));
            }
        }
        // Listed: each login is stored once, under the id its command printed.
        let store = kefu_host::gateway::server::open_store(dir.path(), false).expect("open");
        for (login, id) in &accounts {
            let user = store.user_by_login(login).await.expect("read");
            assert_eq!(
                user.map(|u| u.id).as_ref(),
                Some(id),
                "round {round}: {login} is stored with its id"
            );
        }
        store.close().await;
        // And every account logs in.
        let gw = Bin::start(dir.path(), &[]).await;
        for (login, id) in &accounts {
            let mut c = Raw::connect(gw.tcp).await;
            c.hi().await;
            let (code, params) = c.login(login, "pw-at-once").await;
            assert_eq!(code, Code::OK, "round {round}: {login} logs in");
            assert!(
                matches!(&params, Params::Login { user, .. } if user == id),
                "round {round}: {login} is {id}: {params:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_user_added_offline_logs_in_with_the_printed_id_and_a_taken_name_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = add_user(dir.path(), "alice", "pw", &["--agent"]);
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "one id: {id:?}"
    );

    let data = dir.path().to_str().expect("utf-8");
    let (ok, out, err) = kefu(&[
        "user",
        "add",
        "alice",
        "--password",
        "other",
        "--data",
        data,
    ]);
    assert!(!ok, "a taken name exits non-zero (printed {out:?})");
    assert!(out.is_empty(), "no id printed for a refused user");
    assert!(err.contains("taken"), "a clear message: {err:?}");

    let gw = Bin::start(dir.path(), &[]).await;
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, params) = c.login("alice", "pw").await;
    assert_eq!(code, Code::OK);
    assert!(matches!(params, Params::Login { user, .. } if user == id));
    // The first password still holds: the refused add changed nothing.
    let mut wrong = Raw::connect(gw.tcp).await;
    wrong.hi().await;
    let (code, _) = wrong.login("alice", "other").await;
    assert_eq!(code, Code::UNAUTHORIZED);
}

#[tokio::test]
async fn a_device_token_logs_in_and_one_changed_byte_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let (ok, token, err) = kefu(&["device", "add", "desk1", "--data", data]);
    assert!(ok, "device add works: {err}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "base64url without padding: {token:?}"
    );
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token)
        .expect("the token decodes");
    let device_user = err
        .rsplit(' ')
        .next()
        .expect("stderr names the device's user")
        .to_owned();

    let (ok, _, err) = kefu(&["device", "add", "desk1", "--data", data]);
    assert!(
        !ok && err.contains("taken"),
        "a device name is unique: {err}"
    );

    let gw = Bin::start(dir.path(), &[]).await;
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, params) = c.login_token(&bytes).await;
    assert_eq!(code, Code::OK);
    assert!(
        matches!(&params, Params::Login { user, .. } if *user == device_user),
        "logged in as the device: {params:?}"
    );

    for i in [0, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        let mut c = Raw::connect(gw.tcp).await;
        c.hi().await;
        let (code, _) = c.login_token(&bad).await;
        assert_eq!(code, Code::UNAUTHORIZED, "byte {i} changed");
    }
    // The device has no password.
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, _) = c.login("desk1", "").await;
    assert_ne!(code, Code::OK);
}

#[tokio::test]
async fn no_signup_makes_acc_403_while_offline_accounts_still_log_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    add_user(dir.path(), "bob", "pw", &[]);
    let gw = Bin::start(dir.path(), &["--no-signup"]).await;

    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let id = c.next_id();
    c.send(ClientPacket::Acc(kefu_core::proto::Acc {
        id,
        scheme: AuthScheme::Basic,
        secret: b"mallory:secret-pass",
        name: "mallory",
        login: true,
    }))
    .await;
    let (code, ..) = c.ctrl(id).await;
    assert_eq!(code, Code::FORBIDDEN);
    let (code, _) = c.login("mallory", "secret-pass").await;
    assert_eq!(code, Code::UNAUTHORIZED, "no account was made");
    let (code, _) = c.login("bob", "pw").await;
    assert_eq!(code, Code::OK);
}

#[tokio::test]
async fn bad_command_lines_fail_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let (ok, _, err) = kefu(&[
        "user",
        "add",
        "bad name",
        "--password",
        "pw",
        "--data",
        data,
    ]);
    assert!(!ok, "a login with a space is refused");
    assert!(!err.is_empty());
    let (ok, _, err) = kefu(&["user", "add", "carol", "--data", data]);
    assert!(
        !ok && err.contains("--password"),
        "the password is required: {err}"
    );
    let (ok, line, _) = kefu(&["--version"]);
    assert!(ok && line.starts_with("kefu "), "{line}");
}
