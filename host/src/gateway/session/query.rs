//! Queries: `get` desc / subs / data / digest, and unread counts.

use std::sync::Arc;

use kefu_core::digest::digest_of;

use super::topics::MAX_PAGE;
use super::{Conn, Session};
use crate::gateway::hub::Marks;
use crate::gateway::names::{self};
use crate::gateway::wire::{Code, GetWhat, MetaItem, Out, Params, SubInfo, TopicDesc};
use crate::store::Store;

impl<S: Store, C: Conn> Session<S, C> {
    pub(super) async fn get(&mut self, id: u32, name: &str, what: GetWhat) {
        if name == "me" {
            return match what {
                GetWhat::Subs => self.get_my_subs(id).await,
                GetWhat::Desc => {
                    self.outq.push(Out::Meta {
                        id,
                        topic: "me".into(),
                        item: MetaItem::Desc(TopicDesc {
                            title: self.user().to_string(),
                            seq: 0,
                            read: 0,
                            recv: 0,
                            unread: 0,
                        }),
                    });
                    self.reply_code(id, Code::OK, "me", "");
                }
                _ => self.reply_code(id, Code::MALFORMED, "me", "me holds no messages"),
            };
        }
        let topic = match self.member_topic(name).await {
            Ok(t) => t,
            Err(r) => return self.refuse(id, name, r),
        };
        let user = self.user();
        match what {
            GetWhat::Desc => {
                let (title, marks) = {
                    let st = topic.state();
                    (
                        st.title.clone(),
                        st.subs.get(&*user).copied().unwrap_or_default(),
                    )
                };
                let seq = topic.latest();
                let unread = self.unread(&topic.name, seq, marks.read).await;
                self.outq.push(Out::Meta {
                    id,
                    topic: name.to_owned(),
                    item: MetaItem::Desc(TopicDesc {
                        title,
                        seq,
                        read: marks.read,
                        recv: marks.recv,
                        unread,
                    }),
                });
                self.reply_code(id, Code::OK, name, "");
            }
            GetWhat::Subs => {
                let subs: Vec<(String, Marks)> = topic
                    .state()
                    .subs
                    .iter()
                    .map(|(u, m)| (u.clone(), *m))
                    .collect();
                let seq = topic.latest();
                let count = u32::try_from(subs.len()).unwrap_or(u32::MAX);
                for (u, m) in subs {
                    let online = self.ctx.hub.is_online(&u);
                    let unread = self.unread_of(&topic.name, &u, seq, m.read).await;
                    self.outq.push(Out::Meta {
                        id,
                        topic: name.to_owned(),
                        item: MetaItem::Sub(SubInfo {
                            name: u,
                            title: String::new(),
                            seq,
                            read: m.read,
                            recv: m.recv,
                            unread,
                            online,
                        }),
                    });
                }
                self.outq.push(Out::ctrl_with(
                    id,
                    Code::OK,
                    name,
                    Params::Count { count, what: "sub" },
                ));
            }
            GetWhat::Data {
                since,
                before,
                limit,
            } => {
                let limit = if limit == 0 { 24 } else { limit.min(MAX_PAGE) };
                let msgs = match self
                    .ctx
                    .store
                    .messages(&topic.name, since.max(1), before, limit, Some(&user))
                    .await
                {
                    Ok(m) => m,
                    Err(e) => return self.store_failed(id, name, &e),
                };
                let count = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
                for m in msgs {
                    self.outq.push(Out::Data {
                        topic: name.to_owned(),
                        msg: Arc::new(m),
                    });
                }
                let code = if count == 0 {
                    Code::NO_CONTENT
                } else {
                    Code::OK
                };
                self.outq.push(Out::ctrl_with(
                    id,
                    code,
                    name,
                    Params::Count {
                        count,
                        what: "data",
                    },
                ));
            }
            GetWhat::Digest { last } => {
                let last = last.min(MAX_PAGE);
                let msgs = match self.ctx.store.messages(&topic.name, 1, 0, last, None).await {
                    Ok(m) => m,
                    Err(e) => return self.store_failed(id, name, &e),
                };
                match digest_of(msgs.iter().map(|m| (m.seq, m.msg_id))) {
                    Ok(d) => self
                        .outq
                        .push(Out::ctrl_with(id, Code::OK, name, Params::Digest(d))),
                    Err(_) => self.reply_code(id, Code::INTERNAL, name, "digest failed"),
                }
            }
        }
    }

    /// Unread = latest − read, not counting one's own messages above the read mark.
    async fn unread(&self, internal: &str, latest: u64, read: u64) -> u64 {
        self.unread_of(internal, &self.user(), latest, read).await
    }

    /// [`Self::unread`] for any subscriber `user`.
    async fn unread_of(&self, internal: &str, user: &str, latest: u64, read: u64) -> u64 {
        let total = latest.saturating_sub(read);
        if total == 0 {
            return 0;
        }
        let own = self
            .ctx
            .store
            .count_from(internal, user, read)
            .await
            .unwrap_or(0);
        total.saturating_sub(own)
    }

    async fn get_my_subs(&mut self, id: u32) {
        let user = self.user();
        let subs = match self.ctx.store.subscriptions_of(&user).await {
            Ok(s) => s,
            Err(e) => return self.store_failed(id, "me", &e),
        };
        let mut count = 0u32;
        for s in subs {
            let Ok(Some(topic)) = self.ctx.hub.topic(&*self.ctx.store, &s.topic).await else {
                continue;
            };
            let (title, deleted, marks) = {
                let st = topic.state();
                (
                    st.title.clone(),
                    st.deleted,
                    st.subs.get(&*user).copied().unwrap_or_default(),
                )
            };
            if deleted {
                continue;
            }
            // A one-to-one topic is titled with the peer's display name.
            let title = match names::p2p_members(&topic.name) {
                Some(_) if title.is_empty() => {
                    let peer = names::view_name(&topic.name, &user);
                    match self.ctx.store.user(&peer).await {
                        Ok(Some(u)) => u.name,
                        _ => title,
                    }
                }
                _ => title,
            };
            let seq = topic.latest();
            let unread = self.unread(&topic.name, seq, marks.read).await;
            let online = match names::p2p_members(&topic.name) {
                Some(_) => self
                    .ctx
                    .hub
                    .is_online(&names::view_name(&topic.name, &user)),
                None => !topic.state().attached.is_empty(),
            };
            self.outq.push(Out::Meta {
                id,
                topic: "me".into(),
                item: MetaItem::Sub(SubInfo {
                    name: names::view_name(&topic.name, &user),
                    title,
                    seq,
                    read: marks.read,
                    recv: marks.recv,
                    unread,
                    online,
                }),
            });
            count = count.saturating_add(1);
        }
        self.outq.push(Out::ctrl_with(
            id,
            Code::OK,
            "me",
            Params::Count { count, what: "sub" },
        ));
    }
}
