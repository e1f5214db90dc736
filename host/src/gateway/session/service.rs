//! Customer-service `action`s: open a consultation, agent status, take the next customer,
//! transfer, close, join. The desk decides; this applies its decisions to store and topics.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Conn, Session};
use crate::gateway::context::{Ctx, now_ms};
use crate::gateway::desk::{Assignment, DeskError};
use crate::gateway::hub::{Event, Marks};
use crate::gateway::names;
use crate::gateway::throttle::warn_throttled;
use crate::gateway::wire::{ActionWhat, Code, Out, Params, PresWhat};
use crate::store::{
    Consult, ConsultState, Role, Store, StoreError, TopicKind, TopicRecord, TopicUpdate,
};

const MODE: &str = "JRWPS";

impl<S: Store, C: Conn> Session<S, C> {
    pub(super) async fn action(&mut self, id: u32, what: ActionWhat) {
        let Some(login) = self.login_info().cloned() else {
            return;
        };
        let user = login.user.to_string();
        let is_agent = matches!(login.role, Role::Agent | Role::Supervisor);
        let is_supervisor = login.role == Role::Supervisor;
        match what {
            ActionWhat::Open { desk } => self.open_consult(id, &user, desk).await,
            ActionWhat::Status(status) => {
                if !is_agent {
                    return self.reply_code(id, Code::FORBIDDEN, "", "only agents have a status");
                }
                let assignments = self.ctx.desk().set_status(&user, status);
                self.spawn_assignments(assignments);
                self.reply_code(id, Code::OK, "", "");
            }
            ActionWhat::TakeNext => {
                if !is_agent {
                    return self.reply_code(id, Code::FORBIDDEN, "", "only agents take customers");
                }
                let taken = self.ctx.desk().take_next(&user);
                match taken {
                    Ok(a) => {
                        let (topic, customer) = (a.topic.clone(), a.customer.clone());
                        match apply_assignment(&self.ctx, a).await {
                            Ok(()) => self.reply_topic(id, Code::OK, topic, customer),
                            Err(e) => self.store_failed(id, &topic, &e),
                        }
                    }
                    Err(e) => self.desk_refused(id, "", &e),
                }
            }
            ActionWhat::Transfer { topic, to } => {
                let moved = self.ctx.desk().transfer(&topic, &user, is_supervisor, &to);
                match moved {
                    Ok(t) => {
                        if let Some(next) = t.next.clone() {
                            self.spawn_assignments(vec![next]);
                        }
                        let result = apply_transfer(&self.ctx, &t.topic, &t.from, &t.to).await;
                        match result {
                            Ok(()) => self.reply_topic(id, Code::OK, topic, t.to),
                            Err(e) => self.store_failed(id, &topic, &e),
                        }
                    }
                    Err(e) => self.desk_refused(id, &topic, &e),
                }
            }
            ActionWhat::Close { topic } => {
                let closed = self.ctx.desk().close(&topic, &user, is_supervisor);
                match closed {
                    Ok(c) => {
                        if let Err(e) = set_consult_state(
                            &self.ctx,
                            &topic,
                            ConsultState::Closed,
                            c.agent.clone(),
                        )
                        .await
                        {
                            return self.store_failed(id, &topic, &e);
                        }
                        for u in std::iter::once(&c.customer).chain(c.agent.iter()) {
                            self.ctx.hub.tell_user(
                                u,
                                &Event::Out(Out::Pres {
                                    topic: "me".into(),
                                    src: topic.clone(),
                                    what: PresWhat::Upd,
                                }),
                            );
                        }
                        if let Some(next) = c.next {
                            self.spawn_assignments(vec![next]);
                        }
                        self.reply_code(id, Code::OK, &topic, "");
                    }
                    Err(e) => self.desk_refused(id, &topic, &e),
                }
            }
            ActionWhat::Join { topic } => {
                if !is_supervisor {
                    return self.reply_code(id, Code::FORBIDDEN, &topic, "only supervisors join");
                }
                let t = match self.ctx.hub.topic(&*self.ctx.store, &topic).await {
                    Ok(Some(t)) if t.kind == TopicKind::Consult => t,
                    Ok(_) => {
                        return self.reply_code(
                            id,
                            Code::NOT_FOUND,
                            &topic,
                            "no such consultation",
                        );
                    }
                    Err(e) => return self.store_failed(id, &topic, &e),
                };
                if let Err(e) = self.ctx.store.subscribe(&topic, &user, MODE).await {
                    return self.store_failed(id, &topic, &e);
                }
                t.state().subs.entry(user).or_default();
                self.reply_code(id, Code::OK, &topic, "");
            }
        }
    }

    async fn open_consult(&mut self, id: u32, customer: &str, desk: String) {
        let name = names::new_consult_name();
        let opened_ms = now_ms();
        let rec = TopicRecord {
            name: name.clone(),
            kind: TopicKind::Consult,
            title: String::new(),
            owner: customer.to_owned(),
            created_ms: opened_ms,
            latest: 0,
            deleted: false,
            consult: Some(Consult {
                customer: customer.to_owned(),
                agent: None,
                desk: desk.clone(),
                state: ConsultState::Waiting,
                opened_ms,
            }),
        };
        if let Err(e) = self
            .ctx
            .store
            .create_topic(rec.clone(), vec![customer.to_owned()])
            .await
        {
            return self.store_failed(id, "", &e);
        }
        self.ctx.hub.insert(
            rec,
            HashMap::from([(customer.to_owned(), Marks::default())]),
        );
        let assigned = self.ctx.desk().open(&name, customer, &desk, opened_ms);
        let peer = match assigned {
            Some(a) => {
                let agent = a.agent.clone();
                if let Err(e) = apply_assignment(&self.ctx, a).await {
                    return self.store_failed(id, &name, &e);
                }
                agent
            }
            None => String::new(),
        };
        self.reply_topic(id, Code::CREATED, name, peer);
    }

    /// Answers an action that names a consultation and the other party.
    fn reply_topic(&mut self, id: u32, code: Code, name: String, peer: String) {
        self.outq.push(Out::ctrl_with(
            id,
            code,
            name.clone(),
            Params::Topic { name, peer },
        ));
    }

    fn desk_refused(&mut self, id: u32, topic: &str, e: &DeskError) {
        self.reply_code(id, e.code(), topic, &e.to_string());
    }

    /// Applies assignments the desk made in the background (an agent came online, a
    /// consultation closed): they concern other users' sessions, not this request.
    pub(super) fn spawn_assignments(&self, list: Vec<Assignment>) {
        for a in list {
            let ctx = Arc::clone(&self.ctx);
            tokio::spawn(async move {
                if let Err(e) = apply_assignment(&ctx, a).await {
                    warn_throttled!("could not apply an assignment", &e);
                }
            });
        }
    }
}

/// Subscribes the agent, marks the consultation active, tells agent and customer.
async fn apply_assignment<S: Store>(ctx: &Ctx<S>, a: Assignment) -> Result<(), StoreError> {
    ctx.store.subscribe(&a.topic, &a.agent, MODE).await?;
    set_consult_state(ctx, &a.topic, ConsultState::Active, Some(a.agent.clone())).await?;
    if let Some(t) = ctx.hub.topic(&*ctx.store, &a.topic).await? {
        t.state().subs.entry(a.agent.clone()).or_default();
    }
    ctx.hub.tell_user(
        &a.agent,
        &Event::Out(Out::Pres {
            topic: "me".into(),
            src: a.topic.clone(),
            what: PresWhat::Assigned,
        }),
    );
    ctx.hub.tell_user(
        &a.customer,
        &Event::Out(Out::Pres {
            topic: "me".into(),
            src: a.topic.clone(),
            what: PresWhat::Upd,
        }),
    );
    Ok(())
}

/// Moves a consultation's agent subscription from `from` to `to`.
async fn apply_transfer<S: Store>(
    ctx: &Ctx<S>,
    topic: &str,
    from: &str,
    to: &str,
) -> Result<(), StoreError> {
    ctx.store.subscribe(topic, to, MODE).await?;
    ctx.store.unsubscribe(topic, from).await?;
    set_consult_state(ctx, topic, ConsultState::Active, Some(to.to_owned())).await?;
    if let Some(t) = ctx.hub.topic(&*ctx.store, topic).await? {
        let mut st = t.state();
        st.subs.entry(to.to_owned()).or_default();
        st.subs.remove(from);
    }
    ctx.hub.tell_user(
        to,
        &Event::Out(Out::Pres {
            topic: "me".into(),
            src: topic.to_owned(),
            what: PresWhat::Assigned,
        }),
    );
    ctx.hub.tell_user(
        from,
        &Event::Detach {
            topic: topic.to_owned(),
            notice: Out::Pres {
                topic: "me".into(),
                src: topic.to_owned(),
                what: PresWhat::Gone,
            },
        },
    );
    Ok(())
}

/// Stores and applies a consultation's new state and agent.
async fn set_consult_state<S: Store>(
    ctx: &Ctx<S>,
    topic: &str,
    state: ConsultState,
    agent: Option<String>,
) -> Result<(), StoreError> {
    let Some(t) = ctx.hub.topic(&*ctx.store, topic).await? else {
        return Err(StoreError::NotFound(topic.to_owned()));
    };
    let consult = {
        let st = t.state();
        let Some(mut c) = st.consult.clone() else {
            return Err(StoreError::NotFound(topic.to_owned()));
        };
        c.state = state;
        c.agent = agent;
        c
    };
    ctx.store
        .update_topic(
            topic,
            TopicUpdate {
                consult: Some(consult.clone()),
                ..TopicUpdate::default()
            },
        )
        .await?;
    t.state().consult = Some(consult);
    Ok(())
}
