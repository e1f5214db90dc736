//! The Tinode-compatible JSON dialect: maps Tinode's JSON packets (WebSocket text messages) onto
//! the gateway's owned [`Req`](super::wire::Req) / [`Out`] set and back, so that the real Tinode JS client
//! (`tinode-sdk`) can talk to the gateway. The mapping is specified in `docs/PROTOCOL.md` §9.
//!
//! One [`JsonCodec`] lives per connection. It owns the per-connection state the dialect needs:
//!
//! - **Request ids.** Tinode ids are strings. Every incoming packet that expects an answer gets a
//!   fresh `u32` (never 0), remembered with the original string (or none) and the number of
//!   `ctrl`s that will answer it. Every `meta` and `ctrl` rendered for that `u32` carries the
//!   original string; the mapping is forgotten when the last expected `ctrl` is rendered (or at
//!   once when a `sub` carrying queries fails: the session answers nothing more for it). At most
//!   [`MAX_PENDING`] requests may be outstanding; beyond that the request is refused with 429.
//! - **Subscription lists.** Tinode sends one `meta` with an array of subs; the session sends one
//!   [`Out::Meta`] per sub. The codec buffers them per request and renders the array just before
//!   the `ctrl` that ends the list (in chunks of [`SUB_CHUNK`] if the list is long).
//! - **Message ids** for `pub`s that do not carry one in `head.kid` ([`ID_KEY`]).
//!
//! Decoding never panics: bad input becomes a [`JsonError`] whose [`JsonError::reply`] is the
//! coded `ctrl` to send back.

mod decode;
mod encode;
mod packets;

use std::collections::HashMap;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use kefu_core::rng::SplitMix64;

use super::wire::{Code, Out, Params, ReqId, SubInfo};

/// The default longest text message accepted, in bytes.
pub const DEFAULT_MAX_LEN: usize = 256 * 1024;

/// The most requests that may await their `ctrl` at once on one connection.
pub const MAX_PENDING: usize = 1024;

/// The key in `pub.head` / `data.head` holding the kefu message id (32 lowercase hex chars).
pub const ID_KEY: &str = "kid";

/// The key in `pub.head` / `data.head` saying the content string is base64 (value `"base64"`).
/// The gateway sets it on content that is not UTF-8; clients may set it to send bytes.
pub const ENC_KEY: &str = "kefu-enc";

/// Longest Tinode request id accepted, in bytes (longer ids are refused as malformed).
pub const MAX_ID_LEN: usize = 64;

/// History page size when a `get data` does not say (Tinode's `DEFAULT_MESSAGES_PAGE`).
pub const DEFAULT_LIMIT: u32 = 24;

/// Subs rendered per `meta` packet at most; longer lists are split.
pub const SUB_CHUNK: usize = 256;

/// The Tinode protocol version the gateway claims in the `hi` answer (`params.ver`).
pub const TINODE_VERSION: &str = "0.25";

/// The code answered to Tinode requests kefu does not implement (Tinode's own 501).
pub const NOT_IMPLEMENTED: Code = Code(501);

/// The MIME type of Drafty content (Tinode's rich text): the content is a JSON object.
pub const DRAFTY_MIME: &str = "text/x-drafty";

/// Standard base64 with padding when encoding; padding optional when decoding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How long a client refused with 429 for too many outstanding requests should wait, ms.
const PENDING_RETRY_MS: u32 = 1000;

/// Error replies may register ids beyond [`MAX_PENDING`] up to this many (they are rendered
/// immediately); past it they are answered without an id.
const HARD_PENDING: usize = MAX_PENDING + 64;

/// Why a text message could not be turned into requests. Each has a `ctrl` to answer with
/// ([`JsonError::reply`]); the session sends it and keeps going.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The text is longer than the codec's limit (413).
    #[error("message too large: {len} bytes, at most {max}")]
    TooLarge {
        /// The request id to answer (0 if none could be read).
        id: ReqId,
        /// Length of the text, bytes.
        len: usize,
        /// The limit, bytes.
        max: usize,
    },
    /// The text is not valid JSON (400).
    #[error("malformed JSON: {detail}")]
    Syntax {
        /// What the parser said.
        detail: String,
    },
    /// The JSON is not an object holding exactly one known packet (plus Tinode's optional
    /// `extra`) (400).
    #[error("unknown packet: {detail}")]
    UnknownPacket {
        /// The request id to answer (0 if none could be read).
        id: ReqId,
        /// What was wrong.
        detail: String,
    },
    /// A field of a known packet is missing, has the wrong type or an invalid value (400).
    #[error("malformed {packet}: {detail}")]
    BadField {
        /// The request id to answer (0 if none could be read).
        id: ReqId,
        /// The packet's name.
        packet: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A valid Tinode request for something kefu does not do, e.g. `acc` updates or `note call`
    /// (501, Tinode's "not implemented").
    #[error("not implemented: {packet} {what}")]
    Unsupported {
        /// The request id to answer (0 if none could be read).
        id: ReqId,
        /// The packet's name.
        packet: &'static str,
        /// What was asked for.
        what: String,
    },
    /// [`MAX_PENDING`] requests already await their answer on this connection (429).
    #[error("too many requests in flight")]
    TooManyPending {
        /// The request id to answer (0 if none could be kept).
        id: ReqId,
    },
    /// A `get` asked only for things kefu keeps none of (`tags`, `cred`, `del`, ...). Not a
    /// failure: the codec answers it itself with Tinode's 204 "no content".
    #[error("no content")]
    NoContent {
        /// The request id to answer.
        id: ReqId,
        /// The topic queried.
        topic: String,
    },
}

impl JsonError {
    /// The ctrl to answer with: id (0 if none readable), code (400 malformed JSON / unknown
    /// packet / bad field, 413 oversized, 429 too many outstanding requests, 501 not
    /// implemented, 204 for a `get` of nothing kefu keeps), text. The session sends it (through
    /// [`JsonCodec::encode`], which writes the original string id back) and keeps going.
    pub fn reply(&self) -> Out {
        let (id, code, topic, params) = match self {
            JsonError::TooLarge { id, .. } => (*id, Code::TOO_LARGE, "", Params::None),
            JsonError::Syntax { .. } => (0, Code::MALFORMED, "", Params::None),
            JsonError::UnknownPacket { id, .. } | JsonError::BadField { id, .. } => {
                (*id, Code::MALFORMED, "", Params::None)
            }
            JsonError::Unsupported { id, .. } => (*id, NOT_IMPLEMENTED, "", Params::None),
            JsonError::TooManyPending { id } => (
                *id,
                Code::RATE_LIMITED,
                "",
                Params::RetryAfter {
                    ms: PENDING_RETRY_MS,
                },
            ),
            JsonError::NoContent { id, topic } => {
                (*id, Code::NO_CONTENT, topic.as_str(), Params::None)
            }
        };
        Out::Ctrl {
            id,
            code,
            text: self.to_string(),
            topic: topic.to_owned(),
            params,
        }
    }

    /// The request id the reply answers (0 for none).
    pub fn id(&self) -> ReqId {
        match self {
            JsonError::Syntax { .. } => 0,
            JsonError::TooLarge { id, .. }
            | JsonError::UnknownPacket { id, .. }
            | JsonError::BadField { id, .. }
            | JsonError::Unsupported { id, .. }
            | JsonError::TooManyPending { id }
            | JsonError::NoContent { id, .. } => *id,
        }
    }
}

/// One request awaiting its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    /// The client's id string; `None` if the packet had none (its answers carry no `id`).
    orig: Option<String>,
    /// `ctrl`s still expected.
    ctrls: u32,
    /// A `sub` with queries whose own `ctrl` has not come yet: if it fails, the queries are not
    /// answered either and the mapping ends there.
    sub_first: bool,
}

/// Per-connection state of the JSON dialect (maps Tinode's string request ids to the
/// session's u32 ids and back).
///
/// Inputs: [`JsonCodec::decode`] for each text message received. Outputs: [`JsonCodec::encode`]
/// for each packet the session sends; its strings are sent in order as text messages.
#[derive(Debug)]
pub struct JsonCodec {
    max_len: usize,
    next_id: ReqId,
    pending: HashMap<ReqId, Pending>,
    /// Sub items buffered per request until its `ctrl`: (topic, items).
    subs: HashMap<ReqId, (String, Vec<SubInfo>)>,
    /// Total items in `subs`.
    buffered: usize,
    rng: SplitMix64,
}

impl Default for JsonCodec {
    fn default() -> Self {
        JsonCodec::new()
    }
}

impl JsonCodec {
    /// A codec accepting text messages up to [`DEFAULT_MAX_LEN`] bytes.
    pub fn new() -> JsonCodec {
        JsonCodec::with_max_len(DEFAULT_MAX_LEN)
    }

    /// A codec accepting text messages up to `max_len` bytes (longer ones are answered 413).
    pub fn with_max_len(max_len: usize) -> JsonCodec {
        JsonCodec::with_seed(max_len, rand::random())
    }

    /// Like [`JsonCodec::with_max_len`] with a fixed seed for generated message ids, so that a
    /// run can be replayed.
    pub fn with_seed(max_len: usize, seed: u64) -> JsonCodec {
        JsonCodec {
            max_len,
            next_id: 1,
            pending: HashMap::new(),
            subs: HashMap::new(),
            buffered: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The longest text message accepted, bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Requests awaiting their final `ctrl`.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The raw answer to Tinode's network probe: the SDK sends the text `1` and expects `0`.
    /// `Some("0")` if `text` is a probe (for which [`JsonCodec::decode`] yields no request).
    pub fn probe_reply(text: &str) -> Option<&'static str> {
        (text.trim() == "1").then_some("0")
    }

    /// A fresh request id: never 0, never one still pending.
    fn fresh_id(&mut self) -> ReqId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if id != 0 && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers a request expecting `ctrls` answers; `None` if too many are pending.
    fn register(&mut self, orig: Option<String>, ctrls: u32, sub_first: bool) -> Option<ReqId> {
        if self.pending.len() >= MAX_PENDING {
            return None;
        }
        let id = self.fresh_id();
        self.pending.insert(
            id,
            Pending {
                orig,
                ctrls: ctrls.max(1),
                sub_first,
            },
        );
        Some(id)
    }

    /// Registers the id for an error reply (one `ctrl`); 0 if there is no id to give back or
    /// even the reserve for error replies is used up.
    fn reply_id(&mut self, orig: Option<String>) -> ReqId {
        if orig.is_none() || self.pending.len() >= HARD_PENDING {
            return 0;
        }
        let id = self.fresh_id();
        self.pending.insert(
            id,
            Pending {
                orig,
                ctrls: 1,
                sub_first: false,
            },
        );
        id
    }

    /// The client's id string for `id`, if it had one.
    fn orig(&self, id: ReqId) -> Option<&str> {
        self.pending.get(&id).and_then(|p| p.orig.as_deref())
    }

    /// Counts one `ctrl` for `id`; forgets the mapping after the last one. Returns the client's
    /// id string.
    fn finish(&mut self, id: ReqId, code: Code) -> Option<String> {
        let p = self.pending.get_mut(&id)?;
        let orig = p.orig.clone();
        let failed_sub = p.sub_first && !code.is_success() && code != Code::NOT_MODIFIED;
        p.sub_first = false;
        p.ctrls = p.ctrls.saturating_sub(1);
        if p.ctrls == 0 || failed_sub {
            self.pending.remove(&id);
        }
        orig
    }
}
