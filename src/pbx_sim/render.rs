//! Fills capture templates with one call's identity.

use std::sync::OnceLock;

use super::templates::{self, Template};

/// One event of a template.
pub(super) struct TEvent {
    pub phase: usize,
    /// Repeated once per Originate `Variable` (the VarSet of `DIALER_JOB_ID` in the capture).
    pub per_variable: bool,
    pub name: &'static str,
    pub body: &'static str,
}

pub(super) struct Parsed {
    /// Kept for diagnostics (which capture an event sequence came from).
    #[allow(dead_code)]
    pub t: &'static Template,
    pub events: Vec<TEvent>,
}

fn parse(t: &'static Template) -> Parsed {
    let mut events = Vec::new();
    for block in t.text.split("\n\n") {
        let block = block.trim_matches('\n');
        let Some((head, body)) = block.split_once('\n') else {
            continue;
        };
        let head = head.trim_start_matches('@');
        let per_variable = head.ends_with('V');
        let phase = head.trim_end_matches('V').parse().unwrap_or(0);
        let name = body
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("Event: "))
            .unwrap_or("");
        events.push(TEvent {
            phase,
            per_variable,
            name,
            body,
        });
    }
    Parsed { t, events }
}

macro_rules! cached {
    ($f:ident, $t:path) => {
        pub(super) fn $f() -> &'static Parsed {
            static P: OnceLock<Parsed> = OnceLock::new();
            P.get_or_init(|| parse(&$t))
        }
    };
}

cached!(answer, templates::ANSWER);
cached!(slow_answer, templates::SLOW_ANSWER);
cached!(busy, templates::BUSY);
cached!(congestion, templates::CONGESTION);
cached!(noanswer, templates::NOANSWER);
cached!(reject, templates::REJECT);
cached!(invalid_tech, templates::INVALID_TECH);
cached!(nonexistent, templates::NONEXISTENT);
cached!(cancel_ringing, templates::CANCEL_RINGING);
cached!(cancel_answered, templates::CANCEL_ANSWERED);
cached!(hangup_ringing_leg2, templates::HANGUP_RINGING_LEG2);

/// `long-answer`: its answer and Wait(30) as captured (probe-channelid-show.txt), then the
/// callee's own hangup, which no capture has, taken from `answer`'s last phase.
pub(super) fn long_answer() -> &'static Parsed {
    static P: OnceLock<Parsed> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = parse(&templates::LONG_ANSWER);
        let a = answer();
        let last = a.events.iter().map(|e| e.phase).max().unwrap_or(0);
        let next = p.events.iter().map(|e| e.phase).max().unwrap_or(0) + 1;
        for e in a.events.iter().filter(|e| e.phase == last) {
            p.events.push(TEvent {
                phase: next,
                per_variable: e.per_variable,
                name: e.name,
                body: e.body,
            });
        }
        p
    })
}
cached!(application, templates::APPLICATION);
cached!(landing_hangs_up, templates::LANDING_HANGS_UP);
cached!(shutdown_now, templates::SHUTDOWN_NOW);

/// A call's identity, as the placeholders name it.
#[derive(Debug, Clone, Default)]
pub(super) struct Vars {
    pub chan: String,
    pub req: String,
    pub exten: String,
    pub ctx: String,
    pub uid1: String,
    pub uid2: String,
    /// Uniqueid of a failed OriginateResponse: the ChannelId, else `<unknown>`.
    pub failuid: String,
    /// CallerIDNum / CallerIDName as channel events show them (`<unknown>` when absent,
    /// the name C-escaped: `O\"Brien`).
    pub num: String,
    pub name: String,
    /// The CallerID name unescaped, as OriginateResponse shows it.
    pub raw_name: String,
    /// `${CALLERID(all)}` in dialplan app data: `"raw name" <number>`, empty parts empty.
    pub cid_all: String,
    /// Cdr `CallerID`: `"escaped name" <number>`, empty parts empty (probe-callerid.txt).
    pub cdr_cid: String,
    /// Cdr `Source`: the number, empty when there is none.
    pub src: String,
    /// An `Application` landing: its name and data (OriginateResponse, Cdr of `;1`).
    pub lapp: String,
    pub ldata: String,
    pub action_id: Option<String>,
    pub lctx: String,
    pub lexten: String,
    pub job: String,
    pub variables: Vec<(String, String)>,
    pub start: String,
    pub answered: String,
    pub end: String,
    pub dur: String,
    pub bill: String,
}

/// Renders one event to wire text (CRLF lines, blank line at the end). Per-variable events
/// are rendered once per variable.
pub(super) fn render(ev: &TEvent, v: &Vars, out: &mut String) {
    if ev.per_variable {
        // `;1` sets the Originate's variables last to first, `;2` first to last
        // (probe-variable.txt).
        let on_one = ev.body.contains("\nChannel: {CHAN};1\n");
        let mut vars: Vec<_> = v.variables.iter().collect();
        if on_one {
            vars.reverse();
        }
        for (k, val) in vars {
            render_one(ev.body, v, Some((k, val)), out);
        }
    } else {
        render_one(ev.body, v, None, out);
    }
}

fn render_one(body: &str, v: &Vars, var: Option<(&String, &String)>, out: &mut String) {
    let event = body
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Event: "))
        .unwrap_or("");
    for line in body.lines() {
        if line == "ActionID: {ACTIONID}" && v.action_id.is_none() {
            continue;
        }
        // CallerID forms the templates spell with {NAME}/{NUM} but Asterisk writes
        // differently (probe-callerid.txt).
        let special = match (event, line) {
            ("Cdr", l) if l.starts_with("CallerID: ") => Some(format!("CallerID: {}", v.cdr_cid)),
            ("Cdr", l) if l.starts_with("Source: ") => Some(format!("Source: {}", v.src)),
            ("OriginateResponse", "CallerIDName: {NAME}") => {
                Some(format!("CallerIDName: {}", v.raw_name))
            }
            // An Application landing reports Application/Data instead of Context/Exten.
            ("OriginateResponse", "Context: {LCTX}") if !v.lapp.is_empty() => {
                Some(format!("Application: {}", v.lapp))
            }
            ("OriginateResponse", "Exten: {LEXTEN}") if !v.lapp.is_empty() => {
                Some(format!("Data: {}", v.ldata))
            }
            _ => None,
        };
        if let Some(l) = special {
            out.push_str(&l);
            out.push_str("\r\n");
            continue;
        }
        let replaced;
        let mut rest = line;
        if line.contains("\"{NAME}\" <{NUM}>") {
            replaced = line.replace("\"{NAME}\" <{NUM}>", &v.cid_all);
            rest = &replaced;
        }
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            match after.find('}') {
                Some(j) => {
                    let key = &after[..j];
                    match lookup(key, v, var) {
                        Some(val) => out.push_str(val),
                        None => {
                            out.push('{');
                            out.push_str(key);
                            out.push('}');
                        }
                    }
                    rest = &after[j + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
}

fn lookup<'a>(key: &str, v: &'a Vars, var: Option<(&'a String, &'a String)>) -> Option<&'a str> {
    Some(match key {
        "CHAN" => &v.chan,
        "REQ" => &v.req,
        "EXTEN" => &v.exten,
        "CTX" => &v.ctx,
        "UID1" => &v.uid1,
        "UID2" => &v.uid2,
        "FAILUID" => &v.failuid,
        "NUM" => &v.num,
        "NAME" => &v.name,
        "ACTIONID" => v.action_id.as_deref().unwrap_or(""),
        "LCTX" => &v.lctx,
        "LEXTEN" => &v.lexten,
        "JOB" => &v.job,
        "START" => &v.start,
        "ANSWERED" => &v.answered,
        "END" => &v.end,
        "DUR" => &v.dur,
        "BILL" => &v.bill,
        "LAPP" => &v.lapp,
        "LDATA" => &v.ldata,
        "VARNAME" => var.map(|x| x.0.as_str()).unwrap_or(""),
        "VARVALUE" => var.map(|x| x.1.as_str()).unwrap_or(""),
        _ => return None,
    })
}

/// `YYYY-MM-DD HH:MM:SS` (UTC; Asterisk writes local time) for a Unix time.
pub(super) fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm; avoids a date crate for one format.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
