//! Names: user ids, topic ids, and the mapping between a topic's internal name and the name a
//! given user knows it by (a one-to-one topic is named after the peer, as in Tinode).
//!
//! | what | internal | seen by user X |
//! |---|---|---|
//! | user | `usr` + 11 chars of `[a-z2-7]` | same |
//! | one-to-one between `usrA…` and `usrB…` | `p2p` + both 11-char suffixes, sorted | `usr` + the other's suffix |
//! | group | `grp` + 11 chars | same |
//! | consultation | `cns` + 11 chars | same |

use rand::RngExt;

/// Length of the random part of every id.
const SUFFIX_LEN: usize = 11;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..SUFFIX_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A fresh user id.
pub fn new_user_id() -> String {
    format!("usr{}", random_suffix())
}

/// A fresh group topic name.
pub fn new_group_name() -> String {
    format!("grp{}", random_suffix())
}

/// A fresh consultation topic name.
pub fn new_consult_name() -> String {
    format!("cns{}", random_suffix())
}

fn user_suffix(user: &str) -> Option<&str> {
    user.strip_prefix("usr")
        .filter(|s| s.len() == SUFFIX_LEN && s.bytes().all(|b| ALPHABET.contains(&b)))
}

/// Whether `name` is a well-formed user id.
pub fn is_user_id(name: &str) -> bool {
    user_suffix(name).is_some()
}

/// The internal name of the one-to-one topic between two users, or None if either is not a
/// user id or both are the same user.
pub fn p2p_name(a: &str, b: &str) -> Option<String> {
    let (a, b) = (user_suffix(a)?, user_suffix(b)?);
    if a == b {
        return None;
    }
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    Some(format!("p2p{lo}{hi}"))
}

/// The two user ids of an internal one-to-one topic name.
pub fn p2p_members(internal: &str) -> Option<(String, String)> {
    let rest = internal.strip_prefix("p2p")?;
    if rest.len() != 2 * SUFFIX_LEN || !rest.is_ascii() {
        return None;
    }
    let (a, b) = rest.split_at(SUFFIX_LEN);
    Some((format!("usr{a}"), format!("usr{b}")))
}

/// The name `viewer` knows an internal topic by.
pub fn view_name(internal: &str, viewer: &str) -> String {
    match p2p_members(internal) {
        Some((a, b)) if a == viewer => b,
        Some((a, _)) => a,
        None => internal.to_owned(),
    }
}

/// What a topic name sent by `user` refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The user's own `me` channel.
    Me,
    /// A topic by internal name; for a one-to-one topic, `peer` is the other user.
    Topic {
        /// Internal name.
        internal: String,
        /// The other user of a one-to-one topic.
        peer: Option<String>,
    },
    /// A request to create a new group (Tinode's `new…` names).
    NewGroup,
}

/// Resolves a topic name as sent by `user`. None for names that cannot exist (400/404).
pub fn resolve(name: &str, user: &str) -> Option<Target> {
    if name == "me" {
        return Some(Target::Me);
    }
    if name.starts_with("new") || name.starts_with("nch") {
        return Some(Target::NewGroup);
    }
    if name.starts_with("usr") {
        let internal = p2p_name(user, name)?;
        return Some(Target::Topic {
            internal,
            peer: Some(name.to_owned()),
        });
    }
    if let Some(rest) = name.strip_prefix("p2p") {
        // Tinode clients may also use the internal name; it must include the user.
        let (a, b) = p2p_members(name)?;
        let _ = rest;
        let peer = if a == user {
            b
        } else if b == user {
            a
        } else {
            return None;
        };
        return Some(Target::Topic {
            internal: name.to_owned(),
            peer: Some(peer),
        });
    }
    if name.starts_with("grp") || name.starts_with("cns") {
        return Some(Target::Topic {
            internal: name.to_owned(),
            peer: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_to_one_topic_is_named_after_the_peer_on_each_side() {
        let (a, b) = (new_user_id(), new_user_id());
        let internal = p2p_name(&a, &b).expect("two users");
        assert_eq!(p2p_name(&b, &a).as_deref(), Some(internal.as_str()));
        assert_eq!(view_name(&internal, &a), b);
        assert_eq!(view_name(&internal, &b), a);
        assert_eq!(
            resolve(&b, &a),
            Some(Target::Topic {
                internal: internal.clone(),
                peer: Some(b.clone())
            })
        );
        assert!(kefu_core::proto::check_topic(&internal).is_ok());
    }

    #[test]
    fn names_that_cannot_exist_resolve_to_nothing() {
        let a = new_user_id();
        assert_eq!(resolve(&a, &a), None, "no chat with oneself");
        assert_eq!(resolve("usrSHORT", &a), None);
        assert_eq!(resolve("xyz", &a), None);
        let (b, c) = (new_user_id(), new_user_id());
        let other = p2p_name(&b, &c).expect("two users");
        assert_eq!(resolve(&other, &a), None, "someone else's one-to-one topic");
    }

    #[test]
    fn groups_consultations_me_and_new_resolve() {
        let a = new_user_id();
        assert_eq!(resolve("me", &a), Some(Target::Me));
        assert_eq!(resolve("new123", &a), Some(Target::NewGroup));
        let g = new_group_name();
        assert!(matches!(
            resolve(&g, &a),
            Some(Target::Topic { peer: None, .. })
        ));
        assert_eq!(view_name(&g, &a), g);
    }
}
