//! A customer on the kefu SDK: opens a consultation, says something, prints the agent's
//! answers as they come (and when its own messages are stored and read), then closes.
//!
//! ```text
//! kefu user add carol --password carol-pass --data ./kefu-data
//! cargo run -p kefu-host --example customer -- tcp://127.0.0.1:6061 carol carol-pass "my order is late"
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use kefu_host::client::{Client, ClientConfig, ClientError, TopicEvent};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password, text] = args.as_slice() else {
        eprintln!("usage: customer URL USER PASSWORD TEXT");
        std::process::exit(2);
    };
    let client = Client::connect(ClientConfig::password(url.as_str(), user, password)).await?;
    let topic = client.open_consultation("").await?;
    println!("consultation {topic}");
    let mut sub = client.subscribe(&topic)?;
    let mine = client.publish(&topic, text)?;
    println!("me: {text} ({:?})", mine.state);
    let mut answers = 0;
    let talk = async {
        while let Some(ev) = sub.next().await {
            match ev {
                TopicEvent::Added { message, .. } if !message.outgoing => {
                    println!("agent: {}", message.text());
                    answers += 1;
                    if answers == 2 {
                        break;
                    }
                }
                TopicEvent::Changed { id, state, seq } if id == mine.id => {
                    println!("my message: {state:?} (seq {seq:?})");
                }
                TopicEvent::Receipt {
                    read: true, seq, ..
                } => println!("read up to {seq}"),
                _ => {}
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), talk)
        .await
        .is_err()
    {
        println!("no agent answered within a minute");
    }
    client.close_consultation(&topic).await?;
    println!("closed");
    Ok(())
}
