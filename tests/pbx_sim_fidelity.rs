//! The simulated PBX against the second capture round (`probe-*.txt`) and the differences
//! found by running the same scenarios against a real Asterisk 22: each test drives the
//! simulator over TCP and compares with what the capture shows.

mod support;

use std::collections::{BTreeSet, HashMap};

use dialout::ami::{AmiClient, Message};
use dialout::pbx_sim::PbxSim;
use futures_util::StreamExt;
use support::ami::{Block, Dir, WAIT, client_config, fast_sim_config, load, start_sim};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

/// A bare AMI session over TCP: sends capture blocks as they are.
struct Raw {
    r: tokio_util::codec::FramedRead<tokio::net::tcp::OwnedReadHalf, dialout::ami::AmiCodec>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(sim: &PbxSim) -> Raw {
        let s = tokio::net::TcpStream::connect(sim.local_addr())
            .await
            .unwrap();
        let (r, w) = s.into_split();
        let mut r =
            tokio_util::codec::FramedRead::new(r, dialout::ami::AmiCodec::client(1 << 20, 4096));
        let banner = timeout(WAIT, r.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(banner.banner(), Some("Asterisk Call Manager/11.0.0"));
        Raw { r, w }
    }

    /// Connects and logs in as `dialer`, reading up to the SuccessfulAuth event.
    async fn login(sim: &PbxSim, events: &str) -> Raw {
        let mut raw = Raw::connect(sim).await;
        raw.send(&format!(
            "Action: Login\nActionID: login-1\nUsername: dialer\nSecret: dialer-secret\nEvents: {events}\n\n"
        ))
        .await;
        let m = raw.next().await.expect("login reply");
        assert_eq!(m.message(), Some("Authentication accepted"));
        if events == "on" {
            raw.until(|m| m.event_name() == Some("SuccessfulAuth"))
                .await;
        }
        raw
    }

    async fn send(&mut self, text: &str) {
        self.w
            .write_all(text.replace('\n', "\r\n").as_bytes())
            .await
            .unwrap();
    }

    async fn send_block(&mut self, b: &Block) {
        let mut s = b.lines.join("\n");
        s.push_str("\n\n");
        self.send(&s).await;
    }

    /// Next message, or None at EOF.
    async fn next(&mut self) -> Option<Message> {
        timeout(WAIT, self.r.next())
            .await
            .expect("message in time")
            .map(|m| m.unwrap())
    }

    async fn until(&mut self, pred: impl Fn(&Message) -> bool) -> Message {
        loop {
            let m = self.next().await.expect("open");
            if pred(&m) {
                return m;
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Message> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            v.push(self.next().await.expect("open"));
        }
        v
    }
}

/// Values that differ between runs: uniqueids, the channel's sequence suffix, times,
/// durations, addresses, session ids; DeviceStateChange's State also varies run to run.
#[derive(Default)]
struct Norm {
    uids: HashMap<String, usize>,
}

impl Norm {
    fn value(&mut self, event: &str, key: &str, v: &str) -> String {
        const ANY: &[&str] = &[
            "StartTime",
            "AnswerTime",
            "EndTime",
            "Duration",
            "BillableSeconds",
            "Seconds",
            "EventTV",
            "SessionTV",
            "SessionID",
            "RemoteAddress",
            "Timestamp",
            "Uptime",
            "LastReload",
            "CoreStartupDate",
            "CoreStartupTime",
            "CoreReloadDate",
            "CoreReloadTime",
            "CoreProcessedCalls",
        ];
        if ANY.contains(&key) || (event == "DeviceStateChange" && key == "State") {
            return if v.is_empty() {
                String::new()
            } else {
                "<any>".into()
            };
        }
        if key == "Output" && v.ends_with("calls processed") {
            return "<n> calls processed".into();
        }
        support::ami::normalize_ids(&mut self.uids, v)
    }

    fn fields(&mut self, fields: Vec<(String, String)>) -> Vec<(String, String)> {
        let event = fields
            .first()
            .filter(|(k, _)| k == "Event")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        fields
            .into_iter()
            .map(|(k, v)| {
                let v = self.value(&event, &k, &v);
                (k, v)
            })
            .collect()
    }
}

fn block_fields(b: &Block) -> Vec<(String, String)> {
    b.lines
        .iter()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or((l.trim_end_matches(':'), ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The message with each value replaced by `f(key, value)`.
fn map_values(m: &Message, f: impl Fn(&str, &str) -> String) -> Message {
    let pairs: Vec<(String, String)> = m.fields().map(|(k, v)| (k.to_owned(), f(k, v))).collect();
    Message::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn msg_fields(m: &Message) -> Vec<(String, String)> {
    m.fields()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The capture's messages from Asterisk right after block `i`, up to the client's next one.
fn replies_after(blocks: &[Block], i: usize) -> Vec<&Block> {
    blocks[i + 1..]
        .iter()
        .take_while(|b| b.dir == Dir::FromAsterisk)
        .collect()
}

/// The index of the `n`-th client block whose first line is `first`.
fn nth_action(blocks: &[Block], first: &str, n: usize) -> usize {
    blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.dir == Dir::ToAsterisk && b.first() == first)
        .nth(n)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {first} #{n}"))
}

/// Same messages, field for field after normalising; `strict` also compares the order.
fn assert_same(what: &str, expected: &[&Block], got: &[Message], strict: bool) {
    let (mut ne, mut ng) = (Norm::default(), Norm::default());
    let mut e: Vec<_> = expected
        .iter()
        .map(|b| ne.fields(block_fields(b)))
        .collect();
    let mut g: Vec<_> = got.iter().map(|m| ng.fields(msg_fields(m))).collect();
    if !strict {
        e.sort();
        g.sort();
    }
    assert_eq!(e.len(), g.len(), "{what}: message count\n{e:#?}\n{g:#?}");
    for (i, (e, g)) in e.iter().zip(&g).enumerate() {
        assert_eq!(e, g, "{what}: message #{i}");
    }
}

fn originate_text(channel: &str, aid: &str, job: u32, extra: &str) -> String {
    format!(
        "Action: Originate\nActionID: {aid}\nChannel: {channel}\nContext: originated\nExten: s\nPriority: 1\nTimeout: 4000\nCallerID: \"JOB{job}\" <{job}>\nVariable: DIALER_JOB_ID={job}\nAsync: true\n{extra}\n"
    )
}

/// Reads until both Hangups of the call tagged `num` and the messages `pred` also wants.
async fn until_call_ends(raw: &mut Raw, num: &str) -> Vec<Message> {
    let mut out = Vec::new();
    let mut hangups = 0;
    while hangups < 2 {
        let m = raw.next().await.expect("open");
        if m.event_name() == Some("Hangup") && m.get("CallerIDNum") == Some(num) {
            hangups += 1;
        }
        out.push(m);
    }
    out
}

/// channelid-duplicate.txt, README fact 8: a ChannelId in use fails at once (Failure,
/// Reason 0, Uniqueid = the reused id); after the first call ended it works again.
#[tokio::test]
async fn a_live_channel_id_reused_fails_at_once() {
    let blocks = load("channelid-duplicate.txt");
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    // dup-1: long-answer with ChannelId, up.
    let o1 = nth_action(&blocks, "Action: Originate", 0);
    raw.send_block(&blocks[o1]).await;
    let or1 = raw
        .until(|m| m.event_name() == Some("OriginateResponse"))
        .await;
    assert_eq!(or1.get("Uniqueid"), Some("dialer-job-900125"));
    // dup-2: same ChannelId while it is live: the capture's two replies, exactly.
    let o2 = nth_action(&blocks, "Action: Originate", 1);
    raw.send_block(&blocks[o2]).await;
    let expected = replies_after(&blocks, o2);
    let got = loop {
        // Skip dup-1's own later events (its Wait Newexten).
        let m = raw.next().await.unwrap();
        if m.action_id() == Some("dup-2") {
            let rest = raw.take(expected.len() - 1).await;
            break std::iter::once(m).chain(rest).collect::<Vec<_>>();
        }
    };
    assert_same("dup-2", &expected, &got, true);
    assert_eq!(sim.live_calls(), 1, "the refused originate made no call");
    // Hang dup-1 up, then dup-3 with the same id works.
    let chan = or1.get("Channel").unwrap().to_owned();
    raw.send(&format!(
        "Action: Hangup\nActionID: hangup-900125\nChannel: {chan}\n\n"
    ))
    .await;
    until_call_ends(&mut raw, "900125").await;
    let o3 = nth_action(&blocks, "Action: Originate", 2);
    raw.send_block(&blocks[o3]).await;
    let or3 = raw
        .until(|m| m.event_name() == Some("OriginateResponse"))
        .await;
    assert_eq!(
        (or3.get("Response"), or3.get("Reason"), or3.get("Uniqueid")),
        (Some("Success"), Some("4"), Some("dialer-job-900125"))
    );
    assert_eq!(sim.originates(), 3);
    sim.shutdown().await;
}

/// Fact 16: with `response_after_events`, a fast failure's OriginateResponse arrives
/// before its own Originate's Response.
#[tokio::test]
async fn originate_response_can_come_before_the_originate_reply() {
    let mut cfg = fast_sim_config();
    cfg.faults.response_after_events = true;
    let sim = start_sim(cfg).await;
    let mut raw = Raw::login(&sim, "on").await;
    raw.send(&originate_text("Local/busy@callee", "conc-1", 1, ""))
        .await;
    let mut order = Vec::new();
    loop {
        let m = raw.next().await.unwrap();
        if m.action_id() == Some("conc-1") {
            order.push(if m.is_response() { "reply" } else { "event" });
        }
        if m.is_response() {
            break;
        }
    }
    assert_eq!(order, ["event", "reply"], "OriginateResponse first");
    // The project's client still pairs the reply with its action.
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|m| m.event_name() == Some("OriginateResponse"));
    let mut o = dialout::ami::Originate::to_exten("Local/congestion@callee", "originated", "s", 1);
    o.caller_id = Some("\"JOB2\" <2>".into());
    let q = c.originate(&o).await.unwrap();
    let or = timeout(WAIT, sub.recv()).await.unwrap().unwrap();
    match or {
        dialout::ami::Notice::Event(m) => assert_eq!(m.action_id(), Some(q.action_id.as_str())),
        other => panic!("{other:?}"),
    }
    c.shutdown().await;
    sim.shutdown().await;
}

/// The names of one congestion call's Hangup/OriginateResponse events, in order.
async fn congestion_order(seed: u64, calls: u32) -> Vec<String> {
    let mut cfg = fast_sim_config();
    cfg.faults.vary_order = Some(seed);
    let sim = start_sim(cfg).await;
    let mut raw = Raw::login(&sim, "call").await;
    let mut orders = Vec::new();
    for job in 0..calls {
        let num = (1000 + job).to_string();
        raw.send(&originate_text(
            "Local/congestion@callee",
            &format!("v-{job}"),
            1000 + job,
            "",
        ))
        .await;
        let mut seen = String::new();
        let (mut hangups, mut or) = (0, false);
        while hangups < 2 || !or {
            let m = raw.next().await.unwrap();
            match m.event_name() {
                Some("Hangup") if m.get("CallerIDNum") == Some(&num) => {
                    hangups += 1;
                    let leg = m.get("Channel").unwrap().rsplit(';').next().unwrap();
                    seen.push_str(&format!("H{leg} "));
                }
                Some("OriginateResponse") if m.get("CallerIDNum") == Some(&num) => {
                    or = true;
                    seen.push_str("OR ");
                }
                _ => {}
            }
        }
        orders.push(seen);
    }
    sim.shutdown().await;
    orders
}

/// Fact 15: the order varies; `vary_order` shakes it, the same seed the same way.
#[tokio::test]
async fn vary_order_shakes_hangups_and_originate_response_reproducibly() {
    let a = congestion_order(7, 12).await;
    let b = congestion_order(7, 12).await;
    assert_eq!(a, b, "same seed, same orders");
    let distinct: BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() >= 3, "orders vary: {a:?}");
    assert!(
        a.iter().any(|o| o.starts_with("OR")) && a.iter().any(|o| o.ends_with("OR ")),
        "OriginateResponse both before and after the Hangups: {a:?}"
    );
}

/// probe-hangup-cause.txt: `Hangup` with `Cause: 16` on an answered call reaches the
/// Hangups, the HangupRequest and leaves both Cdrs ANSWERED.
#[tokio::test]
async fn hangup_cause_on_an_answered_call_reaches_the_events() {
    let blocks = load("probe-hangup-cause.txt");
    let h = nth_action(&blocks, "Action: Hangup", 0);
    let expected = replies_after(&blocks, h);
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    let o = nth_action(&blocks, "Action: Originate", 0);
    raw.send_block(&blocks[o]).await;
    let or = raw
        .until(|m| m.event_name() == Some("OriginateResponse"))
        .await;
    // The ;2 leg's Wait(30) Newexten: the state the capture hung up in.
    raw.until(|m| m.event_name() == Some("Newexten") && m.get("Application") == Some("Wait"))
        .await;
    raw.until(|m| m.event_name() == Some("Newexten") && m.get("Application") == Some("Wait"))
        .await;
    let chan = or.get("Channel").unwrap();
    raw.send(&format!(
        "Action: Hangup\nActionID: hup-43\nChannel: {chan}\nCause: 16\n\n"
    ))
    .await;
    let got = raw.take(expected.len()).await;
    assert_same("after Hangup Cause 16", &expected, &got, false);
    sim.shutdown().await;
}

/// probe-hangup-ringing-leg2.txt: `Cause: 17` on the ringing `;2` leg: 17 on both legs,
/// both Cdrs BUSY, OriginateResponse Failure 0 — field for field, in the captured order.
#[tokio::test]
async fn hangup_cause_17_on_the_ringing_callee_leg_matches_capture() {
    let blocks = load("probe-hangup-ringing-leg2.txt");
    let h = nth_action(&blocks, "Action: Hangup", 0);
    let expected = replies_after(&blocks, h);
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    let o = nth_action(&blocks, "Action: Originate", 0);
    let mut orig = blocks[o].clone();
    for l in orig.lines.iter_mut() {
        if l.starts_with("Timeout: ") {
            // 60 s of ringing (0.6 s scaled): the hangup surely comes first.
            *l = "Timeout: 60000".into();
        }
    }
    raw.send_block(&orig).await;
    let dial = raw.until(|m| m.event_name() == Some("DialState")).await;
    let chan = dial.get("DestChannel").unwrap().replace(";1", ";2");
    raw.send(&format!(
        "Action: Hangup\nActionID: hup-44\nChannel: {chan}\nCause: 17\n\n"
    ))
    .await;
    let got = raw.take(expected.len()).await;
    assert_same("after Hangup ;2 Cause 17", &expected, &got, true);
    sim.shutdown().await;
}

/// The CallerID fields of every event of one call, as a set.
fn cid_fields(fields: impl Iterator<Item = Vec<(String, String)>>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in fields {
        let name = f[0].1.clone();
        for (k, v) in f {
            if k.contains("CallerID") || k == "Source" || k == "AppData" {
                out.insert(format!("{name} {k}: {v}"));
            }
        }
    }
    out
}

/// probe-callerid.txt: quotes inside quotes, unquoted name, number only, name only, a
/// comma in the name: the same CallerID headers in every event as the capture.
#[tokio::test]
async fn caller_id_forms_match_capture() {
    let blocks = load("probe-callerid.txt");
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    for n in 0..5 {
        let o = nth_action(&blocks, "Action: Originate", n);
        let aid = blocks[o].get("ActionID").unwrap().to_owned();
        let expected: Vec<_> = replies_after(&blocks, o)
            .into_iter()
            .filter(|b| b.first().starts_with("Event: "))
            .collect();
        raw.send_block(&blocks[o]).await;
        let reply = raw.next().await.unwrap();
        assert_eq!(reply.action_id(), Some(aid.as_str()));
        let got = raw.take(expected.len()).await;
        let e = cid_fields(expected.iter().map(|b| block_fields(b)));
        let g = cid_fields(got.iter().map(msg_fields));
        assert_eq!(e, g, "{aid}: CallerID headers");
    }
    sim.shutdown().await;
}

/// Sends the capture's list action and compares the list it gets with the capture's.
async fn compare_list(raw: &mut Raw, blocks: &[Block], first: &str, n: usize) {
    let i = nth_action(blocks, first, n);
    let aid = blocks[i].get("ActionID").unwrap().to_owned();
    let expected: Vec<_> = replies_after(blocks, i)
        .into_iter()
        .filter(|b| b.get("ActionID") == Some(aid.as_str()))
        .collect();
    raw.send_block(&blocks[i]).await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let m = raw.next().await.unwrap();
        // Call events in between are not part of the list.
        if m.action_id() == Some(aid.as_str()) {
            got.push(m);
        }
    }
    assert_same(&aid, &expected, &got, true);
}

/// probe-show-ringing.txt: while the callee rings, `;2` is Ring (state 4) in Wait(60),
/// `;1` Ringing in AppDial2, both in the callee context; Status has every field.
#[tokio::test]
async fn show_channels_and_status_while_ringing_match_capture() {
    let blocks = load("probe-show-ringing.txt");
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    let o = nth_action(&blocks, "Action: Originate", 0);
    let mut orig = blocks[o].clone();
    for l in orig.lines.iter_mut() {
        if l.starts_with("Timeout: ") {
            *l = "Timeout: 100000".into();
        }
    }
    raw.send_block(&orig).await;
    raw.until(|m| m.event_name() == Some("DialState")).await;
    compare_list(&mut raw, &blocks, "Action: CoreShowChannels", 0).await;
    compare_list(&mut raw, &blocks, "Action: Status", 0).await;
    sim.shutdown().await;
}

/// probe-channelid-show.txt: the lists idle, during an answered call (ChannelId and
/// OtherChannelId as uniqueids, `;1` in originated/s Wait(30)), of one channel, after a
/// Hangup by name; Status and Hangup of a gone channel say No such channel.
#[tokio::test]
async fn show_channels_and_status_of_an_answered_call_match_capture() {
    let blocks = load("probe-channelid-show.txt");
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    compare_list(&mut raw, &blocks, "Action: CoreShowChannels", 0).await;
    let o = nth_action(&blocks, "Action: Originate", 0);
    let mut orig = blocks[o].clone();
    orig.lines
        .push("Channel: Local/long-answer_100000@callee".into());
    orig.lines
        .retain(|l| l != "Channel: Local/long-answer@callee");
    raw.send_block(&orig).await;
    // The call as captured up to its ;2 Wait(30): same events, same order.
    let expected: Vec<_> = replies_after(&blocks, o);
    let mut got = raw.take(expected.len()).await;
    for m in got.iter_mut() {
        // Our channel name carries the duration suffix; the capture's does not.
        *m = map_values(m, |_, v| v.replace("long-answer_100000", "long-answer"));
    }
    assert_same("long-answer call", &expected, &got, true);
    let rename = |blocks: &[Block]| -> Vec<Block> {
        blocks
            .iter()
            .map(|b| {
                let mut b = b.clone();
                for l in b.lines.iter_mut() {
                    *l = l.replace("long-answer@", "long-answer_100000@");
                    if l == "Exten: long-answer" {
                        *l = "Exten: long-answer_100000".into();
                    }
                }
                b
            })
            .collect()
    };
    let blocks = rename(&blocks);
    compare_list(&mut raw, &blocks, "Action: CoreShowChannels", 1).await;
    compare_list(&mut raw, &blocks, "Action: Status", 0).await;
    compare_list(&mut raw, &blocks, "Action: Status", 1).await;
    let h = nth_action(&blocks, "Action: Hangup", 0);
    raw.send_block(&blocks[h]).await;
    until_call_ends(&mut raw, "42").await;
    compare_list(&mut raw, &blocks, "Action: CoreShowChannels", 2).await;
    compare_list(&mut raw, &blocks, "Action: Status", 2).await;
    compare_list(&mut raw, &blocks, "Action: Hangup", 1).await;
    sim.shutdown().await;
}

/// Replays capture `file`'s first Originate and compares every event up to the client's
/// next action, field for field (`strict`: in order).
async fn replay_call(sim: &PbxSim, file: &str, strict: bool) -> Vec<Message> {
    let blocks = load(file);
    let mut raw = Raw::login(sim, "on").await;
    let o = nth_action(&blocks, "Action: Originate", 0);
    let expected = replies_after(&blocks, o);
    raw.send_block(&blocks[o]).await;
    let got = raw.take(expected.len()).await;
    assert_same(file, &expected, &got, strict);
    got
}

/// probe-application.txt: an `Application: Wait` landing; OriginateResponse carries
/// Application/Data, the call ends when Wait does, with cause 0.
#[tokio::test]
async fn application_landing_matches_capture() {
    let sim = start_sim(fast_sim_config()).await;
    let got = replay_call(&sim, "probe-application.txt", true).await;
    let or = got
        .iter()
        .find(|m| m.event_name() == Some("OriginateResponse"))
        .unwrap();
    assert_eq!(
        (or.get("Application"), or.get("Data"), or.get("Context")),
        (Some("Wait"), Some("1"), None)
    );
    sim.shutdown().await;
}

/// landing-hangs-up.txt: the landing `originated,hangup-now` hangs up at once.
#[tokio::test]
async fn landing_that_hangs_up_at_once_matches_capture() {
    let sim = start_sim(fast_sim_config()).await;
    replay_call(&sim, "landing-hangs-up.txt", true).await;
    sim.shutdown().await;
}

/// probe-variable.txt: two Variables, set on `;1` last to first and on `;2` in order.
#[tokio::test]
async fn variables_match_capture() {
    let sim = start_sim(fast_sim_config()).await;
    let blocks = load("probe-variable.txt");
    let mut raw = Raw::login(&sim, "on").await;
    let o = nth_action(&blocks, "Action: Originate", 0);
    let expected: Vec<_> = replies_after(&blocks, o)
        .into_iter()
        .filter(|b| b.first() == "Event: VarSet")
        .collect();
    raw.send_block(&blocks[o]).await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let m = raw.next().await.unwrap();
        if m.event_name() == Some("VarSet") {
            got.push(m);
        }
    }
    assert_same("VarSet", &expected, &got, true);
    sim.shutdown().await;
}

/// probe-events-action.txt: Events off at login, `Action: Events` call,cdr then off.
#[tokio::test]
async fn events_action_matches_capture() {
    let blocks = load("probe-events-action.txt");
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::connect(&sim).await;
    for (i, b) in blocks.iter().enumerate() {
        if b.dir != Dir::ToAsterisk || b.first() == "Action: Logoff" {
            continue;
        }
        let expected = replies_after(&blocks, i);
        raw.send_block(b).await;
        let got = raw.take(expected.len()).await;
        // The call's events: the same multiset (the order varies, fact 15).
        assert_same(b.first(), &expected, &got, false);
    }
    sim.shutdown().await;
}

/// probe-misc-actions.txt and probe-prelogin.txt: replies and RequestBadFormat events as
/// captured, one action after the other.
#[tokio::test]
async fn misc_and_prelogin_actions_match_capture() {
    for file in ["probe-misc-actions.txt", "probe-prelogin.txt"] {
        let blocks = load(file);
        let sim = start_sim(fast_sim_config()).await;
        let mut raw = Raw::connect(&sim).await;
        for (i, b) in blocks.iter().enumerate() {
            if b.dir != Dir::ToAsterisk {
                continue;
            }
            let expected: Vec<_> = replies_after(&blocks, i);
            raw.send_block(b).await;
            let got = raw.take(expected.len()).await;
            let mut g = got.clone();
            for (m, e) in g.iter_mut().zip(&expected) {
                // Asterisk's own counters and addresses: only that they are there.
                if e.first() == "Event: SuccessfulAuth" || e.first() == "Event: RequestBadFormat" {
                    *m = map_values(m, |k, v| {
                        if k == "LocalAddress" {
                            "IPV4/TCP/127.0.0.1/5038".to_owned()
                        } else {
                            v.to_owned()
                        }
                    });
                }
            }
            assert_same(&format!("{file} {}", b.first()), &expected, &g, true);
        }
        assert!(raw.next().await.is_none(), "{file}: closed after Logoff");
        sim.shutdown().await;
    }
}

/// busy-cdr-default.txt, noanswer-cdr-default.txt: stock `unanswered = no` sends no Cdr
/// for a call never answered; an answered call still gets both.
#[tokio::test]
async fn stock_cdr_settings_send_no_cdr_for_unanswered_calls() {
    let mut cfg = fast_sim_config();
    cfg.cdr_unanswered = false;
    let sim = start_sim(cfg).await;
    for file in ["busy-cdr-default.txt", "noanswer-cdr-default.txt"] {
        let got = replay_call(&sim, file, false).await;
        assert!(got.iter().all(|m| m.event_name() != Some("Cdr")), "{file}");
    }
    let mut raw = Raw::login(&sim, "on").await;
    raw.send(&originate_text("Local/answer_10@callee", "a-1", 7, ""))
        .await;
    let mut cdrs = 0;
    while cdrs < 2 {
        let m = raw.next().await.unwrap();
        if m.event_name() == Some("Cdr") {
            assert_eq!(m.get("Disposition"), Some("ANSWERED"));
            cdrs += 1;
        }
    }
    sim.shutdown().await;
}

/// Asterisk truncates: Duration = floor((end - start) ms / 1000), BillableSeconds likewise
/// from the answer. 1.7 s of talk at real speed is 1 s, not 2.
#[tokio::test]
async fn cdr_seconds_are_truncated() {
    let mut cfg = fast_sim_config();
    cfg.time_scale = 1.0;
    let sim = start_sim(cfg).await;
    let mut raw = Raw::login(&sim, "cdr").await;
    raw.send(&originate_text("Local/answer_1700@callee", "t-1", 8, ""))
        .await;
    let mut cdrs = Vec::new();
    while cdrs.len() < 2 {
        let m = raw.next().await.unwrap();
        if m.event_name() == Some("Cdr") {
            cdrs.push((
                m.get("Duration").unwrap().to_owned(),
                m.get("BillableSeconds").unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(cdrs, [("1".into(), "1".into()), ("1".into(), "1".into())]);
    sim.shutdown().await;
}

/// Ringing longer than the Originate Timeout ends as no answer (Reason 3, cause 19), for
/// slow-answer and reject as for noanswer.
#[tokio::test]
async fn originate_timeout_cuts_a_long_ring() {
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "call").await;
    for (chan, job) in [
        ("Local/slow-answer_5000@callee", 11),
        ("Local/reject_5000@callee", 12),
        ("Local/slow-answer_1000@callee", 13),
    ] {
        raw.send(&originate_text(chan, &format!("to-{job}"), job, ""))
            .await;
        let got = until_call_ends(&mut raw, &job.to_string()).await;
        let or = got
            .iter()
            .find(|m| m.event_name() == Some("OriginateResponse"));
        let or = match or {
            Some(or) => or.clone(),
            None => {
                raw.until(|m| m.event_name() == Some("OriginateResponse"))
                    .await
            }
        };
        let causes: Vec<_> = got
            .iter()
            .filter(|m| {
                m.event_name() == Some("Hangup") && m.get("CallerIDNum") == Some(&job.to_string())
            })
            .map(|m| m.get("Cause").unwrap().to_owned())
            .collect();
        if job == 13 {
            assert_eq!(or.get("Reason"), Some("4"), "rings 1 s of 4: answered");
        } else {
            assert_eq!(
                (or.get("Response"), or.get("Reason")),
                (Some("Failure"), Some("3")),
                "{chan}"
            );
            assert_eq!(causes, ["19", "19"], "{chan}");
        }
    }
    sim.shutdown().await;
}

/// shutdown-stop-now.txt, fact 13: `core stop now` with a call up: SoftHangupRequest,
/// HangupRequest, Hangup (Cause 0) and Cdr for the call, then `Event: Shutdown`, then FIN.
#[tokio::test]
async fn graceful_stop_hangs_calls_up_then_says_shutdown() {
    let blocks = load("shutdown-stop-now.txt");
    let o = nth_action(&blocks, "Action: Originate", 0);
    let after: Vec<_> = blocks
        .iter()
        .filter(|b| b.dir == Dir::FromAsterisk && b.t >= 2.806)
        .collect();
    assert_eq!(after.last().unwrap().first(), "Event: Shutdown");
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    raw.send_block(&blocks[o]).await;
    let num = blocks[o]
        .get("Variable")
        .and_then(|v| v.split_once('='))
        .map(|(_, n)| n.to_owned())
        .unwrap();
    // Up, with the callee in Wait(30): the state the capture was stopped in.
    raw.until(|m| {
        m.event_name() == Some("Newexten")
            && m.get("Application") == Some("Wait")
            && m.get("Channel").is_some_and(|c| c.ends_with(";2"))
    })
    .await;
    assert_eq!(sim.live_calls(), 1);
    let stop = tokio::spawn(sim.shutdown_gracefully());
    let got = raw.take(after.len()).await;
    assert_same("core stop now", &after, &got, true);
    assert!(raw.next().await.is_none(), "FIN after Shutdown");
    timeout(WAIT, stop).await.unwrap().unwrap();
    assert!(
        got.iter()
            .any(|m| m.get("CallerIDNum") == Some(num.as_str()))
    );
}

/// shutdown-kill9.txt: the abrupt stop is a bare FIN, with no Hangup, Cdr or Shutdown.
#[tokio::test]
async fn abrupt_stop_is_a_bare_fin() {
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "on").await;
    raw.send(&originate_text("Local/long-answer@callee", "k-1", 9, ""))
        .await;
    raw.until(|m| m.event_name() == Some("OriginateResponse"))
        .await;
    raw.until(|m| m.event_name() == Some("Newexten") && m.get("Application") == Some("Wait"))
        .await;
    raw.until(|m| m.event_name() == Some("Newexten") && m.get("Application") == Some("Wait"))
        .await;
    sim.shutdown().await;
    assert!(raw.next().await.is_none(), "nothing before the FIN");
}

/// The new switches are scenario-file keys too.
#[test]
fn scenario_file_sets_the_new_switches() {
    let mut cfg = dialout::pbx_sim::SimConfig::default();
    assert!(cfg.cdr_unanswered, "default: the lab's cdr.conf");
    dialout::pbx_sim::apply_scenario(
        "response_after_events = true\nvary_order_seed = 42\ncdr_unanswered = false\n",
        &mut cfg,
    )
    .unwrap();
    assert!(cfg.faults.response_after_events);
    assert_eq!(cfg.faults.vary_order, Some(42));
    assert!(!cfg.cdr_unanswered);
    assert!(dialout::pbx_sim::apply_scenario("vary_order_seed = x", &mut cfg).is_err());
    dialout::pbx_sim::apply_scenario("boot_delay_ms = 2500", &mut cfg).unwrap();
    assert_eq!(cfg.boot_delay, std::time::Duration::from_millis(2500));
}

/// Two Originates with one ChannelId written back to back: the second fails even though
/// the first call's events have not been sent yet.
#[tokio::test]
async fn a_channel_id_reused_back_to_back_fails_too() {
    let sim = start_sim(fast_sim_config()).await;
    let mut raw = Raw::login(&sim, "call").await;
    let extra = "ChannelId: same-id\n";
    let both = format!(
        "{}{}",
        originate_text("Local/long-answer@callee", "b-1", 51, extra),
        originate_text("Local/long-answer@callee", "b-2", 52, extra)
    );
    raw.send(&both).await;
    let mut results = HashMap::new();
    while results.len() < 2 {
        let m = raw.next().await.unwrap();
        if m.event_name() == Some("OriginateResponse") {
            results.insert(
                m.action_id().unwrap().to_owned(),
                (
                    m.get("Response").unwrap().to_owned(),
                    m.get("Uniqueid").unwrap().to_owned(),
                ),
            );
        }
    }
    assert_eq!(results["b-1"], ("Success".into(), "same-id".into()));
    assert_eq!(results["b-2"], ("Failure".into(), "same-id".into()));
    assert_eq!(sim.live_calls(), 1);
    sim.shutdown().await;
}

/// concurrent-20.txt, fact 16: 20 Originates back to back on one connection get the
/// captured outcome each, and with `response_after_events` events (OriginateResponses
/// included) arrive between the replies, some before their own Originate's reply.
#[tokio::test]
async fn twenty_originates_back_to_back_match_capture() {
    let blocks = load("concurrent-20.txt");
    let originates: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.dir == Dir::ToAsterisk && b.first() == "Action: Originate")
        .collect();
    assert_eq!(originates.len(), 20);
    let expected: BTreeSet<(String, String, String)> = blocks
        .iter()
        .filter(|b| b.first() == "Event: OriginateResponse")
        .map(|b| {
            (
                b.get("ActionID").unwrap().to_owned(),
                b.get("Response").unwrap().to_owned(),
                b.get("Reason").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 20);
    let mut cfg = fast_sim_config();
    cfg.faults.response_after_events = true;
    let sim = start_sim(cfg).await;
    let mut raw = Raw::login(&sim, "on").await;
    let mut all = String::new();
    for b in &originates {
        all.push_str(&b.lines.join("\n"));
        all.push_str("\n\n");
    }
    raw.send(&all).await;
    let (mut got, mut replies) = (BTreeSet::new(), 0);
    let (mut between, mut before_own) = (0, 0);
    let mut replied = BTreeSet::new();
    while got.len() < 20 || replies < 20 {
        let m = raw.next().await.unwrap();
        let aid = m.action_id().unwrap_or("").to_owned();
        if m.is_response() {
            assert_eq!(m.message(), Some("Originate successfully queued"));
            replies += 1;
            replied.insert(aid);
        } else {
            if replies > 0 && replies < 20 {
                between += 1;
            }
            if m.event_name() == Some("OriginateResponse") {
                if !replied.contains(&aid) {
                    before_own += 1;
                }
                got.insert((
                    aid,
                    m.get("Response").unwrap().to_owned(),
                    m.get("Reason").unwrap().to_owned(),
                ));
            }
        }
    }
    assert_eq!(got, expected);
    assert!(between > 0, "events between the replies");
    assert!(before_own > 0, "an OriginateResponse before its own reply");
    assert_eq!(sim.originates(), 20);
    sim.shutdown().await;
}

const LOGIN_ON: &str =
    "Action: Login\nActionID: login-1\nUsername: dialer\nSecret: dialer-secret\n\n";

/// A restarted Asterisk accepts logins before its dialplan is loaded (manager.c): no
/// FullyBooted after the login reply, an Originate refused with `Extension does not
/// exist.`, and FullyBooted, when the boot ends, to every session whose mask has `system`
/// (none for `Events: call,cdr`, as events-call-mask.txt). Logins after that get it right
/// after their reply, as in every capture.
#[tokio::test]
async fn while_booting_no_fully_booted_at_login_and_originates_are_refused() {
    let sim = start_sim(dialout::pbx_sim::SimConfig {
        boot_delay: std::time::Duration::from_secs(3600),
        ..fast_sim_config()
    })
    .await;
    assert!(!sim.is_booted());
    let mut all = Raw::connect(&sim).await;
    all.send(LOGIN_ON).await;
    let got = all.take(2).await;
    assert_eq!(got[0].message(), Some("Authentication accepted"));
    assert_eq!(got[1].event_name(), Some("SuccessfulAuth"));
    let mut calls = Raw::login(&sim, "call,cdr").await;

    all.send(&originate_text("Local/answer@callee", "boot-1", 1, ""))
        .await;
    let r = all.next().await.expect("reply");
    assert_eq!(
        (r.action_id(), r.response(), r.message()),
        (
            Some("boot-1"),
            Some("Error"),
            Some("Extension does not exist.")
        )
    );
    assert_eq!((sim.originates(), sim.originates_while_booting()), (1, 1));
    assert_eq!(sim.live_calls(), 0);

    sim.finish_boot();
    assert!(sim.is_booted());
    let fb = all.next().await.expect("FullyBooted");
    assert_eq!(fb.event_name(), Some("FullyBooted"));
    assert_eq!(fb.get("Privilege"), Some("system,all"));
    assert_eq!(fb.get("Status"), Some("Fully Booted"));
    // Nothing for the call,cdr session: its next message answers a Ping sent after the
    // broadcast.
    calls.send("Action: Ping\nActionID: p-1\n\n").await;
    assert_eq!(calls.next().await.expect("pong").action_id(), Some("p-1"));

    let mut late = Raw::connect(&sim).await;
    late.send(LOGIN_ON).await;
    let got = late.take(3).await;
    let names: Vec<_> = got.iter().map(|m| m.event_name()).collect();
    assert_eq!(names, [None, Some("FullyBooted"), Some("SuccessfulAuth")]);
    late.send(&originate_text("Local/busy@callee", "boot-2", 2, ""))
        .await;
    let r = late
        .until(|m| m.action_id() == Some("boot-2") && m.response().is_some())
        .await;
    assert_eq!(r.response(), Some("Success"));
    assert_eq!((sim.originates(), sim.originates_while_booting()), (2, 1));
    sim.shutdown().await;
}
