//! Username and email rules: transliteration, Moodle's username alphabet, "no email"
//! markers, email parsing. The uniqueness sets are in `taken_names`.

use std::ops::Range;

use crate::config::{ExposeSecret, SecretString};

/// Moodle's `user.username`, `email`, `firstname` and `lastname` columns are
/// `varchar(100)`; `department` is `varchar(255)`.
pub(crate) const MAX_NAME_CHARS: usize = 100;
pub(crate) const MAX_EMAIL_CHARS: usize = 100;
pub(crate) const MAX_DEPARTMENT_CHARS: usize = 255;
/// Leaves room for a numeric suffix inside Moodle's 100 characters.
const MAX_USERNAME_BASE: usize = 90;
/// RFC 5321 limit for the local part; also keeps generated addresses under 100 chars.
const MAX_LOCAL_PART: usize = 64;

/// A username Moodle accepts as is: non-empty, at most 100 characters of
/// `[a-z0-9_.@-]` (Moodle's `PARAM_USERNAME` without `extendedusernamechars`), and not
/// `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// Parses a username as Moodle would store it (lower-cased first, as Moodle does).
    ///
    /// # Errors
    /// Returns why the text is not a valid Moodle username.
    pub fn parse(text: &str) -> Result<Self, InvalidUsername> {
        let lower = text.trim().to_lowercase();
        if lower.is_empty() {
            return Err(InvalidUsername::Empty);
        }
        if lower.len() > MAX_NAME_CHARS {
            return Err(InvalidUsername::TooLong);
        }
        if lower == "guest" {
            return Err(InvalidUsername::Guest);
        }
        if let Some(c) = lower.chars().find(|&c| !is_username_char(c)) {
            return Err(InvalidUsername::Character(c));
        }
        Ok(Self(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For names the taken-name set built: already in the alphabet by construction.
    pub(crate) fn from_generated(s: &str) -> Self {
        debug_assert!(Self::parse(s).is_ok(), "generated username {s:?}");
        Self(s.to_owned())
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUsername {
    #[error("username is empty")]
    Empty,
    #[error("username is longer than 100 characters")]
    TooLong,
    #[error("`guest` is reserved by Moodle")]
    Guest,
    #[error("username contains {0:?}; Moodle accepts only a-z 0-9 _ . @ -")]
    Character(char),
}

fn is_username_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '@' | '-')
}

/// The domain generated addresses go to, e.g. `alumnos.example.edu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailDomain(String);

impl EmailDomain {
    /// Accepts `example.com` or `@example.com`, any case.
    ///
    /// # Errors
    /// When the text is not a plain ASCII DNS name with at least two labels.
    pub fn parse(text: &str) -> Result<Self, InvalidEmailDomain> {
        let t = text.trim();
        let t = t.strip_prefix('@').unwrap_or(t).to_ascii_lowercase();
        if is_valid_domain(&t) && t.len() < MAX_EMAIL_CHARS - 10 {
            Ok(Self(t))
        } else {
            Err(InvalidEmailDomain(text.chars().take(100).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid email domain (expected something like \"example.edu\")")]
pub struct InvalidEmailDomain(String);

/// An initial password written in a `password` column. Only from configuration: the seed's
/// shared plaintext password is a habit to retire. Never printed by `Debug`.
#[derive(Clone)]
pub struct InitialPassword(SecretString);

impl InitialPassword {
    /// # Errors
    /// Empty, over 100 characters, or containing control characters.
    pub fn parse(text: &str) -> Result<Self, InvalidPassword> {
        if text.is_empty() || text.chars().count() > MAX_NAME_CHARS {
            return Err(InvalidPassword);
        }
        if text.chars().any(char::is_control) {
            return Err(InvalidPassword);
        }
        Ok(Self(SecretString::from(text)))
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for InitialPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitialPassword(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("initial password must be 1 to 100 characters without control characters")]
pub struct InvalidPassword;

fn is_valid_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > 253 {
        return false;
    }
    let mut labels = 0;
    let mut last = "";
    for label in d.split('.') {
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 || b[0] == b'-' || b[b.len() - 1] == b'-' {
            return false;
        }
        if !b
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    // A TLD is letters (or an IDN `xn--` label); rejects "juan@gmail" and "a@1.2".
    labels >= 2
        && last.len() >= 2
        && (last.bytes().all(|c| c.is_ascii_lowercase()) || last.starts_with("xn--"))
}

/// Bytes of a dot-atom local part (after lower-casing).
const LOCAL_PART_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_lowercase() || b.is_ascii_digit();
        c += 1;
    }
    let extra = b"!#$%&'*+/=?^_`{|}~.-";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Checks an already lower-cased address: a dot-atom local part (RFC 5322, as Moodle's
/// `validate_email` accepts) and a DNS domain, at most 100 characters (Moodle's column).
#[cfg(test)]
pub(crate) fn is_valid_email(lower: &str) -> bool {
    EmailChecker::default().is_valid(lower)
}

/// [`is_valid_email`] that remembers the last valid domain: a roster's addresses share a
/// few domains, so most checks skip the domain.
#[derive(Default)]
pub(crate) struct EmailChecker {
    valid_domain: String,
}

impl EmailChecker {
    #[cfg(test)]
    pub(crate) fn is_valid(&mut self, lower: &str) -> bool {
        self.valid_at(lower).is_some()
    }

    /// Where the `@` is, when the address is valid.
    pub(crate) fn valid_at(&mut self, lower: &str) -> Option<usize> {
        let at = memchr::memrchr(b'@', lower.as_bytes())?;
        self.is_valid_at(lower, at).then_some(at)
    }

    fn is_valid_at(&mut self, lower: &str, at: usize) -> bool {
        if lower.len() > MAX_EMAIL_CHARS {
            return false;
        }
        let (local, domain) = (&lower[..at], &lower[at + 1..]);
        let lb = local.as_bytes();
        if lb.is_empty() || lb.len() > MAX_LOCAL_PART || lb[0] == b'.' || lb[lb.len() - 1] == b'.' {
            return false;
        }
        // Alphabet and no "..", in one pass (the ends are not dots, checked above).
        let mut prev = 0;
        if !lb.iter().all(|&c| {
            let ok = LOCAL_PART_BYTE[usize::from(c)] && !(c == b'.' && prev == b'.');
            prev = c;
            ok
        }) {
            return false;
        }
        if !domain.is_empty() && domain == self.valid_domain {
            return true;
        }
        if is_valid_domain(domain) {
            self.valid_domain.clear();
            self.valid_domain.push_str(domain);
            return true;
        }
        false
    }
}

/// Words spreadsheets and tutors put where an address is missing. Compared after
/// lower-casing and joining the words with one space.
const NO_EMAIL_MARKERS: &[&str] = &[
    "no tiene",
    "no tiene correo",
    "no tiene email",
    "no tiene mail",
    "no tiene e-mail",
    "no posee",
    "sin correo",
    "sin email",
    "sin mail",
    "sin e-mail",
    "sin dato",
    "sin datos",
    "ninguno",
    "ninguna",
    "no",
    "none",
    "no email",
    "n/a",
    "n/d",
    "s/c",
    "s/d",
    "na",
    "nd",
    "-",
    "--",
    "---",
    "?",
];

/// The first words of [`NO_EMAIL_MARKERS`].
const MARKER_FIRST_WORDS: &[&str] = &[
    "no", "sin", "ninguno", "ninguna", "none", "n/a", "n/d", "s/c", "s/d", "na", "nd", "-", "--",
    "---", "?",
];

/// False when no marker can start with `word` (a word as `words` splits them): an ASCII
/// word that is no marker's first word. A non-ASCII word may hold a Unicode space that
/// [`is_no_email_marker`] reads as a separator, so it is left to that check.
pub(crate) fn may_start_no_email_marker(word: &str) -> bool {
    if !word.is_ascii() {
        return true;
    }
    // Every first word fits in a key; a longer word is none of them.
    let mut key = KeyBuf::default();
    key.push_lower(word.as_bytes()) && key.n > 0 && MARKER_FIRST_WORD_KEYS.contains(key.key())
}

/// Up to 16 ASCII bytes as one number (zero-padded, little-endian): markers hold no NUL,
/// so equal keys mean equal texts, and a text is looked up in a small hash table of keys
/// in one or two probes instead of being compared with every marker.
const fn text_key(b: &[u8]) -> u128 {
    let mut k = 0u128;
    let mut i = 0;
    while i < b.len() {
        k |= (b[i] as u128) << (8 * i);
        i += 1;
    }
    k
}

/// Open-addressing set of text keys (0 marks an empty slot), built at compile time.
struct KeySet([u128; 64]);

impl KeySet {
    const fn new(texts: &[&str]) -> Self {
        assert!(texts.len() <= 32, "at most half full");
        let mut slots = [0u128; 64];
        let mut i = 0;
        while i < texts.len() {
            assert!(!texts[i].is_empty() && texts[i].len() <= 16);
            let key = text_key(texts[i].as_bytes());
            let mut s = Self::slot(key);
            while slots[s] != 0 && slots[s] != key {
                s = (s + 1) % 64;
            }
            slots[s] = key;
            i += 1;
        }
        Self(slots)
    }

    const fn slot(key: u128) -> usize {
        let folded = (key as u64) ^ ((key >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
    }

    fn contains(&self, key: u128) -> bool {
        let mut s = Self::slot(key);
        loop {
            match self.0[s] {
                0 => return false,
                k if k == key => return true,
                _ => s = (s + 1) % 64,
            }
        }
    }
}

static MARKER_KEYS: KeySet = KeySet::new(NO_EMAIL_MARKERS);
static MARKER_FIRST_WORD_KEYS: KeySet = KeySet::new(MARKER_FIRST_WORDS);

/// A normalized text of at most 16 bytes being built for [`text_key`].
#[derive(Default)]
struct KeyBuf {
    buf: [u8; 16],
    n: usize,
}

impl KeyBuf {
    /// Appends `b` lower-cased; false (and nothing appended) when it does not fit in
    /// [`MAX_MARKER_LEN`] bytes.
    fn push_lower(&mut self, b: &[u8]) -> bool {
        if self.n + b.len() > MAX_MARKER_LEN {
            return false;
        }
        for (d, &c) in self.buf[self.n..].iter_mut().zip(b) {
            *d = c.to_ascii_lowercase();
        }
        self.n += b.len();
        true
    }

    fn key(&self) -> u128 {
        u128::from_le_bytes(self.buf)
    }
}

/// Length of the longest of [`NO_EMAIL_MARKERS`].
const MAX_MARKER_LEN: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < NO_EMAIL_MARKERS.len() {
        if NO_EMAIL_MARKERS[i].len() > max {
            max = NO_EMAIL_MARKERS[i].len();
        }
        i += 1;
    }
    max
};

/// Whether `text` (one or more words) means "no address".
pub(crate) fn is_no_email_marker(text: &str) -> bool {
    let mut m = MarkerText::default();
    text.len() <= MAX_MARKER_SPAN && m.push(text) && m.is_marker(m.n)
}

/// Longest raw text (whitespace included) that may be a marker.
const MAX_MARKER_SPAN: usize = 24;

/// How many of the first three `words` (ranges of `line`, separated by whitespace) make
/// the longest marker, if any: [`is_no_email_marker`] of three, two, then one words, in
/// one pass (the normalized text of fewer words is a prefix of that of more).
pub(crate) fn longest_no_email_marker(line: &str, words: &[Range<usize>]) -> Option<usize> {
    let words = &words[..words.len().min(3)];
    let start = words.first()?.start;
    let b = line.as_bytes();
    // Fast path: ASCII words one space apart (as usual) hold no whitespace (both word
    // splits cut at every ASCII space), so their normalized text is the line's bytes
    // lower-cased: the first 16 bytes, loaded once, hold every candidate.
    let mut head = [0u8; 16];
    let available = &b[start..b.len().min(start + 16)];
    head[..available.len()].copy_from_slice(available);
    let head = u128::from_le_bytes(head);
    let mut longest = None;
    for (k, w) in words.iter().enumerate() {
        if k > 0 && !(w.start == words[k - 1].end + 1 && b[words[k - 1].end] == b' ') {
            return longest_marker_normalized(line, words);
        }
        let len = w.end - start;
        if len > MAX_MARKER_LEN {
            // Longer than every marker, unless non-ASCII whitespace shortens it.
            if b[start..w.end].is_ascii() {
                break;
            }
            return longest_marker_normalized(line, words);
        }
        let text = head & ((1u128 << (8 * len)) - 1);
        if text & (u128::MAX / 255 * 0x80) != 0 {
            return longest_marker_normalized(line, words);
        }
        if MARKER_KEYS.contains(ascii_lowercase(text)) {
            longest = Some(k + 1);
        }
    }
    longest
}

/// Lower-cases the ASCII bytes of `x` (every byte below 0x80): bit 7 of `b + 0x3F` is set
/// from 'A' on and that of `b + 0x25` from past 'Z' (no carry crosses bytes), and
/// 'A'..='Z' gain 0x20.
fn ascii_lowercase(x: u128) -> u128 {
    const ONES: u128 = u128::MAX / 255;
    let upper = (x + ONES * 0x3F) & !(x + ONES * 0x25) & (ONES * 0x80);
    x | (upper >> 2)
}

/// [`longest_no_email_marker`] for any words, normalizing them.
fn longest_marker_normalized(line: &str, words: &[Range<usize>]) -> Option<usize> {
    let start = words.first()?.start;
    let mut m = MarkerText::default();
    let mut ends = [None; 3];
    for (end, w) in ends.iter_mut().zip(words) {
        // The whitespace before a word (none before the first) is one run.
        m.space = true;
        if w.end - start > MAX_MARKER_SPAN || !m.push(&line[w.clone()]) {
            break;
        }
        *end = Some(m.n);
    }
    (0..3)
        .rev()
        .find(|&k| ends[k].is_some_and(|n| m.is_marker(n)))
        .map(|k| k + 1)
}

/// A candidate marker being normalized: lower-cased, whitespace runs as one space,
/// leading and trailing ones dropped (a space is only written before a following
/// character).
#[derive(Default)]
struct MarkerText {
    /// Room for a space after the longest marker: `put` fails just after writing it.
    buf: [u8; MAX_MARKER_LEN + 1],
    n: usize,
    /// Whitespace was seen since the last character.
    space: bool,
}

impl MarkerText {
    /// Appends `text`; false as soon as no marker can come out (a character that is
    /// neither ASCII nor whitespace, or longer than every marker).
    fn push(&mut self, text: &str) -> bool {
        if text.is_ascii() {
            // `char::is_whitespace` on ASCII.
            text.bytes()
                .all(|b| self.put(b, matches!(b, b' ' | 0x09..=0x0D)))
        } else if text
            .bytes()
            .any(|b| b >= 0xC0 && !matches!(b, 0xC2 | 0xE1 | 0xE2 | 0xE3))
        {
            // Lead bytes other than whitespace characters' (0xC2, 0xE1, 0xE2, 0xE3) mean
            // a character that is neither: "Sánchez" stops here.
            false
        } else {
            text.chars().all(|c| {
                if c.is_whitespace() {
                    self.put(b' ', true)
                } else {
                    c.is_ascii() && self.put(c as u8, false)
                }
            })
        }
    }

    /// Takes one ASCII character, or whitespace; false when longer than every marker.
    fn put(&mut self, c: u8, whitespace: bool) -> bool {
        if whitespace {
            self.space = true;
            return true;
        }
        if std::mem::take(&mut self.space) && self.n > 0 {
            self.buf[self.n] = b' ';
            self.n += 1;
        }
        if self.n >= MAX_MARKER_LEN {
            return false;
        }
        self.buf[self.n] = c.to_ascii_lowercase();
        self.n += 1;
        true
    }

    /// Whether the first `n` bytes are one of [`NO_EMAIL_MARKERS`].
    fn is_marker(&self, n: usize) -> bool {
        n > 0 && MARKER_KEYS.contains(text_key(&self.buf[..n]))
    }
}

/// Appends the ASCII transliteration of `c`, lower case, letters and digits only. Covers
/// the letters of Latin-1 and Latin Extended-A (Spanish, Portuguese, French, German,
/// Nordic, Central European names), as `deunicode` transliterates them; anything else
/// (apostrophes, hyphens, symbols such as ½ or ×, other scripts) adds nothing.
pub(crate) fn push_ascii_alnum(c: char, out: &mut String) {
    if c.is_ascii() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        }
        return;
    }
    for b in latin_transliteration(c).bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b.to_ascii_lowercase()));
        }
    }
}

/// Whether [`push_ascii_alnum`] appends something for `c`.
fn has_ascii_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || latin_transliteration(c)
            .bytes()
            .any(|b| b.is_ascii_alphanumeric())
}

/// `deunicode`'s transliteration of a letter of Latin-1 or Latin Extended-A (U+00C0 to
/// U+017E, ª and º), empty for any other character: a username is made of Latin letters,
/// never of a transliterated symbol or script (the README's rule).
fn latin_transliteration(c: char) -> &'static str {
    if matches!(c, 'ª' | 'º' | 'À'..='ž') && c.is_alphabetic() {
        deunicode::deunicode_char(c).unwrap_or_default()
    } else {
        ""
    }
}

/// ASCII byte to what [`push_ascii_alnum`] appends for it: lower-cased letters and digits,
/// 0 for nothing.
const ASCII_ALNUM_LOWER: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] = b.to_ascii_lowercase();
        }
        c += 1;
    }
    t
};

/// Appends the transliteration of every character of `text`.
pub(crate) fn push_ascii_word(text: &str, out: &mut String) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Names are mostly runs of ASCII letters: those go eight at a time.
        let n = push_ascii_letters(&b[i..], out);
        i += n;
        if n == 8 || i >= b.len() {
            continue;
        }
        let c = b[i];
        if c < 0x80 {
            let t = ASCII_ALNUM_LOWER[usize::from(c)];
            if t != 0 {
                out.push(char::from(t));
            }
            i += 1;
        } else if c == 0xC3 && i + 1 < b.len() {
            // U+00C0..=U+00FF (the Latin-1 letters): a table instead of the match.
            // One or two ASCII bytes: pushed one by one, cheaper than a copy call.
            for &t in LATIN1_LETTERS[usize::from(b[i + 1] & 0x3F)].as_bytes() {
                out.push(char::from(t));
            }
            i += 2;
        } else {
            let ch = text[i..].chars().next().unwrap_or_default();
            push_ascii_alnum(ch, out);
            i += ch.len_utf8();
        }
    }
}

/// Appends the ASCII letters `b` starts with, lower-cased, up to eight of them, and
/// returns how many: what [`push_ascii_alnum`] does for each, without a look-up per byte.
#[inline(always)]
fn push_ascii_letters(b: &[u8], out: &mut String) -> usize {
    use super::swar::{HIGHS, ONES, has_below, load_le};
    // Zero pads a short `b`, and zero is no letter.
    let x = load_le(b);
    // Setting bit 5 lower-cases a letter; a byte is a letter iff the result is in a..=z.
    let lower = x | (ONES * 0x20);
    // Flags non-ASCII bytes, bytes above 'z' (adding 5 reaches bit 7 from 0x7B up) and
    // below 'a'.
    // The lowest flag is exact (false alarms only come above a true one, from borrows and
    // carries), so it counts the leading letters.
    let other = ((lower | lower.wrapping_add(ONES * 5)) & HIGHS) | has_below(lower, b'a');
    let n = (other.trailing_zeros() / 8) as usize;
    // SAFETY: the eight bytes are appended and then cut back to the first `n`, which are
    // lower-case ASCII letters, before the borrow ends: the String stays UTF-8.
    let v = unsafe { out.as_mut_vec() };
    let len = v.len();
    v.extend_from_slice(&lower.to_le_bytes());
    v.truncate(len + n);
    n
}

/// [`push_ascii_alnum`] of U+00C0 + i.
const LATIN1_LETTERS: [&str; 64] = [
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", // C0
    "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "ss", // D0
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", // E0
    "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "y", // F0
];

/// Splits on whitespace like `str::split_whitespace`, but byte-wise (much faster than the
/// char-predicate search). Whitespace: ASCII whitespace, NBSP (spreadsheets and blogs
/// insert it), and the U+2000..U+200A / U+202F / U+3000 spaces.
pub(crate) fn words(text: &str) -> Words<'_> {
    Words { text, pos: 0 }
}

pub(crate) struct Words<'a> {
    text: &'a str,
    pos: usize,
}

/// Length of the whitespace character starting at `b[i]`, or 0.
#[inline]
fn space_len(b: &[u8], i: usize) -> usize {
    match b[i] {
        b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => 1,
        0xC2 if b.get(i + 1) == Some(&0xA0) => 2,
        0xE2 if b.get(i + 1) == Some(&0x80)
            && b.get(i + 2)
                .is_some_and(|&c| (0x80..=0x8A).contains(&c) || c == 0xAF) =>
        {
            3
        }
        0xE3 if b.get(i + 1) == Some(&0x80) && b.get(i + 2) == Some(&0x80) => 3,
        _ => 0,
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let mut i = self.pos;
        loop {
            if i >= b.len() {
                self.pos = i;
                return None;
            }
            let n = space_len(b, i);
            if n == 0 {
                break;
            }
            i += n;
        }
        let start = i;
        while i < b.len() {
            let c = b[i];
            // Fast path: printable ASCII is never a space.
            if c > b' ' && c < 0x80 {
                i += 1;
                continue;
            }
            if space_len(b, i) != 0 {
                break;
            }
            i += 1;
        }
        self.pos = i;
        // Both ends are at ASCII bytes or lead bytes of whitespace characters, so they are
        // char boundaries.
        self.text.get(start..i)
    }
}

/// The words of a text whose only whitespace is one ASCII space between words (names as
/// phase A stages them): what [`words`] gives there, without its whitespace checks.
pub(crate) fn space_words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.as_bytes().iter().position(|&c| c == b' ') {
            Some(i) => {
                rest = t.get(i + 1..);
                t.get(..i)
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// Whether `b` is a byte that cannot be part of whitespace: printable ASCII other than
/// the space (every whitespace character is ASCII up to the space, or starts with a byte
/// of 0x80 or more).
fn is_plain_edge(b: Option<&u8>) -> bool {
    b.is_some_and(|&b| b > b' ' && b < 0x80)
}

/// `str::trim_end`, skipping the search when the last byte is plainly no whitespace.
pub(crate) fn trim_end(text: &str) -> &str {
    if is_plain_edge(text.as_bytes().last()) {
        return text;
    }
    text.trim_end()
}

/// `str::trim`, skipping the searches when both end bytes are plainly no whitespace.
pub(crate) fn trim(text: &str) -> &str {
    let b = text.as_bytes();
    if is_plain_edge(b.first()) && is_plain_edge(b.last()) {
        return text;
    }
    text.trim()
}

/// Whether `text` is empty or all whitespace (`str::trim_start().is_empty()`).
pub(crate) fn is_blank(text: &str) -> bool {
    !is_plain_edge(text.as_bytes().first()) && text.trim_start().is_empty()
}

/// Surname particles that belong to the following word ("de la Fuente" is one surname).
const PARTICLES: &[&str] = &[
    "de", "del", "la", "las", "los", "da", "das", "do", "dos", "di", "van", "von", "der", "den",
    "y", "e", "i", "le", "mc", "san", "st", "st.",
];

pub(crate) fn is_particle(word: &str) -> bool {
    let b = word.as_bytes();
    if b.is_empty() || b.len() > 3 {
        return false;
    }
    // Every particle starts with one of these: most words stop here.
    if !matches!(
        b[0].to_ascii_lowercase(),
        b'd' | b'l' | b'v' | b'y' | b'e' | b'i' | b'm' | b's'
    ) {
        return false;
    }
    PARTICLES.iter().any(|p| p.eq_ignore_ascii_case(word))
}

/// The first surname among surname words: the first word, with any leading particles
/// ("de la Fuente García" → "de la Fuente").
pub(crate) fn first_surname<'a>(
    mut surname_words: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    // Not `take_while`: that would split off the word after, only to drop it.
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let w = surname_words.next()?;
        done = !is_particle(w);
        Some(w)
    })
}

/// Appends the username base: first letter of the forename + the first surname,
/// transliterated. Nothing when the names have no Latin letters or digits.
#[cfg(test)]
pub(crate) fn username_base(firstname: &str, lastname: &str, out: &mut String) {
    username_base_from_words(firstname, words(lastname), out);
}

/// [`username_base`] for names already split into words.
pub(crate) fn username_base_from_words<'a>(
    firstname: &str,
    surname_words: impl Iterator<Item = &'a str>,
    out: &mut String,
) {
    let origin = out.len();
    // "Æsa" gives "ae": the whole transliteration of the first letter that has one.
    for c in firstname.chars() {
        push_ascii_alnum(c, out);
        if out.len() > origin {
            break;
        }
    }
    let start = out.len();
    for w in first_surname(surname_words) {
        push_ascii_word(w, out);
    }
    if out.len() == start {
        out.truncate(origin);
        return;
    }
    // ASCII: any length is a char boundary.
    out.truncate(origin + MAX_USERNAME_BASE);
}

/// Whether [`username_base`] of any forename and `lastname` is not empty: its first
/// surname has a letter or digit after transliteration.
pub(crate) fn surname_has_letters(lastname: &str) -> bool {
    // Usually the first byte says: it is in the first word, which is always taken.
    lastname
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        || first_surname(words(lastname)).any(|w| w.chars().any(has_ascii_alnum))
}

/// Appends a generated address's local part: whole forename + whole last name.
pub(crate) fn email_local_base(firstname: &str, lastname: &str, out: &mut String) {
    let start = out.len();
    push_ascii_word(firstname, out);
    push_ascii_word(lastname, out);
    // ASCII: any length is a char boundary.
    out.truncate(start + MAX_LOCAL_PART - 8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(f: &str, l: &str) -> String {
        let mut s = String::new();
        username_base(f, l, &mut s);
        s
    }

    #[test]
    fn usernames_from_the_issue() {
        assert_eq!(base("José", "Muñoz"), "jmunoz");
        assert_eq!(base("Íñigo", "Ñúñez"), "inunez");
        assert_eq!(base("Pat", "O'Brien"), "pobrien");
        assert_eq!(base("María José", "García López"), "mgarcia");
        assert_eq!(base("Juan", "de la Fuente García"), "jdelafuente");
        assert_eq!(base("Ægir", "Straße"), "aestrasse");
        assert_eq!(base("李", "王"), "");
    }

    #[test]
    fn marker_first_words() {
        for m in NO_EMAIL_MARKERS {
            let first = m.split(' ').next().unwrap();
            assert!(MARKER_FIRST_WORDS.contains(&first), "{m}");
            assert!(may_start_no_email_marker(&first.to_uppercase()));
        }
        assert!(!may_start_no_email_marker("Navarro"));
        for w in ["No", "SIN", "n/A", "---", "?", "Ninguna", "nINGUNO", "nd"] {
            assert!(may_start_no_email_marker(w), "{w}");
        }
        for w in [
            "N",
            "sinn",
            "----",
            "??",
            "ningunos",
            "abcdefghijklmnopqrstu",
            "n/",
        ] {
            assert!(!may_start_no_email_marker(w), "{w}");
        }
        assert!(may_start_no_email_marker("no\u{2028}tiene"));
    }

    /// One pass over up to three words finds what trying three, two, then one words of
    /// [`is_no_email_marker`] finds.
    #[test]
    fn longest_marker_agrees_with_one_at_a_time() {
        let words = [
            "No",
            "tiene",
            "correo",
            "NO",
            "e-mail",
            "Ventas",
            "sin",
            "datos",
            "n/a",
            "-",
            "no\u{2028}tiene",
            "tiene\u{85}",
            "Sánchez",
            "?",
            "ninguno",
            "electrónico",
            "none",
        ];
        let gaps = [" ", "  ", "\t", "\u{a0}", "\u{3000}"];
        for (i, a) in words.iter().enumerate() {
            for b in words.iter().skip(i % 3) {
                for c in words.iter().skip(i % 5).step_by(2) {
                    let gap = gaps[(a.len() + b.len() + c.len()) % gaps.len()];
                    let line = format!("{a}{gap}{b}{gap}{c}");
                    let ranges: Vec<Range<usize>> = [*a, *b, *c]
                        .iter()
                        .scan(0, |at, w| {
                            let r = *at..*at + w.len();
                            *at = r.end + gap.len();
                            Some(r)
                        })
                        .collect();
                    let one_at_a_time = (1..=3)
                        .rev()
                        .find(|&k| is_no_email_marker(&line[ranges[0].start..ranges[k - 1].end]));
                    assert_eq!(
                        longest_no_email_marker(&line, &ranges),
                        one_at_a_time,
                        "{line:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn ascii_lowercase_of_every_byte() {
        for c in 0..0x80u8 {
            for pos in [0, 7, 15] {
                let mut b = [b'Q'; 16];
                b[pos] = c;
                let want = u128::from_le_bytes(b.map(|x| x.to_ascii_lowercase()));
                assert_eq!(ascii_lowercase(u128::from_le_bytes(b)), want, "{c}");
            }
        }
    }

    /// The fast path (ASCII words one space apart) finds what normalizing finds.
    #[test]
    fn marker_fast_path_agrees() {
        let lines = [
            "No tiene Ventas",
            "NO TIENE CORREO x",
            "sin e-mail",
            "n/a n/a",
            "no tiene email Ventas",
            "no tiene correo electrónico",
            "No  tiene correo",
            "no tiene\tcorreo",
            "Ninguno",
            "no tienen",
            "- - -",
            "?",
            "sin datos adicionales",
            "no tiene e-mailx",
            "Núñez no",
            "no\u{a0}tiene",
        ];
        for line in lines {
            let words: Vec<Range<usize>> = super::words(line)
                .map(|w| {
                    let s = w.as_ptr() as usize - line.as_ptr() as usize;
                    s..s + w.len()
                })
                .collect();
            for i in 0..words.len() {
                let ws = &words[i..words.len().min(i + 3)];
                assert_eq!(
                    longest_no_email_marker(line, ws),
                    longest_marker_normalized(line, ws),
                    "{line:?} from word {i}"
                );
            }
        }
    }

    #[test]
    fn trims_agree_with_std() {
        for t in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{a0}x\u{a0}",
            "x\u{3000}",
            "\tx",
            "x\u{85}",
            "~",
            "\u{7f}",
            "é",
            " é ",
            "Ventas",
            "Ventas  ",
        ] {
            assert_eq!(trim(t), t.trim(), "{t:?}");
            assert_eq!(trim_end(t), t.trim_end(), "{t:?}");
            assert_eq!(is_blank(t), t.trim_start().is_empty(), "{t:?}");
        }
    }

    #[test]
    fn particles() {
        for p in PARTICLES {
            assert!(is_particle(p));
            assert!(is_particle(&p.to_uppercase()));
        }
        assert!(!is_particle(""));
        assert!(!is_particle("Gil"));
        assert!(!is_particle("dela"));
    }

    /// The hand-written table `deunicode` replaced: its output must not change.
    /// [`push_ascii_alnum`] of a non-ASCII character.
    fn non_ascii_alnum(c: char) -> &'static str {
        match c {
            'À'..='Å' | 'à'..='å' | 'Ā'..='ą' => "a",
            'Æ' | 'æ' => "ae",
            'Ç' | 'ç' | 'Ć'..='č' => "c",
            'Ð' | 'ð' | 'Ď'..='đ' => "d",
            'È'..='Ë' | 'è'..='ë' | 'Ē'..='ě' => "e",
            'Ì'..='Ï' | 'ì'..='ï' | 'Ĩ'..='ı' => "i",
            'Ĳ' | 'ĳ' => "ij",
            'Ñ' | 'ñ' | 'Ń'..='ŉ' => "n",
            'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō'..='ő' => "o",
            'Œ' | 'œ' => "oe",
            'Ù'..='Ü' | 'ù'..='ü' | 'Ũ'..='ų' => "u",
            'Ý' | 'ý' | 'ÿ' | 'Ŷ'..='Ÿ' => "y",
            'Þ' | 'þ' => "th",
            'ß' => "ss",
            'Ĝ'..='ģ' => "g",
            'Ĥ'..='ħ' => "h",
            'Ĵ' | 'ĵ' => "j",
            'Ķ'..='ĸ' => "k",
            'Ĺ'..='ł' => "l",
            'Ŋ' | 'ŋ' => "ng",
            'Ŕ'..='ř' => "r",
            'Ś'..='š' => "s",
            'Ţ'..='ŧ' => "t",
            'Ŵ' | 'ŵ' => "w",
            'Ź'..='ž' => "z",
            'ª' => "a",
            'º' => "o",
            _ => "",
        }
    }

    #[test]
    fn transliteration_is_the_old_tables() {
        for c in (0x80..0x3_0000).filter_map(char::from_u32) {
            let mut s = String::new();
            push_ascii_alnum(c, &mut s);
            assert_eq!(s, non_ascii_alnum(c), "{c} U+{:04X}", u32::from(c));
            assert_eq!(has_ascii_alnum(c), !s.is_empty(), "{c}");
        }
    }

    #[test]
    fn latin1_table_matches_the_rule() {
        for (i, t) in LATIN1_LETTERS.iter().enumerate() {
            let c = char::from_u32(0xC0 + i as u32).unwrap();
            let mut s = String::new();
            push_ascii_alnum(c, &mut s);
            assert_eq!(&s, t, "{c}");
            let mut w = String::new();
            push_ascii_word(&format!("é{c}Ā"), &mut w);
            assert_eq!(w, format!("e{t}a"));
        }
    }

    #[test]
    fn ascii_word_agrees_with_char_by_char() {
        let samples = [
            "",
            "a",
            "Pérez",
            "GARCIA",
            "abcdefgh",
            "abcdefghIJKLMNOPq",
            "O'Brien",
            "García-López2",
            "Zz@[`{~Az",
            "áéíóúñÑÆßÞĲŁ王x",
            "Mc Donald",
            "1234567890abc",
            "\u{7f}\u{80}\u{ff}xyz",
        ];
        // Every one- and two-byte character (and some longer) at every position of an
        // eight-byte window and around it.
        let mut all = Vec::new();
        let chars = (0..0x800).chain([0x2003, 0x3000, 0xFFFD, 0x1F600]);
        for c in chars.filter_map(char::from_u32) {
            for pos in 0..10 {
                let mut t: Vec<char> = "abcdefghij".chars().collect();
                t[pos] = c;
                all.push(t.into_iter().collect::<String>());
            }
        }
        for t in samples
            .iter()
            .copied()
            .chain(all.iter().map(String::as_str))
        {
            let mut want = "x".to_owned();
            t.chars().for_each(|c| push_ascii_alnum(c, &mut want));
            let mut got = "x".to_owned();
            push_ascii_word(t, &mut got);
            assert_eq!(got, want, "{t:?}");
        }
    }

    #[test]
    fn emails_and_markers() {
        assert!(is_valid_email("ana.ruiz@alumnos.example.edu"));
        assert!(!is_valid_email("ana@gmail"));
        assert!(!is_valid_email("ana@@x.com"));
        assert!(!is_valid_email(".ana@x.com"));
        assert!(!is_valid_email("ana@"));
        let mut c = EmailChecker::default();
        assert!(!c.is_valid("ana@"));
        assert!(c.is_valid("ana@x.com"));
        assert!(c.is_valid("bea@x.com"));
        assert!(!c.is_valid("ana@"));
        assert!(!c.is_valid("a..b@x.com"));
        assert!(is_no_email_marker("No  tiene"));
        assert!(is_no_email_marker("N/A"));
        assert!(!is_no_email_marker("Cobranzas"));
        assert!(Username::parse("guest").is_err());
        assert!(Username::parse("J.Perez").is_ok());
    }
}
