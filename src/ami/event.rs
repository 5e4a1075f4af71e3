//! Typed views of the events a dialer acts on. They borrow from the [`Message`], so turning
//! a message into a typed event allocates nothing. Unknown events are [`Event::Unknown`],
//! never an error, and a missing field is `None`, never a panic.

use super::message::Message;

/// `Uniqueid` as Asterisk reports it. A failed OriginateResponse carries the literal
/// `<unknown>` (Asterisk 22), or the requested ChannelId when one was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueid<'a> {
    Known(&'a str),
    Unknown,
}

impl<'a> Uniqueid<'a> {
    fn parse(v: &'a str) -> Self {
        if v.is_empty() || v == "<unknown>" {
            Uniqueid::Unknown
        } else {
            Uniqueid::Known(v)
        }
    }

    pub fn known(self) -> Option<&'a str> {
        match self {
            Uniqueid::Known(s) => Some(s),
            Uniqueid::Unknown => None,
        }
    }
}

/// Final outcome of an `Async: true` Originate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateResponse<'a> {
    pub action_id: Option<&'a str>,
    /// `Success` or `Failure`.
    pub response: &'a str,
    /// Requested channel string on failure, the real `;1` channel on success.
    pub channel: Option<&'a str>,
    /// Seen: 4 answered, 5 busy, 8 congestion, 3 ring timeout, 0 everything else.
    pub reason: Option<u32>,
    pub uniqueid: Uniqueid<'a>,
    pub caller_id_num: Option<&'a str>,
    pub caller_id_name: Option<&'a str>,
}

impl OriginateResponse<'_> {
    pub fn is_success(&self) -> bool {
        self.response.eq_ignore_ascii_case("Success")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hangup<'a> {
    pub channel: Option<&'a str>,
    pub uniqueid: Uniqueid<'a>,
    pub linkedid: Option<&'a str>,
    pub caller_id_num: Option<&'a str>,
    /// Q.850 cause (16 normal, 17 busy, 19 no answer, 21 rejected, 34 congestion, 0 unknown).
    pub cause: Option<u32>,
    pub cause_txt: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newstate<'a> {
    pub channel: Option<&'a str>,
    pub uniqueid: Uniqueid<'a>,
    pub channel_state: Option<u32>,
    pub channel_state_desc: Option<&'a str>,
    pub caller_id_num: Option<&'a str>,
}

/// DialBegin / DialEnd: the callee side is named with `Dest…` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial<'a> {
    pub dest_channel: Option<&'a str>,
    pub dest_uniqueid: Uniqueid<'a>,
    pub dest_caller_id_num: Option<&'a str>,
    pub dial_string: Option<&'a str>,
    /// DialEnd only: `ANSWER`, `BUSY`, `CONGESTION`, …
    pub dial_status: Option<&'a str>,
}

/// cdr_manager record. Note the `UniqueID` spelling; times are local `YYYY-MM-DD HH:MM:SS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr<'a> {
    pub source: Option<&'a str>,
    pub destination: Option<&'a str>,
    pub destination_context: Option<&'a str>,
    pub caller_id: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub last_application: Option<&'a str>,
    pub start_time: Option<&'a str>,
    /// Empty in the capture when the call was not answered; `None` then.
    pub answer_time: Option<&'a str>,
    pub end_time: Option<&'a str>,
    pub duration: Option<u32>,
    pub billable_seconds: Option<u32>,
    pub disposition: Option<&'a str>,
    pub unique_id: Uniqueid<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown<'a> {
    /// `Cleanly` or `Uncleanly`.
    pub shutdown: Option<&'a str>,
    pub restart: bool,
}

/// A typed event. Anything we do not model is `Unknown` with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    OriginateResponse(OriginateResponse<'a>),
    Hangup(Hangup<'a>),
    Newstate(Newstate<'a>),
    DialBegin(Dial<'a>),
    DialEnd(Dial<'a>),
    Cdr(Cdr<'a>),
    Shutdown(Shutdown<'a>),
    FullyBooted,
    Unknown(&'a str),
}

fn num(v: &str) -> Option<u32> {
    v.trim().parse().ok()
}

fn non_empty(v: &str) -> Option<&str> {
    if v.is_empty() { None } else { Some(v) }
}

impl<'a> Event<'a> {
    /// Classifies an event message. Returns `None` for responses and banners.
    pub fn parse(m: &'a Message) -> Option<Event<'a>> {
        let name = m.event_name()?;
        // One pass over the fields per event kind: lookups by name would rescan each time.
        Some(match name {
            "OriginateResponse" => {
                let mut e = OriginateResponse {
                    action_id: None,
                    response: "",
                    channel: None,
                    reason: None,
                    uniqueid: Uniqueid::Unknown,
                    caller_id_num: None,
                    caller_id_name: None,
                };
                scan(m, |k, v| match k {
                    K::ActionID => e.action_id = Some(v),
                    K::Response => e.response = v,
                    K::Channel => e.channel = Some(v),
                    K::Reason => e.reason = num(v),
                    K::Uniqueid => e.uniqueid = Uniqueid::parse(v),
                    K::CallerIDNum => e.caller_id_num = Some(v),
                    K::CallerIDName => e.caller_id_name = Some(v),
                    _ => {}
                });
                Event::OriginateResponse(e)
            }
            "Hangup" => {
                let mut e = Hangup {
                    channel: None,
                    uniqueid: Uniqueid::Unknown,
                    linkedid: None,
                    caller_id_num: None,
                    cause: None,
                    cause_txt: None,
                };
                scan(m, |k, v| match k {
                    K::Channel => e.channel = Some(v),
                    K::Uniqueid => e.uniqueid = Uniqueid::parse(v),
                    K::Linkedid => e.linkedid = Some(v),
                    K::CallerIDNum => e.caller_id_num = Some(v),
                    K::Cause => e.cause = num(v),
                    K::CauseTxt => e.cause_txt = Some(v),
                    _ => {}
                });
                Event::Hangup(e)
            }
            "Newstate" => {
                let mut e = Newstate {
                    channel: None,
                    uniqueid: Uniqueid::Unknown,
                    channel_state: None,
                    channel_state_desc: None,
                    caller_id_num: None,
                };
                scan(m, |k, v| match k {
                    K::Channel => e.channel = Some(v),
                    K::Uniqueid => e.uniqueid = Uniqueid::parse(v),
                    K::ChannelState => e.channel_state = num(v),
                    K::ChannelStateDesc => e.channel_state_desc = Some(v),
                    K::CallerIDNum => e.caller_id_num = Some(v),
                    _ => {}
                });
                Event::Newstate(e)
            }
            "DialBegin" | "DialEnd" => {
                let mut e = Dial {
                    dest_channel: None,
                    dest_uniqueid: Uniqueid::Unknown,
                    dest_caller_id_num: None,
                    dial_string: None,
                    dial_status: None,
                };
                scan(m, |k, v| match k {
                    K::DestChannel => e.dest_channel = Some(v),
                    K::DestUniqueid => e.dest_uniqueid = Uniqueid::parse(v),
                    K::DestCallerIDNum => e.dest_caller_id_num = Some(v),
                    K::DialString => e.dial_string = Some(v),
                    K::DialStatus => e.dial_status = Some(v),
                    _ => {}
                });
                if name == "DialBegin" {
                    Event::DialBegin(e)
                } else {
                    Event::DialEnd(e)
                }
            }
            "Cdr" => {
                let mut e = Cdr {
                    source: None,
                    destination: None,
                    destination_context: None,
                    caller_id: None,
                    channel: None,
                    last_application: None,
                    start_time: None,
                    answer_time: None,
                    end_time: None,
                    duration: None,
                    billable_seconds: None,
                    disposition: None,
                    unique_id: Uniqueid::Unknown,
                };
                scan(m, |k, v| match k {
                    K::Source => e.source = Some(v),
                    K::Destination => e.destination = Some(v),
                    K::DestinationContext => e.destination_context = Some(v),
                    K::CallerID => e.caller_id = Some(v),
                    K::Channel => e.channel = Some(v),
                    K::LastApplication => e.last_application = Some(v),
                    K::StartTime => e.start_time = non_empty(v),
                    K::AnswerTime => e.answer_time = non_empty(v),
                    K::EndTime => e.end_time = non_empty(v),
                    K::Duration => e.duration = num(v),
                    K::BillableSeconds => e.billable_seconds = num(v),
                    K::Disposition => e.disposition = Some(v),
                    K::Uniqueid => e.unique_id = Uniqueid::parse(v),
                    _ => {}
                });
                Event::Cdr(e)
            }
            "Shutdown" => Event::Shutdown(Shutdown {
                shutdown: m.get("Shutdown"),
                restart: m
                    .get("Restart")
                    .is_some_and(|r| r.eq_ignore_ascii_case("True")),
            }),
            "FullyBooted" => Event::FullyBooted,
            other => Event::Unknown(other),
        })
    }

    /// The `Event:` name.
    pub fn name(&self) -> &'a str {
        match self {
            Event::OriginateResponse(_) => "OriginateResponse",
            Event::Hangup(_) => "Hangup",
            Event::Newstate(_) => "Newstate",
            Event::DialBegin(_) => "DialBegin",
            Event::DialEnd(_) => "DialEnd",
            Event::Cdr(_) => "Cdr",
            Event::Shutdown(_) => "Shutdown",
            Event::FullyBooted => "FullyBooted",
            Event::Unknown(n) => n,
        }
    }
}

/// Header keys the typed views care about.
#[derive(Clone, Copy)]
enum K {
    ActionID,
    Response,
    Channel,
    Reason,
    Uniqueid,
    Linkedid,
    CallerIDNum,
    CallerIDName,
    Cause,
    CauseTxt,
    ChannelState,
    ChannelStateDesc,
    DestChannel,
    DestUniqueid,
    DestCallerIDNum,
    DialString,
    DialStatus,
    Source,
    Destination,
    DestinationContext,
    CallerID,
    LastApplication,
    StartTime,
    AnswerTime,
    EndTime,
    Duration,
    BillableSeconds,
    Disposition,
    Other,
}

/// Calls `f` for each field after the first whose key is one we model. The value is only
/// sliced out for those, which keeps typing an event cheap.
#[inline]
fn scan<'a>(m: &'a Message, mut f: impl FnMut(K, &'a str)) {
    for (k, span) in m.raw_fields().skip(1) {
        match classify(k) {
            K::Other => {}
            key => f(key, m.span_value(span)),
        }
    }
}

/// Case-insensitive key match without allocating: switch on length, then compare with the
/// one to three known keys of that length.
#[inline]
fn classify(b: &[u8]) -> K {
    let is = |c: &str| b.eq_ignore_ascii_case(c.as_bytes());
    match b.len() {
        5 => {
            if is("Cause") {
                K::Cause
            } else {
                K::Other
            }
        }
        6 => {
            if is("Reason") {
                K::Reason
            } else if is("Source") {
                K::Source
            } else {
                K::Other
            }
        }
        7 => {
            if is("Channel") {
                K::Channel
            } else if is("EndTime") {
                K::EndTime
            } else {
                K::Other
            }
        }
        8 => {
            if is("ActionID") {
                K::ActionID
            } else if is("Response") {
                K::Response
            } else if is("Uniqueid") {
                K::Uniqueid
            } else if is("Linkedid") {
                K::Linkedid
            } else if is("CallerID") {
                K::CallerID
            } else if is("Duration") {
                K::Duration
            } else {
                K::Other
            }
        }
        9 => {
            if is("Cause-txt") {
                K::CauseTxt
            } else if is("StartTime") {
                K::StartTime
            } else {
                K::Other
            }
        }
        10 => {
            if is("DialString") {
                K::DialString
            } else if is("DialStatus") {
                K::DialStatus
            } else if is("AnswerTime") {
                K::AnswerTime
            } else {
                K::Other
            }
        }
        11 => {
            if is("CallerIDNum") {
                K::CallerIDNum
            } else if is("DestChannel") {
                K::DestChannel
            } else if is("Destination") {
                K::Destination
            } else if is("Disposition") {
                K::Disposition
            } else {
                K::Other
            }
        }
        12 => {
            if is("CallerIDName") {
                K::CallerIDName
            } else if is("ChannelState") {
                K::ChannelState
            } else if is("DestUniqueid") {
                K::DestUniqueid
            } else {
                K::Other
            }
        }
        15 => {
            if is("DestCallerIDNum") {
                K::DestCallerIDNum
            } else if is("LastApplication") {
                K::LastApplication
            } else if is("BillableSeconds") {
                K::BillableSeconds
            } else {
                K::Other
            }
        }
        16 => {
            if is("ChannelStateDesc") {
                K::ChannelStateDesc
            } else {
                K::Other
            }
        }
        18 => {
            if is("DestinationContext") {
                K::DestinationContext
            } else {
                K::Other
            }
        }
        _ => K::Other,
    }
}
