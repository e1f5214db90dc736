//! A bare framed-TCP client on the core codec: the load generator's connection. It encodes
//! packets straight into one reusable buffer and deframes what it reads in place, so a client
//! costs a socket, a 64 KiB read buffer and a task — not an SDK engine.

use std::net::SocketAddr;

use kefu_core::frame::Deframer;
use kefu_core::proto::{
    self, Acc, AuthScheme, ClientPacket, Code, CtrlParams, Hi, Leave, Login, ServerPacket, Sub,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::BenchError;

/// The deframer's buffer: room for a few full frames of the largest content the gateway takes.
pub(super) const READ_BUFFER: usize = 64 * 1024;

/// A `ctrl` answer, owned.
#[derive(Clone, Debug)]
pub(super) struct Answer {
    /// The code.
    pub code: Code,
    /// The text.
    pub text: String,
    /// The user id, for `acc` / `login`.
    pub user: String,
    /// The token, for `acc` / `login`.
    pub token: Vec<u8>,
}

/// A connected client during set-up: one request at a time, answers awaited.
pub(super) struct Link {
    stream: TcpStream,
    deframer: Box<Deframer<READ_BUFFER>>,
    out: Vec<u8>,
    next_id: u32,
}

impl Link {
    /// Connects to the gateway's TCP listener.
    pub async fn connect(addr: SocketAddr) -> Result<Link, BenchError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Link {
            stream,
            deframer: Box::new(Deframer::new()),
            out: Vec::with_capacity(1024),
            next_id: 0,
        })
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends `hi`; fails unless answered 200.
    pub async fn hi(&mut self) -> Result<(), BenchError> {
        let id = self.next_id();
        let packet = ClientPacket::Hi(Hi {
            id,
            ver: proto::PROTOCOL_VERSION,
            device: "kefu-bench",
            platform: "linux",
            lang: "en",
            ua: "kefu-bench",
        });
        self.expect("hi", packet, id, Code::OK).await.map(drop)
    }

    /// Creates an account and logs in with it: the user id and token.
    pub async fn acc(&mut self, login: &str, password: &str) -> Result<Answer, BenchError> {
        let id = self.next_id();
        let secret = format!("{login}:{password}");
        let packet = ClientPacket::Acc(Acc {
            id,
            scheme: AuthScheme::Basic,
            secret: secret.as_bytes(),
            name: login,
            login: true,
        });
        self.expect("acc", packet, id, Code::CREATED).await
    }

    /// Logs in with a token.
    pub async fn login_token(&mut self, token: &[u8]) -> Result<Answer, BenchError> {
        let id = self.next_id();
        let packet = ClientPacket::Login(Login {
            id,
            scheme: AuthScheme::Token,
            secret: token,
        });
        self.expect("login", packet, id, Code::OK).await
    }

    /// Subscribes and attaches to `topic`, pushes starting after what arrives from now on.
    pub async fn sub(&mut self, topic: &str) -> Result<Answer, BenchError> {
        let id = self.next_id();
        let packet = ClientPacket::Sub(Sub {
            id,
            topic,
            since: None,
        });
        let answer = self.call(packet, id).await?;
        match answer.code {
            Code::OK | Code::CREATED => Ok(answer),
            code => Err(refused("sub", code, answer.text)),
        }
    }

    /// Detaches from `topic`, staying subscribed.
    pub async fn leave(&mut self, topic: &str) -> Result<(), BenchError> {
        let id = self.next_id();
        let packet = ClientPacket::Leave(Leave {
            id,
            topic,
            unsub: false,
        });
        self.expect("leave", packet, id, Code::OK).await.map(drop)
    }

    /// Sends `packet` and waits for the `ctrl` with `id`; fails unless its code is `want`.
    async fn expect(
        &mut self,
        what: &'static str,
        packet: ClientPacket<'_>,
        id: u32,
        want: Code,
    ) -> Result<Answer, BenchError> {
        let answer = self.call(packet, id).await?;
        if answer.code == want {
            Ok(answer)
        } else {
            Err(refused(what, answer.code, answer.text))
        }
    }

    /// Sends `packet` and waits for the `ctrl` answering `id` (other packets are skipped).
    async fn call(&mut self, packet: ClientPacket<'_>, id: u32) -> Result<Answer, BenchError> {
        self.out.clear();
        encode(&packet, &mut self.out)?;
        self.stream.write_all(&self.out).await?;
        loop {
            while let Some(next) = self.deframer.next_frame() {
                let body = next.map_err(|e| BenchError::Protocol(format!("bad frame: {e:?}")))?;
                if body.is_empty() {
                    continue;
                }
                let packet = proto::decode_server(body)
                    .map_err(|e| BenchError::Protocol(format!("bad packet: {e:?}")))?;
                if let ServerPacket::Ctrl(c) = packet
                    && c.id == id
                {
                    let (user, token) = match c.params {
                        CtrlParams::Login { user, token, .. } => (user.to_owned(), token.to_vec()),
                        _ => (String::new(), Vec::new()),
                    };
                    return Ok(Answer {
                        code: c.code,
                        text: c.text.to_owned(),
                        user,
                        token,
                    });
                }
            }
            let n = self.stream.read(self.deframer.spare_capacity()).await?;
            if n == 0 {
                return Err(BenchError::Closed);
            }
            self.deframer.commit(n);
        }
    }

    /// Splits into the read and write halves for the load phase, keeping what was already read.
    pub fn split(mut self) -> (Reader, Writer) {
        let (read, write) = self.stream.into_split();
        // The last request's bytes were written already.
        self.out.clear();
        (
            Reader {
                read,
                deframer: self.deframer,
            },
            Writer {
                write,
                out: self.out,
                next_id: self.next_id,
            },
        )
    }
}

/// The read half during load: whole frames out of a reused buffer.
pub(super) struct Reader {
    read: OwnedReadHalf,
    deframer: Box<Deframer<READ_BUFFER>>,
}

impl Reader {
    /// Reads once from the socket (waiting if nothing is there); false at end of stream.
    pub async fn fill(&mut self) -> Result<bool, BenchError> {
        let n = self.read.read(self.deframer.spare_capacity()).await?;
        self.deframer.commit(n);
        Ok(n > 0)
    }

    /// The next whole frame already read, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, BenchError> {
        match self.deframer.next_frame() {
            None => Ok(None),
            Some(Err(e)) => Err(BenchError::Protocol(format!("bad frame: {e:?}"))),
            Some(Ok([])) => Ok(Some(Frame::Keepalive)),
            Some(Ok(body)) => proto::decode_server(body)
                .map(|p| Some(Frame::Packet(p)))
                .map_err(|e| BenchError::Protocol(format!("bad packet: {e:?}"))),
        }
    }
}

/// One frame read during load.
pub(super) enum Frame<'a> {
    /// An empty frame.
    Keepalive,
    /// A packet.
    Packet(ServerPacket<'a>),
}

/// The write half during load: packets encoded back to back into one buffer, written at once.
pub(super) struct Writer {
    write: OwnedWriteHalf,
    out: Vec<u8>,
    next_id: u32,
}

impl Writer {
    /// A fresh request id.
    pub fn next_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Appends `packet` as one frame to what the next [`Writer::flush`] writes.
    pub fn queue(&mut self, packet: &ClientPacket<'_>) -> Result<(), BenchError> {
        encode(packet, &mut self.out)
    }

    /// Writes everything queued in one go.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if !self.out.is_empty() {
            self.write.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Appends `packet` as one whole frame to `out`.
fn encode(packet: &ClientPacket<'_>, out: &mut Vec<u8>) -> Result<(), BenchError> {
    let start = out.len();
    out.resize(start + READ_BUFFER, 0);
    match proto::encode_client(packet, &mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(BenchError::Protocol(format!("cannot encode: {e:?}")))
        }
    }
}

/// The error for a request answered with the wrong code.
fn refused(what: &'static str, code: Code, text: String) -> BenchError {
    BenchError::Refused {
        what,
        code: code.0,
        text,
    }
}
