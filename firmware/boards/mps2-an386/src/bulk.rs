//! Bulk-transfer self-test of the network path (LAN9118 driver, embassy-net, QEMU's slirp):
//! receives and sends a stream of full-size TCP segments and checks every byte.
//!
//! The stream is the repeated [`PATTERN`], which is what `yes kefu-bulk` writes, so the host
//! side needs no program of its own: `run-demo.sh` forwards one guest port to `yes kefu-bulk`
//! (source for [`receive`]) and another to `dd of=FILE` (sink for [`send`]), then compares the
//! file. Enabled at build time with `KEFU_BULK_BYTES`.

use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Duration, Instant, with_timeout};

/// The byte stream: `yes kefu-bulk` output.
pub const PATTERN: &[u8] = b"kefu-bulk\n";
/// Socket buffer per direction.
const BUF: usize = 2048;
/// Longest a transfer may take.
const LIMIT: Duration = Duration::from_secs(60);

/// Why a bulk transfer failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BulkError {
    /// The TCP connection could not be opened.
    Connect(embassy_net::tcp::ConnectError),
    /// The connection failed during the transfer.
    Io(embassy_net::tcp::Error),
    /// The peer closed the stream after this many bytes, before the expected length.
    Short(usize),
    /// The byte at this offset is not the pattern's.
    Corrupt(usize),
    /// The transfer took longer than [`LIMIT`].
    Timeout,
}

impl core::fmt::Display for BulkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BulkError::Connect(e) => write!(f, "tcp connect failed: {e:?}"),
            BulkError::Io(e) => write!(f, "tcp error: {e:?}"),
            BulkError::Short(n) => write!(f, "stream ended after {n} bytes"),
            BulkError::Corrupt(at) => write!(f, "wrong byte at offset {at}"),
            BulkError::Timeout => write!(f, "timed out"),
        }
    }
}

/// Reads `total` bytes from `endpoint` and checks each against [`PATTERN`]; returns how long
/// it took.
pub async fn receive(
    stack: Stack<'_>,
    endpoint: impl Into<IpEndpoint>,
    total: usize,
) -> Result<Duration, BulkError> {
    let (mut rx, mut tx) = ([0u8; BUF], [0u8; 64]);
    let mut sock = TcpSocket::new(stack, &mut rx, &mut tx);
    sock.connect(endpoint).await.map_err(BulkError::Connect)?;
    let start = Instant::now();
    let transfer = async {
        let mut at = 0usize;
        let mut buf = [0u8; 512];
        while at < total {
            let want = (total - at).min(buf.len());
            let n = sock.read(&mut buf[..want]).await.map_err(BulkError::Io)?;
            if n == 0 {
                return Err(BulkError::Short(at));
            }
            for (i, b) in buf[..n].iter().enumerate() {
                if *b != PATTERN[(at + i) % PATTERN.len()] {
                    return Err(BulkError::Corrupt(at + i));
                }
            }
            at += n;
        }
        Ok(())
    };
    let result = with_timeout(LIMIT, transfer).await;
    sock.abort(); // the source never ends by itself
    let _ = sock.flush().await;
    result.map_err(|_| BulkError::Timeout)??;
    Ok(start.elapsed())
}

/// Writes `total` bytes of [`PATTERN`] to `endpoint` and closes; returns how long it took.
pub async fn send(
    stack: Stack<'_>,
    endpoint: impl Into<IpEndpoint>,
    total: usize,
) -> Result<Duration, BulkError> {
    let (mut rx, mut tx) = ([0u8; 64], [0u8; BUF]);
    let mut sock = TcpSocket::new(stack, &mut rx, &mut tx);
    sock.connect(endpoint).await.map_err(BulkError::Connect)?;
    let start = Instant::now();
    let transfer = async {
        let mut chunk = [0u8; 500]; // a multiple of the pattern's length
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = PATTERN[i % PATTERN.len()];
        }
        let mut at = 0usize;
        while at < total {
            let off = at % PATTERN.len();
            let want = (total - at).min(chunk.len() - off);
            let n = sock
                .write(&chunk[off..off + want])
                .await
                .map_err(BulkError::Io)?;
            at += n;
        }
        sock.close();
        sock.flush().await.map_err(BulkError::Io)
    };
    with_timeout(LIMIT, transfer)
        .await
        .map_err(|_| BulkError::Timeout)??;
    Ok(start.elapsed())
}
