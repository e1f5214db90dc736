//! The pool benches' steady state, shared with `examples/pool_instructions`: a full pool at
//! capacity 1024 that has already evicted a pool's worth, and the feed of incoming messages
//! that goes on from it.

use kefu_core::id::MsgId;
use kefu_core::pool::{FailReason, MessageState, OrderKey, Pool, TopicKey};

/// The pool capacity every bench uses.
pub const N: usize = 1024;
/// How many topics the messages spread over.
pub const TOPICS: usize = 8;

/// The id of message `n`.
pub fn id(n: u64) -> MsgId {
    // Like a real id: a timestamp up front, random-looking bits behind.
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(1_790_000_000_000 + n).to_be_bytes());
    b[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    MsgId::from_bytes(b)
}

/// Incoming messages: message `n` goes to a pseudo-random one of `topics` topics, at that
/// topic's next seq.
pub struct Feed {
    n: u64,
    topics: usize,
    last_seq: [u64; TOPICS],
}

impl Feed {
    /// A feed over `topics` topics (1 to [`TOPICS`]), from message 0.
    pub fn new(topics: usize) -> Self {
        Feed {
            n: 0,
            topics: topics.clamp(1, TOPICS),
            last_seq: [0; TOPICS],
        }
    }

    /// The next message: its id, topic and key.
    pub fn next(&mut self) -> (MsgId, TopicKey, OrderKey) {
        let n = self.n;
        self.n += 1;
        let t = ((n.wrapping_mul(0xD1B5_4A32_D192_ED03) >> 32) % self.topics as u64) as usize;
        self.last_seq[t] += 1;
        (id(n), t as TopicKey, OrderKey::stored(self.last_seq[t]))
    }
}

/// The benches' pool, boxed (it is too big for a test thread's stack).
pub type SteadyPool<T> = Box<Pool<T, N>>;

/// A full pool in steady state (it has already evicted a pool's worth), and the feed to go on.
pub fn full_pool<T: Clone>(topics: usize, payload: T) -> (SteadyPool<T>, Feed) {
    let mut pool: SteadyPool<T> = Box::default();
    let failed = MessageState::Failed(FailReason::TimedOut);
    for t in 0..topics {
        let key = OrderKey::pending(0, 1);
        pool.insert(
            id(1 << 40 | t as u64),
            t as TopicKey,
            key,
            failed,
            payload.clone(),
        )
        .unwrap();
    }
    let mut feed = Feed::new(topics);
    for _ in 0..2 * N {
        let (id, topic, key) = feed.next();
        pool.insert(id, topic, key, MessageState::Received, payload.clone())
            .unwrap();
    }
    assert_eq!(pool.len(), N);
    (pool, feed)
}
