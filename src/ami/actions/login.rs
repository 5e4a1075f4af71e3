use md5::{Digest, Md5};

use super::{Action, ActionError, ActionWriter};
use crate::config::{ExposeSecret, SecretString};

/// How to prove who we are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoginAuth {
    /// `Secret:` in the clear (fine on loopback).
    #[default]
    Plain,
    /// `Action: Challenge` first, then `Key: md5(challenge + secret)`: the secret never
    /// crosses the wire.
    Md5,
}

/// `Action: Login`. Debug never shows the secret.
#[derive(Debug, Clone)]
pub struct Login {
    pub username: String,
    pub secret: SecretString,
    /// `Events:` mask sent with the login (`None` = the account's default).
    pub events: Option<String>,
    /// `Some(challenge)` for the MD5 form.
    pub challenge: Option<String>,
}

impl Action for Login {
    fn name(&self) -> &str {
        "Login"
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        w.field("Username", &self.username)?;
        match &self.challenge {
            None => {
                w.field("Secret", self.secret.expose_secret())?;
            }
            Some(c) => {
                w.field("AuthType", "MD5")?;
                w.field("Key", &md5_key(c, self.secret.expose_secret()))?;
            }
        }
        w.opt("Events", self.events.as_deref())?;
        Ok(())
    }
}

/// `Action: Challenge` with `AuthType: MD5`; the answer carries `Challenge:`.
#[derive(Debug, Clone, Default)]
pub struct Challenge;

impl Action for Challenge {
    fn name(&self) -> &str {
        "Challenge"
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        w.field("AuthType", "MD5")?;
        Ok(())
    }
}

/// `md5(challenge + secret)` as lowercase hex, as Asterisk's manager.c computes it.
pub fn md5_key(challenge: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(challenge.as_bytes());
    h.update(secret.as_bytes());
    let d = h.finalize();
    let mut s = String::with_capacity(32);
    for b in d.iter() {
        s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_key_matches_asterisk() {
        // md5("123456789" + "dialer-secret"), as manager.c computes the Login Key.
        assert_eq!(
            super::md5_key("123456789", "dialer-secret"),
            "9493673ddac97661b4a3313c5ca6532f"
        );
    }
}
