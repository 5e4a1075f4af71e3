//! Asterisk Manager Interface client.
//!
//! Layers, bottom up: [`codec`] (bytes ↔ [`Message`]), [`message`] and [`event`] (ordered fields,
//! typed views), [`actions`] (validated encoding, one file per action), [`connection`] (one TCP
//! session: greeting, login, reader/writer tasks, ActionID matching), [`client`] (reconnects,
//! subscribers, the handle the rest of the program holds).

pub mod actions;
pub mod bench;
pub mod client;
pub mod codec;
pub mod config;
pub mod connection;
pub mod error;
pub mod event;
pub mod message;
pub mod subscriber;

pub use actions::{Action, ActionError, Originate};
pub use client::{AmiClient, OriginateQueued};
pub use codec::{AmiCodec, CodecError};
pub use config::AmiConfig;
pub use connection::Reply;
pub use error::AmiError;
pub use event::Event;
pub use message::{Message, MessageKind};
pub use subscriber::{Notice, Subscription};
