//! TF Serving's status: a `tensorflow.error.Code` and a message, mapped to
//! HTTP as its REST handler maps it and to gRPC codes one to one.

use crate::core::error::Error;

/// `tensorflow.error.Code` (the numbers are gRPC's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The enum name, as protobuf's JSON writes it (`INVALID_ARGUMENT`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The HTTP status TF Serving's REST API answers with.
    pub fn http(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
        }
    }
}

/// An error as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: Code,
    /// The message clients see.
    pub message: String,
}

/// The longest message a status carries (bytes); longer ones are cut and
/// end in `...`, so that no error quotes a request back at length (gRPC
/// sends the message in a header).
pub const MAX_MESSAGE: usize = 8 << 10;

/// `s` cut to at most `max` bytes (at a character boundary), `...` appended
/// where it was cut.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}...", &s[..end]))
}

impl Status {
    /// A status with `code`; the message is cut at [`MAX_MESSAGE`] bytes.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            message = clip(&message, MAX_MESSAGE).into_owned();
        }
        Status { code, message }
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::Shape { .. }
            | Error::DType { .. }
            | Error::InvalidArgument { .. }
            | Error::DeviceMismatch { .. } => Code::InvalidArgument,
            Error::OutOfMemory { .. } | Error::TooLargeForBinding { .. } => Code::ResourceExhausted,
            Error::Unimplemented { .. } => Code::Unimplemented,
            _ => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
