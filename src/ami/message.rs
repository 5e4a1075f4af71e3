//! One AMI message: the text kept whole, fields as offsets into it.
//!
//! Why offsets: a typical event has 15–25 fields; one allocation for the text plus one for the
//! offset table is far cheaper than a `String` per key and value, and keeps the order and any
//! repeated keys (`Variable:` lines) exactly as they came.

/// Where one line's key and value sit in the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    ks: u32,
    ke: u32,
    vs: u32,
    ve: u32,
    /// False for a line with no `:` (legacy command output); its text is the value.
    colon: bool,
}

impl Span {
    pub(crate) fn field(ks: u32, ke: u32, vs: u32, ve: u32) -> Self {
        Self {
            ks,
            ke,
            vs,
            ve,
            colon: true,
        }
    }

    pub(crate) fn line(s: u32, e: u32) -> Self {
        Self {
            ks: s,
            ke: s,
            vs: s,
            ve: e,
            colon: false,
        }
    }

    pub(crate) fn is_field(&self) -> bool {
        self.colon
    }

    pub(crate) fn key<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[self.ks as usize..self.ke as usize]
    }

    pub(crate) fn value<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[self.vs as usize..self.ve as usize]
    }

    fn key_str<'a>(&self, s: &'a str) -> &'a str {
        s.get(self.ks as usize..self.ke as usize).unwrap_or("")
    }

    fn value_str<'a>(&self, s: &'a str) -> &'a str {
        s.get(self.vs as usize..self.ve as usize).unwrap_or("")
    }
}

/// What a message is, judged by its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// The one-line greeting, e.g. `Asterisk Call Manager/11.0.0`.
    Banner,
    /// `Response: …` — the answer to an action.
    Response,
    /// `Event: …`
    Event,
    /// `Action: …` — what a client sends (seen by the simulated PBX).
    Action,
    /// Anything else; kept, never an error.
    Other,
}

/// A decoded AMI message with ordered fields and case-insensitive lookup.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    text: String,
    fields: Vec<Span>,
    kind: MessageKind,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for (k, v) in self.fields() {
            l.entry(&format_args!("{k}: {v}"));
        }
        l.finish()
    }
}

impl Message {
    pub(crate) fn from_raw(raw: &[u8], fields: Vec<Span>) -> Self {
        match std::str::from_utf8(raw) {
            Ok(text) => Self::with_fields(text.to_owned(), fields),
            Err(_) => {
                // Rare: non-UTF-8 bytes. Replace them and find the fields again, since the
                // replacement shifts offsets. Nothing is dropped.
                let text = String::from_utf8_lossy(raw).into_owned();
                let fields = reparse(
                    &text,
                    fields.first().is_some_and(|f| !f.colon) && fields.len() == 1,
                );
                Self::with_fields(text, fields)
            }
        }
    }

    fn with_fields(text: String, fields: Vec<Span>) -> Self {
        let kind = match fields.first() {
            Some(f) if f.colon => {
                let k = f.key_str(&text);
                if k.eq_ignore_ascii_case("Event") {
                    MessageKind::Event
                } else if k.eq_ignore_ascii_case("Response") {
                    MessageKind::Response
                } else if k.eq_ignore_ascii_case("Action") {
                    MessageKind::Action
                } else {
                    MessageKind::Other
                }
            }
            _ => MessageKind::Other,
        };
        Self { text, fields, kind }
    }

    pub(crate) fn mark_banner(&mut self) {
        self.kind = MessageKind::Banner;
    }

    /// Builds a message from `(key, value)` pairs (tests, the simulator).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = String::new();
        let mut fields = Vec::new();
        for (k, v) in pairs {
            let ks = text.len() as u32;
            text.push_str(k);
            let ke = text.len() as u32;
            text.push_str(": ");
            let vs = text.len() as u32;
            text.push_str(v);
            let ve = text.len() as u32;
            text.push_str("\r\n");
            fields.push(Span::field(ks, ke, vs, ve));
        }
        text.push_str("\r\n");
        Self::with_fields(text, fields)
    }

    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    pub fn is_event(&self) -> bool {
        self.kind == MessageKind::Event
    }

    pub fn is_response(&self) -> bool {
        self.kind == MessageKind::Response
    }

    /// The greeting line, if this is the banner.
    pub fn banner(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Banner => self.fields.first().map(|f| f.value_str(&self.text)),
            _ => None,
        }
    }

    /// The raw text as received (line ends included).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of lines (fields) in the message.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Fields in wire order; a line without `:` has an empty key and the line as value.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.fields
            .iter()
            .map(|f| (f.key_str(&self.text), f.value_str(&self.text)))
    }

    /// Keys as bytes with their spans, for hot paths that classify keys before slicing values.
    pub(crate) fn raw_fields(&self) -> impl Iterator<Item = (&[u8], &Span)> + '_ {
        let b = self.text.as_bytes();
        self.fields
            .iter()
            .filter(|f| f.colon)
            .map(move |f| (f.key(b), f))
    }

    pub(crate) fn span_value(&self, s: &Span) -> &str {
        s.value_str(&self.text)
    }

    /// First value for `key`, case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        let kb = key.as_bytes();
        let tb = self.text.as_bytes();
        self.fields
            .iter()
            .find(|f| f.colon && f.key(tb).eq_ignore_ascii_case(kb))
            .map(|f| f.value_str(&self.text))
    }

    /// Every value for `key` in order (e.g. several `Variable:` lines).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let kb = key.as_bytes();
        self.fields
            .iter()
            .filter(move |f| f.colon && f.key(self.text.as_bytes()).eq_ignore_ascii_case(kb))
            .map(|f| f.value_str(&self.text))
    }

    /// `Event:` name, for events.
    pub fn event_name(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Event => self.fields.first().map(|f| f.value_str(&self.text)),
            _ => None,
        }
    }

    /// `Response:` value (`Success`, `Error`, `Goodbye`, `Follows`), for responses.
    pub fn response(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Response => self.fields.first().map(|f| f.value_str(&self.text)),
            _ => None,
        }
    }

    /// `Action:` name, for actions (server side).
    pub fn action_name(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Action => self.fields.first().map(|f| f.value_str(&self.text)),
            _ => None,
        }
    }

    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// `Message:` text of a response.
    pub fn message(&self) -> Option<&str> {
        self.get("Message")
    }

    /// Renders the message back to wire bytes (CRLF, blank line; the banner gets no blank line).
    pub fn to_wire(&self) -> String {
        let mut s = String::with_capacity(self.text.len() + 4);
        if self.kind == MessageKind::Banner {
            if let Some(b) = self.banner() {
                s.push_str(b);
            }
            s.push_str("\r\n");
            return s;
        }
        for f in &self.fields {
            if f.colon {
                s.push_str(f.key_str(&self.text));
                s.push_str(": ");
            }
            s.push_str(f.value_str(&self.text));
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }
}

/// Finds fields again in text that was repaired from invalid UTF-8.
fn reparse(text: &str, banner_like: bool) -> Vec<Span> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let l = line.trim_end_matches('\n').trim_end_matches('\r');
        let end = start + l.len();
        if l.is_empty() {
            continue;
        }
        if banner_like {
            out.push(Span::line(start as u32, end as u32));
            continue;
        }
        match l.find(':') {
            Some(c) => {
                let ke = start + c;
                let mut vs = ke + 1;
                if l.as_bytes().get(c + 1) == Some(&b' ') {
                    vs += 1;
                }
                out.push(Span::field(start as u32, ke as u32, vs as u32, end as u32));
            }
            None => out.push(Span::line(start as u32, end as u32)),
        }
    }
    out
}
