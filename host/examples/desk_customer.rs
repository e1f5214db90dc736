//! A customer at a service desk, driven line by line from stdin — for scripts such as the
//! counter terminal's demo (`firmware/boards/mps2-an386/run-demo.sh`), which type commands into
//! it and read what it prints. It reconnects by itself when the gateway restarts.
//!
//! Commands (stdin, one per line): `open` (open a consultation; the desk assigns an agent),
//! `say TEXT` (send TEXT in it), `quit`. Output (stdout, one event per line):
//! `online`, `offline`, `consultation TOPIC`, `stored #SEQ TEXT` (the gateway has it),
//! `read #SEQ` (the agent's side read up to SEQ), `agent #SEQ TEXT` (an answer), `error ...`.
//!
//! ```text
//! kefu user add carol --password carol-pass --data ./kefu-data
//! cargo run -p kefu-host --example desk_customer -- tcp://127.0.0.1:6061 carol carol-pass
//! ```

use std::collections::HashMap;

use futures_util::StreamExt;
use kefu_host::client::{
    Client, ClientConfig, ClientError, ClientEvent, MessageState, MsgId, Subscription, TopicEvent,
};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password] = args.as_slice() else {
        eprintln!(
            "usage: desk_customer URL USER PASSWORD   (commands on stdin: open, say TEXT, quit)"
        );
        std::process::exit(2);
    };
    let mut cfg = ClientConfig::password(url.as_str(), user, password);
    // A restarted gateway is found again within a second or two.
    cfg.backoff.base = kefu_core::time::Duration::from_millis(200);
    cfg.backoff.cap = kefu_core::time::Duration::from_secs(2);
    let client = Client::connect(cfg).await?;
    let mut events = client.events();
    let mut online = true;
    println!("online");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut talk: Option<Subscription> = None;
    let mut sent: HashMap<MsgId, String> = HashMap::new();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                let (cmd, text) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                match cmd {
                    "open" => match client.open_consultation("").await {
                        Ok(topic) => {
                            println!("consultation {topic}");
                            talk = Some(client.subscribe(&topic)?);
                        }
                        Err(e) => println!("error open: {e}"),
                    },
                    "say" => match &talk {
                        Some(t) => match client.publish(t.topic(), text) {
                            Ok(m) => {
                                sent.insert(m.id, text.to_owned());
                            }
                            Err(e) => println!("error say: {e}"),
                        },
                        None => println!("error say: no consultation open"),
                    },
                    "quit" => break,
                    other => println!("error unknown command {other:?}"),
                }
            }
            Some(ev) = events.next() => {
                let now = match ev {
                    ClientEvent::Connected => true,
                    ClientEvent::Disconnected => false,
                    _ => online,
                };
                if now != online {
                    online = now;
                    println!("{}", if online { "online" } else { "offline" });
                }
            }
            Some(ev) = next_event(&mut talk) => match ev {
                TopicEvent::Added { message, history: false } if !message.outgoing => {
                    println!("agent #{} {}", message.seq().unwrap_or(0), message.text());
                }
                TopicEvent::Changed { id, state: MessageState::Sent, seq: Some(seq) } => {
                    println!("stored #{seq} {}", sent.get(&id).map_or("", String::as_str));
                }
                TopicEvent::Changed { id, state: MessageState::Failed(why), .. } => {
                    println!("error not sent ({why:?}): {}", sent.get(&id).map_or("", String::as_str));
                }
                TopicEvent::Receipt { read: true, seq, .. } => println!("read #{seq}"),
                _ => {}
            },
        }
    }
    client.close();
    Ok(())
}

/// The next event of the open consultation; never ready while none is open.
async fn next_event(talk: &mut Option<Subscription>) -> Option<TopicEvent> {
    match talk {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}
