//! A customer-service agent on the kefu SDK: goes Online, and answers every consultation it is
//! assigned (a greeting, then an acknowledgement of each customer message, marked read).
//!
//! ```text
//! kefu gateway --data ./kefu-data &
//! kefu user add agent1 --password agent-pass --agent --data ./kefu-data
//! cargo run -p kefu-host --example agent -- tcp://127.0.0.1:6061 agent1 agent-pass
//! ```

use futures_util::StreamExt;
use kefu_host::client::{
    AgentStatus, Client, ClientConfig, ClientError, ClientEvent, PresWhat, TopicEvent,
};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password] = args.as_slice() else {
        eprintln!("usage: agent URL USER PASSWORD   (e.g. tcp://127.0.0.1:6061 agent1 agent-pass)");
        std::process::exit(2);
    };
    let client = Client::connect(ClientConfig::password(url.as_str(), user, password)).await?;
    let mut events = client.events();
    client.set_status(AgentStatus::Online).await?;
    println!("{user} online as {}", client.user());
    while let Some(ev) = events.next().await {
        match ev {
            ClientEvent::Presence {
                src,
                what: PresWhat::Assigned,
                ..
            } => {
                println!("assigned {src}");
                tokio::spawn(serve(client.clone(), src));
            }
            ClientEvent::State(s) => println!("state {s:?}"),
            _ => {}
        }
    }
    Ok(())
}

/// Chats in one consultation until it ends.
async fn serve(client: Client, topic: String) -> Result<(), ClientError> {
    let mut sub = client.subscribe(&topic)?;
    client.publish(&topic, "Hello, how can I help?")?;
    while let Some(ev) = sub.next().await {
        if let TopicEvent::Added {
            message,
            history: false,
        } = ev
            && !message.outgoing
        {
            println!("[{topic}] customer: {}", message.text());
            if let Some(seq) = message.seq() {
                client.mark_read(&topic, seq)?;
            }
            client.publish(&topic, format!("Noted: {}", message.text()))?;
        }
    }
    Ok(())
}
