//! Username and email rules: transliteration, Moodle's username alphabet, "no email"
//! markers, email parsing, and the uniqueness registries.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

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

    /// For names the registry built: already in the alphabet by construction.
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
pub struct InitialPassword(String);

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
        Ok(Self(text.to_owned()))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
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

/// Checks an already lower-cased address: a dot-atom local part (RFC 5322, as Moodle's
/// `validate_email` accepts) and a DNS domain, at most 100 characters (Moodle's column).
pub(crate) fn is_valid_email(lower: &str) -> bool {
    if lower.len() > MAX_EMAIL_CHARS {
        return false;
    }
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return false;
    };
    let lb = local.as_bytes();
    if lb.is_empty() || lb.len() > MAX_LOCAL_PART || lb[0] == b'.' || lb[lb.len() - 1] == b'.' {
        return false;
    }
    if local.contains("..") {
        return false;
    }
    let local_ok = lb.iter().all(|&c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+/=?^_`{|}~.-".contains(&c)
    });
    local_ok && is_valid_domain(domain)
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

/// Whether `text` (one or more words) means "no address".
pub(crate) fn is_no_email_marker(text: &str) -> bool {
    if text.len() > 24 {
        return false;
    }
    let mut buf = [0u8; 24];
    let mut n = 0;
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if !c.is_ascii() {
            return false;
        }
        if space && n > 0 {
            buf[n] = b' ';
            n += 1;
        }
        space = false;
        if n >= buf.len() {
            return false;
        }
        buf[n] = c.to_ascii_lowercase() as u8;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).is_ok_and(|s| NO_EMAIL_MARKERS.contains(&s))
}

/// Appends the ASCII transliteration of `c`, lower case, letters and digits only. Covers
/// Latin-1 and Latin Extended-A (Spanish, Portuguese, French, German, Nordic, Central
/// European names); anything else (apostrophes, hyphens, other scripts) adds nothing.
pub(crate) fn push_ascii_alnum(c: char, out: &mut String) {
    if c.is_ascii() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        }
        return;
    }
    let s: &str = match c {
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
    };
    out.push_str(s);
}

/// Appends the transliteration of every character of `text`.
pub(crate) fn push_ascii_word(text: &str, out: &mut String) {
    if text.is_ascii() {
        // Fast path: most rosters are plain ASCII.
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() {
                out.push(b.to_ascii_lowercase() as char);
            }
        }
    } else {
        for c in text.chars() {
            push_ascii_alnum(c, out);
        }
    }
}

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

/// Surname particles that belong to the following word ("de la Fuente" is one surname).
const PARTICLES: &[&str] = &[
    "de", "del", "la", "las", "los", "da", "das", "do", "dos", "di", "van", "von", "der", "den",
    "y", "e", "i", "le", "mc", "san", "st", "st.",
];

pub(crate) fn is_particle(word: &str) -> bool {
    word.len() <= 3 && PARTICLES.iter().any(|p| p.eq_ignore_ascii_case(word))
}

/// The first surname among surname words: the first word, with any leading particles
/// ("de la Fuente García" → "de la Fuente").
pub(crate) fn first_surname<'a>(
    surname_words: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    let mut done = false;
    surname_words.take_while(move |w| {
        if done {
            return false;
        }
        if !is_particle(w) {
            done = true;
        }
        true
    })
}

/// Builds the username base: first letter of the forename + the first surname,
/// transliterated. Empty when the names have no Latin letters or digits.
pub(crate) fn username_base(firstname: &str, lastname: &str, out: &mut String) {
    username_base_from_words(firstname, words(lastname), out);
}

/// [`username_base`] for names already split into words.
pub(crate) fn username_base_from_words<'a>(
    firstname: &str,
    surname_words: impl Iterator<Item = &'a str>,
    out: &mut String,
) {
    out.clear();
    // "Æsa" gives "ae": the whole transliteration of the first letter that has one.
    for c in firstname.chars() {
        push_ascii_alnum(c, out);
        if !out.is_empty() {
            break;
        }
    }
    let start = out.len();
    for w in first_surname(surname_words) {
        push_ascii_word(w, out);
    }
    if out.len() == start {
        out.clear();
        return;
    }
    out.truncate(MAX_USERNAME_BASE);
}

/// Builds a generated address's local part: whole forename + whole last name.
pub(crate) fn email_local_base(firstname: &str, lastname: &str, out: &mut String) {
    out.clear();
    push_ascii_word(firstname, out);
    push_ascii_word(lastname, out);
    out.truncate(MAX_LOCAL_PART - 8);
}

/// Hashes are already SipHash outputs keyed per registry; hashing them again is waste.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Open-addressing set of 64-bit hashes, linear probing, at most half full: one cache
/// line touched per insert in the common case, 16 bytes per entry at worst.
struct U64Set {
    slots: Vec<u64>,
    len: usize,
}

impl U64Set {
    fn new() -> Self {
        Self {
            slots: vec![0; 1024],
            len: 0,
        }
    }

    /// Inserts `h`; false when it was already there. 0 marks an empty slot, so a hash of
    /// 0 is stored as 1 (harmless: it only merges two hashes).
    fn insert(&mut self, h: u64) -> bool {
        let h = h.max(1);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                self.slots[i] = h;
                self.len += 1;
                return true;
            }
            if s == h {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    fn contains(&self, h: u64) -> bool {
        let h = h.max(1);
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            match self.slots[i] {
                0 => return false,
                s if s == h => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Asks the CPU to start loading `h`'s slot. The table is bigger than the caches, so
    /// an insert is a memory round trip; started early, it overlaps with other work.
    fn prefetch(&self, h: u64) {
        let i = (h.max(1) as usize) & (self.slots.len() - 1);
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let p = self.slots[i..].as_ptr().cast::<i8>();
            // SAFETY: a prefetch is only a hint: it never faults and never changes memory;
            // `p` points into `self.slots` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    fn grow(&mut self) {
        let bigger = vec![0; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, bigger);
        let mask = self.slots.len() - 1;
        for h in old.into_iter().filter(|&h| h != 0) {
            let mut i = (h as usize) & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = h;
        }
    }
}
type U64Map = HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>;

/// Names already taken, kept as 64-bit keyed hashes so memory is 8 bytes (plus table
/// overhead) per name whatever its length. A hash collision (about 1 in 10^7 over a
/// million names) can only make a name look taken, never free: the cost is an unneeded
/// suffix, never a duplicate.
///
/// A name is a *body* plus a *tail* (`@domain` for addresses, nothing for usernames).
/// Renamed names (`jperez7`) are not stored: a letter-ending body followed by a number
/// splits back uniquely into base and number, and every number below the base's counter
/// is taken. So a roster of a thousand Juan Pérez touches one small counter instead of
/// a thousand random slots of a table bigger than the caches. Names whose body ends in
/// a digit for another reason (an existing `jperez7`, `u123@…`) go to a second set,
/// usually small, that renaming checks.
pub(crate) struct Registry {
    seed: u64,
    /// Taken names whose body does not end in a digit.
    plain: U64Set,
    /// Taken names whose body ends in a digit and that no counter implies.
    numbered: U64Set,
    /// Per base (base + tail): the next number to hand out; all below it are taken.
    next_suffix: U64Map,
    /// Addresses: the tail starts at the last `@`.
    email: bool,
    candidate: String,
    scratch: String,
}

impl Registry {
    pub(crate) fn for_usernames() -> Self {
        Self::new(false)
    }

    pub(crate) fn for_emails() -> Self {
        Self::new(true)
    }

    fn new(email: bool) -> Self {
        Self {
            seed: RandomState::new().hash_one(0x5EED_u64),
            plain: U64Set::new(),
            numbered: U64Set::new(),
            next_suffix: U64Map::default(),
            email,
            candidate: String::new(),
            scratch: String::new(),
        }
    }

    /// A seeded multiply-xorshift hash, 8 bytes at a time, finished with murmur3's
    /// `fmix64`. SipHash cost more than the table itself here; the seed is random per
    /// registry, and a collision can only cost an unneeded suffix.
    fn hash(&self, s: &str) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let b = s.as_bytes();
        let mut h = self.seed ^ (b.len() as u64).wrapping_mul(K);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^ (h >> 33)
    }

    fn body_end(&self, name: &str) -> usize {
        if self.email {
            name.rfind('@').unwrap_or(name.len())
        } else {
            name.len()
        }
    }

    /// Whether a counter implies `name` is taken: its body is base + N with N ≥ 2 below
    /// the base's counter.
    fn implied(&mut self, name: &str, body_end: usize) -> bool {
        let body = &name[..body_end];
        let prefix = body.trim_end_matches(|c: char| c.is_ascii_digit());
        let digits = &body[prefix.len()..];
        if prefix.is_empty() || digits.is_empty() || digits.starts_with('0') || digits.len() > 9 {
            return false;
        }
        let Ok(n) = digits.parse::<u32>() else {
            return false;
        };
        let mut key = std::mem::take(&mut self.scratch);
        key.clear();
        key.push_str(prefix);
        key.push_str(&name[body_end..]);
        let next = self.next_suffix.get(&self.hash(&key)).copied();
        self.scratch = key;
        next.is_some_and(|next| n >= 2 && n < next)
    }

    /// Marks `name` (body ending at `body_end`) as taken; false when it already was.
    fn take(&mut self, name: &str, body_end: usize) -> bool {
        let numbered = name[..body_end].ends_with(|c: char| c.is_ascii_digit());
        if numbered && self.implied(name, body_end) {
            return false;
        }
        let h = self.hash(name);
        if numbered {
            self.numbered.insert(h)
        } else {
            self.plain.insert(h)
        }
    }

    /// Starts loading the slots a later [`Self::claim`] or [`Self::insert`] of `base` +
    /// `tail` will touch (see `Converter` for why).
    pub(crate) fn prefetch(&mut self, base: &str, tail: &str) {
        let mut cand = std::mem::take(&mut self.candidate);
        cand.clear();
        cand.push_str(base);
        cand.push_str(tail);
        let h = self.hash(&cand);
        if base.ends_with(|c: char| c.is_ascii_digit()) {
            self.numbered.prefetch(h);
        } else {
            self.plain.prefetch(h);
        }
        // A base seen before is most likely renamed to its next number.
        if let Some(&n) = self.next_suffix.get(&h) {
            cand.clear();
            cand.push_str(base);
            push_u32(n, &mut cand);
            cand.push_str(tail);
            self.numbered.prefetch(self.hash(&cand));
        }
        self.candidate = cand;
    }

    /// Marks `name` as taken; returns false when it already was.
    pub(crate) fn insert(&mut self, name: &str) -> bool {
        let end = self.body_end(name);
        self.take(name, end)
    }

    /// Claims `base` + `tail`, or else `base` + N + `tail` with N from the base's counter
    /// (2, 3, …), skipping numbers taken otherwise. Returns the claimed name (borrowed
    /// until the next call) and whether it was renamed.
    pub(crate) fn claim(&mut self, base: &str, tail: &str) -> (&str, bool) {
        let mut cand = std::mem::take(&mut self.candidate);
        cand.clear();
        cand.push_str(base);
        cand.push_str(tail);
        if self.take(&cand, base.len()) {
            self.candidate = cand;
            return (&self.candidate, false);
        }
        // One counter per (base, tail), keyed like the unsuffixed name.
        let key = self.hash(&cand);
        let letter_base = !base.ends_with(|c: char| c.is_ascii_digit());
        let mut n = self.next_suffix.get(&key).copied().unwrap_or(2);
        loop {
            cand.clear();
            cand.push_str(base);
            push_u32(n, &mut cand);
            let body_end = cand.len();
            cand.push_str(tail);
            n = n.saturating_add(1);
            let free = if letter_base {
                // Numbers below the counter are implied, so only explicit numbered names
                // can be in the way; the counter update below records this one.
                !self.numbered.contains(self.hash(&cand))
            } else {
                self.take(&cand, body_end)
            };
            if free {
                break;
            }
        }
        self.next_suffix.insert(key, n);
        self.candidate = cand;
        (&self.candidate, true)
    }
}

fn push_u32(mut n: u32, out: &mut String) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
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
    fn registry_suffixes() {
        let mut r = Registry::for_usernames();
        r.insert("guest");
        assert_eq!(r.claim("jperez", ""), ("jperez", false));
        assert_eq!(r.claim("jperez", ""), ("jperez2", true));
        assert_eq!(r.claim("jperez", ""), ("jperez3", true));
        assert_eq!(r.claim("guest", ""), ("guest2", true));
        let mut e = Registry::for_emails();
        assert_eq!(e.claim("ana", "@x.com"), ("ana@x.com", false));
        assert_eq!(e.claim("ana", "@x.com"), ("ana2@x.com", true));
    }

    #[test]
    fn renamed_names_are_remembered_without_being_stored() {
        let mut r = Registry::for_usernames();
        // An existing numbered username is skipped when renaming.
        assert!(r.insert("jperez3"));
        assert_eq!(r.claim("jperez", ""), ("jperez", false));
        assert_eq!(r.claim("jperez", ""), ("jperez2", true));
        assert_eq!(r.claim("jperez", ""), ("jperez4", true));
        // jperez2 and jperez4 were handed out: implied by the counter.
        assert!(!r.insert("jperez2"));
        assert!(!r.insert("jperez4"));
        assert!(!r.insert("jperez3"));
        assert!(r.insert("jperez5"));
        assert!(r.insert("jperez02"));
        // A base that itself ends in a digit.
        assert_eq!(r.claim("jperez2", ""), ("jperez22", true));
        assert_eq!(r.claim("jperez", ""), ("jperez6", true));
        assert!(!r.insert("jperez22"));

        let mut e = Registry::for_emails();
        assert_eq!(e.claim("juanperez", "@x.edu"), ("juanperez@x.edu", false));
        assert_eq!(e.claim("juanperez", "@x.edu"), ("juanperez2@x.edu", true));
        // A given address equal to a generated one is a duplicate.
        assert!(!e.insert("juanperez2@x.edu"));
        assert!(e.insert("juanperez2@y.edu"));
        assert!(e.insert("u1@x.edu"));
        assert!(!e.insert("u1@x.edu"));
        // Given numbered addresses are skipped by generation.
        assert!(e.insert("juanperez3@x.edu"));
        assert_eq!(e.claim("juanperez", "@x.edu"), ("juanperez4@x.edu", true));
    }

    #[test]
    fn emails_and_markers() {
        assert!(is_valid_email("ana.ruiz@alumnos.example.edu"));
        assert!(!is_valid_email("ana@gmail"));
        assert!(!is_valid_email("ana@@x.com"));
        assert!(!is_valid_email(".ana@x.com"));
        assert!(is_no_email_marker("No  tiene"));
        assert!(is_no_email_marker("N/A"));
        assert!(!is_no_email_marker("Cobranzas"));
        assert!(Username::parse("guest").is_err());
        assert!(Username::parse("J.Perez").is_ok());
    }
}
