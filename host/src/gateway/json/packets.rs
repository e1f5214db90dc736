//! The per-packet mappings of the JSON dialect: one function per Tinode packet, from its JSON
//! object to the [`Req`]s it stands for (request ids still 0; [`super::decode`] assigns them).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use kefu_core::id::MsgId;
use kefu_core::proto::{PROTOCOL_VERSION, check_topic};
use kefu_core::rng::Rng;

use super::{B64, DEFAULT_LIMIT, DRAFTY_MIME, ENC_KEY, ID_KEY};
use crate::gateway::wire::{
    ActionWhat, AgentStatus, AuthScheme, DelWhat, GetWhat, Head, NoteWhat, Req, SetWhat,
};

/// Most `delseq` ranges in one `del`.
const MAX_RANGES: usize = 64;

/// Why a packet's fields were refused, before its request id is registered.
pub(super) enum Bad {
    /// Missing, mistyped or invalid field (400).
    Field(String),
    /// Valid Tinode, not implemented by kefu (501).
    Unsupported(String),
    /// A `get` of nothing kefu keeps (204), on this topic.
    NoContent(String),
    /// Nothing to do and nothing to answer (a device-token `hi` after the handshake).
    Ignore,
}

pub(super) type Res<T> = Result<T, Bad>;

pub(super) fn bad(detail: impl Into<String>) -> Bad {
    Bad::Field(detail.into())
}

/// At most 32 characters of `s`, for error texts.
pub(super) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(32).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

pub(super) fn parse<'a, T: Deserialize<'a>>(json: &'a str) -> Res<T> {
    serde_json::from_str(json).map_err(|e| bad(e.to_string()))
}

/// A topic name that passes `check_topic`.
fn topic(name: Option<String>) -> Res<String> {
    let name = name.ok_or_else(|| bad("missing topic"))?;
    check_topic(&name).map_err(|_| bad(format!("invalid topic {:?}", clip(&name))))?;
    Ok(name)
}

/// A user id: like a topic name.
fn user(name: Option<String>, field: &str) -> Res<String> {
    let name = name.ok_or_else(|| bad(format!("missing {field}")))?;
    check_topic(&name).map_err(|_| bad(format!("invalid {field} {:?}", clip(&name))))?;
    Ok(name)
}

fn b64(field: &str, text: &str) -> Res<Vec<u8>> {
    B64.decode(text)
        .map_err(|e| bad(format!("{field} is not base64: {e}")))
}

/// Tinode's version strings: `MAJOR.MINOR[.PATCH][-suffix]`. Major 0 (every Tinode release)
/// is this protocol; any other version gets 0, which the session refuses with 505.
fn tinode_ver(s: &str) -> Option<u16> {
    let (core, suffix) = match s.find(['-', '+']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if let Some(suffix) = suffix {
        let ok = !suffix.is_empty()
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            return None;
        }
    }
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit());
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(numeric) {
        return None;
    }
    Some(if parts[0].bytes().all(|b| b == b'0') {
        PROTOCOL_VERSION
    } else {
        0
    })
}

#[derive(Deserialize)]
struct HiPkt {
    ver: Option<String>,
    ua: Option<String>,
    dev: Option<String>,
    lang: Option<String>,
    platf: Option<String>,
}

pub(super) fn hi(json: &str) -> Res<Vec<Req>> {
    let p: HiPkt = parse(json)?;
    let Some(ver) = p.ver else {
        // The SDK's setDeviceToken sends `{"hi":{"dev":...}}` (no id, no ver) after login.
        return Err(if p.dev.is_some() {
            Bad::Ignore
        } else {
            bad("missing ver")
        });
    };
    let ver = tinode_ver(&ver).ok_or_else(|| bad(format!("invalid ver {:?}", clip(&ver))))?;
    Ok(vec![Req::Hi {
        id: 0,
        ver,
        device: p.dev.unwrap_or_default(),
        platform: p.platf.unwrap_or_default(),
        lang: p.lang.unwrap_or_default(),
        ua: p.ua.unwrap_or_default(),
    }])
}

#[derive(Deserialize)]
struct DescIn {
    public: Option<Value>,
}

/// `desc.public.fn`, if there is one.
fn public_fn(desc: Option<&DescIn>) -> Res<Option<String>> {
    match desc
        .and_then(|d| d.public.as_ref())
        .and_then(|p| p.get("fn"))
    {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad("desc.public.fn must be a string")),
    }
}

#[derive(Deserialize)]
struct AccPkt {
    user: Option<String>,
    scheme: Option<String>,
    secret: Option<String>,
    login: Option<bool>,
    desc: Option<DescIn>,
}

pub(super) fn acc(json: &str) -> Res<Vec<Req>> {
    let p: AccPkt = parse(json)?;
    match p.user.as_deref() {
        None | Some("new") => {}
        Some(_) => return Err(Bad::Unsupported("account update".to_owned())),
    }
    match p.scheme.as_deref() {
        Some("basic") => {}
        Some(other) => return Err(Bad::Unsupported(format!("scheme {:?}", clip(other)))),
        None => return Err(bad("missing scheme")),
    }
    let secret = b64(
        "secret",
        p.secret.as_deref().ok_or_else(|| bad("missing secret"))?,
    )?;
    let colon = secret
        .iter()
        .position(|b| *b == b':')
        .ok_or_else(|| bad("basic secret must be login:password"))?;
    let name = match public_fn(p.desc.as_ref())? {
        Some(name) => name,
        None => String::from_utf8_lossy(&secret[..colon]).into_owned(),
    };
    Ok(vec![Req::Acc {
        id: 0,
        scheme: AuthScheme::Basic,
        secret,
        name,
        login: p.login.unwrap_or(false),
    }])
}

#[derive(Deserialize)]
struct LoginPkt {
    scheme: Option<String>,
    secret: Option<String>,
}

pub(super) fn login(json: &str) -> Res<Vec<Req>> {
    let p: LoginPkt = parse(json)?;
    let scheme = match p.scheme.as_deref() {
        Some("basic") => AuthScheme::Basic,
        Some("token") => AuthScheme::Token,
        Some(other) => return Err(Bad::Unsupported(format!("scheme {:?}", clip(other)))),
        None => return Err(bad("missing scheme")),
    };
    let secret = b64(
        "secret",
        p.secret.as_deref().ok_or_else(|| bad("missing secret"))?,
    )?;
    Ok(vec![Req::Login {
        id: 0,
        scheme,
        secret,
    }])
}

#[derive(Deserialize)]
struct SeqRange {
    low: u64,
    hi: Option<u64>,
}

impl SeqRange {
    /// The inclusive range `low..=last`; Tinode's `hi` is exclusive, absent or 0 for one seq.
    fn inclusive(&self) -> Res<(u64, u64)> {
        match self.hi {
            _ if self.low == 0 => Err(bad("range low must be at least 1")),
            None | Some(0) => Ok((self.low, self.low)),
            Some(hi) if hi > self.low => Ok((self.low, hi - 1)),
            Some(_) => Err(bad("range hi must be above low")),
        }
    }
}

#[derive(Deserialize)]
struct DataQuery {
    since: Option<u64>,
    before: Option<u64>,
    limit: Option<u64>,
    ranges: Option<Vec<SeqRange>>,
}

#[derive(Deserialize)]
struct GetQuery {
    what: Option<String>,
    data: Option<DataQuery>,
}

/// The queries kefu answers, in the order Tinode answers them (desc, sub, data); other words
/// (`tags`, `cred`, `del`, `aux`, ...) are ignored.
fn queries(q: &GetQuery) -> Res<Vec<GetWhat>> {
    let what = q.what.as_deref().unwrap_or("");
    let has = |word: &str| what.split_whitespace().any(|w| w == word);
    let mut out = Vec::new();
    if has("desc") {
        out.push(GetWhat::Desc);
    }
    if has("sub") {
        out.push(GetWhat::Subs);
    }
    if has("data") {
        out.push(data_query(q.data.as_ref())?);
    }
    Ok(out)
}

fn data_query(d: Option<&DataQuery>) -> Res<GetWhat> {
    let Some(d) = d else {
        return Ok(GetWhat::Data {
            since: 1,
            before: 0,
            limit: DEFAULT_LIMIT,
        });
    };
    let (mut since, mut before) = (d.since.unwrap_or(1), d.before.unwrap_or(0));
    if let Some(ranges) = d.ranges.as_deref().filter(|r| !r.is_empty()) {
        // One request covering every range: the session sends what exists in the hull.
        since = u64::MAX;
        before = 0;
        for r in ranges {
            let (low, last) = r.inclusive()?;
            since = since.min(low);
            before = before.max(last.saturating_add(1));
        }
    }
    let limit = match d.limit {
        None | Some(0) => DEFAULT_LIMIT,
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    Ok(GetWhat::Data {
        since,
        before,
        limit,
    })
}

#[derive(Deserialize)]
struct SubPkt {
    topic: Option<String>,
    get: Option<GetQuery>,
}

pub(super) fn sub(json: &str) -> Res<Vec<Req>> {
    let p: SubPkt = parse(json)?;
    let topic = match p.topic {
        // `new...` / `nch...` ask for a new group topic (channel); the session names it.
        Some(t) if t.starts_with("new") || t.starts_with("nch") => "new".to_owned(),
        t => topic(t)?,
    };
    let get = match &p.get {
        Some(q) => queries(q)?,
        None => Vec::new(),
    };
    Ok(vec![Req::Sub {
        id: 0,
        topic,
        since: None,
        get,
    }])
}

#[derive(Deserialize)]
struct LeavePkt {
    topic: Option<String>,
    unsub: Option<bool>,
}

pub(super) fn leave(json: &str) -> Res<Vec<Req>> {
    let p: LeavePkt = parse(json)?;
    Ok(vec![Req::Leave {
        id: 0,
        topic: topic(p.topic)?,
        unsub: p.unsub.unwrap_or(false),
    }])
}

#[derive(Deserialize)]
struct PubPkt<'a> {
    topic: Option<String>,
    noecho: Option<bool>,
    head: Option<serde_json::Map<String, Value>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// `head.reply` as a seq: `":12"`, `"12"` or `12`; anything else (e.g. another topic's
/// message) is no reply kefu can follow.
fn reply_seq(v: &Value) -> Option<u64> {
    let seq = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.strip_prefix(':').unwrap_or(s).parse().ok(),
        _ => None,
    };
    seq.filter(|s| *s > 0)
}

pub(super) fn publish(json: &str, now_ms: u64, rng: &mut impl Rng) -> Res<Vec<Req>> {
    let p: PubPkt = parse(json)?;
    let topic = topic(p.topic)?;
    let head = p.head.unwrap_or_default();
    let head_str = |key: &str| -> Res<Option<&str>> {
        match head.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(format!("head.{key} must be a string"))),
        }
    };
    let msg_id = match head_str(ID_KEY)? {
        Some(hex) => MsgId::parse_hex(hex).map_err(|e| bad(format!("head.{ID_KEY}: {e}")))?,
        None => MsgId::generate(now_ms, rng),
    };
    let base64 = match head_str(ENC_KEY)? {
        None => false,
        Some("base64") => true,
        Some(other) => return Err(bad(format!("head.{ENC_KEY} {:?}", clip(other)))),
    };
    let raw = p.content.map_or("null", |c| c.get());
    let (content, default_mime) = match raw.as_bytes().first() {
        Some(b'"') => {
            let text: String = parse(raw)?;
            if base64 {
                (b64("content", &text)?, "")
            } else {
                (text.into_bytes(), "")
            }
        }
        Some(b'{' | b'[') => (raw.as_bytes().to_vec(), DRAFTY_MIME),
        Some(b'n') => (Vec::new(), ""),
        _ => return Err(bad("content must be a string, a Drafty object or null")),
    };
    let mime = head_str("mime")?.unwrap_or(default_mime).to_owned();
    let reply_to = head.get("reply").and_then(reply_seq);
    Ok(vec![Req::Pub {
        id: 0,
        topic,
        msg_id,
        head: Head { mime, reply_to },
        content,
        noecho: p.noecho.unwrap_or(false),
    }])
}

#[derive(Deserialize)]
struct GetPkt {
    topic: Option<String>,
    what: Option<String>,
    data: Option<DataQuery>,
}

pub(super) fn get(json: &str) -> Res<Vec<Req>> {
    let p: GetPkt = parse(json)?;
    let topic = topic(p.topic)?;
    let words = queries(&GetQuery {
        what: p.what,
        data: p.data,
    })?;
    if words.is_empty() {
        return Err(Bad::NoContent(topic));
    }
    Ok(words
        .into_iter()
        .map(|what| Req::Get {
            id: 0,
            topic: topic.clone(),
            what,
        })
        .collect())
}

#[derive(Deserialize)]
struct SetSub {
    user: Option<String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
struct SetPkt {
    topic: Option<String>,
    desc: Option<DescIn>,
    sub: Option<SetSub>,
}

pub(super) fn set(json: &str) -> Res<Vec<Req>> {
    let p: SetPkt = parse(json)?;
    let topic = topic(p.topic)?;
    let mut out = Vec::new();
    if let Some(title) = public_fn(p.desc.as_ref())? {
        out.push(SetWhat::Title(title));
    }
    if let Some(SetSub {
        user: who,
        mode: Some(mode),
    }) = p.sub
    {
        let ok = !mode.is_empty()
            && mode.len() <= 16
            && mode
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'+' || b == b'-');
        if !ok {
            return Err(bad(format!("invalid sub.mode {:?}", clip(&mode))));
        }
        // An empty user is the caller, as in Tinode.
        let user = match who.filter(|u| !u.is_empty()) {
            Some(u) => user(Some(u), "sub.user")?,
            None => String::new(),
        };
        out.push(SetWhat::Mode { user, mode });
    }
    if out.is_empty() {
        return Err(Bad::Unsupported(
            "set without desc.public.fn or sub.mode".to_owned(),
        ));
    }
    Ok(out
        .into_iter()
        .map(|what| Req::Set {
            id: 0,
            topic: topic.clone(),
            what,
        })
        .collect())
}

#[derive(Deserialize)]
struct DelPkt {
    topic: Option<String>,
    what: Option<String>,
    delseq: Option<Vec<SeqRange>>,
    user: Option<String>,
    hard: Option<bool>,
}

pub(super) fn del(json: &str) -> Res<Vec<Req>> {
    let p: DelPkt = parse(json)?;
    let hard = p.hard.unwrap_or(false);
    let whats = match p.what.as_deref().unwrap_or("msg") {
        "msg" => {
            let ranges = p.delseq.as_deref().unwrap_or_default();
            if ranges.is_empty() || ranges.len() > MAX_RANGES {
                return Err(bad(format!("delseq must hold 1 to {MAX_RANGES} ranges")));
            }
            ranges
                .iter()
                .map(|r| {
                    let (first, last) = r.inclusive()?;
                    Ok(DelWhat::Msg { first, last, hard })
                })
                .collect::<Res<Vec<_>>>()?
        }
        "topic" => vec![DelWhat::Topic { hard }],
        "sub" => vec![DelWhat::Sub {
            user: user(p.user, "user")?,
        }],
        other @ ("user" | "cred") => return Err(Bad::Unsupported(format!("del {other}"))),
        other => return Err(bad(format!("unknown what {:?}", clip(other)))),
    };
    let topic = topic(p.topic)?;
    Ok(whats
        .into_iter()
        .map(|what| Req::Del {
            id: 0,
            topic: topic.clone(),
            what,
        })
        .collect())
}

#[derive(Deserialize)]
struct NotePkt {
    topic: Option<String>,
    what: Option<String>,
    seq: Option<u64>,
}

pub(super) fn note(json: &str) -> Res<Vec<Req>> {
    let p: NotePkt = parse(json)?;
    let what = match p.what.as_deref() {
        Some("recv") => NoteWhat::Recv,
        Some("read") => NoteWhat::Read,
        // Typing, and recording audio / video: all "busy composing".
        Some("kp" | "kpa" | "kpv") => NoteWhat::Kp,
        Some("call") => return Err(Bad::Unsupported("note call".to_owned())),
        Some(other) => return Err(bad(format!("unknown what {:?}", clip(other)))),
        None => return Err(bad("missing what")),
    };
    let seq = match what {
        NoteWhat::Kp => 0,
        _ => p
            .seq
            .filter(|s| *s > 0)
            .ok_or_else(|| bad("recv and read need a seq of at least 1"))?,
    };
    Ok(vec![Req::Note {
        topic: topic(p.topic)?,
        what,
        seq,
    }])
}

#[derive(Deserialize)]
struct ActionPkt {
    what: Option<String>,
    desk: Option<String>,
    status: Option<String>,
    topic: Option<String>,
    to: Option<String>,
}

pub(super) fn action(json: &str) -> Res<Vec<Req>> {
    let p: ActionPkt = parse(json)?;
    let what = match p.what.as_deref() {
        Some("open") => ActionWhat::Open {
            desk: match p.desk.filter(|d| !d.is_empty()) {
                Some(desk) => user(Some(desk), "desk")?,
                None => String::new(),
            },
        },
        Some("status") => ActionWhat::Status(match p.status.as_deref() {
            Some("online") => AgentStatus::Online,
            Some("busy") => AgentStatus::Busy,
            Some("away") => AgentStatus::Away,
            Some("offline") => AgentStatus::Offline,
            _ => return Err(bad("status must be online, busy, away or offline")),
        }),
        Some("take") => ActionWhat::TakeNext,
        Some("transfer") => ActionWhat::Transfer {
            topic: topic(p.topic)?,
            to: user(p.to, "to")?,
        },
        Some("close") => ActionWhat::Close {
            topic: topic(p.topic)?,
        },
        Some("join") => ActionWhat::Join {
            topic: topic(p.topic)?,
        },
        Some(other) => return Err(bad(format!("unknown what {:?}", clip(other)))),
        None => return Err(bad("missing what")),
    };
    Ok(vec![Req::Action { id: 0, what }])
}

#[derive(Deserialize)]
struct AckPkt {
    topic: Option<String>,
    seq: Option<u64>,
}

pub(super) fn ack(json: &str) -> Res<Vec<Req>> {
    let p: AckPkt = parse(json)?;
    Ok(vec![Req::Ack {
        topic: topic(p.topic)?,
        seq: p.seq.ok_or_else(|| bad("missing seq"))?,
    }])
}
