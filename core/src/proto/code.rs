//! Result codes carried by `ctrl` packets: HTTP-like numbers, the same ones Tinode uses.

use core::fmt;

/// A `ctrl` result code. 2xx success, 3xx redirection, 4xx the request was wrong, 5xx the
/// gateway failed.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Code(pub u16);

impl Code {
    /// The request succeeded.
    pub const OK: Code = Code(200);
    /// Something was created (an account, a topic, a subscription).
    pub const CREATED: Code = Code(201);
    /// A `pub` was accepted: stored durably and given a seq.
    pub const ACCEPTED: Code = Code(202);
    /// The request succeeded and there is nothing to return (e.g. an empty history page).
    pub const NO_CONTENT: Code = Code(204);
    /// The request was already satisfied (e.g. already subscribed); nothing changed.
    pub const NOT_MODIFIED: Code = Code(304);
    /// The packet could not be decoded or a field is invalid.
    pub const MALFORMED: Code = Code(400);
    /// Login is required first, or the credentials are wrong.
    pub const UNAUTHORIZED: Code = Code(401);
    /// The user may not do this (e.g. another user's topic).
    pub const FORBIDDEN: Code = Code(403);
    /// The topic, user or message does not exist.
    pub const NOT_FOUND: Code = Code(404);
    /// The gateway gave up waiting for the request to finish.
    pub const TIMEOUT: Code = Code(408);
    /// The request conflicts with the current state (e.g. `hi` twice, duplicate account).
    pub const CONFLICT: Code = Code(409);
    /// The request or its content is larger than allowed.
    pub const TOO_LARGE: Code = Code(413);
    /// Policy refused the content (e.g. a sensitive word); it was not stored.
    pub const POLICY: Code = Code(422);
    /// Too many requests: slow down.
    pub const RATE_LIMITED: Code = Code(429);
    /// The gateway failed; the request may be retried.
    pub const INTERNAL: Code = Code(500);
    /// The gateway is shutting down or overloaded; try again later.
    pub const UNAVAILABLE: Code = Code(503);
    /// The protocol version in `hi` is not supported.
    pub const VERSION_NOT_SUPPORTED: Code = Code(505);

    /// 2xx.
    pub const fn is_success(self) -> bool {
        self.0 >= 200 && self.0 < 300
    }
    /// 4xx: the request itself was wrong and retrying it unchanged will fail again.
    pub const fn is_client_error(self) -> bool {
        self.0 >= 400 && self.0 < 500
    }
    /// 5xx or 408: the gateway failed, retrying may succeed.
    pub const fn is_retryable(self) -> bool {
        self.0 >= 500 || self.0 == 408 || self.0 == 429
    }

    /// A short English text for the code, as put in `ctrl.text`.
    pub const fn text(self) -> &'static str {
        match self.0 {
            200 => "ok",
            201 => "created",
            202 => "accepted",
            204 => "no content",
            304 => "not modified",
            400 => "malformed",
            401 => "authentication required",
            403 => "permission denied",
            404 => "not found",
            408 => "timeout",
            409 => "conflict",
            413 => "too large",
            422 => "refused by policy",
            429 => "too many requests",
            500 => "internal error",
            503 => "service unavailable",
            505 => "version not supported",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({} {})", self.0, self.text())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_told_apart() {
        assert!(Code::ACCEPTED.is_success());
        assert!(!Code::POLICY.is_success());
        assert!(Code::POLICY.is_client_error());
        assert!(!Code::POLICY.is_retryable());
        assert!(Code::UNAVAILABLE.is_retryable());
        assert!(Code::RATE_LIMITED.is_retryable());
    }

    #[test]
    fn codes_show_number_and_text() {
        assert_eq!(format!("{}", Code::TOO_LARGE), "413 too large");
        assert_eq!(Code(299).text(), "unknown");
    }
}
