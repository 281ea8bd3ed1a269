//! Error codes (in replies) and disconnect codes (in close frames), as centrifuge defines them.
//! Clients act on the numbers: 3500–3999 never reconnect, 3000–3499 do.

/// Reply error codes (`{"id":N,"error":{"code":C,"message":"..."}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Internal = 100,
    Unauthorized = 101,
    UnknownChannel = 102,
    PermissionDenied = 103,
    MethodNotFound = 104,
    AlreadySubscribed = 105,
    LimitExceeded = 106,
    BadRequest = 107,
    NotAvailable = 108,
    TokenExpired = 109,
    Expired = 110,
    TooManyRequests = 111,
    UnrecoverablePosition = 112,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The message centrifuge sends with the code; clients index `error.message`.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::Expired => "expired",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::UnrecoverablePosition => "unrecoverable position",
        }
    }

    /// Temporary errors make clients retry rather than give up.
    pub fn temporary(self) -> bool {
        matches!(self, ErrorCode::Internal | ErrorCode::TooManyRequests)
    }
}

/// A close frame the server sends: code and a non-empty plain-text reason (centrifuge-js only
/// honours the terminal range when the reason is a non-JSON, non-empty string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: std::borrow::Cow<'static, str>,
}

macro_rules! disconnects {
    ($($name:ident = $code:expr, $reason:expr;)*) => {
        impl Disconnect {
            $(pub const $name: Disconnect = Disconnect { code: $code, reason: std::borrow::Cow::Borrowed($reason) };)*
        }
    };
}

disconnects! {
    SHUTDOWN = 3001, "shutdown";
    INTERNAL = 3004, "internal server error";
    EXPIRED = 3005, "connection expired";
    SLOW = 3008, "slow";
    WRITE_ERROR = 3009, "write error";
    INSUFFICIENT_STATE = 3010, "insufficient state";
    NO_PONG = 3012, "no pong";
    TOO_MANY_REQUESTS = 3013, "too many requests";
    INVALID_TOKEN = 3500, "invalid token";
    BAD_REQUEST = 3501, "bad request";
    STALE = 3502, "stale";
    CONNECTION_LIMIT = 3504, "connection limit";
    PERMISSION_DENIED = 3507, "permission denied";
    // WebSocket-level closes (RFC 6455).
    GOING_AWAY = 1001, "going away";
    PROTOCOL_ERROR = 1002, "protocol error";
    INVALID_PAYLOAD = 1007, "invalid utf-8";
    MESSAGE_TOO_BIG = 1009, "message too big";
}

impl Disconnect {
    /// Echo of a client-initiated close: same code (1000 when it sent none), no reason needed.
    pub fn echo(code: u16) -> Disconnect {
        Disconnect {
            code,
            reason: std::borrow::Cow::Borrowed(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_codes_are_in_the_terminal_range() {
        for d in [
            Disconnect::BAD_REQUEST,
            Disconnect::STALE,
            Disconnect::CONNECTION_LIMIT,
        ] {
            assert!((3500..4000).contains(&d.code));
            assert!(!d.reason.is_empty() && d.reason.len() < 123);
        }
        for d in [Disconnect::SHUTDOWN, Disconnect::SLOW, Disconnect::NO_PONG] {
            assert!((3000..3500).contains(&d.code));
        }
        assert_eq!(ErrorCode::BadRequest.code(), 107);
        assert!(ErrorCode::Internal.temporary());
    }
}
