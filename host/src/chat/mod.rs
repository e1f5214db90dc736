//! `kefu chat`: a full-screen terminal client on the SDK ([`crate::client`]).
//!
//! - [`state`] is the screen's state and its rules (pure, unit-tested): keys and client events
//!   in, [`state::Effect`]s out.
//! - [`view`] draws that state with ratatui.
//! - This module logs in, runs the terminal (crossterm: raw mode, alternate screen), follows
//!   conversations as subscriptions, and carries out the effects with the [`Client`]: quick
//!   ones at once, ones that wait for the gateway in tasks whose answers come back as inputs.

pub mod state;
pub mod view;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;
use tokio_stream::StreamMap;

use crate::client::{Client, ClientConfig, ClientError, Subscription, TopicEvent};
use state::{App, Effect, Input, Key, Outcome, PAGE};

/// How often the conversation list is asked again (new conversations appear by then).
const REFRESH: Duration = Duration::from_secs(5);
/// How often the screen is redrawn with nothing happening (typing notices expire).
const TICK: Duration = Duration::from_millis(250);

/// What `kefu chat` is told.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// Gateway URL (`ws://`, `wss://` or `tcp://`).
    pub url: String,
    /// Login name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Extra CA certificates (PEM) trusted for `wss://`.
    pub ca: Option<PathBuf>,
}

/// Logs in, then runs the chat screen until the user quits.
pub async fn run(opts: ChatOptions) -> Result<(), String> {
    let mut cfg = ClientConfig::password(&opts.url, &opts.user, &opts.password);
    cfg.extra_ca = opts.ca;
    cfg.device = format!("kefu-chat-{}", opts.user);
    let client = Client::connect(cfg)
        .await
        .map_err(|e| format!("cannot log in to {} as {}: {e}", opts.url, opts.user))?;
    let mut app = App::new(&opts.user, &client.user());
    let mut terminal = ratatui::try_init().map_err(|e| format!("terminal: {e}"))?;
    let keys = spawn_key_reader();
    let ran = Screen::new(client.clone(), keys)
        .run(&mut app, &mut terminal)
        .await;
    ratatui::restore();
    client.close();
    ran
}

/// The running screen: the client, its followed conversations, and the channels inputs
/// arrive on.
struct Screen {
    client: Client,
    subs: StreamMap<String, Subscription>,
    keys: mpsc::Receiver<Option<Key>>,
    done_tx: mpsc::UnboundedSender<Input>,
    done_rx: mpsc::UnboundedReceiver<Input>,
}

impl Screen {
    fn new(client: Client, keys: mpsc::Receiver<Option<Key>>) -> Screen {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Screen {
            client,
            subs: StreamMap::new(),
            keys,
            done_tx,
            done_rx,
        }
    }

    async fn run(
        mut self,
        app: &mut App,
        terminal: &mut ratatui::DefaultTerminal,
    ) -> Result<(), String> {
        let mut events = self.client.events();
        let mut tick = tokio::time::interval(TICK);
        let mut refresh = tokio::time::interval(REFRESH);
        loop {
            terminal
                .draw(|f| view::draw(f, app))
                .map_err(|e| format!("terminal: {e}"))?;
            let first = tokio::select! {
                key = self.keys.recv() => match key {
                    Some(Some(k)) => Some(Input::Key(k)),
                    Some(None) => None, // resized: draw again
                    None => Some(Input::Key(Key::Quit)),
                },
                Some((topic, ev)) = self.subs.next() => Some(Input::Topic(topic, ev)),
                Some(ev) = events.next() => Some(Input::Client(ev)),
                Some(done) = self.done_rx.recv() => Some(done),
                _ = refresh.tick() => {
                    self.effect(app, Effect::RefreshList);
                    None
                }
                _ = tick.tick() => Some(Input::Tick),
            };
            let mut inputs: Vec<Input> = first.into_iter().collect();
            // Take whatever else is ready before drawing again (a burst of messages is one
            // redraw, not hundreds).
            while inputs.len() < 256 {
                if let Some(Some((topic, ev))) = self.subs.next().now_or_never() {
                    inputs.push(Input::Topic(topic, ev));
                } else if let Ok(done) = self.done_rx.try_recv() {
                    inputs.push(done);
                } else {
                    break;
                }
            }
            for input in inputs {
                for effect in app.handle(Instant::now(), input) {
                    self.effect(app, effect);
                }
            }
            if app.quit {
                return Ok(());
            }
        }
    }

    /// Carries out one effect: quick ones now, ones that wait for the gateway in a task.
    fn effect(&mut self, app: &mut App, effect: Effect) {
        let c = self.client.clone();
        let done = self.done_tx.clone();
        let failed = |e: ClientError| Input::Done(Outcome::Failed(e.to_string()));
        let spawn = |f: std::pin::Pin<Box<dyn Future<Output = Input> + Send>>| {
            let done = done.clone();
            tokio::spawn(async move {
                let _ = done.send(f.await);
            });
        };
        let quick = match effect {
            Effect::Follow { topic, mark, read } => {
                let sub = if c.topics().contains(&topic) {
                    c.subscribe(&topic)
                } else {
                    c.subscribe_from(&topic, mark, read)
                };
                sub.map(|s| {
                    self.subs.insert(topic.clone(), s);
                    // What the client already holds of it (a topic the engine followed by
                    // itself, e.g. a consultation just taken) is shown like new arrivals.
                    for message in c.messages(&topic) {
                        let ev = TopicEvent::Added {
                            message,
                            history: false,
                        };
                        let _ = done.send(Input::Topic(topic.clone(), ev));
                    }
                })
            }
            Effect::Publish { topic, text } => c.publish(&topic, text).map(|_| ()),
            Effect::Resend(id) => c.resend(&id),
            Effect::Typing(topic) => c.typing(&topic),
            Effect::MarkRead { topic, seq } => c.mark_read(&topic, seq),
            Effect::LoadHistory(topic) => {
                spawn(Box::pin(async move {
                    match c.load_history(&topic, PAGE).await {
                        Ok(asked) => Input::Done(Outcome::History { topic, more: asked }),
                        Err(e) => failed(e),
                    }
                }));
                Ok(())
            }
            Effect::SetStatus(s) => {
                spawn(Box::pin(async move {
                    match c.set_status(s).await {
                        Ok(()) => Input::Done(Outcome::Status(s)),
                        Err(e) => failed(e),
                    }
                }));
                Ok(())
            }
            Effect::TakeNext => {
                spawn(Box::pin(async move {
                    match c.take_next().await {
                        Ok(topic) => Input::Done(Outcome::Opened(topic)),
                        Err(ClientError::Refused(code)) if code.0 == 404 => {
                            Input::Done(Outcome::Notice("nobody is waiting".into()))
                        }
                        Err(e) => failed(e),
                    }
                }));
                Ok(())
            }
            Effect::Transfer { topic, to } => {
                spawn(Box::pin(async move {
                    match c.transfer(&topic, &to).await {
                        Ok(()) => Input::Done(Outcome::Notice(format!("{topic} handed to {to}"))),
                        Err(e) => failed(e),
                    }
                }));
                Ok(())
            }
            Effect::Close(topic) => {
                spawn(Box::pin(async move {
                    match c.close_consultation(&topic).await {
                        Ok(()) => Input::Done(Outcome::Notice(format!("{topic} closed"))),
                        Err(e) => failed(e),
                    }
                }));
                Ok(())
            }
            Effect::OpenConsultation(desk) => {
                spawn(Box::pin(async move {
                    match c.open_consultation(&desk).await {
                        Ok(topic) => Input::Done(Outcome::Opened(topic)),
                        Err(e) => failed(e),
                    }
                }));
                Ok(())
            }
            Effect::RefreshList => {
                spawn(Box::pin(async move {
                    match c.conversations().await {
                        Ok(list) => Input::Conversations(list),
                        Err(e) => failed(e),
                    }
                }));
                Ok(())
            }
        };
        if let Err(e) = quick {
            app.notice = e.to_string();
        }
    }
}

/// Reads the terminal's key events on a thread of its own (crossterm's reads block); `None`
/// means "redraw" (the window was resized).
fn spawn_key_reader() -> mpsc::Receiver<Option<Key>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        loop {
            let Ok(ev) = event::read() else { return };
            let key = match ev {
                TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
                    match key_of(k.code, k.modifiers) {
                        Some(k) => Some(k),
                        None => continue,
                    }
                }
                TermEvent::Resize(..) => None,
                _ => continue,
            };
            if tx.blocking_send(key).is_err() {
                return;
            }
        }
    });
    rx
}

/// The chat's meaning of a terminal key.
fn key_of(code: KeyCode, mods: KeyModifiers) -> Option<Key> {
    if mods.contains(KeyModifiers::CONTROL) {
        return matches!(code, KeyCode::Char('c' | 'd')).then_some(Key::Quit);
    }
    Some(match code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::F(2) => Key::F2,
        KeyCode::F(3) => Key::F3,
        KeyCode::Esc => Key::Quit,
        _ => return None,
    })
}

/// Asks for a password on the terminal without echoing it.
pub fn prompt_password(user: &str) -> Result<String, String> {
    use ratatui::crossterm::terminal;
    use std::io::Write;
    let mut err = std::io::stderr();
    let _ = write!(err, "password for {user}: ");
    let _ = err.flush();
    terminal::enable_raw_mode().map_err(|e| format!("terminal: {e}"))?;
    let mut password = String::new();
    let read = loop {
        match event::read() {
            Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                    break Err("cancelled".to_owned());
                }
                KeyCode::Char(c) => password.push(c),
                KeyCode::Backspace => {
                    password.pop();
                }
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(format!("terminal: {e}")),
        }
    };
    let _ = terminal::disable_raw_mode();
    let _ = writeln!(err);
    read.map(|()| password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_keys_map_to_chat_keys() {
        assert_eq!(
            key_of(KeyCode::Char('x'), KeyModifiers::NONE),
            Some(Key::Char('x'))
        );
        assert_eq!(
            key_of(KeyCode::Char('X'), KeyModifiers::SHIFT),
            Some(Key::Char('X'))
        );
        assert_eq!(
            key_of(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::Quit)
        );
        assert_eq!(key_of(KeyCode::Char('a'), KeyModifiers::CONTROL), None);
        assert_eq!(key_of(KeyCode::Esc, KeyModifiers::NONE), Some(Key::Quit));
        assert_eq!(key_of(KeyCode::F(3), KeyModifiers::NONE), Some(Key::F3));
        assert_eq!(key_of(KeyCode::Tab, KeyModifiers::NONE), None);
    }
}
