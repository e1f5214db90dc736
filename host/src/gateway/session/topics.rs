//! Finding topics and attaching to them: `sub` (creating one-to-one topics and groups on
//! first use) and `leave`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kefu_core::delivery::DeliveryWindow;

use super::{Attached, Conn, Dialect, Session};
use crate::gateway::context::now_ms;
use crate::gateway::hub::{Marks, Topic};
use crate::gateway::names::{self, Target};
use crate::gateway::wire::{Code, GetWhat, Out, Params};
use crate::store::{Store, TopicKind, TopicRecord};

/// Most messages one `get` returns.
pub(super) const MAX_PAGE: u32 = 1024;
/// Access mode given to subscribers.
const MODE: &str = "JRWPS";

/// A failed lookup: the code and text to answer with.
pub(super) type Refusal = (Code, &'static str);

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

    pub(super) fn refuse(&mut self, id: u32, topic: &str, (code, text): Refusal) {
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
        let (code, acked) = match self.attached.get(&topic.name) {
            Some(a) => (Code::NOT_MODIFIED, a.window.acked()),
            None => {
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
                (if created { Code::CREATED } else { Code::OK }, acked)
            }
        };
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
}
