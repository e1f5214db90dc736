//! `kefu chat` as a person uses it: the real `kefu` binary runs in a tmux session of its own
//! (a private tmux server), driven with `send-keys` and read with `capture-pane`, against the
//! real `kefu gateway` process on 127.0.0.1. Alice, an agent, sits at the terminal; Bob and
//! Carol are customers using the SDK. Every check polls the screen until a deadline; nothing
//! waits a fixed time and then asserts.
//!
//! Needs `tmux` on the PATH.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kefu_host::client::{
    AgentStatus, Client, ClientEvent, FailReason, MessageState, PresWhat, Subscription, TopicEvent,
};
use support::{Bin, add_user};

const PW: &str = "secret-pass";
const WAIT: Duration = Duration::from_secs(10);
/// How long the screen may take to show something.
const SCREEN_WAIT: Duration = Duration::from_secs(20);

/// A tmux server of this test's own, with one session running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `shell_cmd` in a detached `cols`×`rows` session.
    fn start(shell_cmd: &str, cols: u16, rows: u16) -> Tmux {
        let t = Tmux {
            socket: format!("kefu-chat-test-{}", std::process::id()),
        };
        t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            shell_cmd,
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (is it installed?)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "chat"])
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "chat", "-l", text]);
    }

    /// Presses named keys (tmux names: Enter, F2, PPage, BSpace...).
    fn press(&self, key: &str) {
        self.run(&["send-keys", "-t", "chat", key]);
    }

    /// Types a line and presses Enter.
    fn line(&self, text: &str) {
        self.type_text(text);
        self.press("Enter");
    }

    /// Polls the screen until `pred` holds; panics with the last screen after the deadline.
    async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("the screen never showed {what}; it shows:\n{s}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shows(&self, text: &str) -> String {
        self.wait_for(&format!("{text:?}"), |s| s.contains(text))
            .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A customer with the SDK over TCP.
async fn sdk(gw: &Bin, login: &str) -> Client {
    Client::connect(support::client::config(
        format!("tcp://{}", gw.tcp),
        login,
        PW,
        WAIT,
    ))
    .await
    .unwrap_or_else(|e| panic!("{login} logs in: {e}"))
}

/// The next event of `sub` matching `pred`, skipping others; panics naming `what` (and what
/// was skipped) after the deadline.
async fn expect(
    sub: &mut Subscription,
    what: &str,
    pred: impl Fn(&TopicEvent) -> bool,
) -> TopicEvent {
    let mut skipped = Vec::new();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            let ev = sub.next().await.expect("subscription open");
            if pred(&ev) {
                return ev;
            }
            skipped.push(format!("{ev:?}"));
        }
    })
    .await;
    got.unwrap_or_else(|_| panic!("no {what} in time; skipped: {skipped:#?}"))
}

/// Publishes and waits until stored; the seq.
async fn send(c: &Client, sub: &mut Subscription, topic: &str, text: &str) -> u64 {
    let id = c.publish(topic, text).expect("publish").id;
    match expect(
        sub,
        &format!("{text:?} stored"),
        |e| matches!(e, TopicEvent::Changed { id: i, state: MessageState::Sent, .. } if *i == id),
    )
    .await
    {
        TopicEvent::Changed { seq: Some(seq), .. } => seq,
        other => panic!("unexpected {other:?}"),
    }
}

/// The conversation list's row for `name` (the list is the left 28 columns).
fn list_row(screen: &str, name: &str) -> String {
    screen
        .lines()
        .map(|l| l.chars().take(28).collect::<String>())
        .find(|l| l.contains(name) && !l.contains("Conversations"))
        .unwrap_or_default()
}

/// The line of the screen holding `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_chats_in_the_terminal_with_customers_using_the_sdk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let alice_id = add_user(&data, "alice", PW, &["--agent"]);
    add_user(&data, "bob", PW, &[]);
    add_user(&data, "carol", PW, &[]);
    let dave_id = add_user(&data, "dave", PW, &["--agent"]);
    let gw = Bin::start(&data, &[]).await;

    // Before Alice opens the terminal: Bob wrote 30 messages, of which Alice read 25 (on
    // another device); Carol wrote 3, unread.
    let bob = sdk(&gw, "bob").await;
    let mut b = bob.subscribe(&alice_id).expect("bob subscribes");
    for i in 1..=30 {
        send(&bob, &mut b, &alice_id, &format!("old {i:02}")).await;
    }
    let carol = sdk(&gw, "carol").await;
    let mut c = carol.subscribe(&alice_id).expect("carol subscribes");
    for i in 1..=3 {
        send(&carol, &mut c, &alice_id, &format!("carol says {i}")).await;
    }
    let bob_id = bob.user();
    {
        let alice = sdk(&gw, "alice").await;
        let mut a = alice
            .subscribe_from(&bob_id, 20, 20)
            .expect("alice resumes");
        expect(
            &mut a,
            "bob's seq 30",
            |e| matches!(e, TopicEvent::Added { message, .. } if message.seq() == Some(30)),
        )
        .await;
        alice.mark_read(&bob_id, 25).expect("mark read");
        // Bob sees the read receipt: Alice's mark is stored at the gateway.
        expect(&mut b, "receipt 25", |e| {
            matches!(
                e,
                TopicEvent::Receipt {
                    read: true,
                    seq: 25,
                    ..
                }
            )
        })
        .await;
        alice.close();
    }

    // Alice starts `kefu chat`; the password comes from the environment.
    let kefu = env!("CARGO_BIN_EXE_kefu");
    let cmd = format!(
        "env KEFU_PASSWORD={PW} {kefu} chat --user alice --url ws://{}; echo chat-exited=$?; sleep 600",
        gw.http
    );
    let tmux = Tmux::start(&cmd, 110, 32);
    tmux.shows("kefu chat | alice | connected").await;

    // The list shows both conversations with their unread counts (the one opened first is read
    // at once, the other keeps its count).
    let s = tmux
        .wait_for("both conversations", |s| {
            s.contains("bob") && s.contains("carol") && (s.contains("(5)") || s.contains("(3)"))
        })
        .await;
    if list_row(&s, "carol").contains('>') {
        assert!(list_row(&s, "bob").contains("(5)"), "bob's unread:\n{s}");
        tmux.press("Down");
    } else {
        tmux.wait_for("carol's unread", |s| list_row(s, "carol").contains("(3)"))
            .await;
    }
    // Bob's conversation is open: the unread ones and some context are there, the oldest not;
    // opened means read (the list's unread count goes once the view has marked it, which may
    // be a screen refresh after the conversation shows).
    let s = tmux
        .wait_for("bob's conversation open and read", |s| {
            list_row(s, "bob").contains('>')
                && s.contains("bob: old 30")
                && !list_row(s, "bob").contains("(5)")
        })
        .await;
    assert!(
        !s.contains("old 01"),
        "the oldest messages are not loaded yet:\n{s}"
    );
    // Opening it marked it read: Bob gets the receipt for seq 30.
    expect(&mut b, "receipt 30", |e| {
        matches!(
            e,
            TopicEvent::Receipt {
                read: true,
                seq: 30,
                ..
            }
        )
    })
    .await;

    // History paging: PageUp until the first message shows.
    let deadline = Instant::now() + SCREEN_WAIT;
    loop {
        tmux.press("PPage");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = tmux.screen();
        if s.contains("bob: old 01") {
            break;
        }
        assert!(Instant::now() < deadline, "old 01 never paged in:\n{s}");
    }
    for _ in 0..4 {
        tmux.press("NPage");
    }
    tmux.shows("bob: old 30").await;

    // A message Bob sends shows up.
    bob.publish(&alice_id, "hi alice, it is bob")
        .expect("publish");
    tmux.shows("bob: hi alice, it is bob").await;

    // Alice types while the gateway is frozen: her message shows at once, marked as sending;
    // once the gateway runs again it is stored, then Bob reads it.
    signal(gw.pid(), "-STOP");
    tmux.line("hello bob, how can I help");
    let pending = tmux.shows("me: hello bob, how can I help").await;
    let frozen = line_with(&pending, "hello bob, how can I help").contains("(sending)");
    signal(gw.pid(), "-CONT");
    assert!(
        frozen,
        "shown as sending while the gateway is frozen:\n{pending}"
    );
    tmux.wait_for("the stored mark", |s| {
        line_with(s, "hello bob, how can I help").contains("(sent)")
            || line_with(s, "hello bob, how can I help").contains("(delivered)")
    })
    .await;
    let got = expect(&mut b, "alice's message at bob", |e| {
        matches!(e, TopicEvent::Added { message, .. } if message.text() == "hello bob, how can I help")
    })
    .await;
    let TopicEvent::Added { message, .. } = got else {
        unreachable!()
    };
    bob.mark_read(&alice_id, message.seq().expect("stored"))
        .expect("bob reads");
    tmux.wait_for("the read mark", |s| {
        line_with(s, "hello bob, how can I help").contains("(read)")
    })
    .await;

    // Typing, both ways.
    let deadline = Instant::now() + SCREEN_WAIT;
    loop {
        bob.typing(&alice_id).expect("typing");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tmux.screen().contains("bob is typing...") {
            break;
        }
        assert!(Instant::now() < deadline, "bob's typing never showed");
    }
    // Alice types (a notice goes out at most once per few seconds, so she types on, a key at a
    // time, until Bob's client shows it), then deletes what she typed.
    let mut typed = 0;
    let seen = tokio::time::timeout(SCREEN_WAIT, async {
        loop {
            tmux.type_text("x");
            typed += 1;
            if let Ok(Some(TopicEvent::Typing { from })) =
                tokio::time::timeout(Duration::from_millis(300), b.next()).await
                && from == alice_id
            {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "bob never saw alice typing");
    for _ in 0..typed {
        tmux.press("BSpace");
    }
    tmux.wait_for("an empty input line", |s| !s.contains("> x"))
        .await;

    // The agent desk: status switch with F2, busy by command; a waiting customer taken with
    // F3, handed to another agent and back, then closed.
    tmux.press("F2");
    tmux.shows("status: online").await;
    tmux.line("/status busy");
    tmux.shows("status: busy").await;
    let consult = carol.open_consultation("").await.expect("carol opens");
    let mut cs = carol.subscribe(&consult).expect("carol follows it");
    send(&carol, &mut cs, &consult, "my order never came").await;
    tmux.press("F3");
    tmux.wait_for("the taken consultation open", |s| {
        list_row(s, &consult).contains('>') && s.contains("my order never came")
    })
    .await;
    tmux.line("sorry, sending a new one today");
    expect(&mut cs, "the agent reply at carol", |e| {
        matches!(e, TopicEvent::Added { message, .. } if message.text() == "sorry, sending a new one today")
    })
    .await;

    // Transfer: Alice hands the consultation to Dave, who is told and hands it back.
    let dave = sdk(&gw, "dave").await;
    dave.set_status(AgentStatus::Busy)
        .await
        .expect("dave at his desk");
    let mut dave_events = dave.events();
    tmux.line(&format!("/transfer {dave_id}"));
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = dave_events.next().await {
            if matches!(&ev, ClientEvent::Presence { src, what: PresWhat::Assigned, .. } if *src == consult)
            {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("dave is never told; the screen:\n{}", tmux.screen()));
    dave.subscribe(&consult).expect("dave follows it");
    dave.transfer(&consult, &alice_id)
        .await
        .expect("dave hands it back");
    tmux.shows(&format!("new consultation {consult}")).await;

    // Closing it: Carol can no longer write there.
    tmux.line("/close");
    let closed = format!("{consult} closed");
    tmux.wait_for("the close confirmed", |s| {
        s.contains(&closed) || s.contains("the conversation ended")
    })
    .await;
    let late = carol.publish(&consult, "hello?").expect("queued").id;
    let refused = expect(&mut cs, "the refusal after close", |e| {
        matches!(e, TopicEvent::Changed { id, state: MessageState::Failed(_), .. } if *id == late)
    })
    .await;
    assert!(
        matches!(
            refused,
            TopicEvent::Changed {
                state: MessageState::Failed(FailReason::Refused { code: 409 }),
                ..
            }
        ),
        "{refused:?}"
    );

    // Quit: the program ends cleanly.
    tmux.line("/quit");
    tmux.shows("chat-exited=0").await;
}
