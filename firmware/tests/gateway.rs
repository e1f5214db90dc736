//! The kiosk app against the real gateway, in-process and without root.
//!
//! Two embassy-net stacks are joined by `embassy-net-driver-channel` (a virtual Ethernet
//! cable): the device stack (10.0.0.2) runs [`kefu_firmware::run`]; the peer stack (10.0.0.1)
//! runs a TCP relay that forwards each connection to the real kefu gateway
//! (`kefu_host::gateway::start`) listening on 127.0.0.1. Customers use the real client SDK.
//! Everything runs on one tokio thread (the channel driver is single-threaded); embassy-time
//! uses its std driver with the generic timer queue.

mod support;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_driver_channel as ch;
use kefu_firmware::{Marks, NoStorage};
use kefu_host::gateway::Running;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MTU: usize = 1514;
const RELAY_PORT: u16 = 7000;

// ----- the network: two stacks on a virtual cable, and a relay to 127.0.0.1 --------------------

fn stack(
    mac: u8,
    ip: Ipv4Address,
) -> (
    Stack<'static>,
    embassy_net::Runner<'static, ch::Device<'static, MTU>>,
    ch::Runner<'static, MTU>,
) {
    let state = Box::leak(Box::new(ch::State::<MTU, 4, 4>::new()));
    let (runner, device) = ch::new(
        state,
        embassy_net_driver::HardwareAddress::Ethernet([2, 0, 0, 0, 0, mac]),
    );
    let cfg = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ip, 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let res = Box::leak(Box::new(StackResources::<4>::new()));
    let (stack, net) = embassy_net::new(device, cfg, res, u64::from(mac) * 31 + 7);
    (stack, net, runner)
}

/// Carries frames from one channel driver's transmit side to the other's receive side.
async fn cable(mut from: ch::TxRunner<'static, MTU>, mut to: ch::RxRunner<'static, MTU>) {
    loop {
        let pkt = from.tx_buf().await;
        let len = pkt.len();
        let mut tmp = [0u8; MTU];
        tmp[..len].copy_from_slice(pkt);
        from.tx_done();
        let buf = to.rx_buf().await;
        buf[..len].copy_from_slice(&tmp[..len]);
        to.rx_done(len);
    }
}

/// Accepts connections on the peer stack and relays each to the gateway's TCP port.
async fn relay(peer: Stack<'static>, gw_port: Rc<Cell<u16>>) {
    loop {
        let rx = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let tx = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let mut sock = TcpSocket::new(peer, rx, tx);
        if sock.accept(RELAY_PORT).await.is_err() {
            continue;
        }
        let port = gw_port.get();
        tokio::task::spawn_local(async move {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let Ok(mut up) = TcpStream::connect(addr).await else {
                sock.abort();
                let _ = sock.flush().await;
                return;
            };
            let (mut ur, mut uw) = up.split();
            let (mut dr, mut dw) = sock.split();
            let down = async {
                let mut b = [0u8; 2048];
                loop {
                    let n = match dr.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if uw.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            };
            let upward = async {
                let mut b = [0u8; 2048];
                loop {
                    let n = match ur.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if embedded_io_async::Write::write_all(&mut dw, &b[..n])
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = down => {}
                _ = upward => {}
            }
            sock.abort();
            let _ = sock.flush().await;
        });
    }
}

/// The gateway, the cable with its two stacks and the relay; the device's token.
struct Rig {
    dir: tempfile::TempDir,
    gw: Option<Running>,
    gw_addr: SocketAddr,
    dev: Stack<'static>,
    dev_link: ch::StateRunner<'static>,
    token: Vec<u8>,
}

impl Rig {
    /// Accounts first (offline: the device and `customers`; with `desk`, a group topic owned
    /// by the first customer, its name returned), then the gateway and the network.
    async fn new(customers: &[&str], desk: bool) -> (Rig, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = add_device(dir.path(), "counter7").await;
        let mut ids = Vec::new();
        for c in customers {
            ids.push(add_customer(dir.path(), c).await);
        }
        let desk = match (desk, ids.first()) {
            (true, Some(owner)) => add_group(dir.path(), owner).await,
            _ => String::new(),
        };
        let gw = start_gateway(dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
        let gw_addr = gw.tcp_addr;
        let gw_port = Rc::new(Cell::new(gw_addr.port()));

        let (dev, mut dev_net, dev_ch) = stack(2, Ipv4Address::new(10, 0, 0, 2));
        let (peer, mut peer_net, peer_ch) = stack(1, Ipv4Address::new(10, 0, 0, 1));
        let (dev_link, dev_rx, dev_tx) = dev_ch.split();
        let (peer_link, peer_rx, peer_tx) = peer_ch.split();
        dev_link.set_link_state(embassy_net_driver::LinkState::Up);
        peer_link.set_link_state(embassy_net_driver::LinkState::Up);
        tokio::task::spawn_local(async move { dev_net.run().await });
        tokio::task::spawn_local(async move { peer_net.run().await });
        tokio::task::spawn_local(cable(dev_tx, peer_rx));
        tokio::task::spawn_local(cable(peer_tx, dev_rx));
        tokio::task::spawn_local(relay(peer, gw_port));
        let rig = Rig {
            dir,
            gw: Some(gw),
            gw_addr,
            dev,
            dev_link,
            token,
        };
        (rig, desk)
    }

    /// A terminal configuration reaching the gateway through the relay.
    fn config(&self, topics: &[&str], seed: u64) -> kefu_firmware::Config<'static> {
        let relay = IpEndpoint::new(Ipv4Address::new(10, 0, 0, 1).into(), RELAY_PORT);
        terminal_config(relay, self.token.clone(), topics, seed)
    }

    /// Stops the gateway (SIGTERM's path: a 503 to every session) and starts it again on the
    /// same address after `down`.
    async fn restart_gateway(&mut self, down: Duration) {
        self.gw.take().expect("running").shutdown().await;
        tokio::time::sleep(down).await;
        self.gw = Some(start_gateway(self.dir.path(), self.gw_addr).await);
    }
}

fn local(f: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(tokio::task::LocalSet::new().run_until(f));
}

fn rx(topic: &str, seq: u64, text: &str, replayed: bool) -> Received {
    (topic.to_owned(), seq, text.to_owned(), replayed)
}

// ----- the tests --------------------------------------------------------------------------------

#[test]
fn a_desk_topic_conversation_survives_a_link_outage_and_a_gateway_restart() {
    local(async {
        let (mut rig, desk) = Rig::new(&["alice"], true).await;
        let alice = customer(rig.gw_addr, "alice").await;
        let mut talk = alice.subscribe(&desk).expect("alice follows the desk");
        let term = boot(rig.dev, rig.config(&[&desk], 42), NoStorage);
        let shown = &term.display;
        until("the terminal subscribes the desk", || {
            shown.count("subscribed grp") >= 1
        })
        .await;
        assert!(shown.count("online as usr") >= 1);

        // A message is shown, acknowledged (alice gets the read receipt), and answered.
        alice.publish(&desk, "hello 1").expect("publish");
        until("hello 1 shown", || shown.received().len() == 1).await;
        assert_eq!(shown.received(), vec![rx(&desk, 1, "hello 1", false)]);
        next(&mut talk, "receipt of hello 1", |e| read_up_to(e, 1)).await;
        term.type_line("reply 1"); // to the conversation in focus: the desk
        next(&mut talk, "reply 1", |e| from_agent(e, "reply 1")).await;
        until("reply 1 stored", || shown.count("sent grp") == 1).await;

        // The link goes down: the terminal drops its connection and waits; a message sent
        // meanwhile is shown once the link is back.
        rig.dev_link
            .set_link_state(embassy_net_driver::LinkState::Down);
        until("link down seen", || shown.count("link down") >= 1).await;
        alice.publish(&desk, "hello 3").expect("publish");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            shown.received().len(),
            1,
            "nothing arrives while the link is down"
        );
        rig.dev_link
            .set_link_state(embassy_net_driver::LinkState::Up);
        until("hello 3 shown", || shown.received().len() == 2).await;

        // The gateway goes away mid-conversation; the agent replies meanwhile; both ends
        // reconnect by themselves.
        let down = async {
            until("the terminal notices", || shown.count("offline") >= 1).await;
            term.type_line("reply 2");
        };
        tokio::join!(rig.restart_gateway(Duration::from_millis(800)), down);
        until("online again", || shown.count("online as usr") >= 2).await;
        until("reply 2 stored", || shown.count("sent grp") == 2).await;
        next(&mut talk, "reply 2", |e| from_agent(e, "reply 2")).await;
        alice.publish(&desk, "hello 2").expect("publish");
        until("hello 2 shown", || shown.received().len() == 3).await;

        // Nothing lost, nothing doubled, in order, on both sides.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            shown.received(),
            vec![
                rx(&desk, 1, "hello 1", false),
                rx(&desk, 3, "hello 3", false),
                rx(&desk, 5, "hello 2", false),
            ]
        );
        until("alice holds all five", || {
            stored_texts(&alice, &desk).len() == 5
        })
        .await;
        assert_eq!(
            stored_texts(&alice, &desk),
            ["hello 1", "reply 1", "hello 3", "reply 2", "hello 2"]
        );
    });
}

#[test]
fn a_power_cycle_resumes_from_batched_marks_and_replays_only_the_unsaved_tail() {
    local(async {
        let (rig, desk) = Rig::new(&["alice"], true).await;
        let alice = customer(rig.gw_addr, "alice").await;
        let mut talk = alice.subscribe(&desk).expect("subscribe");
        let storage = MemStorage::default();
        let mut cfg = rig.config(&[&desk], 7);
        cfg.save_batch = 4;
        cfg.save_delay = embassy_time::Duration::from_secs(600);

        let first = boot(rig.dev, cfg, storage.clone());
        until("subscribed", || first.display.count("subscribed") >= 1).await;
        for i in 1..=6u64 {
            alice.publish(&desk, format!("m{i}")).expect("publish");
            until("shown", || first.display.received().len() == i as usize).await;
        }
        next(&mut talk, "the terminal read all six", |e| read_up_to(e, 6)).await;
        assert_eq!(
            storage.writes(),
            1,
            "one write for six messages (batches of four)"
        );
        assert_eq!(
            storage.saved().expect("saved").get(&desk),
            Some(Marks { shown: 4, read: 4 }),
            "the stored copy is a batch behind"
        );

        // Power off (no shutdown: nothing more is saved); a message arrives meanwhile; power
        // on with the same storage.
        first.task.abort();
        let _ = first.task.await;
        alice.publish(&desk, "m7").expect("publish");
        let mut cfg = rig.config(&[&desk], 8);
        cfg.save_delay = embassy_time::Duration::from_secs(1);
        let second = boot(rig.dev, cfg, storage.clone());
        until("m7 shown after the power cycle", || {
            second.display.received().len() == 3
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            second.display.received(),
            vec![
                rx(&desk, 5, "m5", true),
                rx(&desk, 6, "m6", true),
                rx(&desk, 7, "m7", false),
            ],
            "only the unsaved tail again (flagged replayed), then the new message, each once"
        );
        // A lone message waits at most `save_delay` for its write, with nothing else happening.
        until("saved a second after the last message", || {
            storage.saved().and_then(|t| t.get(&desk)) == Some(Marks { shown: 7, read: 7 })
        })
        .await;
    });
}

#[test]
fn the_terminal_serves_consultations_goes_busy_when_full_and_renews_its_engine() {
    local(async {
        let (rig, _) = Rig::new(&["carol", "dave", "erin", "frank"], false).await;
        let term = boot(rig.dev, rig.config(&[], 3), NoStorage);
        let shown = &term.display;
        until("the terminal goes online at the desk", || {
            shown.count("agent online") >= 1
        })
        .await;

        // Carol opens a consultation: the only online agent is the terminal.
        let carol = customer(rig.gw_addr, "carol").await;
        let c1 = carol.open_consultation("").await.expect("open");
        let mut carol_talk = carol.subscribe(&c1).expect("subscribe");
        until("c1 assigned", || {
            shown.count(&format!("assigned {c1}")) == 1
        })
        .await;
        carol.publish(&c1, "my order is late").expect("publish");
        until("carol's message shown", || shown.received().len() == 1).await;
        next(&mut carol_talk, "the terminal read it", |e| {
            read_up_to(e, 1)
        })
        .await;
        term.type_line("we are on it");
        next(&mut carol_talk, "the answer", |e| {
            from_agent(e, "we are on it")
        })
        .await;

        // Two more fill the terminal: it tells the desk Busy, and the fourth customer waits.
        let dave = customer(rig.gw_addr, "dave").await;
        let c2 = dave.open_consultation("").await.expect("open");
        let erin = customer(rig.gw_addr, "erin").await;
        let c3 = erin.open_consultation("").await.expect("open");
        until("c2 and c3 assigned", || shown.count("assigned cns") == 3).await;
        until("busy", || shown.count("agent busy") == 1).await;
        let frank = customer(rig.gw_addr, "frank").await;
        let c4 = frank.open_consultation("").await.expect("open");
        let mut frank_talk = frank.subscribe(&c4).expect("subscribe");
        frank.publish(&c4, "anyone there?").expect("publish");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(shown.count(&format!("assigned {c4}")), 0, "frank waits");

        // The agent closes dave's consultation: room again, the desk hands over frank, whose
        // consultation needs a fresh engine (ended topics keep their engine slots).
        term.type_line(&format!("/close {c2}"));
        until("c2 ended", || shown.count(&format!("ended {c2}")) == 1).await;
        until("c4 assigned", || {
            shown.count(&format!("assigned {c4}")) == 1
        })
        .await;
        until("frank's message shown", || {
            shown.texts().contains(&"anyone there?".to_owned())
        })
        .await;
        assert_eq!(shown.logs("fresh engine"), 1, "the engine was renewed once");
        term.type_line("hello frank");
        next(&mut frank_talk, "frank's answer", |e| {
            from_agent(e, "hello frank")
        })
        .await;

        // Carol's consultation carried over the renewal from its marks: her next message is
        // shown once and nothing before it again.
        carol.publish(&c1, "thanks").expect("publish");
        until("carol's second message", || {
            shown.texts().contains(&"thanks".to_owned())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = shown.received();
        seen.sort();
        assert_eq!(
            seen,
            {
                let mut want = vec![
                    rx(&c1, 1, "my order is late", false),
                    rx(&c1, 3, "thanks", false),
                    rx(&c4, 1, "anyone there?", false),
                ];
                want.sort();
                want
            },
            "each customer message shown once"
        );
        assert!(
            shown.count(&format!("ended {c3}")) == 0,
            "erin is still served"
        );
        drop((erin, dave));
    });
}
