//! Decoding: one Tinode JSON text message → the [`Req`]s it carries, or a [`JsonError`].
//!
//! Fields the SDK sends that kefu has no use for (`tags`, `cred`, `set` inside `sub`, `ims`,
//! `extra`, ...) are accepted and ignored; fields kefu uses are type-checked.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use super::packets::{self, Bad, Res, bad, clip};
use super::{JsonCodec, JsonError, MAX_ID_LEN};
use crate::gateway::wire::Req;

/// The packets a client may send, by their JSON key.
const PACKETS: [&str; 12] = [
    "hi", "acc", "login", "sub", "leave", "pub", "get", "set", "del", "note", "action", "ack",
];

/// An oversized text is still scanned for its request id up to this many times the limit.
const PEEK_FACTOR: usize = 16;

impl JsonCodec {
    /// Parses one WebSocket text message into the requests it carries (usually one; `get` and
    /// `del` with several parts give one request per part, all with the same id). Tinode's
    /// network probe `1` and a device-token `hi` after the handshake give none. `now_ms` (wall
    /// clock, ms since the Unix epoch) dates message ids made for `pub`s without one.
    pub fn decode(&mut self, text: &str, now_ms: u64) -> Result<Vec<Req>, JsonError> {
        if text.len() > self.max_len {
            let peek = text.len() <= self.max_len.saturating_mul(PEEK_FACTOR);
            let orig = if peek { peek_top_id(text) } else { None };
            let id = self.reply_id(orig);
            return Err(JsonError::TooLarge {
                id,
                len: text.len(),
                max: self.max_len,
            });
        }
        if JsonCodec::probe_reply(text).is_some() {
            return Ok(Vec::new());
        }
        let top: BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
            Ok(top) => top,
            Err(e) if serde_json::from_str::<IgnoredAny>(text).is_ok() => {
                return Err(JsonError::UnknownPacket {
                    id: 0,
                    detail: format!("not an object of packets: {e}"),
                });
            }
            Err(e) => {
                return Err(JsonError::Syntax {
                    detail: e.to_string(),
                });
            }
        };
        let mut found = Vec::new();
        let mut unknown = None;
        for (key, raw) in &top {
            match PACKETS.iter().find(|p| **p == key.as_str()) {
                Some(name) => found.push((*name, *raw)),
                None if key == "extra" => {}
                None => unknown = Some(key.as_str()),
            }
        }
        let first_id = found
            .iter()
            .find_map(|(_, raw)| peek_id(raw.get()).ok().flatten());
        let (name, raw) = match (found.as_slice(), unknown) {
            ([one], None) => *one,
            (_, unknown) => {
                let detail = match (found.len(), unknown) {
                    (_, Some(key)) => format!("unknown key {:?}", clip(key)),
                    (0, None) => "no packet".to_owned(),
                    _ => "more than one packet".to_owned(),
                };
                let id = self.reply_id(first_id);
                return Err(JsonError::UnknownPacket { id, detail });
            }
        };
        let orig = peek_id(raw.get()).map_err(|detail| JsonError::BadField {
            id: 0,
            packet: name,
            detail,
        })?;
        let mut reqs = match self.map(name, raw.get(), now_ms) {
            Ok(reqs) => reqs,
            Err(Bad::Ignore) => return Ok(Vec::new()),
            Err(Bad::Field(detail)) => {
                let id = self.reply_id(orig);
                return Err(JsonError::BadField {
                    id,
                    packet: name,
                    detail,
                });
            }
            Err(Bad::Unsupported(what)) => {
                let id = self.reply_id(orig);
                return Err(JsonError::Unsupported {
                    id,
                    packet: name,
                    what,
                });
            }
            Err(Bad::NoContent(topic)) => {
                let id = self.reply_id(orig);
                return Err(JsonError::NoContent { id, topic });
            }
        };
        let answers: u32 = reqs.iter().map(ctrls_expected).sum();
        if answers == 0 {
            return Ok(reqs);
        }
        let sub_first = matches!(reqs.first(), Some(Req::Sub { get, .. }) if !get.is_empty());
        let Some(id) = self.register(orig.clone(), answers, sub_first) else {
            let id = self.reply_id(orig);
            return Err(JsonError::TooManyPending { id });
        };
        for req in &mut reqs {
            if let Some(slot) = req.id_mut() {
                *slot = id;
            }
        }
        Ok(reqs)
    }

    /// Maps one packet's JSON object onto requests (ids still 0).
    fn map(&mut self, name: &str, json: &str, now_ms: u64) -> Res<Vec<Req>> {
        match name {
            "hi" => packets::hi(json),
            "acc" => packets::acc(json),
            "login" => packets::login(json),
            "sub" => packets::sub(json),
            "leave" => packets::leave(json),
            "pub" => packets::publish(json, now_ms, &mut self.rng),
            "get" => packets::get(json),
            "set" => packets::set(json),
            "del" => packets::del(json),
            "note" => packets::note(json),
            "action" => packets::action(json),
            "ack" => packets::ack(json),
            _ => Err(bad("unknown packet")),
        }
    }
}

/// How many `ctrl`s the session sends for `req`.
fn ctrls_expected(req: &Req) -> u32 {
    match req {
        Req::Sub { get, .. } => 1 + u32::try_from(get.len()).unwrap_or(u32::MAX - 1),
        Req::Note { .. } | Req::Ack { .. } => 0,
        _ => 1,
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<Value>,
}

/// The request id of one packet object: `Ok(None)` if it has none (or is not an object),
/// `Err` if it has one that is not a string of at most [`MAX_ID_LEN`] bytes.
fn peek_id(json: &str) -> Result<Option<String>, String> {
    match serde_json::from_str::<IdOnly>(json) {
        Err(_)
        | Ok(IdOnly {
            id: None | Some(Value::Null),
        }) => Ok(None),
        Ok(IdOnly {
            id: Some(Value::String(s)),
        }) if s.len() <= MAX_ID_LEN => Ok((!s.is_empty()).then_some(s)),
        Ok(IdOnly {
            id: Some(Value::String(_)),
        }) => Err(format!("id longer than {MAX_ID_LEN} bytes")),
        Ok(_) => Err("id must be a string".to_owned()),
    }
}

/// The request id of a whole message, if it parses as an object of packet objects.
fn peek_top_id(text: &str) -> Option<String> {
    let top: BTreeMap<String, IdOnly> = serde_json::from_str(text).ok()?;
    top.into_iter().find_map(|(key, p)| match p.id {
        Some(Value::String(s)) if key != "extra" && !s.is_empty() && s.len() <= MAX_ID_LEN => {
            Some(s)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::json::DRAFTY_MIME;
    use crate::gateway::wire::{
        ActionWhat, AgentStatus, AuthScheme, Code, DelWhat, GetWhat, Head, NoteWhat, Out, Params,
        SetWhat,
    };
    use kefu_core::id::MsgId;
    use proptest::prelude::*;

    const NOW: u64 = 1_764_105_318_418;

    fn codec() -> JsonCodec {
        JsonCodec::with_seed(4096, 7)
    }

    fn one(c: &mut JsonCodec, text: &str) -> Req {
        let mut reqs = c.decode(text, NOW).expect("decodes");
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        reqs.remove(0)
    }

    /// The code of the error's reply and the id string it is rendered with.
    fn refused(c: &mut JsonCodec, text: &str) -> (u16, Option<String>) {
        let err = c.decode(text, NOW).expect_err("refused");
        let Out::Ctrl { code, .. } = err.reply() else {
            panic!("reply is a ctrl")
        };
        let json: Value = serde_json::from_str(&c.encode_at(&err.reply(), NOW)[0]).expect("json");
        let id = json["ctrl"]["id"].as_str().map(str::to_owned);
        (code.0, id)
    }

    #[test]
    fn the_sdks_hi_is_version_1_with_its_description() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"hi":{"id":"79945","ver":"0.25.3","ua":"interop (undefined); tinodejs/0.25.3","lang":"xx","platf":"web"}}"#,
        );
        assert_eq!(
            req,
            Req::Hi {
                id: 1,
                ver: 1,
                device: String::new(),
                platform: "web".into(),
                lang: "xx".into(),
                ua: "interop (undefined); tinodejs/0.25.3".into(),
            }
        );
    }

    #[test]
    fn any_tinode_0_x_version_is_1_other_majors_are_0_and_garbage_is_400() {
        for (ver, want) in [
            ("0.22", 1),
            ("0.25.3", 1),
            ("0.17.10-rc2", 1),
            ("1.0", 0),
            ("2.3.4", 0),
        ] {
            let mut c = codec();
            let text = format!(r#"{{"hi":{{"id":"1","ver":"{ver}"}}}}"#);
            assert!(
                matches!(one(&mut c, &text), Req::Hi { ver, .. } if ver == want),
                "{ver}"
            );
        }
        for ver in ["abc", "0", "0.", "0.x", "0.1.2.3", "0.1-", "", "0.1 "] {
            let mut c = codec();
            let text = format!(r#"{{"hi":{{"id":"h","ver":"{ver}"}}}}"#);
            assert_eq!(refused(&mut c, &text), (400, Some("h".into())), "{ver:?}");
        }
    }

    #[test]
    fn a_device_token_hi_after_login_is_ignored_but_a_hi_without_ver_is_not() {
        let mut c = codec();
        assert_eq!(c.decode(r#"{"hi":{"dev":"tok"}}"#, NOW), Ok(vec![]));
        assert_eq!(
            refused(&mut c, r#"{"hi":{"id":"3"}}"#),
            (400, Some("3".into()))
        );
    }

    #[test]
    fn the_sdks_basic_acc_carries_login_password_and_the_public_name() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"acc":{"id":"79946","user":"new","scheme":"basic","secret":"YWxpY2U6c2VjcmV0","login":true,"desc":{"public":{"fn":"Alice"}}}}"#,
        );
        assert_eq!(
            req,
            Req::Acc {
                id: 1,
                scheme: AuthScheme::Basic,
                secret: b"alice:secret".to_vec(),
                name: "Alice".into(),
                login: true,
            }
        );
    }

    #[test]
    fn an_acc_without_a_public_name_is_named_after_its_login() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"acc":{"id":"1","user":"new","scheme":"basic","secret":"Ym9iOnB3"}}"#,
        );
        assert!(matches!(req, Req::Acc { name, login: false, .. } if name == "bob"));
    }

    #[test]
    fn acc_updates_and_other_schemes_are_not_implemented_and_bad_secrets_are_400() {
        let mut c = codec();
        let upd = r#"{"acc":{"id":"u","user":"usrAlice","scheme":"basic","secret":"YTpi"}}"#;
        assert_eq!(refused(&mut c, upd), (501, Some("u".into())));
        let anon = r#"{"acc":{"id":"a","user":"new","scheme":"anonymous"}}"#;
        assert_eq!(refused(&mut c, anon), (501, Some("a".into())));
        let no_colon = r#"{"acc":{"id":"n","user":"new","scheme":"basic","secret":"YWxpY2U="}}"#;
        assert_eq!(refused(&mut c, no_colon), (400, Some("n".into())));
        let not_b64 = r#"{"acc":{"id":"b","user":"new","scheme":"basic","secret":"@@@"}}"#;
        assert_eq!(refused(&mut c, not_b64), (400, Some("b".into())));
    }

    #[test]
    fn basic_and_token_logins_carry_the_decoded_secret() {
        let mut c = codec();
        let basic = one(
            &mut c,
            r#"{"login":{"id":"79947","scheme":"basic","secret":"YWxpY2U6c2VjcmV0"}}"#,
        );
        assert_eq!(
            basic,
            Req::Login {
                id: 1,
                scheme: AuthScheme::Basic,
                secret: b"alice:secret".to_vec()
            }
        );
        let token = one(
            &mut c,
            r#"{"login":{"id":"79948","scheme":"token","secret":"dG9r"}}"#,
        );
        assert!(
            matches!(token, Req::Login { id: 2, scheme: AuthScheme::Token, secret, .. } if secret == b"tok")
        );
        let reset = r#"{"login":{"id":"r","scheme":"reset","secret":"eA=="}}"#;
        assert_eq!(refused(&mut c, reset), (501, Some("r".into())));
    }

    #[test]
    fn the_sdks_subs_carry_their_queries_in_tinodes_order() {
        let mut c = codec();
        let me = one(
            &mut c,
            r#"{"sub":{"id":"79949","topic":"me","get":{"what":"sub desc"}}}"#,
        );
        assert_eq!(
            me,
            Req::Sub {
                id: 1,
                topic: "me".into(),
                since: None,
                get: vec![GetWhat::Desc, GetWhat::Subs]
            }
        );
        let p2p = one(
            &mut c,
            r#"{"sub":{"id":"79950","topic":"usrBob","get":{"data":{"limit":24},"what":"data sub desc"}}}"#,
        );
        assert_eq!(
            p2p,
            Req::Sub {
                id: 2,
                topic: "usrBob".into(),
                since: None,
                get: vec![
                    GetWhat::Desc,
                    GetWhat::Subs,
                    GetWhat::Data {
                        since: 1,
                        before: 0,
                        limit: 24
                    }
                ]
            }
        );
    }

    #[test]
    fn unsupported_query_words_are_ignored_and_new_topics_are_named_new() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"sub":{"id":"5","topic":"new79960","set":{"desc":{"public":{"fn":"G"}}},"get":{"what":"tags cred del desc"}}}"#,
        );
        assert_eq!(
            req,
            Req::Sub {
                id: 1,
                topic: "new".into(),
                since: None,
                get: vec![GetWhat::Desc]
            }
        );
        assert!(
            matches!(one(&mut c, r#"{"sub":{"id":"6","topic":"nch1"}}"#), Req::Sub { topic, get, .. } if topic == "new" && get.is_empty())
        );
    }

    #[test]
    fn a_get_gives_one_request_per_word_with_the_same_id() {
        let mut c = codec();
        let reqs = c
            .decode(
                r#"{"get":{"id":"9","topic":"grpX","what":"data desc","data":{"since":5,"before":9,"limit":2}}}"#,
                NOW,
            )
            .unwrap();
        assert_eq!(
            reqs,
            vec![
                Req::Get {
                    id: 1,
                    topic: "grpX".into(),
                    what: GetWhat::Desc
                },
                Req::Get {
                    id: 1,
                    topic: "grpX".into(),
                    what: GetWhat::Data {
                        since: 5,
                        before: 9,
                        limit: 2
                    }
                },
            ]
        );
    }

    #[test]
    fn a_get_of_ranges_asks_for_their_hull() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"get":{"id":"9","topic":"grpX","what":"data","data":{"ranges":[{"low":7,"hi":10},{"low":3}],"limit":24}}}"#,
        );
        assert!(matches!(
            req,
            Req::Get {
                what: GetWhat::Data {
                    since: 3,
                    before: 10,
                    limit: 24
                },
                ..
            }
        ));
        let bad = r#"{"get":{"id":"r","topic":"grpX","what":"data","data":{"ranges":[{"low":5,"hi":5}]}}}"#;
        assert_eq!(refused(&mut c, bad), (400, Some("r".into())));
    }

    #[test]
    fn a_get_of_only_tags_is_answered_204_by_the_codec() {
        let mut c = codec();
        let err = c
            .decode(
                r#"{"get":{"id":"79953","topic":"usrBob","what":"tags"}}"#,
                NOW,
            )
            .unwrap_err();
        assert!(matches!(&err, JsonError::NoContent { topic, .. } if topic == "usrBob"));
        assert_eq!(
            refused(&mut c, r#"{"get":{"id":"t","topic":"me","what":"cred"}}"#),
            (204, Some("t".into()))
        );
    }

    #[test]
    fn the_sdks_plain_pub_is_text_with_a_fresh_message_id() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"pub":{"id":"79951","topic":"usrBob","content":"hello from A"}}"#,
        );
        let Req::Pub {
            id,
            topic,
            msg_id,
            head,
            content,
            noecho,
        } = req
        else {
            panic!("pub")
        };
        assert_eq!((id, topic.as_str(), noecho), (1, "usrBob", false));
        assert_eq!(
            head,
            Head {
                mime: String::new(),
                reply_to: None
            }
        );
        assert_eq!(content, b"hello from A");
        assert_eq!(msg_id.timestamp_ms(), NOW);
        let again = one(
            &mut c,
            r#"{"pub":{"id":"79952","topic":"usrBob","content":"x"}}"#,
        );
        assert!(matches!(again, Req::Pub { msg_id: other, .. } if other != msg_id));
    }

    #[test]
    fn the_sdks_drafty_pub_keeps_the_exact_json_bytes() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"pub":{"id":"79952","topic":"usrBob","head":{"mime":"text/x-drafty"},"content":{"txt":"bold text","fmt":[{"len":4,"tp":"ST"}]}}}"#,
        );
        let Req::Pub { head, content, .. } = req else {
            panic!("pub")
        };
        assert_eq!(head.mime, DRAFTY_MIME);
        assert_eq!(
            content,
            br#"{"txt":"bold text","fmt":[{"len":4,"tp":"ST"}]}"#
        );
        let bare = one(
            &mut c,
            r#"{"pub":{"id":"2","topic":"g","content":{"txt":"x"}}}"#,
        );
        assert!(matches!(bare, Req::Pub { head, .. } if head.mime == DRAFTY_MIME));
    }

    #[test]
    fn a_pub_with_our_id_reply_noecho_and_base64_keeps_them() {
        let mut c = codec();
        let req = one(
            &mut c,
            r#"{"pub":{"id":"1","topic":"g","noecho":true,"head":{"kid":"019abcdef012734586789abcdef000ff","reply":":5","kefu-enc":"base64","mime":"image/png"},"content":"AAH/"}}"#,
        );
        assert_eq!(
            req,
            Req::Pub {
                id: 1,
                topic: "g".into(),
                msg_id: MsgId::parse_hex("019abcdef012734586789abcdef000ff").unwrap(),
                head: Head {
                    mime: "image/png".into(),
                    reply_to: Some(5)
                },
                content: vec![0, 1, 255],
                noecho: true,
            }
        );
        for (reply, want) in [
            ("7", Some(7)),
            ("\"7\"", Some(7)),
            ("\"grpX:7\"", None),
            ("0", None),
            ("true", None),
        ] {
            let text = format!(
                r#"{{"pub":{{"id":"1","topic":"g","head":{{"reply":{reply}}},"content":"x"}}}}"#
            );
            assert!(
                matches!(one(&mut c, &text), Req::Pub { head, .. } if head.reply_to == want),
                "{reply}"
            );
        }
    }

    #[test]
    fn a_pub_with_a_bad_id_content_or_head_is_400_with_its_id() {
        let mut c = codec();
        for text in [
            r#"{"pub":{"id":"p","topic":"g","head":{"kid":"019ABCDEF012734586789ABCDEF000FF"},"content":"x"}}"#,
            r#"{"pub":{"id":"p","topic":"g","head":{"kid":5},"content":"x"}}"#,
            r#"{"pub":{"id":"p","topic":"g","content":5}}"#,
            r#"{"pub":{"id":"p","topic":"g","content":true}}"#,
            r#"{"pub":{"id":"p","topic":"g","head":{"kefu-enc":"hex"},"content":"x"}}"#,
            r#"{"pub":{"id":"p","topic":"g","head":"x","content":"x"}}"#,
        ] {
            assert_eq!(refused(&mut c, text), (400, Some("p".into())), "{text}");
        }
    }

    #[test]
    fn a_pub_without_content_is_empty() {
        let mut c = codec();
        assert!(
            matches!(one(&mut c, r#"{"pub":{"id":"1","topic":"g"}}"#), Req::Pub { content, .. } if content.is_empty())
        );
    }

    #[test]
    fn leave_set_and_del_map_onto_their_requests() {
        let mut c = codec();
        assert_eq!(
            one(
                &mut c,
                r#"{"leave":{"id":"1","topic":"usrBob","unsub":true}}"#
            ),
            Req::Leave {
                id: 1,
                topic: "usrBob".into(),
                unsub: true
            }
        );
        assert_eq!(
            one(
                &mut c,
                r#"{"set":{"id":"79954","topic":"usrBob","desc":{"public":{"fn":"Title"}}}}"#
            ),
            Req::Set {
                id: 2,
                topic: "usrBob".into(),
                what: SetWhat::Title("Title".into())
            }
        );
        assert_eq!(
            one(
                &mut c,
                r#"{"set":{"id":"s","topic":"grpX","sub":{"user":"usrBob","mode":"JRW"}}}"#
            ),
            Req::Set {
                id: 3,
                topic: "grpX".into(),
                what: SetWhat::Mode {
                    user: "usrBob".into(),
                    mode: "JRW".into()
                }
            }
        );
        assert_eq!(
            one(
                &mut c,
                r#"{"del":{"id":"79955","topic":"usrBob","what":"msg","delseq":[{"low":1,"hi":3}],"hard":true}}"#
            ),
            Req::Del {
                id: 4,
                topic: "usrBob".into(),
                what: DelWhat::Msg {
                    first: 1,
                    last: 2,
                    hard: true
                }
            }
        );
        let two = c
            .decode(
                r#"{"del":{"id":"d","topic":"g","delseq":[{"low":1},{"low":4,"hi":6}]}}"#,
                NOW,
            )
            .unwrap();
        assert_eq!(two.len(), 2);
        assert!(matches!(
            &two[1],
            Req::Del {
                id: 5,
                what: DelWhat::Msg {
                    first: 4,
                    last: 5,
                    hard: false
                },
                ..
            }
        ));
        assert_eq!(
            one(
                &mut c,
                r#"{"del":{"id":"t","topic":"grpX","what":"topic","hard":true}}"#
            ),
            Req::Del {
                id: 6,
                topic: "grpX".into(),
                what: DelWhat::Topic { hard: true }
            }
        );
        assert_eq!(
            one(
                &mut c,
                r#"{"del":{"id":"u","topic":"grpX","what":"sub","user":"usrBob"}}"#
            ),
            Req::Del {
                id: 7,
                topic: "grpX".into(),
                what: DelWhat::Sub {
                    user: "usrBob".into()
                }
            }
        );
    }

    #[test]
    fn sets_and_dels_kefu_cannot_do_are_not_implemented() {
        let mut c = codec();
        assert_eq!(
            refused(&mut c, r#"{"set":{"id":"a","topic":"me","tags":["x"]}}"#),
            (501, Some("a".into()))
        );
        assert_eq!(
            refused(&mut c, r#"{"del":{"id":"b","what":"user","hard":true}}"#),
            (501, Some("b".into()))
        );
        assert_eq!(
            refused(&mut c, r#"{"del":{"id":"c","topic":"g","what":"msg"}}"#),
            (400, Some("c".into()))
        );
        assert_eq!(
            refused(
                &mut c,
                r#"{"set":{"id":"d","topic":"g","sub":{"mode":"J R"}}}"#
            ),
            (400, Some("d".into()))
        );
    }

    #[test]
    fn notes_map_onto_receipts_and_typing_without_an_answer() {
        let mut c = codec();
        assert_eq!(
            one(
                &mut c,
                r#"{"note":{"topic":"usrBob","what":"read","seq":1}}"#
            ),
            Req::Note {
                topic: "usrBob".into(),
                what: NoteWhat::Read,
                seq: 1
            }
        );
        assert_eq!(
            one(&mut c, r#"{"note":{"topic":"usrBob","what":"kp"}}"#),
            Req::Note {
                topic: "usrBob".into(),
                what: NoteWhat::Kp,
                seq: 0
            }
        );
        assert_eq!(c.pending(), 0, "notes are not answered");
        assert_eq!(
            refused(&mut c, r#"{"note":{"topic":"g","what":"recv"}}"#),
            (400, None)
        );
        assert_eq!(
            refused(&mut c, r#"{"note":{"topic":"g","what":"call","seq":1}}"#),
            (501, None)
        );
    }

    #[test]
    fn kefu_actions_and_acks_decode() {
        let mut c = codec();
        assert_eq!(
            one(
                &mut c,
                r#"{"action":{"id":"1","what":"open","desk":"sales"}}"#
            ),
            Req::Action {
                id: 1,
                what: ActionWhat::Open {
                    desk: "sales".into()
                }
            }
        );
        assert_eq!(
            one(
                &mut c,
                r#"{"action":{"id":"2","what":"status","status":"busy"}}"#
            ),
            Req::Action {
                id: 2,
                what: ActionWhat::Status(AgentStatus::Busy)
            }
        );
        assert!(matches!(
            one(&mut c, r#"{"action":{"id":"3","what":"take"}}"#),
            Req::Action {
                what: ActionWhat::TakeNext,
                ..
            }
        ));
        assert_eq!(
            one(
                &mut c,
                r#"{"action":{"id":"4","what":"transfer","topic":"grpC","to":"usrAg"}}"#
            ),
            Req::Action {
                id: 4,
                what: ActionWhat::Transfer {
                    topic: "grpC".into(),
                    to: "usrAg".into()
                }
            }
        );
        assert!(matches!(
            one(
                &mut c,
                r#"{"action":{"id":"5","what":"close","topic":"grpC"}}"#
            ),
            Req::Action {
                what: ActionWhat::Close { .. },
                ..
            }
        ));
        assert!(matches!(
            one(
                &mut c,
                r#"{"action":{"id":"6","what":"join","topic":"grpC"}}"#
            ),
            Req::Action {
                what: ActionWhat::Join { .. },
                ..
            }
        ));
        assert_eq!(
            one(&mut c, r#"{"ack":{"topic":"grpC","seq":12}}"#),
            Req::Ack {
                topic: "grpC".into(),
                seq: 12
            }
        );
        assert_eq!(
            refused(
                &mut c,
                r#"{"action":{"id":"7","what":"status","status":"asleep"}}"#
            ),
            (400, Some("7".into()))
        );
        assert_eq!(
            refused(&mut c, r#"{"action":{"id":"8","what":"dance"}}"#),
            (400, Some("8".into()))
        );
        assert_eq!(refused(&mut c, r#"{"ack":{"topic":"grpC"}}"#), (400, None));
    }

    #[test]
    fn invalid_json_is_400_without_an_id() {
        let mut c = codec();
        for text in ["", "{", r#"{"hi":{"id":"1""#, "nul", "\u{feff}{}"] {
            let err = c.decode(text, NOW).unwrap_err();
            assert!(matches!(err, JsonError::Syntax { .. }), "{text:?}: {err:?}");
            assert!(matches!(
                err.reply(),
                Out::Ctrl {
                    id: 0,
                    code: Code::MALFORMED,
                    ..
                }
            ));
        }
    }

    #[test]
    fn json_that_is_not_one_known_packet_is_400_with_any_readable_id() {
        let mut c = codec();
        assert_eq!(refused(&mut c, "[1,2]"), (400, None));
        assert_eq!(refused(&mut c, "\"hi\""), (400, None));
        assert_eq!(refused(&mut c, "{}"), (400, None));
        assert_eq!(refused(&mut c, r#"{"foo":{"id":"7"}}"#), (400, None));
        assert_eq!(
            refused(&mut c, r#"{"pub":{"id":"8","topic":"g"},"foo":1}"#),
            (400, Some("8".into()))
        );
        assert_eq!(
            refused(&mut c, r#"{"pub":{"id":"9","topic":"g"},"sub":{"id":"9"}}"#),
            (400, Some("9".into()))
        );
        assert_eq!(refused(&mut c, r#"{"hi":5}"#), (400, None));
        let extra = r#"{"pub":{"id":"1","topic":"g","content":"x"},"extra":{"attachments":["/v0/file/s/a.png"]}}"#;
        assert!(c.decode(extra, NOW).is_ok(), "Tinode's extra is accepted");
    }

    #[test]
    fn wrong_field_types_and_bad_topics_are_400_with_the_id() {
        let mut c = codec();
        for text in [
            r#"{"pub":{"id":"x","topic":5,"content":"x"}}"#,
            r#"{"pub":{"id":"x","content":"x"}}"#,
            r#"{"pub":{"id":"x","topic":"a b","content":"x"}}"#,
            r#"{"pub":{"id":"x","topic":"","content":"x"}}"#,
            r#"{"sub":{"id":"x","topic":"me","get":{"what":5}}}"#,
            r#"{"sub":{"id":"x","topic":"me","get":{"what":"data","data":{"limit":-1}}}}"#,
            r#"{"leave":{"id":"x","topic":"g","unsub":"yes"}}"#,
            r#"{"login":{"id":"x","scheme":"basic"}}"#,
        ] {
            assert_eq!(refused(&mut c, text), (400, Some("x".into())), "{text}");
        }
        assert_eq!(
            refused(&mut c, r#"{"pub":{"id":5,"topic":"g"}}"#),
            (400, None)
        );
        let long_id = format!(r#"{{"pub":{{"id":"{}","topic":"g"}}}}"#, "1".repeat(65));
        assert_eq!(refused(&mut c, &long_id), (400, None));
    }

    #[test]
    fn an_oversized_text_is_413_with_its_id() {
        let mut c = JsonCodec::with_seed(64, 1);
        let text = format!(
            r#"{{"pub":{{"id":"big","topic":"g","content":"{}"}}}}"#,
            "x".repeat(100)
        );
        assert_eq!(refused(&mut c, &text), (413, Some("big".into())));
        let huge = format!(
            r#"{{"pub":{{"id":"big","content":"{}"}}}}"#,
            "x".repeat(64 * 17)
        );
        assert_eq!(
            refused(&mut c, &huge),
            (413, None),
            "too big to even look for the id"
        );
        assert_eq!(refused(&mut c, &"x".repeat(65)), (413, None));
    }

    #[test]
    fn the_network_probe_yields_nothing_and_is_answered_0() {
        let mut c = codec();
        assert_eq!(c.decode("1", NOW), Ok(vec![]));
        assert_eq!(JsonCodec::probe_reply("1"), Some("0"));
        assert_eq!(JsonCodec::probe_reply("2"), None);
    }

    #[test]
    fn beyond_max_pending_requests_are_refused_429_with_their_id() {
        let mut c = codec();
        for i in 0..crate::gateway::json::MAX_PENDING {
            c.decode(&format!(r#"{{"leave":{{"id":"{i}","topic":"g"}}}}"#), NOW)
                .unwrap();
        }
        let err = c
            .decode(r#"{"leave":{"id":"late","topic":"g"}}"#, NOW)
            .unwrap_err();
        assert!(matches!(
            err.reply(),
            Out::Ctrl {
                code: Code::RATE_LIMITED,
                params: Params::RetryAfter { ms: 1000 },
                ..
            }
        ));
        let json = c.encode_at(&err.reply(), NOW).remove(0);
        assert!(
            json.starts_with(r#"{"ctrl":{"id":"late","params":{"retryAfter":1000},"code":429,"#),
            "{json}"
        );
        // Notes need no answer and pass.
        assert!(
            c.decode(r#"{"note":{"topic":"g","what":"kp"}}"#, NOW)
                .is_ok()
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("me"),
                Just("usrBob"),
                Just("basic"),
                Just("data sub desc"),
                Just("YTpi")
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("id".to_owned()),
                        Just("topic".to_owned()),
                        Just("what".to_owned()),
                        Just("seq".to_owned()),
                        Just("content".to_owned()),
                        Just("head".to_owned()),
                        Just("data".to_owned()),
                        Just("get".to_owned()),
                        Just("secret".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_strings(text in ".{0,200}") {
            let mut c = codec();
            if let Err(e) = c.decode(&text, NOW) {
                let _ = c.encode_at(&e.reply(), NOW);
            }
        }

        #[test]
        fn decode_never_panics_on_arbitrary_packets(
            key in prop::sample::select(&PACKETS[..]),
            body in json_value(),
        ) {
            let mut c = codec();
            let text = serde_json::json!({ key: body }).to_string();
            match c.decode(&text, NOW) {
                Ok(reqs) => for r in reqs { prop_assert!(r.id() != Some(0)); }
                Err(e) => {
                    let out = c.encode_at(&e.reply(), NOW);
                    prop_assert_eq!(out.len(), 1);
                    prop_assert_eq!(c.pending(), 0, "an error reply's mapping ends with it");
                }
            }
        }

        #[test]
        fn decode_never_panics_on_arbitrary_json(v in json_value()) {
            let mut c = codec();
            let _ = c.decode(&v.to_string(), NOW);
        }
    }
}
