//! Encoding: the session's [`Out`] packets → Tinode JSON text messages, with Tinode's field
//! names and order (`ctrl`: id, topic, params, code, text, ts; `data`: topic, from, ts, seq,
//! head, content; ...). Timestamps are RFC 3339 with milliseconds, as the SDK parses them.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{B64, DRAFTY_MIME, JsonCodec, SUB_CHUNK, TINODE_VERSION};
use crate::gateway::wire::{
    AgentStatus, Message, MetaItem, NoteWhat, Out, Params, PresWhat, ReqId, SubInfo, TopicDesc,
};

/// Most sub items buffered over all requests; past it a request's list is sent early.
const MAX_BUFFERED: usize = 4 * SUB_CHUNK;

/// The last millisecond RFC 3339 (four-digit years) can say: 9999-12-31T23:59:59.999Z.
const MAX_TS_MS: u64 = 253_402_300_799_999;

/// The access mode kefu reports: join, read, write, presence, share.
const MODE: &str = "JRWPS";

/// `ms` since the Unix epoch as RFC 3339 with milliseconds, e.g. `2025-01-02T03:04:05.006Z`
/// (clamped to year 9999).
pub fn rfc3339_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(MAX_TS_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The wall clock, ms since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn render(v: &impl Serialize) -> String {
    serde_json::to_string(v).expect("plain structs with string keys always serialize to JSON")
}

#[derive(Serialize)]
struct Acs {
    want: &'static str,
    given: &'static str,
    mode: &'static str,
}

const ACS: Acs = Acs {
    want: MODE,
    given: MODE,
    mode: MODE,
};

#[derive(Serialize)]
struct Public<'a> {
    #[serde(rename = "fn")]
    name: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum CtrlParams<'a> {
    Hi {
        ver: &'static str,
        build: &'static str,
        sid: &'a str,
        #[serde(rename = "maxMessageSize")]
        max_message_size: u32,
        #[serde(rename = "kefuVer")]
        kefu_ver: u16,
        #[serde(rename = "serverMs")]
        server_ms: u64,
    },
    Login {
        user: &'a str,
        authlvl: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<String>,
    },
    Pub {
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        dup: Option<bool>,
    },
    Sub {
        acs: Acs,
        latest: u64,
        read: u64,
        recv: u64,
        acked: u64,
    },
    Count {
        what: &'static str,
        count: u32,
    },
    Digest {
        what: &'static str,
        count: u32,
        first: u64,
        last: u64,
        crc: String,
    },
    Topic {
        topic: &'a str,
        peer: &'a str,
    },
    RetryAfter {
        #[serde(rename = "retryAfter")]
        retry_after: u32,
    },
}

fn ctrl_params(p: &Params) -> Option<CtrlParams<'_>> {
    Some(match p {
        Params::None => return None,
        Params::Hi {
            ver,
            server_ms,
            max_content,
            session,
        } => CtrlParams::Hi {
            ver: TINODE_VERSION,
            build: concat!("kefu:", env!("CARGO_PKG_VERSION")),
            sid: session,
            max_message_size: *max_content,
            kefu_ver: *ver,
            server_ms: *server_ms,
        },
        Params::Login {
            user,
            token,
            expires_ms,
        } => CtrlParams::Login {
            user,
            authlvl: "auth",
            token: (!token.is_empty()).then(|| B64.encode(token)),
            expires: (*expires_ms != 0).then(|| rfc3339_ms(*expires_ms)),
        },
        Params::Pub { seq, dup, .. } => CtrlParams::Pub {
            seq: *seq,
            dup: dup.then_some(true),
        },
        Params::Sub {
            latest,
            read,
            recv,
            acked,
        } => CtrlParams::Sub {
            acs: ACS,
            latest: *latest,
            read: *read,
            recv: *recv,
            acked: *acked,
        },
        Params::Count { count, what } => CtrlParams::Count {
            what,
            count: *count,
        },
        Params::Digest(d) => CtrlParams::Digest {
            what: "digest",
            count: d.count,
            first: d.first_seq,
            last: d.last_seq,
            crc: format!("{:016x}", d.crc),
        },
        Params::Topic { name, peer } => CtrlParams::Topic { topic: name, peer },
        Params::RetryAfter { ms } => CtrlParams::RetryAfter { retry_after: *ms },
    })
}

#[derive(Serialize)]
struct Ctrl<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<CtrlParams<'a>>,
    code: u16,
    text: &'a str,
    ts: String,
}

#[derive(Serialize)]
struct DescOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    public: Option<Public<'a>>,
    acs: Acs,
    seq: u64,
    read: u64,
    recv: u64,
    unread: u64,
}

#[derive(Serialize)]
struct SubOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public: Option<Public<'a>>,
    seq: u64,
    read: u64,
    recv: u64,
    online: bool,
    updated: &'a str,
    acs: Acs,
}

#[derive(Serialize)]
struct Meta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    topic: &'a str,
    ts: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    desc: Option<DescOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<Vec<SubOut<'a>>>,
}

#[derive(Serialize)]
struct HeadOut<'a> {
    /// [`super::ID_KEY`].
    kid: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    mime: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
    /// [`super::ENC_KEY`].
    #[serde(rename = "kefu-enc", skip_serializing_if = "Option::is_none")]
    enc: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Raw(&'a RawValue),
}

#[derive(Serialize)]
struct Data<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    from: &'a str,
    ts: String,
    seq: u64,
    head: HeadOut<'a>,
    content: Content<'a>,
}

#[derive(Serialize)]
struct Pres<'a> {
    topic: &'a str,
    src: &'a str,
    what: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}

#[derive(Serialize)]
struct Info<'a> {
    topic: &'a str,
    from: &'a str,
    what: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

/// The one packet of a text message, named by its key.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Packet<'a> {
    Ctrl(Ctrl<'a>),
    Meta(Meta<'a>),
    Data(Data<'a>),
    Pres(Pres<'a>),
    Info(Info<'a>),
}

fn public(title: &str) -> Option<Public<'_>> {
    (!title.is_empty()).then_some(Public { name: title })
}

fn desc_out(d: &TopicDesc) -> DescOut<'_> {
    DescOut {
        public: public(&d.title),
        acs: ACS,
        seq: d.seq,
        read: d.read,
        recv: d.recv,
        unread: d.unread,
    }
}

/// A sub item: on `me` it names a topic, elsewhere a user.
fn sub_out<'a>(on_me: bool, s: &'a SubInfo, updated: &'a str) -> SubOut<'a> {
    SubOut {
        topic: on_me.then_some(s.name.as_str()),
        user: (!on_me).then_some(s.name.as_str()),
        public: public(&s.title),
        seq: s.seq,
        read: s.read,
        recv: s.recv,
        online: s.online,
        updated,
        acs: ACS,
    }
}

/// Content as Tinode carries it: Drafty as JSON, text as a string, other bytes as base64.
fn content(msg: &Message) -> (Content<'_>, Option<&'static str>) {
    let text = std::str::from_utf8(&msg.content);
    if msg.head.mime == DRAFTY_MIME
        && let Ok(raw) = text.map(serde_json::from_str::<&RawValue>)
        && let Ok(raw) = raw
    {
        return (Content::Raw(raw), None);
    }
    match text {
        Ok(text) => (Content::Text(Cow::Borrowed(text)), None),
        Err(_) => (
            Content::Text(Cow::Owned(B64.encode(&msg.content))),
            Some("base64"),
        ),
    }
}

fn data_out<'a>(topic: &'a str, msg: &'a Message) -> Data<'a> {
    let (content, enc) = content(msg);
    Data {
        topic,
        from: &msg.from,
        ts: rfc3339_ms(msg.ts),
        seq: msg.seq,
        head: HeadOut {
            kid: String::from_utf8_lossy(&msg.msg_id.to_hex()).into_owned(),
            mime: &msg.head.mime,
            reply: msg.head.reply_to.map(|s| format!(":{s}")),
            enc,
        },
        content,
    }
}

fn pres_what(what: &PresWhat) -> (&'static str, Option<u64>, Option<&'static str>) {
    match what {
        PresWhat::On => ("on", None, None),
        PresWhat::Off => ("off", None, None),
        PresWhat::Msg { seq } => ("msg", Some(*seq), None),
        PresWhat::Upd => ("upd", None, None),
        PresWhat::Gone => ("gone", None, None),
        PresWhat::Status(s) => (
            "kefu-status",
            None,
            Some(match s {
                AgentStatus::Online => "online",
                AgentStatus::Busy => "busy",
                AgentStatus::Away => "away",
                AgentStatus::Offline => "offline",
            }),
        ),
        PresWhat::Assigned => ("kefu-assigned", None, None),
    }
}

fn note_what(what: NoteWhat) -> &'static str {
    match what {
        NoteWhat::Recv => "recv",
        NoteWhat::Read => "read",
        NoteWhat::Kp => "kp",
    }
}

impl JsonCodec {
    /// Renders one packet as JSON text messages, in the order to send them; empty if there is
    /// nothing to send yet. Usually one; a `ctrl` ending a subscription list is preceded by the
    /// `meta` carrying the list (sub items are held until then, see the module doc). Stamps
    /// `ctrl` and `meta` with the wall clock; [`JsonCodec::encode_at`] takes the time instead.
    pub fn encode(&mut self, out: &Out) -> Vec<String> {
        self.encode_at(out, now_ms())
    }

    /// [`JsonCodec::encode`] at wall-clock time `now_ms` (ms since the Unix epoch).
    pub fn encode_at(&mut self, out: &Out, now_ms: u64) -> Vec<String> {
        match out {
            Out::Ctrl {
                id,
                code,
                text,
                topic,
                params,
            } => {
                let mut texts = self.flush_subs(*id, now_ms);
                let orig = self.finish(*id, *code);
                let ts = match params {
                    Params::Pub { ts, .. } => *ts,
                    _ => now_ms,
                };
                texts.push(render(&Packet::Ctrl(Ctrl {
                    id: orig.as_deref(),
                    topic,
                    params: ctrl_params(params),
                    code: code.0,
                    text,
                    ts: rfc3339_ms(ts),
                })));
                texts
            }
            Out::Meta {
                id,
                topic,
                item: MetaItem::Desc(d),
            } => {
                let ts = rfc3339_ms(now_ms);
                vec![render(&Packet::Meta(Meta {
                    id: self.orig(*id),
                    topic,
                    ts: &ts,
                    desc: Some(desc_out(d)),
                    sub: None,
                }))]
            }
            Out::Meta {
                id,
                topic,
                item: MetaItem::Sub(s),
            } => {
                if !self.pending.contains_key(id) {
                    let ts = rfc3339_ms(now_ms);
                    let on_me = topic == "me";
                    return vec![render(&Packet::Meta(Meta {
                        id: None,
                        topic,
                        ts: &ts,
                        desc: None,
                        sub: Some(vec![sub_out(on_me, s, &ts)]),
                    }))];
                }
                let (_, items) = self
                    .subs
                    .entry(*id)
                    .or_insert_with(|| (topic.clone(), Vec::new()));
                items.push(s.clone());
                let full = items.len() >= SUB_CHUNK;
                self.buffered += 1;
                if full || self.buffered > MAX_BUFFERED {
                    self.flush_subs(*id, now_ms)
                } else {
                    Vec::new()
                }
            }
            Out::Data { topic, msg } => vec![render(&Packet::Data(data_out(topic, msg)))],
            Out::Pres { topic, src, what } => {
                let (what, seq, status) = pres_what(what);
                vec![render(&Packet::Pres(Pres {
                    topic,
                    src,
                    what,
                    seq,
                    status,
                }))]
            }
            Out::Info {
                topic,
                from,
                what,
                seq,
            } => vec![render(&Packet::Info(Info {
                topic,
                from,
                what: note_what(*what),
                seq: (*seq != 0).then_some(*seq),
            }))],
        }
    }

    /// The buffered sub items of request `id` as one `meta`, if any.
    fn flush_subs(&mut self, id: ReqId, now_ms: u64) -> Vec<String> {
        let Some((topic, items)) = self.subs.remove(&id) else {
            return Vec::new();
        };
        self.buffered = self.buffered.saturating_sub(items.len());
        if items.is_empty() {
            return Vec::new();
        }
        let ts = rfc3339_ms(now_ms);
        let on_me = topic == "me";
        let subs = items.iter().map(|s| sub_out(on_me, s, &ts)).collect();
        vec![render(&Packet::Meta(Meta {
            id: self.orig(id),
            topic: &topic,
            ts: &ts,
            desc: None,
            sub: Some(subs),
        }))]
    }
}
