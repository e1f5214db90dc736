//! `hi`, `acc` and `login`: the handshake, account creation and authentication.

use std::sync::Arc;

use kefu_core::proto::{self, PROTOCOL_VERSION};

use super::{Conn, Login, Phase, Session};
use crate::gateway::auth::{self, AuthError};
use crate::gateway::context::now_ms;
use crate::gateway::hub::SessionLink;
use crate::gateway::names;
use crate::gateway::throttle::warn_throttled;
use crate::gateway::wire::{AuthScheme, Code, Out, Params, PresWhat};
use crate::store::{NewUser, Role, Store, StoreError, User};

impl<S: Store, C: Conn> Session<S, C> {
    pub(super) fn hi(&mut self, id: u32, ver: u16, device: String) {
        if let Err(code) = proto::check_version(ver) {
            return self.reply_code(
                id,
                code,
                "",
                &format!("protocol version {ver} is not supported; this gateway speaks {PROTOCOL_VERSION}"),
            );
        }
        self.device = device;
        self.phase = Phase::Greeted;
        self.outq.push(Out::ctrl_with(
            id,
            Code::OK,
            "",
            Params::Hi {
                ver: PROTOCOL_VERSION,
                server_ms: now_ms(),
                max_content: u32::try_from(self.ctx.cfg.max_content).unwrap_or(u32::MAX),
                session: format!("{:x}", self.id),
            },
        ));
    }

    pub(super) async fn acc(
        &mut self,
        id: u32,
        scheme: AuthScheme,
        secret: Vec<u8>,
        name: String,
        login: bool,
    ) {
        if !self.ctx.cfg.open_signup {
            return self.reply_code(
                id,
                Code::FORBIDDEN,
                "",
                "accounts are created by the operator",
            );
        }
        if scheme != AuthScheme::Basic {
            return self.reply_code(id, Code::MALFORMED, "", "accounts need the basic scheme");
        }
        let (login_name, password) = match auth::parse_basic(&secret) {
            Ok((l, p)) => (l.to_owned(), p.to_owned()),
            Err(e) => return self.reply_code(id, Code::MALFORMED, "", &e.to_string()),
        };
        let hash = match self
            .ctx
            .hash_work(move || auth::hash_password(&password))
            .await
        {
            Some(Ok(h)) => h,
            _ => return self.reply_code(id, Code::INTERNAL, "", "could not hash the password"),
        };
        let display = if name.trim().is_empty() {
            login_name.clone()
        } else {
            name
        };
        let new = NewUser {
            id: names::new_user_id(),
            login: login_name,
            name: display,
            pass_hash: Some(hash),
            role: Role::Customer,
        };
        match self.ctx.store.add_user(new).await {
            Ok(user) => {
                if login && matches!(self.phase, Phase::Greeted) {
                    self.logged_in(id, Code::CREATED, user);
                } else {
                    self.outq.push(Out::ctrl_with(
                        id,
                        Code::CREATED,
                        "",
                        Params::Login {
                            user: user.id,
                            token: Vec::new(),
                            expires_ms: 0,
                        },
                    ));
                }
            }
            Err(StoreError::Conflict(_)) => {
                self.reply_code(id, Code::CONFLICT, "", "that login is taken")
            }
            Err(e) => self.store_failed(id, "", &e),
        }
    }

    pub(super) async fn login(&mut self, id: u32, scheme: AuthScheme, secret: Vec<u8>) {
        if let Phase::Ready(_) = self.phase {
            return self.reply_code(id, Code::CONFLICT, "", "already logged in");
        }
        let user = match scheme {
            AuthScheme::Basic => self.check_password(&secret).await,
            AuthScheme::Token => self.check_token(&secret).await,
        };
        match user {
            Ok(user) => self.logged_in(id, Code::OK, user),
            Err(LoginError::Refused(why)) => self.reply_code(id, Code::UNAUTHORIZED, "", why),
            Err(LoginError::Store(e)) => self.store_failed(id, "", &e),
        }
    }

    async fn check_password(&self, secret: &[u8]) -> Result<User, LoginError> {
        let (login, password) =
            auth::parse_basic(secret).map_err(|_| LoginError::Refused("malformed credentials"))?;
        let user = self
            .ctx
            .store
            .user_by_login(login)
            .await
            .map_err(LoginError::Store)?
            .ok_or(LoginError::Refused("wrong login or password"))?;
        let Some(hash) = user.pass_hash.clone() else {
            return Err(LoginError::Refused("this account logs in with a token"));
        };
        let password = password.to_owned();
        let ok = self
            .ctx
            .hash_work(move || auth::verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if ok {
            Ok(user)
        } else {
            Err(LoginError::Refused("wrong login or password"))
        }
    }

    async fn check_token(&self, token: &[u8]) -> Result<User, LoginError> {
        let claims = self.ctx.key.verify(token, now_ms()).map_err(|e| {
            LoginError::Refused(match e {
                AuthError::Expired => "token expired",
                _ => "invalid token",
            })
        })?;
        let user = self
            .ctx
            .store
            .user(&claims.user)
            .await
            .map_err(LoginError::Store)?
            .ok_or(LoginError::Refused("invalid token"))?;
        if user.token_gen != claims.r#gen {
            return Err(LoginError::Refused("token revoked"));
        }
        Ok(user)
    }

    /// The session is now `user`'s: register it, issue a token, hand waiting customers to an
    /// agent who just came up.
    fn logged_in(&mut self, id: u32, code: Code, user: User) {
        let uid: Arc<str> = Arc::from(user.id.as_str());
        let link = SessionLink::new(
            self.id,
            Arc::clone(&uid),
            Arc::clone(&self.wake),
            Arc::clone(&self.events),
        );
        if self.ctx.hub.session_up(link.clone()) {
            let ctx = Arc::clone(&self.ctx);
            let user = user.id.clone();
            tokio::spawn(async move { ctx.hub.announce(&*ctx.store, &user, PresWhat::On).await });
        }
        self.ctx.metrics.sessions_logged_in(1);
        let expires_ms = now_ms()
            .saturating_add(u64::try_from(self.ctx.cfg.token_ttl.as_millis()).unwrap_or(u64::MAX));
        let token = self.ctx.key.issue(&user.id, user.token_gen, expires_ms);
        self.phase = Phase::Ready(Login {
            user: uid,
            role: user.role,
            link,
        });
        self.outq.push(Out::ctrl_with(
            id,
            code,
            "",
            Params::Login {
                user: user.id.clone(),
                token,
                expires_ms,
            },
        ));
        if matches!(user.role, Role::Agent | Role::Supervisor) {
            let assignments = self.ctx.desk().session_up(&user.id);
            self.spawn_assignments(assignments);
        }
    }

    /// Answers a request whose store operation failed: 507-like conditions are 503 (retry
    /// later), anything else 500.
    pub(super) fn store_failed(&mut self, id: u32, topic: &str, e: &StoreError) {
        warn_throttled!("store operation failed", e);
        let code = match e {
            StoreError::Full(_) | StoreError::ReadOnly(_) | StoreError::Closed => Code::UNAVAILABLE,
            StoreError::NotFound(_) => Code::NOT_FOUND,
            StoreError::Conflict(_) => Code::CONFLICT,
            _ => Code::INTERNAL,
        };
        self.reply_code(id, code, topic, &e.to_string());
    }
}

/// Why a login failed.
enum LoginError {
    /// Wrong credentials (401), with the text to say.
    Refused(&'static str),
    /// The store failed.
    Store(StoreError),
}
