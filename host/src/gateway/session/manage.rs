//! Changing topics: `set` (title) and `del` (messages, subscribers, topics), and who may.

use super::{Conn, Session};
use crate::gateway::hub::{Event, Topic};
use crate::gateway::names::{self};
use crate::gateway::wire::{Code, DelWhat, Out, PresWhat, SetWhat};
use crate::store::{Role, Store, TopicKind, TopicUpdate};

impl<S: Store, C: Conn> Session<S, C> {
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
}
