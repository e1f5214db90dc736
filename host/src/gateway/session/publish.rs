//! `pub`: policy checks, then an append that commits durably off the session loop; the answer
//! (202 with the seq) is queued when the commit resolves.

use std::sync::Arc;
use std::time::Instant;

use kefu_core::id::MsgId;

use super::{Conn, PubDone, Session};
use crate::gateway::context::now_ms;
use crate::gateway::throttle::warn_throttled;
use crate::gateway::wire::{Code, Head, Out, Params};
use crate::model::Message;
use crate::store::{ConsultState, NewMessage, Store, StoreError};

impl<S: Store, C: Conn> Session<S, C> {
    pub(super) async fn publish(
        &mut self,
        id: u32,
        name: String,
        msg_id: MsgId,
        head: Head,
        content: Vec<u8>,
        noecho: bool,
    ) {
        if let Err(refusal) = self.ctx.policy.check(&head.mime, &content) {
            self.ctx.metrics.pub_result(false);
            return self.reply_code(id, refusal.code(), &name, &refusal.text());
        }
        let topic = match self.member_topic(&name).await {
            Ok(t) => t,
            Err((code, text)) => {
                self.ctx.metrics.pub_result(false);
                return self.reply_code(id, code, &name, text);
            }
        };
        let closed = topic
            .state()
            .consult
            .as_ref()
            .is_some_and(|c| c.state == ConsultState::Closed);
        if closed {
            self.ctx.metrics.pub_result(false);
            return self.reply_code(id, Code::CONFLICT, &name, "the consultation is closed");
        }
        if noecho {
            self.noecho.insert(msg_id);
        }
        let user = self.user().to_string();
        let msg = NewMessage {
            topic: topic.name.clone(),
            msg_id,
            from: user,
            ts: now_ms(),
            head,
            content,
        };
        let ctx = Arc::clone(&self.ctx);
        let started = Instant::now();
        // The commit and its application to the topic run in their own task: they complete
        // even if this session ends first (the topic must see every committed seq).
        let commit = tokio::spawn(async move {
            let result = ctx.store.append(msg.clone()).await;
            ctx.metrics.commit_latency(started.elapsed().as_secs_f64());
            match &result {
                Ok(a) if !a.dup => {
                    ctx.metrics.stored(1);
                    let stored = Message {
                        seq: a.seq,
                        msg_id: msg.msg_id,
                        from: msg.from,
                        ts: a.ts,
                        head: msg.head,
                        content: msg.content,
                    };
                    ctx.hub.committed(&topic, Arc::new(stored));
                }
                Ok(_) => ctx.metrics.dup_pub(),
                Err(_) => {}
            }
            ctx.metrics.pub_result(result.is_ok());
            result
        });
        self.commits.push(Box::pin(async move {
            let out = match commit.await {
                Ok(Ok(a)) => Out::Ctrl {
                    id,
                    code: Code::ACCEPTED,
                    text: String::new(),
                    topic: name,
                    params: Params::Pub {
                        seq: a.seq,
                        ts: a.ts,
                        dup: a.dup,
                    },
                },
                Ok(Err(e)) => {
                    // A failing store refuses every `pub` alike: logged at most every 10 s, with
                    // the count left out (each is still answered with its code).
                    warn_throttled!("append failed", &e);
                    let code = match e {
                        StoreError::NotFound(_) => Code::NOT_FOUND,
                        StoreError::Full(_) | StoreError::ReadOnly(_) | StoreError::Closed => {
                            Code::UNAVAILABLE
                        }
                        _ => Code::INTERNAL,
                    };
                    Out::Ctrl {
                        id,
                        code,
                        text: e.to_string(),
                        topic: name,
                        params: Params::None,
                    }
                }
                Err(_) => Out::ctrl(id, Code::INTERNAL, name),
            };
            PubDone { out }
        }));
    }
}
