//! Append throughput of the SQLite store with `SyncMode::Full` on a file in a temporary folder:
//! one appender (every append waits for its own commit), and 100 concurrent appenders on 100
//! topics (group commit shares each disk sync among the appends that queued meanwhile).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kefu_core::id::MsgId;
use kefu_host::model::Head;
use kefu_host::store::sqlite::{SqliteConfig, SqliteStore};
use kefu_host::store::{NewMessage, NewUser, Role, Store, TopicKind, TopicRecord};
use tokio::runtime::Runtime;

/// Unique message ids across every iteration of every bench.
static NEXT: AtomicU64 = AtomicU64::new(1);

fn message(topic: &str) -> NewMessage {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    NewMessage {
        topic: topic.to_owned(),
        msg_id: MsgId::from_bytes(id),
        from: "alice".into(),
        ts: n,
        head: Head::default(),
        content: vec![b'x'; 100],
    }
}

async fn setup(store: &SqliteStore, topics: usize) {
    let user = NewUser {
        id: "alice".into(),
        login: "alice".into(),
        name: "Alice".into(),
        pass_hash: None,
        role: Role::Customer,
    };
    store.add_user(user).await.expect("add user");
    for t in 0..topics {
        let topic = TopicRecord {
            name: format!("t{t}"),
            kind: TopicKind::Group,
            title: String::new(),
            owner: "alice".into(),
            created_ms: 0,
            latest: 0,
            deleted: false,
            consult: None,
        };
        store
            .create_topic(topic, vec!["alice".into()])
            .await
            .expect("create topic");
    }
}

/// Appends `total` messages from `appenders` concurrent tasks, one topic each.
async fn run(store: &SqliteStore, appenders: usize, total: u64) -> Duration {
    let per = total.div_ceil(appenders as u64);
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                let topic = format!("t{a}");
                for _ in 0..per {
                    store.append(message(&topic)).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("appender task");
    }
    start
        .elapsed()
        .mul_f64(total as f64 / (per * appenders as u64) as f64)
}

fn appends(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("store_append_full_sync");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    for appenders in [1usize, 100] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("bench.db"), SqliteConfig::default())
            .expect("open store");
        rt.block_on(setup(&store, appenders));
        group.bench_function(format!("{appenders}_appenders"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let store = store.clone();
                async move { run(&store, appenders, iters).await }
            });
        });
        let stats = store.stats();
        eprintln!(
            "{appenders} appenders: {} appends in {} commits ({:.1} per commit, largest batch {})",
            stats.appends,
            stats.commits,
            stats.appends as f64 / stats.commits.max(1) as f64,
            stats.largest_batch
        );
        rt.block_on(store.close());
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
