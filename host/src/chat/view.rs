//! Draws the chat screen from [`App`] with ratatui: a header, the conversation list on the
//! left, the open conversation on the right (newest at the bottom, scrolled back with PageUp),
//! the notice bar, the input line and a line of key help.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line as TextLine;
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};

use super::state::{App, Line, mark, status_name};
use crate::client::SessionState;

/// Width of the conversation list.
const LIST_WIDTH: u16 = 28;

/// Draws the whole screen; tells `app` how many message rows fit (for paging).
pub fn draw(frame: &mut Frame<'_>, app: &mut App) {
    let [header, body, notice, input, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [list, pane] =
        Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(10)]).areas(body);
    app.rows = usize::from(pane.height.saturating_sub(2)).max(1);

    frame.render_widget(Paragraph::new(header_text(app)), header);
    draw_list(frame, app, list);
    draw_pane(frame, app, pane);
    frame.render_widget(
        Paragraph::new(app.notice.as_str()).style(Style::new().add_modifier(Modifier::ITALIC)),
        notice,
    );
    frame.render_widget(
        Paragraph::new(format!("> {}", app.input)).block(Block::new().borders(Borders::ALL)),
        input,
    );
    frame.set_cursor_position((
        input.x + 3 + u16::try_from(app.input.chars().count()).unwrap_or(u16::MAX),
        input.y + 1,
    ));
    frame.render_widget(
        Paragraph::new(
            "Enter send  Up/Down conversation  PgUp/PgDn history  F2 status  F3 next  \
             /help  Esc quit",
        ),
        help,
    );
}

fn header_text(app: &App) -> String {
    let conn = match app.conn {
        SessionState::Ready | SessionState::Subscribing => "connected",
        SessionState::Failed => "stopped",
        _ => "reconnecting",
    };
    let status = app.status.map_or("-", status_name);
    format!(
        "kefu chat | {} | {conn} | status: {status} | unread: {}",
        app.login,
        app.total_unread()
    )
}

fn draw_list(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let items: Vec<ListItem<'_>> = app
        .convs
        .iter()
        .map(|c| {
            let dot = if c.online { "*" } else { " " };
            let unread = if c.unread > 0 {
                format!(" ({})", c.unread)
            } else {
                String::new()
            };
            ListItem::new(format!("{dot}{}{unread}", c.title))
        })
        .collect();
    let list = List::new(items)
        .block(Block::new().borders(Borders::ALL).title("Conversations"))
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(">");
    let mut state = ListState::default().with_selected(app.open);
    frame.render_stateful_widget(list, area, &mut state);
}

fn draw_pane(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let Some(c) = app.current() else {
        frame.render_widget(
            Paragraph::new(
                "No conversation yet. Agents: F3 takes the next customer; customers: /open",
            )
            .block(Block::new().borders(Borders::ALL)),
            area,
        );
        return;
    };
    let mut title = format!("{} ", c.title);
    if let Some((who, _)) = &c.typing {
        let who = if *who == c.topic { &c.title } else { who };
        title.push_str(&format!("- {who} is typing... "));
    }
    if c.loading {
        title.push_str("- loading history... ");
    } else if c.scroll > 0 {
        title.push_str(&format!("- {} newer below ", c.scroll));
    }
    let width = usize::from(area.width.saturating_sub(2)).max(10);
    let rows = usize::from(area.height.saturating_sub(2));
    let end = c.lines.len().saturating_sub(c.scroll);
    // Wrap from the newest shown message back until the pane is full.
    let mut shown: Vec<TextLine<'_>> = Vec::new();
    for l in c.lines[..end].iter().rev() {
        let rows_of = wrap(&line_text(app, l), width);
        for r in rows_of.into_iter().rev() {
            shown.push(TextLine::from(r));
        }
        if shown.len() >= rows {
            break;
        }
    }
    shown.truncate(rows);
    shown.reverse();
    frame.render_widget(
        Paragraph::new(shown).block(Block::new().borders(Borders::ALL).title(title)),
        area,
    );
}

/// One message as text: time, sender, text, and the mark of an own message.
fn line_text(app: &App, l: &Line) -> String {
    let secs = l.ts / 1000;
    let (h, m) = ((secs / 3600) % 24, (secs / 60) % 60);
    let who = if l.outgoing {
        "me".to_owned()
    } else {
        match app.current() {
            Some(c) if c.topic == l.from => c.title.clone(),
            _ => l.from.clone(),
        }
    };
    let mut s = format!("{h:02}:{m:02} {who}: {}", l.text);
    if l.outgoing {
        s.push(' ');
        s.push_str(&mark(l.state));
    }
    s
}

/// Splits `text` into rows of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::state::{Input, Outcome};
    use crate::client::{Conversation, MessageSnapshot, MessageState, MsgId, OrderKey, TopicEvent};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::Instant;

    fn screen(app: &mut App) -> String {
        let mut term = Terminal::new(TestBackend::new(100, 20)).unwrap();
        term.draw(|f| draw(f, app)).unwrap();
        let buf = term.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn msg(seq: u64, outgoing: bool, text: &str, state: MessageState) -> MessageSnapshot {
        MessageSnapshot {
            id: MsgId::from_bytes([seq as u8; 16]),
            topic: "usrBob".into(),
            position: OrderKey::stored(seq),
            state,
            outgoing,
            from: if outgoing { "usrAlice" } else { "usrBob" }.into(),
            ts: 3_600_000 * 9 + 60_000 * 5,
            mime: String::new(),
            reply_to: None,
            content: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_screen_shows_the_list_the_conversation_marks_typing_and_status() {
        let now = Instant::now();
        let mut app = App::new("alice", "usrAlice");
        app.handle(
            now,
            Input::Conversations(vec![Conversation {
                topic: "usrBob".into(),
                title: "Bob".into(),
                latest: 2,
                read: 0,
                unread: 2,
                online: true,
            }]),
        );
        for (seq, out, text, state) in [
            (1, false, "hi there", MessageState::Received),
            (2, true, "hello bob", MessageState::Read),
        ] {
            app.handle(
                now,
                Input::Topic(
                    "usrBob".into(),
                    TopicEvent::Added {
                        message: msg(seq, out, text, state),
                        history: false,
                    },
                ),
            );
        }
        app.handle(
            now,
            Input::Topic(
                "usrBob".into(),
                TopicEvent::Typing {
                    from: "usrBob".into(),
                },
            ),
        );
        app.handle(
            now,
            Input::Done(Outcome::Status(crate::client::AgentStatus::Busy)),
        );
        let s = screen(&mut app);
        assert!(
            s.contains("kefu chat | alice | connected | status: busy"),
            "{s}"
        );
        assert!(s.contains(">*Bob"), "selected, online: {s}");
        assert!(s.contains("09:05 Bob: hi there"), "{s}");
        assert!(s.contains("09:05 me: hello bob (read)"), "{s}");
        assert!(s.contains("Bob is typing..."), "{s}");
        assert!(app.rows > 5, "the view tells the state how many rows fit");
    }

    #[test]
    fn long_text_wraps_and_the_newest_rows_stay_at_the_bottom() {
        assert_eq!(wrap("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(wrap("", 3), Vec::<String>::new());
    }
}
