//! Topic requests (`sub`, `leave`, `get`, `set`, `del`, `note`, `ack`) and pushing what
//! topics commit through the session's delivery windows.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use kefu_core::delivery::{AckOutcome, DeliveryWindow};
use kefu_core::digest::digest_of;

use super::{Attached, Conn, Dialect, End, Session};
use crate::gateway::context::now_ms;
use crate::gateway::hub::{Event, Marks, Topic};
use crate::gateway::names::{self, Target};
use crate::gateway::wire::{
    Code, DelWhat, GetWhat, MetaItem, NoteWhat, Out, Params, PresWhat, SetWhat, SubInfo, TopicDesc,
};
use crate::model::Message;
use crate::store::{Role, Store, TopicKind, TopicRecord, TopicUpdate};

/// Most messages one `get` returns.
const MAX_PAGE: u32 = 1024;
/// Access mode given to subscribers.
const MODE: &str = "JRWPS";

/// A failed lookup: the code and text to answer with.
type Refusal = (Code, &'static str);

impl<S: Store, C: Conn> Session<S, C> {
    /// The topic a client name refers to, loaded, creating a one-to-one topic on first use.
    /// Does not check membership.
    pub(super) async fn find_topic(&mut self, name: &str) -> Result<Arc<Topic>, Refusal> {
        let user = self.user();
        let target = names::resolve(name, &user).ok_or((Code::NOT_FOUND, "no such topic"))?;
        let Target::Topic { internal, peer } = target else {
            return Err((Code::MALFORMED, "not a topic with messages"));
        };
        if let Some(t) = self
            .ctx
            .hub
            .topic(&*self.ctx.store, &internal)
            .await
            .map_err(|_| (Code::INTERNAL, "storage failed"))?
        {
            return Ok(t);
        }
        let Some(peer) = peer else {
            return Err((Code::NOT_FOUND, "no such topic"));
        };
        // First contact between two users: create their one-to-one topic.
        match self.ctx.store.user(&peer).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err((Code::NOT_FOUND, "no such user")),
            Err(_) => return Err((Code::INTERNAL, "storage failed")),
        }
        let rec = TopicRecord {
            name: internal.clone(),
            kind: TopicKind::P2p,
            title: String::new(),
            owner: user.to_string(),
            created_ms: now_ms(),
            latest: 0,
            deleted: false,
            consult: None,
        };
        match self
            .ctx
            .store
            .create_topic(rec, vec![user.to_string(), peer.clone()])
            .await
        {
            Ok(()) | Err(crate::store::StoreError::Conflict(_)) => {}
            Err(_) => return Err((Code::INTERNAL, "storage failed")),
        }
        self.ctx
            .hub
            .topic(&*self.ctx.store, &internal)
            .await
            .ok()
            .flatten()
            .ok_or((Code::INTERNAL, "storage failed"))
    }

    /// The topic, if this user is subscribed to it.
    pub(super) async fn member_topic(&mut self, name: &str) -> Result<Arc<Topic>, Refusal> {
        let topic = self.find_topic(name).await?;
        if topic.state().deleted {
            return Err((Code::NOT_FOUND, "topic deleted"));
        }
        if !topic.is_subscriber(&self.user()) {
            return Err((Code::FORBIDDEN, "not subscribed"));
        }
        Ok(topic)
    }

    fn refuse(&mut self, id: u32, topic: &str, (code, text): Refusal) {
        self.reply_code(id, code, topic, text);
    }

    pub(super) async fn sub(
        &mut self,
        id: u32,
        name: String,
        since: Option<u64>,
        get: Vec<GetWhat>,
    ) {
        let user = self.user();
        let topic = match names::resolve(&name, &user) {
            Some(Target::Me) => {
                self.me_attached = true;
                if let Some(l) = self.login_info() {
                    l.link.me.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.outq.push(Out::ctrl_with(
                    id,
                    Code::OK,
                    "me",
                    Params::Sub {
                        latest: 0,
                        read: 0,
                        recv: 0,
                        acked: 0,
                    },
                ));
                for what in get {
                    self.get(id, "me", what).await;
                }
                return;
            }
            Some(Target::NewGroup) => match self.new_group().await {
                Ok(t) => t,
                Err(r) => return self.refuse(id, &name, r),
            },
            Some(Target::Topic { .. }) => match self.find_topic(&name).await {
                Ok(t) => t,
                Err(r) => return self.refuse(id, &name, r),
            },
            None => return self.refuse(id, &name, (Code::NOT_FOUND, "no such topic")),
        };
        if topic.state().deleted {
            return self.refuse(id, &name, (Code::NOT_FOUND, "topic deleted"));
        }
        let created = matches!(names::resolve(&name, &user), Some(Target::NewGroup));
        if !topic.is_subscriber(&user) {
            // Anyone may join a group; one-to-one members are fixed by the name; consultations
            // are joined through actions only.
            if topic.kind == TopicKind::Consult {
                return self.refuse(
                    id,
                    &name,
                    (Code::FORBIDDEN, "not part of this consultation"),
                );
            }
            if let Err(e) = self.ctx.store.subscribe(&topic.name, &user, MODE).await {
                return self.store_failed(id, &name, &e);
            }
            topic
                .state()
                .subs
                .insert(user.to_string(), Marks::default());
        }
        let view = names::view_name(&topic.name, &user);
        let latest = topic.latest();
        let marks = topic.state().subs.get(&*user).copied().unwrap_or_default();
        if let Some(a) = self.attached.get(&topic.name) {
            let acked = a.window.acked();
            self.outq.push(Out::ctrl_with(
                id,
                Code::NOT_MODIFIED,
                view.clone(),
                Params::Sub {
                    latest,
                    read: marks.read,
                    recv: marks.recv,
                    acked,
                },
            ));
        } else {
            let auto_ack = matches!(self.dialect, Some(Dialect::Json(_)));
            let acked = match since {
                Some(mark) if !auto_ack => mark.min(latest),
                _ => latest,
            };
            if let Some(l) = self.login_info() {
                topic.state().attached.insert(self.id, l.link.clone());
            }
            self.attached.insert(
                topic.name.clone(),
                Attached {
                    topic: Arc::clone(&topic),
                    view: view.clone(),
                    window: DeliveryWindow::new(acked, &self.ctx.cfg.delivery),
                    auto_ack,
                    pushed_at: VecDeque::new(),
                },
            );
            let code = if created { Code::CREATED } else { Code::OK };
            self.outq.push(Out::ctrl_with(
                id,
                code,
                view.clone(),
                Params::Sub {
                    latest,
                    read: marks.read,
                    recv: marks.recv,
                    acked,
                },
            ));
        }
        for what in get {
            self.get(id, &view, what).await;
        }
    }

    async fn new_group(&mut self) -> Result<Arc<Topic>, Refusal> {
        let user = self.user().to_string();
        let rec = TopicRecord {
            name: names::new_group_name(),
            kind: TopicKind::Group,
            title: String::new(),
            owner: user.clone(),
            created_ms: now_ms(),
            latest: 0,
            deleted: false,
            consult: None,
        };
        self.ctx
            .store
            .create_topic(rec.clone(), vec![user.clone()])
            .await
            .map_err(|_| (Code::INTERNAL, "storage failed"))?;
        let subs = HashMap::from([(user, Marks::default())]);
        Ok(self.ctx.hub.insert(rec, subs))
    }

    pub(super) async fn leave(&mut self, id: u32, name: String, unsub: bool) {
        let user = self.user();
        if name == "me" {
            self.me_attached = false;
            if let Some(l) = self.login_info() {
                l.link.me.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            return self.reply_code(id, Code::OK, "me", "");
        }
        let topic = match self.find_topic(&name).await {
            Ok(t) => t,
            Err(r) => return self.refuse(id, &name, r),
        };
        // Refuse before detaching: a refused request changes nothing.
        if unsub && topic.kind == TopicKind::P2p {
            return self.refuse(
                id,
                &name,
                (Code::FORBIDDEN, "one-to-one topics cannot be left"),
            );
        }
        let was_attached = self.detach(&topic.name);
        if unsub {
            match self.ctx.store.unsubscribe(&topic.name, &user).await {
                Ok(_) => {
                    topic.state().subs.remove(&*user);
                }
                Err(e) => return self.store_failed(id, &name, &e),
            }
            return self.reply_code(id, Code::OK, &name, "");
        }
        let code = if was_attached {
            Code::OK
        } else {
            Code::NOT_MODIFIED
        };
        self.reply_code(id, code, &name, "");
    }

    /// Drops this session's attachment to a topic; whether it was attached.
    pub(super) fn detach(&mut self, internal: &str) -> bool {
        match self.attached.remove(internal) {
            Some(a) => {
                a.topic.state().attached.remove(&self.id);
                true
            }
            None => false,
        }
    }

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

    pub(super) async fn set(&mut self, id: u32, name: String, what: SetWhat) {
        let topic = match self.member_topic(&name).await {
            Ok(t) => t,
            Err(r) => return self.refuse(id, &name, r),
        };
        match what {
            SetWhat::Title(title) => {
                if !self.may_manage(&topic) {
                    return self.refuse(id, &name, (Code::FORBIDDEN, "only the owner may rename"));
                }
                let update = TopicUpdate {
                    title: Some(title.clone()),
                    ..TopicUpdate::default()
                };
                if let Err(e) = self.ctx.store.update_topic(&topic.name, update).await {
                    return self.store_failed(id, &name, &e);
                }
                topic.state().title = title;
                self.tell_attached(&topic, |view| Out::Pres {
                    topic: view.to_owned(),
                    src: view.to_owned(),
                    what: PresWhat::Upd,
                });
                self.reply_code(id, Code::OK, &name, "");
            }
            SetWhat::Mode { .. } => self.reply_code(
                id,
                Code::FORBIDDEN,
                &name,
                "access modes are fixed by topic kind",
            ),
        }
    }

    /// Owner of a group, the agent of a consultation, or any supervisor.
    pub(super) fn may_manage(&self, topic: &Topic) -> bool {
        let Some(login) = self.login_info() else {
            return false;
        };
        if login.role == Role::Supervisor {
            return true;
        }
        let st = topic.state();
        match topic.kind {
            TopicKind::Group => st.owner == *login.user,
            TopicKind::Consult => {
                st.consult.as_ref().and_then(|c| c.agent.as_deref()) == Some(&*login.user)
            }
            TopicKind::P2p => false,
        }
    }

    pub(super) async fn del(&mut self, id: u32, name: String, what: DelWhat) {
        let topic = match self.member_topic(&name).await {
            Ok(t) => t,
            Err(r) => return self.refuse(id, &name, r),
        };
        let user = self.user();
        match what {
            DelWhat::Msg { first, last, hard } => {
                let latest = topic.latest();
                if first == 0 || first > last || last > latest {
                    return self.refuse(id, &name, (Code::MALFORMED, "bad seq range"));
                }
                if hard && !self.may_manage(&topic) {
                    return self.refuse(
                        id,
                        &name,
                        (Code::FORBIDDEN, "only the owner deletes for everyone"),
                    );
                }
                if let Err(e) = self
                    .ctx
                    .store
                    .delete_messages(&topic.name, first, last, hard, &user)
                    .await
                {
                    return self.store_failed(id, &name, &e);
                }
                if hard {
                    topic.tombstone(first, last);
                }
                self.reply_code(id, Code::OK, &name, "");
            }
            DelWhat::Sub { user: gone } => {
                if !self.may_manage(&topic) {
                    return self.refuse(
                        id,
                        &name,
                        (Code::FORBIDDEN, "only the owner removes subscribers"),
                    );
                }
                match self.ctx.store.unsubscribe(&topic.name, &gone).await {
                    Ok(true) => {
                        topic.state().subs.remove(&gone);
                        self.ctx.hub.tell_user(
                            &gone,
                            &Event::Detach {
                                topic: topic.name.clone(),
                                notice: Out::Pres {
                                    topic: "me".into(),
                                    src: names::view_name(&topic.name, &gone),
                                    what: PresWhat::Gone,
                                },
                            },
                        );
                        self.reply_code(id, Code::OK, &name, "");
                    }
                    Ok(false) => self.refuse(id, &name, (Code::NOT_FOUND, "no such subscriber")),
                    Err(e) => self.store_failed(id, &name, &e),
                }
            }
            DelWhat::Topic { hard } => {
                if hard {
                    if !self.may_manage(&topic) || topic.kind == TopicKind::P2p {
                        return self.refuse(
                            id,
                            &name,
                            (Code::FORBIDDEN, "only the owner deletes a topic"),
                        );
                    }
                    let update = TopicUpdate {
                        deleted: Some(true),
                        ..TopicUpdate::default()
                    };
                    if let Err(e) = self.ctx.store.update_topic(&topic.name, update).await {
                        return self.store_failed(id, &name, &e);
                    }
                    let subs: Vec<String> = {
                        let mut st = topic.state();
                        st.deleted = true;
                        st.subs.keys().cloned().collect()
                    };
                    self.detach(&topic.name);
                    for u in subs {
                        self.ctx.hub.tell_user(
                            &u,
                            &Event::Detach {
                                topic: topic.name.clone(),
                                notice: Out::Pres {
                                    topic: "me".into(),
                                    src: names::view_name(&topic.name, &u),
                                    what: PresWhat::Gone,
                                },
                            },
                        );
                    }
                    self.ctx.hub.remove(&topic.name);
                    self.reply_code(id, Code::OK, &name, "");
                } else {
                    self.leave(id, name, true).await;
                }
            }
        }
    }

    /// Queues `make(view)` for every session attached to `topic` (this one included), each
    /// with the topic named the way its user knows it.
    pub(super) fn tell_attached(&mut self, topic: &Topic, make: impl Fn(&str) -> Out) {
        let links: Vec<_> = topic.state().attached.values().cloned().collect();
        for link in links {
            let view = names::view_name(&topic.name, &link.user);
            if link.id == self.id {
                self.outq.push(make(&view));
            } else {
                link.send(Event::Out(make(&view)));
            }
        }
    }

    pub(super) async fn note(&mut self, name: String, what: NoteWhat, seq: u64) {
        let topic = match self.member_topic(&name).await {
            Ok(t) => t,
            Err(r) => return self.refuse(0, &name, r),
        };
        let user = self.user();
        if what != NoteWhat::Kp {
            if seq == 0 || seq > topic.latest() {
                return self.refuse(0, &name, (Code::MALFORMED, "receipt beyond the latest seq"));
            }
            let (read, recv) = match what {
                NoteWhat::Read => (Some(seq), Some(seq)),
                _ => (None, Some(seq)),
            };
            {
                let mut st = topic.state();
                if let Some(m) = st.subs.get_mut(&*user) {
                    if let Some(r) = read {
                        m.read = m.read.max(r);
                    }
                    if let Some(r) = recv {
                        m.recv = m.recv.max(r);
                    }
                }
            }
            let store = Arc::clone(&self.ctx.store);
            let (t, u) = (topic.name.clone(), user.to_string());
            tokio::spawn(async move {
                if let Err(e) = store.set_marks(&t, &u, read, recv).await {
                    tracing::warn!(error = %e, "could not store a mark");
                }
            });
        }
        let links: Vec<_> = topic.state().attached.values().cloned().collect();
        for link in links {
            if link.id == self.id {
                continue;
            }
            link.send(Event::Out(Out::Info {
                topic: names::view_name(&topic.name, &link.user),
                from: user.to_string(),
                what,
                seq,
            }));
        }
    }

    pub(super) fn ack(&mut self, name: &str, seq: u64) {
        let user = self.user();
        let internal = match names::resolve(name, &user) {
            Some(Target::Topic { internal, .. }) => internal,
            _ => return self.refuse(0, name, (Code::NOT_FOUND, "no such topic")),
        };
        let now = self.core_now();
        let cfg = self.ctx.cfg.delivery;
        let Some(a) = self.attached.get_mut(&internal) else {
            return self.refuse(0, name, (Code::NOT_FOUND, "not attached"));
        };
        let latest = a.topic.latest();
        match a.window.on_ack(now, &cfg, seq, latest) {
            AckOutcome::Advanced(n) => {
                self.ctx.metrics.acks(n);
                let now = Instant::now();
                while let Some(&(s, at)) = a.pushed_at.front() {
                    if s > seq {
                        break;
                    }
                    a.pushed_at.pop_front();
                    if s == seq {
                        self.ctx
                            .metrics
                            .ack_latency(now.saturating_duration_since(at).as_secs_f64());
                    }
                }
                if let Some(m) = a.topic.state().subs.get_mut(&*user) {
                    m.recv = m.recv.max(seq);
                }
                self.dirty_recv.insert(internal, seq);
            }
            AckOutcome::Stale => {}
            AckOutcome::BeyondLatest => {
                self.refuse(0, name, (Code::MALFORMED, "ack beyond the latest seq"))
            }
        }
    }

    pub(super) fn handle_window_timeouts(&mut self, now: Instant) {
        let now = self.to_core(now);
        let cfg = self.ctx.cfg.delivery;
        let mut retransmits = 0;
        for a in self.attached.values_mut() {
            if a.window.handle_timeout(now, &cfg) {
                retransmits += 1;
                a.pushed_at.clear();
            }
        }
        if retransmits > 0 {
            self.ctx.metrics.retransmits(retransmits);
        }
    }

    /// Pushes whatever the windows allow on every attached topic.
    pub(super) async fn push_all(&mut self) -> Result<(), End> {
        let names: Vec<String> = self.attached.keys().cloned().collect();
        for internal in names {
            self.push_topic(&internal).await;
        }
        Ok(())
    }

    async fn push_topic(&mut self, internal: &str) {
        let cfg = self.ctx.cfg.delivery;
        let user = self.user();
        loop {
            let now = self.core_now();
            let Some(a) = self.attached.get_mut(internal) else {
                return;
            };
            let latest = a.topic.latest();
            let Some(range) = a.window.poll_push(now, latest) else {
                return;
            };
            let topic = Arc::clone(&a.topic);
            let view = a.view.clone();
            let msgs: Vec<Arc<Message>> = match topic.cached(range.first, range.last) {
                Some(m) => m,
                None => {
                    let n = u32::try_from(range.last - range.first + 1).unwrap_or(u32::MAX);
                    match self
                        .ctx
                        .store
                        .messages(internal, range.first, range.last + 1, n, Some(&user))
                        .await
                    {
                        Ok(m) => m.into_iter().map(Arc::new).collect(),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not read messages to push");
                            return;
                        }
                    }
                }
            };
            let Some(a) = self.attached.get_mut(internal) else {
                return;
            };
            let pushed = Instant::now();
            let mut n = 0;
            for m in msgs {
                if a.auto_ack && self.noecho.remove(&m.msg_id) {
                    continue;
                }
                if !a.auto_ack {
                    if a.pushed_at.len() >= 256 {
                        a.pushed_at.pop_front();
                    }
                    a.pushed_at.push_back((m.seq, pushed));
                }
                self.outq.push(Out::Data {
                    topic: view.clone(),
                    msg: m,
                });
                n += 1;
            }
            self.ctx.metrics.delivered(n);
            if a.auto_ack {
                // Tinode semantics: no acks; receipts come as `note recv`.
                a.window.on_ack(now, &cfg, range.last, topic.latest());
            }
            if self.outq.len() > 512 {
                // Write these first; come back for the rest.
                self.wake.notify_one();
                return;
            }
        }
    }
}
