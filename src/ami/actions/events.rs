use super::{Action, ActionError, ActionWriter};

/// Which event classes Asterisk should send this session (`Events:` header, at Login or via
/// `Action: Events`). Sending less is the cheapest filter there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsMask {
    /// Every class the account may read.
    On,
    /// No events at all (then no OriginateResponse either: see events-off.txt).
    Off,
    /// Only these classes, e.g. `["call", "cdr"]`.
    Classes(Vec<String>),
}

impl EventsMask {
    pub fn to_header(&self) -> String {
        match self {
            EventsMask::On => "on".into(),
            EventsMask::Off => "off".into(),
            EventsMask::Classes(c) => c.join(","),
        }
    }

    /// Whether events of `class` (e.g. `system`) may pass this mask, read as Asterisk reads
    /// it (`on`, `all`, `yes`, `true` mean every class). The account's `read` permission
    /// may still withhold them.
    pub fn carries(&self, class: &str) -> bool {
        match self {
            EventsMask::On => true,
            EventsMask::Off => false,
            EventsMask::Classes(c) => c.iter().any(|k| {
                let k = k.trim();
                k.eq_ignore_ascii_case(class)
                    || ["all", "on", "yes", "true"]
                        .iter()
                        .any(|all| k.eq_ignore_ascii_case(all))
            }),
        }
    }
}

impl Default for EventsMask {
    fn default() -> Self {
        // What a dialer needs: OriginateResponse, Hangup, Newstate, Dial* (call) and Cdr.
        EventsMask::Classes(vec!["call".into(), "cdr".into(), "system".into()])
    }
}

/// `Action: Events` — change the mask on a live session.
#[derive(Debug, Clone)]
pub struct Events {
    pub mask: EventsMask,
}

impl Action for Events {
    fn name(&self) -> &str {
        "Events"
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        w.field("EventMask", &self.mask.to_header())?;
        Ok(())
    }
}
