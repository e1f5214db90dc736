//! The board's own minimal app, proving the board end to end until `kefu-firmware` lands:
//! connect over TCP to the gateway, send `hi` and (when a token is baked in) `login` with
//! kefu-core's `proto` / `frame`, and check the gateway's `ctrl` answers.

use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, with_timeout};
use kefu_core::frame::Deframer;
use kefu_core::proto::{
    self, AuthScheme, ClientPacket, CodecError, CtrlParams, Hi, Login, PROTOCOL_VERSION,
    ServerPacket,
};

use crate::log;

/// Largest frame exchanged by this probe.
const FRAME: usize = 512;
/// How long the gateway gets to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the hello exchange failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HelloError {
    /// The TCP connection could not be opened.
    Connect(embassy_net::tcp::ConnectError),
    /// The connection failed while sending or receiving.
    Io(embassy_net::tcp::Error),
    /// The gateway closed the connection before answering.
    Closed,
    /// No answer within [`ANSWER_TIMEOUT`].
    Timeout,
    /// A packet could not be encoded, or the answer could not be decoded.
    Codec(CodecError),
    /// The gateway sent bytes that are not a frame.
    Framing(kefu_core::frame::FrameError),
    /// The gateway answered with a packet other than the expected `ctrl`.
    Unexpected(&'static str),
    /// The gateway refused the request with this code.
    Refused(u16),
}

impl core::fmt::Display for HelloError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HelloError::Connect(e) => write!(f, "tcp connect failed: {e:?}"),
            HelloError::Io(e) => write!(f, "tcp error: {e:?}"),
            HelloError::Closed => f.write_str("gateway closed the connection"),
            HelloError::Timeout => f.write_str("no answer from the gateway in time"),
            HelloError::Codec(e) => write!(f, "codec: {e}"),
            HelloError::Framing(e) => write!(f, "framing: {e}"),
            HelloError::Unexpected(what) => write!(f, "unexpected answer: {what}"),
            HelloError::Refused(code) => write!(f, "gateway refused with code {code}"),
        }
    }
}

/// What the gateway told the device.
#[derive(Debug, Default)]
pub struct Hello {
    /// Protocol version of the gateway (from the `hi` answer).
    pub version: u16,
    /// The logged-in user id, if a token was given and accepted.
    pub user: heapless::String<64>,
}

/// One TCP connection speaking framed packets.
struct Conn<'a> {
    sock: TcpSocket<'a>,
    deframer: Deframer<FRAME>,
    out: [u8; FRAME],
}

impl Conn<'_> {
    async fn send(&mut self, packet: &ClientPacket<'_>) -> Result<(), HelloError> {
        let n = proto::encode_client(packet, &mut self.out).map_err(HelloError::Codec)?;
        let mut buf = &self.out[..n];
        while !buf.is_empty() {
            let w = self.sock.write(buf).await.map_err(HelloError::Io)?;
            buf = &buf[w..];
        }
        Ok(())
    }

    /// Waits for the `ctrl` answering request `id` and hands its params to `take`.
    async fn answer<T>(
        &mut self,
        id: u32,
        take: impl Fn(&CtrlParams<'_>) -> T,
    ) -> Result<T, HelloError> {
        loop {
            while let Some(frame) = self.deframer.next_frame() {
                let body = frame.map_err(HelloError::Framing)?;
                match proto::decode_server(body).map_err(HelloError::Codec)? {
                    ServerPacket::Ctrl(c) if c.id == id => {
                        if !c.code.is_success() {
                            return Err(HelloError::Refused(c.code.0));
                        }
                        return Ok(take(&c.params));
                    }
                    other => log!("kefu-board: ignoring {}", other.name()),
                }
            }
            let spare = self.deframer.spare_capacity();
            let n = with_timeout(ANSWER_TIMEOUT, self.sock.read(spare))
                .await
                .map_err(|_| HelloError::Timeout)?
                .map_err(HelloError::Io)?;
            if n == 0 {
                return Err(HelloError::Closed);
            }
            self.deframer.commit(n);
        }
    }
}

/// How long the probe holds a connection open waiting for the gateway to close it.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

impl HelloError {
    /// Whether trying again later may succeed (the link or the gateway was away), as opposed
    /// to a refusal or a protocol error that a retry would only repeat.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HelloError::Connect(_) | HelloError::Io(_) | HelloError::Closed | HelloError::Timeout
        )
    }
}

impl Conn<'_> {
    /// Reads until the peer closes the connection (`Ok`) or it fails, logging each packet.
    async fn until_closed(&mut self) -> Result<(), embassy_net::tcp::Error> {
        loop {
            while let Some(frame) = self.deframer.next_frame() {
                match frame.map(proto::decode_server) {
                    Ok(Ok(ServerPacket::Ctrl(c))) => {
                        log!("kefu-board: ctrl {} {}", c.code.0, c.text)
                    }
                    Ok(Ok(p)) => log!("kefu-board: {}", p.name()),
                    _ => log!("kefu-board: undecodable frame"),
                }
            }
            let spare = self.deframer.spare_capacity();
            match self.sock.read(spare).await? {
                0 => return Ok(()),
                n => self.deframer.commit(n),
            }
        }
    }
}

/// Connects to `endpoint`, says `hi`, and logs in with `token` if it is not empty.
///
/// With `hold`, the connection then stays open until the gateway closes it (as it does when
/// it shuts down), for at most [`HOLD_LIMIT`]; packets received meanwhile are logged by name.
pub async fn run(
    stack: Stack<'_>,
    endpoint: (embassy_net::Ipv4Address, u16),
    device: &str,
    token: &[u8],
    hold: bool,
) -> Result<Hello, HelloError> {
    let mut rx = [0u8; 1024];
    let mut tx = [0u8; 1024];
    let mut sock = TcpSocket::new(stack, &mut rx, &mut tx);
    sock.set_timeout(Some(Duration::from_secs(30)));
    sock.connect(endpoint).await.map_err(HelloError::Connect)?;
    log!("kefu-board: tcp connected to {}:{}", endpoint.0, endpoint.1);
    let mut conn = Conn {
        sock,
        deframer: Deframer::new(),
        out: [0; FRAME],
    };

    conn.send(&ClientPacket::Hi(Hi {
        id: 1,
        ver: PROTOCOL_VERSION,
        device,
        platform: "kiosk",
        lang: "zh-CN",
        ua: concat!("kefu-board-mps2-an386/", env!("CARGO_PKG_VERSION")),
    }))
    .await?;
    let version = conn
        .answer(1, |p| match p {
            CtrlParams::Hi { ver, .. } => Some(*ver),
            _ => None,
        })
        .await?
        .ok_or(HelloError::Unexpected("hi answered without version"))?;
    log!("kefu-board: hi ok (gateway protocol {})", version);

    let mut hello = Hello {
        version,
        ..Hello::default()
    };
    if token.is_empty() {
        log!("kefu-board: no token baked in (KEFU_TOKEN), not logging in");
    } else {
        conn.send(&ClientPacket::Login(Login {
            id: 2,
            scheme: AuthScheme::Token,
            secret: token,
        }))
        .await?;
        hello.user = conn
            .answer(2, |p| match p {
                CtrlParams::Login { user, .. } => heapless::String::try_from(*user).ok(),
                _ => None,
            })
            .await?
            .ok_or(HelloError::Unexpected("login answered without user"))?;
        log!("kefu-board: login ok (user {})", hello.user.as_str());
    }
    if hold {
        log!("kefu-board: holding the connection until it ends");
        conn.sock.set_timeout(None);
        match with_timeout(HOLD_LIMIT, conn.until_closed()).await {
            Err(_) => return Err(HelloError::Timeout),
            Ok(Ok(())) => log!("kefu-board: gateway closed the connection"),
            Ok(Err(e)) => log!("kefu-board: connection lost: {:?}", e),
        }
        return Ok(hello);
    }
    conn.sock.close();
    let _ = conn.sock.flush().await;
    Ok(hello)
}
