//! The one line `kefu gateway` prints on stdout once it listens (its ports may have been chosen
//! by the OS): written by the command, read back by scripts, tests and `kefu bench`.

use std::fmt;
use std::net::SocketAddr;

const PREFIX: &str = "kefu gateway listening: ";

/// Where a started gateway listens, as its stdout line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The HTTP address: WebSocket, `/metrics`, `/healthz`.
    pub http: SocketAddr,
    /// The framed binary TCP address.
    pub tcp: SocketAddr,
    /// Whether the HTTP address serves TLS.
    pub tls: bool,
}

impl Listening {
    /// Reads the line back; `None` for any other line or an address that does not parse.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix(PREFIX)?;
        let (mut http, mut tcp, mut tls) = (None, None, false);
        for part in rest.split_whitespace() {
            if let Some(a) = part.strip_prefix("http=") {
                http = a.parse().ok();
            } else if let Some(a) = part.strip_prefix("tcp=") {
                tcp = a.parse().ok();
            } else if part == "tls=on" {
                tls = true;
            }
        }
        Some(Listening {
            http: http?,
            tcp: tcp?,
            tls,
        })
    }
}

impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}http={} tcp={}", self.http, self.tcp)?;
        if self.tls {
            f.write_str(" tls=on")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_back_what_was_written_and_garbage_does_not_parse() {
        for tls in [false, true] {
            let l = Listening {
                http: "127.0.0.1:1".parse().unwrap(),
                tcp: "[::1]:2".parse().unwrap(),
                tls,
            };
            assert_eq!(Listening::parse(&format!("{l}\n")), Some(l));
        }
        assert_eq!(
            Listening::parse("kefu gateway listening: http=127.0.0.1:1 tcp=127.0.0.1:2\n"),
            Some(Listening {
                http: "127.0.0.1:1".parse().unwrap(),
                tcp: "127.0.0.1:2".parse().unwrap(),
                tls: false,
            })
        );
        assert_eq!(Listening::parse("listening http=1 tcp=2"), None);
        assert_eq!(
            Listening::parse("kefu gateway listening: http=x tcp=127.0.0.1:2"),
            None
        );
        assert_eq!(
            Listening::parse("kefu gateway listening: http=127.0.0.1:1"),
            None
        );
    }
}
