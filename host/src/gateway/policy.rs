//! Content policy for `pub`: the size limit (413), the sensitive-word list (422), and the
//! per-session rate limiter (429).
//!
//! [`Policy`] is built once from a [`PolicyConfig`] and shared read-only by every session; the
//! [`RateLimiter`] is per session and mutable.

use std::path::Path;
use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use kefu_core::proto::Code;

/// The MIME type of Tinode's rich text: a JSON object whose `txt` holds the plain text.
pub const DRAFTY_MIME: &str = "text/x-drafty";

/// Default for [`PolicyConfig::max_content`]: 64 KiB.
pub const DEFAULT_MAX_CONTENT: usize = 64 * 1024;

/// What the content policy enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Largest `pub` content accepted, bytes; larger content is refused with 413.
    pub max_content: usize,
    /// Sensitive words; content containing one (ASCII case-insensitive) is refused with 422.
    /// Empty strings are ignored.
    pub words: Vec<String>,
}

impl Default for PolicyConfig {
    /// 64 KiB, no words.
    fn default() -> Self {
        PolicyConfig {
            max_content: DEFAULT_MAX_CONTENT,
            words: Vec::new(),
        }
    }
}

/// Why content was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The content is longer than the configured maximum.
    #[error("content too large: {len} bytes, max {max}")]
    TooLarge {
        /// The content's length, bytes.
        len: usize,
        /// The configured maximum, bytes.
        max: usize,
    },
    /// The content contains a sensitive word (deliberately not named).
    #[error("content refused by policy")]
    Word,
}

impl Refusal {
    /// The `ctrl` code to answer with: 413 or 422.
    pub fn code(&self) -> Code {
        match self {
            Refusal::TooLarge { .. } => Code::TOO_LARGE,
            Refusal::Word => Code::POLICY,
        }
    }

    /// The `ctrl` text; never echoes the matched word back to the sender.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

/// Why a [`Policy`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The word list is too large for the matching automaton (beyond its state-id range).
    #[error("sensitive-word list too large: {0}")]
    Words(#[from] aho_corasick::BuildError),
}

/// Shared, immutable content policy (built once, used by every session).
#[derive(Clone, Debug)]
pub struct Policy {
    max_content: usize,
    /// One automaton for the whole word list; `None` when the list is empty.
    words: Option<AhoCorasick>,
}

impl Policy {
    /// Builds the policy.
    ///
    /// # Panics
    /// Only if the word list exceeds what the automaton can address (billions of states); use
    /// [`Policy::try_new`] to get that as an error.
    pub fn new(cfg: PolicyConfig) -> Policy {
        Self::try_new(cfg).expect("sensitive-word list exceeds the automaton's capacity")
    }

    /// Builds the policy, or says why the word list cannot be compiled.
    pub fn try_new(cfg: PolicyConfig) -> Result<Policy, PolicyError> {
        let words: Vec<&str> = cfg
            .words
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
            .collect();
        let words = if words.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(words)?,
            )
        };
        Ok(Policy {
            max_content: cfg.max_content,
            words,
        })
    }

    /// Reads a word list: one word per line, UTF-8, surrounding whitespace trimmed, blank lines
    /// and lines starting with '#' ignored.
    pub fn load_words(path: &Path) -> std::io::Result<Vec<String>> {
        let text = std::fs::read_to_string(path)?;
        Ok(parse_words(&text))
    }

    /// Largest `pub` content accepted, bytes.
    pub fn max_content(&self) -> usize {
        self.max_content
    }

    /// Ok, or why the content is refused: `Refusal::TooLarge { len, max }` (→ 413) or
    /// `Refusal::Word` (→ 422; the text must not echo the word back to the sender).
    ///
    /// Words are searched in the content as UTF-8 text (lossy for invalid bytes), and also in
    /// the decoded strings when the content is JSON (Drafty's `txt` and entity texts, or a JSON
    /// string), so escapes like `\u654f` cannot hide a word. Content whose `head_mime` is binary
    /// media (`image/`, `audio/`, `video/`, `application/octet-stream`) is only size-checked:
    /// random bytes would otherwise trip short words.
    pub fn check(&self, head_mime: &str, content: &[u8]) -> Result<(), Refusal> {
        if content.len() > self.max_content {
            return Err(Refusal::TooLarge {
                len: content.len(),
                max: self.max_content,
            });
        }
        let Some(words) = &self.words else {
            return Ok(());
        };
        if is_binary_mime(head_mime) {
            return Ok(());
        }
        let text = String::from_utf8_lossy(content);
        if words.is_match(text.as_ref()) {
            return Err(Refusal::Word);
        }
        let json = looks_like_json(content)
            .then(|| serde_json::from_slice::<serde_json::Value>(content).ok())
            .flatten();
        let mut found = false;
        if let Some(value) = json {
            visit_texts(&value, &mut |s| found = found || words.is_match(s));
        }
        if found { Err(Refusal::Word) } else { Ok(()) }
    }
}

fn parse_words(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn is_binary_mime(mime: &str) -> bool {
    let mime = mime.trim().to_ascii_lowercase();
    ["image/", "audio/", "video/", "application/octet-stream"]
        .iter()
        .any(|p| mime.starts_with(p))
}

fn looks_like_json(content: &[u8]) -> bool {
    matches!(
        content.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'"')
    )
}

/// Calls `f` on the human-readable strings of a JSON content: a bare string, or Drafty's `txt`
/// and the texts of its entities (link URLs, mention and hashtag values, file names), skipping
/// inline binary data (`val` of images and attachments) which is base64.
fn visit_texts(value: &serde_json::Value, f: &mut impl FnMut(&str)) {
    use serde_json::Value;
    match value {
        Value::String(s) => f(s),
        Value::Object(doc) => {
            if let Some(Value::String(txt)) = doc.get("txt") {
                f(txt);
            }
            let Some(Value::Array(ents)) = doc.get("ent") else {
                return;
            };
            for ent in ents {
                let binary = matches!(
                    ent.get("tp").and_then(Value::as_str),
                    Some("IM" | "EX" | "AU" | "VD")
                );
                let Some(Value::Object(data)) = ent.get("data") else {
                    continue;
                };
                for (k, v) in data {
                    let skip = binary && matches!(k.as_str(), "val" | "preview" | "ref");
                    if let (false, Value::String(s)) = (skip, v) {
                        f(s);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A per-session token bucket: `rate` requests per second on average, bursts of `burst`.
///
/// Implemented as GCRA (the generic cell rate algorithm): one "theoretical arrival time"
/// instead of a token count, so no floating point and no refill timer.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    /// Time per request at the average rate; zero = unlimited.
    interval: Duration,
    /// How far ahead of `now` the arrival time may run: `interval * (burst - 1)`.
    tolerance: Duration,
    /// When the bucket would be full again at the average rate; `None` before the first check.
    tat: Option<Instant>,
}

impl RateLimiter {
    /// A limiter allowing `rate_per_sec` requests per second on average and bursts of `burst`
    /// (a burst of 0 counts as 1). `rate_per_sec` 0 = unlimited.
    pub fn new(rate_per_sec: u32, burst: u32) -> RateLimiter {
        let interval = match rate_per_sec {
            0 => Duration::ZERO,
            rate => Duration::from_secs(1) / rate,
        };
        RateLimiter {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            tat: None,
        }
    }

    /// Takes one token at `now` (std::time::Instant); Err(retry_after_ms) when empty. The
    /// retry-after is rounded up and at least 1 ms, so retrying after it succeeds.
    pub fn check(&mut self, now: Instant) -> Result<(), u32> {
        if self.interval.is_zero() {
            return Ok(());
        }
        let tat = self.tat.map_or(now, |tat| tat.max(now));
        let ahead = tat.duration_since(now);
        if ahead > self.tolerance {
            return Err(ceil_ms(ahead - self.tolerance));
        }
        // Overflow would need an Instant centuries ahead; then stay at the limit.
        self.tat = Some(tat.checked_add(self.interval).unwrap_or(tat));
        Ok(())
    }
}

fn ceil_ms(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000).max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Policy {
        Policy::new(PolicyConfig {
            words: list.iter().map(|w| w.to_string()).collect(),
            ..PolicyConfig::default()
        })
    }

    #[test]
    fn the_default_limit_is_64_kib_with_no_words() {
        let cfg = PolicyConfig::default();
        assert_eq!(cfg.max_content, 65536);
        assert!(cfg.words.is_empty());
        assert_eq!(Policy::new(cfg).max_content(), 65536);
    }

    #[test]
    fn content_of_exactly_the_maximum_passes_and_one_more_byte_is_413() {
        let p = Policy::new(PolicyConfig {
            max_content: 10,
            words: vec![],
        });
        assert_eq!(p.check("", &[b'a'; 10]), Ok(()));
        let r = p.check("", &[b'a'; 11]).unwrap_err();
        assert_eq!(r, Refusal::TooLarge { len: 11, max: 10 });
        assert_eq!(r.code(), Code::TOO_LARGE);
        assert!(
            r.text().contains("11") && r.text().contains("10"),
            "{}",
            r.text()
        );
        assert_eq!(p.check("", b""), Ok(()));
    }

    #[test]
    fn the_size_limit_applies_to_binary_media_too() {
        let p = Policy::new(PolicyConfig {
            max_content: 4,
            words: vec!["x".into()],
        });
        assert!(matches!(
            p.check("image/png", &[0; 5]),
            Err(Refusal::TooLarge { .. })
        ));
    }

    #[test]
    fn a_word_matches_in_any_ascii_case_and_the_refusal_does_not_name_it() {
        let p = words(&["Spam"]);
        for text in ["spam", "SPAM", "buy sPaM now", "antispamming"] {
            let r = p.check("", text.as_bytes()).unwrap_err();
            assert_eq!(r, Refusal::Word, "{text}");
            assert_eq!(r.code(), Code::POLICY);
            assert!(!r.text().to_lowercase().contains("spam"), "{}", r.text());
        }
        assert_eq!(p.check("", b"spa m"), Ok(()));
    }

    #[test]
    fn chinese_words_match_inside_longer_text() {
        let p = words(&["敏感词", "违禁"]);
        assert_eq!(
            p.check("", "这里有一个敏感词在中间".as_bytes()),
            Err(Refusal::Word)
        );
        assert_eq!(p.check("", "违禁".as_bytes()), Err(Refusal::Word));
        assert_eq!(p.check("", "敏感 词不算".as_bytes()), Ok(()));
        assert_eq!(p.check("", "普通的消息".as_bytes()), Ok(()));
    }

    #[test]
    fn an_empty_word_list_refuses_nothing() {
        let p = words(&[]);
        assert_eq!(p.check("", "敏感词 spam".as_bytes()), Ok(()));
        // Blank entries are not words (an empty pattern would match everything).
        let p = words(&["", "  "]);
        assert_eq!(p.check("", b"anything"), Ok(()));
    }

    #[test]
    fn words_are_found_next_to_invalid_utf8() {
        let p = words(&["bad"]);
        assert_eq!(p.check("", b"\xff\xfeBAD\xc3"), Err(Refusal::Word));
    }

    #[test]
    fn words_are_found_in_drafty_text_even_when_json_escaped() {
        let p = words(&["敏感词", "evil"]);
        // "敏感词" written as JSON escapes: invisible to a raw byte search.
        let escaped =
            br#"{"txt":"hello \u654f\u611f\u8bcd world","fmt":[{"at":0,"len":5,"tp":"ST"}]}"#;
        assert!(!String::from_utf8_lossy(escaped).contains("敏感词"));
        assert_eq!(p.check(DRAFTY_MIME, escaped), Err(Refusal::Word));
        // A link entity's URL counts as text.
        let link =
            br#"{"txt":"see this","ent":[{"tp":"LN","data":{"url":"https://\u0065vil.example"}}]}"#;
        assert_eq!(p.check(DRAFTY_MIME, link), Err(Refusal::Word));
        // A plain JSON string content is decoded too.
        assert_eq!(p.check("", br#""\u0045VIL""#), Err(Refusal::Word));
        assert_eq!(
            p.check(DRAFTY_MIME, br#"{"txt":"all fine","fmt":[]}"#),
            Ok(())
        );
    }

    #[test]
    fn base64_image_data_in_drafty_is_not_scanned_after_decoding() {
        let p = words(&["evil"]);
        // The word only appears once the escape is decoded, inside image data.
        let img =
            br#"{"txt":" ","ent":[{"tp":"IM","data":{"mime":"image/png","val":"\u0065vil"}}]}"#;
        assert_eq!(p.check(DRAFTY_MIME, img), Ok(()));
    }

    #[test]
    fn malformed_json_falls_back_to_the_raw_text() {
        let p = words(&["evil"]);
        assert_eq!(p.check(DRAFTY_MIME, br#"{"txt":"\u0065vil"#), Ok(()));
        assert_eq!(p.check(DRAFTY_MIME, br#"{"txt":"evil"#), Err(Refusal::Word));
    }

    #[test]
    fn binary_media_is_not_word_scanned() {
        let p = words(&["evil"]);
        assert_eq!(p.check("image/png", b"..evil.."), Ok(()));
        assert_eq!(p.check("Audio/ogg", b"evil"), Ok(()));
        assert_eq!(p.check("text/plain", b"evil"), Err(Refusal::Word));
        assert_eq!(p.check("kefu/card", b"evil"), Err(Refusal::Word));
    }

    #[test]
    fn a_word_file_skips_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("words.txt");
        std::fs::write(&path, "# list\n\n敏感词\r\n  spam  \n#not\n\t\nfoo bar\n").unwrap();
        let list = Policy::load_words(&path).unwrap();
        assert_eq!(list, vec!["敏感词", "spam", "foo bar"]);
        assert!(Policy::load_words(&dir.path().join("missing")).is_err());
        std::fs::write(&path, b"\xff\n").unwrap();
        assert!(Policy::load_words(&path).is_err(), "not UTF-8");
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits_one_interval() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 5);
        for i in 0..5 {
            assert_eq!(rl.check(t0), Ok(()), "request {i}");
        }
        assert_eq!(rl.check(t0), Err(100));
        // Still refused just before the token comes back, with the remaining time.
        assert_eq!(rl.check(t0 + Duration::from_millis(60)), Err(40));
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Ok(()));
        assert!(rl.check(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn the_bucket_refills_over_time_up_to_the_burst_only() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2, 3);
        for _ in 0..3 {
            rl.check(t0).unwrap();
        }
        assert!(rl.check(t0).is_err());
        // A long idle period refills only `burst` tokens.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(rl.check(later), Ok(()));
        }
        assert_eq!(rl.check(later), Err(500));
    }

    #[test]
    fn a_steady_rate_at_the_limit_is_never_refused() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(4, 1);
        for i in 0..100 {
            assert_eq!(rl.check(t0 + Duration::from_millis(250 * i)), Ok(()), "{i}");
        }
        assert!(rl.check(t0 + Duration::from_millis(250 * 99 + 1)).is_err());
    }

    #[test]
    fn retrying_after_the_advised_delay_succeeds() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(3, 2);
        rl.check(t0).unwrap();
        rl.check(t0).unwrap();
        let wait = rl.check(t0).unwrap_err();
        assert_eq!(wait, 334, "1/3 s rounded up");
        let at = t0 + Duration::from_millis(u64::from(wait));
        assert_eq!(rl.check(at), Ok(()));
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(0, 0);
        for _ in 0..10_000 {
            assert_eq!(rl.check(t0), Ok(()));
        }
    }

    #[test]
    fn burst_zero_behaves_like_one_and_huge_values_do_not_overflow() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1, 0);
        assert_eq!(rl.check(t0), Ok(()));
        assert_eq!(rl.check(t0), Err(1000));
        let mut rl = RateLimiter::new(u32::MAX, u32::MAX);
        for _ in 0..1000 {
            assert_eq!(rl.check(t0), Ok(()));
        }
        let mut rl = RateLimiter::new(1, u32::MAX);
        for _ in 0..1000 {
            assert_eq!(rl.check(t0), Ok(()));
        }
    }

    #[test]
    fn a_clock_reading_earlier_than_before_does_not_panic() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1, 1);
        rl.check(t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(rl.check(t0), Err(6000));
    }
}
