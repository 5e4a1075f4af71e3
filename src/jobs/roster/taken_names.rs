//! The sets of taken names: which usernames and addresses are taken, in 8-byte hashes.

use std::hash::{BuildHasher, RandomState};

/// Open-addressing set of 64-bit hashes, linear probing, at most half full: one cache
/// line touched per insert in the common case, 16 bytes per entry at worst.
struct U64Set {
    slots: Vec<u64>,
    len: usize,
}

impl U64Set {
    fn new() -> Self {
        Self {
            slots: zeroed(1024),
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
        prefetch_slot(&self.slots, (h.max(1) as usize) & (self.slots.len() - 1));
    }

    fn grow(&mut self) {
        let bigger = zeroed(self.slots.len() * 2);
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
/// A table of `n` empty slots, written once so that each page costs the kernel one fault:
/// `vec![0; n]` gets untouched zero pages, and the lookups that read a page before the
/// first insert writes it fault twice (zero page, then copy on write).
fn zeroed<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    // `black_box`: an optimizer that knows fresh memory is zero could turn the fill back
    // into a zeroed allocation.
    v.resize(n, std::hint::black_box(T::default()));
    v
}

/// Asks the CPU to start loading `slots[i]` into the caches.
fn prefetch_slot<T>(slots: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = slots[i..].as_ptr().cast::<i8>();
        // SAFETY: a prefetch is only a hint: it never faults and never changes memory;
        // `p` points into `slots` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slots, i);
}

/// Open-addressing map from 64-bit hashes to counters, linear probing, at most half full.
/// Key 0 marks an empty slot, so it is kept on the side.
struct U64Map {
    slots: Vec<(u64, u32)>,
    len: usize,
    zero: Option<u32>,
}

impl U64Map {
    fn new() -> Self {
        Self {
            slots: zeroed(256),
            len: 0,
            zero: None,
        }
    }

    fn prefetch(&self, k: u64) {
        prefetch_slot(&self.slots, (k as usize) & (self.slots.len() - 1));
    }

    fn get(&self, k: u64) -> Option<u32> {
        if k == 0 {
            return self.zero;
        }
        let mask = self.slots.len() - 1;
        let mut i = (k as usize) & mask;
        loop {
            match self.slots[i] {
                (0, _) => return None,
                (s, v) if s == k => return Some(v),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn insert(&mut self, k: u64, v: u32) {
        if k == 0 {
            self.zero = Some(v);
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            let bigger = zeroed(self.slots.len() * 2);
            let old = std::mem::replace(&mut self.slots, bigger);
            let mask = self.slots.len() - 1;
            for (k, v) in old.into_iter().filter(|&(k, _)| k != 0) {
                let mut i = (k as usize) & mask;
                while self.slots[i].0 != 0 {
                    i = (i + 1) & mask;
                }
                self.slots[i] = (k, v);
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = (k as usize) & mask;
        loop {
            let s = self.slots[i].0;
            if s == 0 {
                self.slots[i] = (k, v);
                self.len += 1;
                return;
            }
            if s == k {
                self.slots[i].1 = v;
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// A set of name tails (`""` for usernames, `@domain` for addresses) while there are
/// few; past that, it answers "maybe" for every tail.
struct Tails(Option<Vec<String>>);

impl Default for Tails {
    fn default() -> Self {
        Self(Some(Vec::new()))
    }
}

impl Tails {
    /// Past this many tails, the list would cost more than it saves.
    const MAX: usize = 8;

    fn note(&mut self, tail: &str) {
        let Some(tails) = &mut self.0 else {
            return;
        };
        if tails.iter().any(|t| t == tail) {
            return;
        }
        if tails.len() == Self::MAX {
            self.0 = None;
        } else {
            tails.push(tail.to_owned());
        }
    }

    /// False only when `tail` was never noted.
    fn may_have(&self, tail: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|tails| tails.iter().any(|t| t == tail))
    }
}

/// A seeded multiply-xorshift hash, 8 bytes at a time, finished with murmur3's `fmix64`.
/// SipHash cost more than the table itself here; the seed is random per registry, and a
/// collision can only cost an unneeded suffix. `Copy`, so the parsing thread can hash the
/// names the registry will look up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameHash {
    seed: u64,
}

impl NameHash {
    pub(crate) fn of(&self, s: &str) -> u64 {
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
            // The rest zero-padded, little-endian, without a variable-length copy.
            let w = super::swar::load_le(rest);
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^ (h >> 33)
    }
}

/// Hashes computed ahead of a [`TakenNames::claim_hinted`] or [`TakenNames::insert_hinted`]
/// of a name: the name's own by phase A (on the parsing thread), the renamed candidate's
/// by [`TakenNames::prefetch_next`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Hint {
    /// Hash of base + tail.
    full: u64,
    /// The counter seen at prefetch time (0: none) and the hash of base + it + tail.
    next: u32,
    next_hash: u64,
}

impl Hint {
    /// `full`: the registry's [`NameHash`] of the whole name (base + tail).
    pub(crate) fn new(full: u64) -> Self {
        Self {
            full,
            next: 0,
            next_hash: 0,
        }
    }
}

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
pub(crate) struct TakenNames {
    hash: NameHash,
    /// Taken names whose body does not end in a digit.
    plain: U64Set,
    /// Taken names whose body ends in a digit and that no counter implies.
    numbered: U64Set,
    /// The tails of the names in `numbered`: renaming skips the `numbered` look-up (a
    /// hash and a memory round trip) for a tail that has none, such as the generated
    /// addresses' domain next to given `u123@…` addresses, or usernames when no existing
    /// one ends in a digit.
    numbered_tails: Tails,
    /// The tails of the keys in `next_suffix`: a given `u123@x.edu` is not looked up as a
    /// renamed name when no name ending in `@x.edu` was ever renamed.
    counter_tails: Tails,
    /// Per base (base + tail): the next number to hand out; all below it are taken.
    next_suffix: U64Map,
    /// Addresses: the tail starts at the last `@`.
    email: bool,
    candidate: String,
    scratch: String,
    scratch_hash: u64,
}

impl TakenNames {
    pub(crate) fn for_usernames() -> Self {
        Self::new(false)
    }

    pub(crate) fn for_emails() -> Self {
        Self::new(true)
    }

    fn new(email: bool) -> Self {
        Self {
            hash: NameHash {
                seed: RandomState::new().hash_one(0x5EED_u64),
            },
            plain: U64Set::new(),
            numbered: U64Set::new(),
            numbered_tails: Tails::default(),
            counter_tails: Tails::default(),
            next_suffix: U64Map::new(),
            email,
            candidate: String::new(),
            scratch: String::new(),
            scratch_hash: 0,
        }
    }

    /// The hash function of this registry, for phase A to hash names on its own thread.
    pub(crate) fn hasher(&self) -> NameHash {
        self.hash
    }

    fn hash(&self, s: &str) -> u64 {
        self.hash.of(s)
    }

    fn body_end(&self, name: &str) -> usize {
        if self.email {
            memchr::memrchr(b'@', name.as_bytes()).unwrap_or(name.len())
        } else {
            name.len()
        }
    }

    /// Whether a counter implies `name` is taken: its body is base + N with N ≥ 2 below
    /// the base's counter.
    fn implied(&mut self, name: &str, body_end: usize) -> bool {
        if !self.counter_tails.may_have(&name[body_end..]) {
            return false;
        }
        let body = &name.as_bytes()[..body_end];
        // Digits are ASCII, so the split is at a char boundary.
        let split = body
            .iter()
            .rposition(|c| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        let (prefix, digits) = (&name[..split], &body[split..]);
        if prefix.is_empty() || digits.is_empty() || digits[0] == b'0' || digits.len() > 9 {
            return false;
        }
        // At most nine digits: no overflow.
        let n = digits
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        // `scratch` keeps the last key and `scratch_hash` its hash: given addresses like
        // `u123@x.edu`, `u124@x.edu` share theirs.
        let tail = &name[body_end..];
        let key = &self.scratch;
        if !(key.len() == prefix.len() + tail.len()
            && key.starts_with(prefix)
            && key.ends_with(tail))
        {
            let mut key = std::mem::take(&mut self.scratch);
            key.clear();
            key.push_str(prefix);
            key.push_str(tail);
            self.scratch_hash = self.hash(&key);
            self.scratch = key;
        }
        let next = self.next_suffix.get(self.scratch_hash);
        next.is_some_and(|next| n >= 2 && n < next)
    }

    /// Marks `name` (body ending at `body_end`, hash `h`) as taken; false when it already
    /// was.
    fn take(&mut self, name: &str, body_end: usize, h: u64) -> bool {
        let numbered = ends_in_digit(&name[..body_end]);
        if numbered && self.implied(name, body_end) {
            return false;
        }
        if numbered {
            self.numbered_tails.note(&name[body_end..]);
            self.numbered.insert(h)
        } else {
            self.plain.insert(h)
        }
    }

    /// False when no name in `numbered` ends in `tail`: then renaming a base + `tail`
    /// looks nothing up.
    pub(crate) fn may_have_numbered(&self, tail: &str) -> bool {
        self.numbered_tails.may_have(tail)
    }

    /// Starts loading the slot a later [`Self::insert_hinted`] of `name` (body ending at
    /// `body_end`) will touch: the
    /// tables are bigger than the caches, so an insert is a memory round trip, and
    /// started early it overlaps with other rows' work.
    pub(crate) fn prefetch_insert(&self, name: &str, body_end: usize, hint: &Hint) {
        debug_assert_eq!(body_end, self.body_end(name));
        self.prefetch_body(&name[..body_end], hint.full);
    }

    /// Starts loading the slots a later [`Self::claim_hinted`] of `base` + a tail will
    /// touch first (the name's and its counter's). [`Self::prefetch_next`] continues
    /// once those slots have had time to arrive.
    pub(crate) fn prefetch_claim(&self, base: &str, hint: &Hint) {
        self.prefetch_body(base, hint.full);
        self.next_suffix.prefetch(hint.full);
    }

    fn prefetch_body(&self, body: &str, h: u64) {
        if ends_in_digit(body) {
            self.numbered.prefetch(h);
        } else {
            self.plain.prefetch(h);
        }
    }

    /// Second step of [`Self::prefetch_claim`]: a base seen before is most likely renamed
    /// to its next number, so this reads the counter and starts loading that name's slot.
    pub(crate) fn prefetch_next(&mut self, base: &str, tail: &str, hint: &mut Hint) {
        if !self.may_have_numbered(tail) {
            // Renaming will not look that name up (see `claim_hinted`).
            return;
        }
        let Some(n) = self.next_suffix.get(hint.full) else {
            return;
        };
        let mut cand = std::mem::take(&mut self.candidate);
        cand.clear();
        cand.push_str(base);
        push_u32(n, &mut cand);
        if !tail.is_empty() {
            cand.push_str(tail);
        }
        hint.next = n;
        hint.next_hash = self.hash(&cand);
        self.numbered.prefetch(hint.next_hash);
        self.candidate = cand;
    }

    /// Marks `name` as taken; returns false when it already was.
    pub(crate) fn insert(&mut self, name: &str) -> bool {
        let end = self.body_end(name);
        let h = self.hash(name);
        self.take(name, end, h)
    }

    /// [`Self::insert`] with the name's [`Hint`] and where its body ends (for an address,
    /// at its last `@`).
    pub(crate) fn insert_hinted(&mut self, name: &str, body_end: usize, hint: &Hint) -> bool {
        debug_assert_eq!(body_end, self.body_end(name));
        self.take(name, body_end, hint.full)
    }

    /// Claims `base` + `tail`, or else `base` + N + `tail` with N from the base's counter
    /// (2, 3, …), skipping numbers taken otherwise. Returns the claimed name (borrowed
    /// until the next call) and whether it was renamed.
    #[cfg(test)]
    pub(crate) fn claim(&mut self, base: &str, tail: &str) -> (&str, bool) {
        self.claim_hinted(base, tail, None)
    }

    /// [`Self::claim`] with the [`Hint`] that `prefetch(base, tail)` returned, if any.
    pub(crate) fn claim_hinted(
        &mut self,
        base: &str,
        tail: &str,
        hint: Option<&Hint>,
    ) -> (&str, bool) {
        let mut cand = std::mem::take(&mut self.candidate);
        let unsuffixed = |cand: &mut String| {
            cand.clear();
            cand.push_str(base);
            cand.push_str(tail);
        };
        let key = match hint {
            Some(h) => h.full,
            None => {
                unsuffixed(&mut cand);
                self.hash(&cand)
            }
        };
        // One counter per (base, tail), keyed like the unsuffixed name. A base with a
        // counter was taken when the counter was made, and names are never freed: no need
        // to look it up again (nor to build it: usually there is a counter).
        let counter = self.next_suffix.get(key);
        if counter.is_none() {
            if hint.is_some() {
                unsuffixed(&mut cand);
            }
            if self.take(&cand, base.len(), key) {
                self.candidate = cand;
                return (&self.candidate, false);
            }
        }
        let letter_base = !ends_in_digit(base);
        let check_numbered = self.may_have_numbered(tail);
        let mut n = counter.unwrap_or(2);
        loop {
            cand.clear();
            cand.push_str(base);
            push_u32(n, &mut cand);
            let body_end = cand.len();
            if !tail.is_empty() {
                cand.push_str(tail);
            }
            let hash = |r: &Self| match hint {
                // The counter may have moved since the prefetch (an earlier row with the
                // same base): the hash is only reused for the same number.
                Some(hint) if hint.next == n => hint.next_hash,
                _ => r.hash(&cand),
            };
            let free = if !letter_base {
                let h = hash(self);
                self.take(&cand, body_end, h)
            } else {
                // Numbers below the counter are implied, so only explicit numbered names
                // can be in the way; the counter update below records this one.
                !check_numbered || !self.numbered.contains(hash(self))
            };
            n = n.saturating_add(1);
            if free {
                break;
            }
        }
        self.next_suffix.insert(key, n);
        if counter.is_none() {
            self.counter_tails.note(tail);
        }
        self.candidate = cand;
        (&self.candidate, true)
    }
}

fn ends_in_digit(s: &str) -> bool {
    s.as_bytes().last().is_some_and(u8::is_ascii_digit)
}

fn push_u32(mut n: u32, out: &mut String) {
    // Numbers here are small (a suffix): up to four digits without a loop.
    if n < 10_000 {
        let d = |k: u32| char::from(b'0' + (k % 10) as u8);
        if n >= 1000 {
            out.push(d(n / 1000));
        }
        if n >= 100 {
            out.push(d(n / 100));
        }
        if n >= 10 {
            out.push(d(n / 10));
        }
        out.push(d(n));
        return;
    }
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
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tail_is_zero_padded() {
        let r = TakenNames::for_usernames();
        let reference = |s: &str| {
            const K: u64 = 0x9E37_79B9_7F4A_7C15;
            let b = s.as_bytes();
            let mut h = r.hash.seed ^ (b.len() as u64).wrapping_mul(K);
            for c in b.chunks(8) {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
            }
            h ^= h >> 33;
            h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
            h ^= h >> 33;
            h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
            h ^ (h >> 33)
        };
        for s in [
            "",
            "a",
            "jperez",
            "jperez2",
            "jperez23",
            "juanperezgarcia@x.edu",
            "0123456789abcdefg",
        ] {
            assert_eq!(r.hash(s), reference(s), "{s}");
        }
    }

    #[test]
    fn push_u32_writes_decimal() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            1009,
            9999,
            10_000,
            123_456,
            u32::MAX,
        ] {
            let mut s = String::from("x");
            push_u32(n, &mut s);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn registry_suffixes() {
        let mut r = TakenNames::for_usernames();
        r.insert("guest");
        assert_eq!(r.claim("jperez", ""), ("jperez", false));
        assert_eq!(r.claim("jperez", ""), ("jperez2", true));
        assert_eq!(r.claim("jperez", ""), ("jperez3", true));
        assert_eq!(r.claim("guest", ""), ("guest2", true));
        let mut e = TakenNames::for_emails();
        assert_eq!(e.claim("ana", "@x.com"), ("ana@x.com", false));
        assert_eq!(e.claim("ana", "@x.com"), ("ana2@x.com", true));
    }

    #[test]
    fn renamed_names_are_remembered_without_being_stored() {
        let mut r = TakenNames::for_usernames();
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

        let mut e = TakenNames::for_emails();
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
}
