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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::gateway::wire::{Code, Head, Req};
    use kefu_core::digest::Digest;
    use kefu_core::id::MsgId;

    const NOW: u64 = 1_764_105_318_418;
    const TS: &str = "2025-11-25T21:15:18.418Z";
    const KID: &str = "019abcdef012734586789abcdef000ff";

    fn codec() -> JsonCodec {
        JsonCodec::with_seed(4096, 7)
    }

    /// Decodes `text` and returns the (first) request id it was given.
    fn req_id(c: &mut JsonCodec, text: &str) -> ReqId {
        c.decode(text, NOW).expect("decodes")[0]
            .id()
            .expect("has an id")
    }

    fn one(c: &mut JsonCodec, out: &Out) -> String {
        let mut texts = c.encode_at(out, NOW);
        assert_eq!(texts.len(), 1, "{texts:?}");
        texts.remove(0)
    }

    fn msg(mime: &str, content: &[u8], reply_to: Option<u64>) -> Arc<Message> {
        Arc::new(Message {
            seq: 3,
            msg_id: MsgId::parse_hex(KID).unwrap(),
            from: "usrAlice".into(),
            ts: NOW,
            head: Head {
                mime: mime.into(),
                reply_to,
            },
            content: content.to_vec(),
        })
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds_and_never_panic() {
        assert_eq!(rfc3339_ms(NOW), TS);
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_hi_answer_carries_tinodes_params_and_the_original_id() {
        let mut c = codec();
        let id = req_id(&mut c, r#"{"hi":{"id":"79945","ver":"0.25.3"}}"#);
        let out = Out::ctrl_with(
            id,
            Code::CREATED,
            "",
            Params::Hi {
                ver: 1,
                server_ms: 5,
                max_content: 4096,
                session: "s1".into(),
            },
        );
        let want = format!(
            r#"{{"ctrl":{{"id":"79945","params":{{"ver":"0.25","build":"kefu:{}","sid":"s1","maxMessageSize":4096,"kefuVer":1,"serverMs":5}},"code":201,"text":"created","ts":"{TS}"}}}}"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(one(&mut c, &out), want);
        assert_eq!(c.pending(), 0, "the mapping ends with the ctrl");
    }

    #[test]
    fn the_login_answer_has_user_authlvl_a_base64_token_and_its_expiry() {
        let mut c = codec();
        let id = req_id(
            &mut c,
            r#"{"login":{"id":"79947","scheme":"basic","secret":"YTpi"}}"#,
        );
        let out = Out::ctrl_with(
            id,
            Code::OK,
            "",
            Params::Login {
                user: "usrAlice".into(),
                token: b"tok".to_vec(),
                expires_ms: NOW,
            },
        );
        assert_eq!(
            one(&mut c, &out),
            format!(
                r#"{{"ctrl":{{"id":"79947","params":{{"user":"usrAlice","authlvl":"auth","token":"dG9r","expires":"{TS}"}},"code":200,"text":"ok","ts":"{TS}"}}}}"#
            )
        );
        // A token rendered here logs in again as the same bytes.
        let again = c
            .decode(
                r#"{"login":{"id":"2","scheme":"token","secret":"dG9r"}}"#,
                NOW,
            )
            .unwrap();
        assert!(matches!(&again[0], Req::Login { secret, .. } if secret == b"tok"));
        let none = Out::ctrl_with(
            0,
            Code::OK,
            "",
            Params::Login {
                user: "u".into(),
                token: vec![],
                expires_ms: 0,
            },
        );
        assert!(one(&mut c, &none).contains(r#""params":{"user":"u","authlvl":"auth"},"#));
    }

    #[test]
    fn the_pub_answer_has_the_seq_and_the_messages_own_ts() {
        let mut c = codec();
        let id = req_id(
            &mut c,
            r#"{"pub":{"id":"79951","topic":"usrBob","content":"hello from A"}}"#,
        );
        let out = Out::ctrl_with(
            id,
            Code::ACCEPTED,
            "usrBob",
            Params::Pub {
                seq: 1,
                ts: 1_764_105_318_000,
                dup: false,
            },
        );
        assert_eq!(
            one(&mut c, &out),
            r#"{"ctrl":{"id":"79951","topic":"usrBob","params":{"seq":1},"code":202,"text":"accepted","ts":"2025-11-25T21:15:18.000Z"}}"#
        );
        let dup = Out::ctrl_with(
            0,
            Code::ACCEPTED,
            "g",
            Params::Pub {
                seq: 1,
                ts: NOW,
                dup: true,
            },
        );
        assert!(one(&mut c, &dup).contains(r#""params":{"seq":1,"dup":true}"#));
    }

    #[test]
    fn other_ctrl_params_follow_their_variant() {
        let mut c = codec();
        let cases = [
            (
                Params::Sub {
                    latest: 9,
                    read: 4,
                    recv: 5,
                    acked: 6,
                },
                r#""params":{"acs":{"want":"JRWPS","given":"JRWPS","mode":"JRWPS"},"latest":9,"read":4,"recv":5,"acked":6}"#,
            ),
            (
                Params::Count {
                    count: 3,
                    what: "data",
                },
                r#""params":{"what":"data","count":3}"#,
            ),
            (
                Params::Digest(Digest {
                    count: 2,
                    first_seq: 1,
                    last_seq: 2,
                    crc: 0xC91B_B5E1_5F27_6D6A,
                }),
                r#""params":{"what":"digest","count":2,"first":1,"last":2,"crc":"c91bb5e15f276d6a"}"#,
            ),
            (
                Params::Topic {
                    name: "grpC".into(),
                    peer: "usrAg".into(),
                },
                r#""params":{"topic":"grpC","peer":"usrAg"}"#,
            ),
            (
                Params::RetryAfter { ms: 250 },
                r#""params":{"retryAfter":250}"#,
            ),
        ];
        for (params, want) in cases {
            let text = one(&mut c, &Out::ctrl_with(0, Code::OK, "", params));
            assert!(
                text.starts_with(&format!("{{\"ctrl\":{{{want},\"code\":200")),
                "{text}"
            );
        }
        assert_eq!(
            one(&mut c, &Out::ctrl(0, Code::UNAVAILABLE, "")),
            format!(r#"{{"ctrl":{{"code":503,"text":"service unavailable","ts":"{TS}"}}}}"#)
        );
    }

    #[test]
    fn a_text_message_is_data_with_our_id_in_head() {
        let mut c = codec();
        let out = Out::Data {
            topic: "usrAlice".into(),
            msg: msg("", b"hello from A", None),
        };
        assert_eq!(
            one(&mut c, &out),
            format!(
                r#"{{"data":{{"topic":"usrAlice","from":"usrAlice","ts":"{TS}","seq":3,"head":{{"kid":"{KID}"}},"content":"hello from A"}}}}"#
            )
        );
    }

    #[test]
    fn drafty_content_round_trips_as_json_and_falls_back_to_a_string() {
        let mut c = codec();
        let drafty = r#"{"txt":"bold text","fmt":[{"len":4,"tp":"ST"}]}"#;
        let pub_text = format!(
            r#"{{"pub":{{"id":"1","topic":"usrBob","head":{{"mime":"text/x-drafty","kid":"{KID}","reply":":2"}},"content":{drafty}}}}}"#
        );
        let Req::Pub { head, content, .. } = c.decode(&pub_text, NOW).unwrap().remove(0) else {
            panic!("pub")
        };
        let stored = Arc::new(Message {
            seq: 3,
            msg_id: MsgId::parse_hex(KID).unwrap(),
            from: "usrAlice".into(),
            ts: NOW,
            head,
            content,
        });
        assert_eq!(
            one(
                &mut c,
                &Out::Data {
                    topic: "usrAlice".into(),
                    msg: stored
                }
            ),
            format!(
                r#"{{"data":{{"topic":"usrAlice","from":"usrAlice","ts":"{TS}","seq":3,"head":{{"kid":"{KID}","mime":"text/x-drafty","reply":":2"}},"content":{drafty}}}}}"#
            )
        );
        let broken = one(
            &mut c,
            &Out::Data {
                topic: "g".into(),
                msg: msg(DRAFTY_MIME, b"{not json", None),
            },
        );
        assert!(broken.ends_with(r#""content":"{not json"}}"#), "{broken}");
    }

    #[test]
    fn a_tombstone_is_data_with_empty_content_and_the_deleted_mime() {
        let mut c = codec();
        let text = one(
            &mut c,
            &Out::Data {
                topic: "g".into(),
                msg: msg(crate::gateway::wire::TOMBSTONE_MIME, b"", None),
            },
        );
        assert!(
            text.ends_with(&format!(
                r#""seq":3,"head":{{"kid":"{KID}","mime":"kefu/deleted"}},"content":""}}}}"#
            )),
            "{text}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_travel_as_base64_and_come_back() {
        let mut c = codec();
        let text = one(
            &mut c,
            &Out::Data {
                topic: "g".into(),
                msg: msg("image/png", &[0, 1, 255], None),
            },
        );
        assert!(text.ends_with(r#""head":{"kid":"019abcdef012734586789abcdef000ff","mime":"image/png","kefu-enc":"base64"},"content":"AAH/"}}"#), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let back = serde_json::json!({"pub": {"id": "1", "topic": "g", "head": v["data"]["head"], "content": v["data"]["content"]}});
        let Req::Pub {
            content,
            head,
            msg_id,
            ..
        } = c.decode(&back.to_string(), NOW).unwrap().remove(0)
        else {
            panic!("pub")
        };
        assert_eq!(
            (content.as_slice(), head.mime.as_str()),
            (&[0u8, 1, 255][..], "image/png")
        );
        assert_eq!(
            msg_id,
            MsgId::parse_hex(KID).unwrap(),
            "our id in head round-trips"
        );
    }

    #[test]
    fn a_desc_is_one_meta_with_the_requests_id() {
        let mut c = codec();
        let id = req_id(
            &mut c,
            r#"{"get":{"id":"g1","topic":"usrBob","what":"desc"}}"#,
        );
        let desc = TopicDesc {
            title: "Bob".into(),
            seq: 9,
            read: 4,
            recv: 5,
            unread: 5,
        };
        let out = Out::Meta {
            id,
            topic: "usrBob".into(),
            item: MetaItem::Desc(desc),
        };
        assert_eq!(
            one(&mut c, &out),
            format!(
                r#"{{"meta":{{"id":"g1","topic":"usrBob","ts":"{TS}","desc":{{"public":{{"fn":"Bob"}},"acs":{{"want":"JRWPS","given":"JRWPS","mode":"JRWPS"}},"seq":9,"read":4,"recv":5,"unread":5}}}}}}"#
            )
        );
        assert_eq!(c.pending(), 1, "a meta does not end the request");
    }

    fn sub_info(name: &str, online: bool) -> SubInfo {
        SubInfo {
            name: name.into(),
            title: format!("T{name}"),
            seq: 7,
            read: 2,
            recv: 3,
            unread: 5,
            online,
        }
    }

    #[test]
    fn subs_are_buffered_and_sent_as_one_array_before_their_ctrl() {
        let mut c = codec();
        let id = req_id(
            &mut c,
            r#"{"sub":{"id":"s1","topic":"me","get":{"what":"sub"}}}"#,
        );
        let sub_ok = Out::ctrl_with(
            id,
            Code::OK,
            "me",
            Params::Sub {
                latest: 0,
                read: 0,
                recv: 0,
                acked: 0,
            },
        );
        assert_eq!(c.encode_at(&sub_ok, NOW).len(), 1);
        for name in ["usrBob", "grpX"] {
            let item = Out::Meta {
                id,
                topic: "me".into(),
                item: MetaItem::Sub(sub_info(name, name == "usrBob")),
            };
            assert_eq!(c.encode_at(&item, NOW), Vec::<String>::new());
        }
        let end = c.encode_at(
            &Out::ctrl_with(
                id,
                Code::OK,
                "me",
                Params::Count {
                    count: 2,
                    what: "sub",
                },
            ),
            NOW,
        );
        let acs = r#""acs":{"want":"JRWPS","given":"JRWPS","mode":"JRWPS"}"#;
        assert_eq!(
            end,
            vec![
                format!(
                    r#"{{"meta":{{"id":"s1","topic":"me","ts":"{TS}","sub":[{{"topic":"usrBob","public":{{"fn":"TusrBob"}},"seq":7,"read":2,"recv":3,"online":true,"updated":"{TS}",{acs}}},{{"topic":"grpX","public":{{"fn":"TgrpX"}},"seq":7,"read":2,"recv":3,"online":false,"updated":"{TS}",{acs}}}]}}}}"#
                ),
                format!(
                    r#"{{"ctrl":{{"id":"s1","topic":"me","params":{{"what":"sub","count":2}},"code":200,"text":"ok","ts":"{TS}"}}}}"#
                ),
            ]
        );
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn subs_of_other_topics_name_users_and_long_lists_come_in_chunks() {
        let mut c = codec();
        let id = req_id(&mut c, r#"{"get":{"id":"g","topic":"grpX","what":"sub"}}"#);
        let mut metas = Vec::new();
        for i in 0..SUB_CHUNK + 1 {
            let item = Out::Meta {
                id,
                topic: "grpX".into(),
                item: MetaItem::Sub(sub_info(&format!("usr{i}"), false)),
            };
            metas.extend(c.encode_at(&item, NOW));
        }
        assert_eq!(metas.len(), 1, "a full chunk goes out at once");
        assert!(metas[0].contains(r#""sub":[{"user":"usr0","#));
        let end = c.encode_at(
            &Out::ctrl_with(
                id,
                Code::OK,
                "grpX",
                Params::Count {
                    count: 257,
                    what: "sub",
                },
            ),
            NOW,
        );
        assert_eq!(end.len(), 2);
        let last: serde_json::Value = serde_json::from_str(&end[0]).unwrap();
        assert_eq!(last["meta"]["sub"].as_array().map(Vec::len), Some(1));
        assert_eq!(last["meta"]["id"], "g");
    }

    #[test]
    fn a_get_with_three_words_keeps_its_id_until_the_third_ctrl() {
        let mut c = codec();
        let reqs = c
            .decode(
                r#"{"get":{"id":"77","topic":"g","what":"desc sub data"}}"#,
                NOW,
            )
            .unwrap();
        assert_eq!(reqs.len(), 3);
        let id = reqs[0].id().unwrap();
        assert!(reqs.iter().all(|r| r.id() == Some(id)));
        for n in 0..3 {
            assert_eq!(c.pending(), 1, "ctrl {n}");
            let text = one(&mut c, &Out::ctrl(id, Code::OK, "g"));
            assert!(text.starts_with(r#"{"ctrl":{"id":"77","#), "{text}");
        }
        assert_eq!(c.pending(), 0);
        let stray = one(&mut c, &Out::ctrl(id, Code::OK, "g"));
        assert!(
            stray.starts_with(r#"{"ctrl":{"topic":"g","#),
            "an id no longer mapped is left out: {stray}"
        );
    }

    #[test]
    fn a_failed_sub_with_queries_ends_its_mapping_at_once() {
        let mut c = codec();
        let id = req_id(
            &mut c,
            r#"{"sub":{"id":"s","topic":"grpX","get":{"what":"desc data"}}}"#,
        );
        assert!(one(&mut c, &Out::ctrl(id, Code::FORBIDDEN, "grpX")).contains(r#""id":"s""#));
        assert_eq!(c.pending(), 0);
        let id = req_id(
            &mut c,
            r#"{"sub":{"id":"t","topic":"grpX","get":{"what":"desc"}}}"#,
        );
        one(&mut c, &Out::ctrl(id, Code::NOT_MODIFIED, "grpX"));
        assert_eq!(
            c.pending(),
            1,
            "already subscribed still answers its queries"
        );
    }

    #[test]
    fn packets_without_an_id_get_a_fresh_one_and_answers_without_id() {
        let mut c = codec();
        let id = req_id(&mut c, r#"{"leave":{"topic":"g"}}"#);
        assert_ne!(id, 0);
        assert_eq!(
            one(&mut c, &Out::ctrl(id, Code::OK, "g")),
            format!(r#"{{"ctrl":{{"topic":"g","code":200,"text":"ok","ts":"{TS}"}}}}"#)
        );
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn request_ids_are_never_0_and_skip_pending_ones_when_wrapping() {
        let mut c = codec();
        c.next_id = u32::MAX;
        let a = req_id(&mut c, r#"{"leave":{"id":"a","topic":"g"}}"#);
        let b = req_id(&mut c, r#"{"leave":{"id":"b","topic":"g"}}"#);
        assert_eq!((a, b), (u32::MAX, 1));
        c.next_id = u32::MAX;
        let d = req_id(&mut c, r#"{"leave":{"id":"d","topic":"g"}}"#);
        assert_eq!(d, 2, "skips 0 and the pending MAX and 1");
    }

    #[test]
    fn pres_and_info_use_tinodes_shapes_and_kefus_words() {
        let mut c = codec();
        let pres = |what| Out::Pres {
            topic: "me".into(),
            src: "usrBob".into(),
            what,
        };
        assert_eq!(
            one(&mut c, &pres(PresWhat::On)),
            r#"{"pres":{"topic":"me","src":"usrBob","what":"on"}}"#
        );
        assert_eq!(
            one(&mut c, &pres(PresWhat::Msg { seq: 4 })),
            r#"{"pres":{"topic":"me","src":"usrBob","what":"msg","seq":4}}"#
        );
        assert_eq!(
            one(&mut c, &pres(PresWhat::Status(AgentStatus::Away))),
            r#"{"pres":{"topic":"me","src":"usrBob","what":"kefu-status","status":"away"}}"#
        );
        for (what, word) in [
            (PresWhat::Off, "off"),
            (PresWhat::Upd, "upd"),
            (PresWhat::Gone, "gone"),
            (PresWhat::Assigned, "kefu-assigned"),
        ] {
            assert!(one(&mut c, &pres(what)).contains(&format!(r#""what":"{word}""#)));
        }
        let info = |what, seq| Out::Info {
            topic: "usrBob".into(),
            from: "usrBob".into(),
            what,
            seq,
        };
        assert_eq!(
            one(&mut c, &info(NoteWhat::Read, 3)),
            r#"{"info":{"topic":"usrBob","from":"usrBob","what":"read","seq":3}}"#
        );
        assert_eq!(
            one(&mut c, &info(NoteWhat::Recv, 3)),
            r#"{"info":{"topic":"usrBob","from":"usrBob","what":"recv","seq":3}}"#
        );
        assert_eq!(
            one(&mut c, &info(NoteWhat::Kp, 0)),
            r#"{"info":{"topic":"usrBob","from":"usrBob","what":"kp"}}"#
        );
    }

    #[test]
    fn error_replies_render_the_original_id_and_end_its_mapping() {
        let mut c = codec();
        let err = c
            .decode(r#"{"pub":{"id":"e1","topic":"a b"}}"#, NOW)
            .unwrap_err();
        let text = one(&mut c, &err.reply());
        assert!(
            text.starts_with(
                r#"{"ctrl":{"id":"e1","code":400,"text":"malformed pub: invalid topic \"a b\"","#
            ),
            "{text}"
        );
        assert_eq!(c.pending(), 0);
        let err = c
            .decode(r#"{"get":{"id":"e2","topic":"me","what":"tags"}}"#, NOW)
            .unwrap_err();
        assert!(
            one(&mut c, &err.reply())
                .starts_with(r#"{"ctrl":{"id":"e2","topic":"me","code":204,"text":"no content","#)
        );
    }
}
