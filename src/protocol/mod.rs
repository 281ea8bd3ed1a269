//! Centrifuge client protocol v2, JSON encoding: what goes over the wire and nothing else.
//! `command` decodes client frames, `reply` encodes replies and pushes, `codes` names the
//! error and disconnect codes the clients act on.

pub mod codes;
pub mod command;
pub mod reply;

pub use codes::{Disconnect, ErrorCode};
pub use command::{split_frame, Command, FrameError, Method};
