//! The client against the simulated PBX over loopback TCP.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use dialout::ami::actions::{CoreShowChannels, Hangup, LoginAuth, Ping, Status};
use dialout::ami::event::Event;
use dialout::ami::{AmiClient, AmiError, Notice, Originate};
use support::ami::{WAIT, client_config, fast_sim_config, start_sim};
use tokio::time::timeout;

fn originate(channel: &str, job: u32) -> Originate {
    let mut o = Originate::to_exten(channel, "originated", "s", 1);
    o.caller_id = Some(format!("\"JOB{job}\" <{job}>"));
    o.variables = vec![("DIALER_JOB_ID".into(), job.to_string())];
    o.timeout = Some(Duration::from_millis(4000));
    o
}

#[tokio::test]
async fn plain_and_md5_login_work_wrong_secret_fails() {
    let sim = start_sim(fast_sim_config()).await;
    let c = timeout(WAIT, AmiClient::connect(client_config(&sim)))
        .await
        .unwrap()
        .unwrap();
    let pong = c.send_action(&Ping).await.unwrap();
    assert_eq!(pong.get("Ping"), Some("Pong"));
    c.shutdown().await;

    let mut cfg = client_config(&sim);
    cfg.auth = LoginAuth::Md5;
    let c = timeout(WAIT, AmiClient::connect(cfg))
        .await
        .unwrap()
        .unwrap();
    assert!(c.send_action(&Ping).await.is_ok());
    c.shutdown().await;

    for (user, secret, auth) in [
        ("dialer", "wrong", LoginAuth::Plain),
        ("nobody", "x", LoginAuth::Plain),
        ("dialer", "wrong", LoginAuth::Md5),
    ] {
        let mut cfg = client_config(&sim);
        cfg.username = user.into();
        cfg.secret = secret.into();
        cfg.auth = auth;
        let r = timeout(WAIT, AmiClient::connect(cfg)).await.unwrap();
        match r {
            Err(AmiError::AuthenticationFailed(m)) => assert_eq!(m, "Authentication failed"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("login should fail"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn thousand_actions_in_flight_stay_matched() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("m-{i}");
            let r = c.send_action_with_id(&Ping, &id).await.unwrap();
            assert_eq!(r.response.action_id(), Some(id.as_str()));
            r.response.get("Timestamp").map(str::to_owned)
        }));
    }
    // Interleave originates so events arrive between the responses.
    let mut oids = HashSet::new();
    for j in 0..50u32 {
        let q = c
            .originate(&originate("Local/answer_10@callee", 800_000 + j))
            .await
            .unwrap();
        assert_eq!(q.response.action_id(), Some(q.action_id.as_str()));
        assert!(oids.insert(q.action_id));
    }
    for t in tasks {
        assert!(timeout(WAIT, t).await.unwrap().unwrap().is_some());
    }
    assert_eq!(c.in_flight(), 0);
    c.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn originate_is_tracked_through_events() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c
        .subscribe(|m| m.get("CallerIDNum") == Some("900101") || m.get("Source") == Some("900101"));
    let q = c
        .originate(&originate("Local/answer@callee", 900101))
        .await
        .unwrap();
    assert_eq!(q.response.message(), Some("Originate successfully queued"));
    let (mut resp, mut hangups, mut cdrs) = (None, 0, 0);
    while hangups < 2 || cdrs < 2 || resp.is_none() {
        let n = timeout(WAIT, sub.recv()).await.unwrap().unwrap();
        let Notice::Event(m) = n else { panic!("{n:?}") };
        match Event::parse(&m) {
            Some(Event::OriginateResponse(o)) => {
                assert_eq!(o.action_id, Some(q.action_id.as_str()));
                resp = Some((o.reason, o.is_success()));
            }
            Some(Event::Hangup(h)) => {
                assert_eq!(h.cause, Some(16));
                hangups += 1;
            }
            Some(Event::Cdr(cdr)) => {
                assert_eq!(cdr.disposition, Some("ANSWERED"));
                cdrs += 1;
            }
            _ => {}
        }
    }
    assert_eq!(resp, Some((Some(4), true)));
    c.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn synchronous_rejections_are_refused_errors() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let r = c.originate(&originate("garbage", 1)).await;
    assert!(
        matches!(&r, Err(AmiError::Refused(m)) if m == "Invalid channel"),
        "{r:?}"
    );
    let mut o = originate("Local/answer@callee", 2);
    o.target = dialout::ami::actions::OriginateTarget::Exten {
        context: "originated".into(),
        exten: "nosuch".into(),
        priority: 1,
    };
    let r = c.originate(&o).await;
    assert!(
        matches!(&r, Err(AmiError::Refused(m)) if m == "Extension does not exist."),
        "{r:?}"
    );
    // Async: false failure → Originate failed.
    let mut o = originate("Local/busy@callee", 3);
    o.async_ = false;
    let r = c.originate(&o).await;
    assert!(
        matches!(&r, Err(AmiError::Refused(m)) if m == "Originate failed"),
        "{r:?}"
    );
    let mut o = originate("Local/answer_10@callee", 4);
    o.async_ = false;
    assert!(c.originate(&o).await.is_ok());
    c.shutdown().await;

    let mut cfg = client_config(&sim);
    cfg.username = "readonly".into();
    cfg.secret = "readonly-secret".into();
    let c = AmiClient::connect(cfg).await.unwrap();
    let r = c.originate(&originate("Local/answer@callee", 5)).await;
    assert!(
        matches!(&r, Err(AmiError::Refused(m)) if m == "Permission denied"),
        "{r:?}"
    );
    assert!(c.send_action(&Ping).await.is_ok(), "session stays usable");
    c.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn event_lists_and_dialer_hangup() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|m| {
        m.event_name() == Some("Hangup") || m.event_name() == Some("OriginateResponse")
    });
    // 30 s default hang-up, scaled to 300 ms: long enough to list and hang up.
    for j in 0..3 {
        c.originate(&originate("Local/long-answer_100000@callee", 700 + j))
            .await
            .unwrap();
    }
    // Wait for the three OriginateResponses (the calls are up).
    let mut up = 0;
    while up < 3 {
        if let Notice::Event(m) = timeout(WAIT, sub.recv()).await.unwrap().unwrap()
            && m.event_name() == Some("OriginateResponse")
        {
            up += 1;
        }
    }
    let list = c.send_list(&CoreShowChannels).await.unwrap();
    assert_eq!(list.response.get("EventList"), Some("start"));
    let items: Vec<_> = list
        .events
        .iter()
        .filter(|m| m.event_name() == Some("CoreShowChannel"))
        .collect();
    assert_eq!(items.len(), 6);
    let done = list.events.last().unwrap();
    assert_eq!(done.event_name(), Some("CoreShowChannelsComplete"));
    assert_eq!(done.get("ListItems"), Some("6"));
    let status = c.send_list(&Status::default()).await.unwrap();
    assert_eq!(
        status
            .events
            .iter()
            .filter(|m| m.event_name() == Some("Status"))
            .count(),
        6
    );

    let chan = items[0].get("Channel").unwrap().to_owned();
    let r = c
        .send_action(&Hangup {
            channel: chan.clone(),
            cause: None,
        })
        .await
        .unwrap();
    assert_eq!(r.message(), Some("Channel Hungup"));
    let mut causes = Vec::new();
    while causes.len() < 2 {
        if let Notice::Event(m) = timeout(WAIT, sub.recv()).await.unwrap().unwrap()
            && let Some(Event::Hangup(h)) = Event::parse(&m)
        {
            causes.push(h.cause);
        }
    }
    assert_eq!(
        causes,
        vec![Some(0), Some(0)],
        "dialer hangup: Unknown on both legs"
    );
    let r = c
        .send_action(&Hangup {
            channel: chan,
            cause: None,
        })
        .await;
    assert!(matches!(r, Err(AmiError::Refused(_))));
    c.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn action_timeout_is_per_action() {
    // At a tenfold time scale a 100 ms ring Timeout rings 1 s: a synchronous Originate's
    // budget (its ring Timeout plus the 100 ms action timeout) runs out first.
    let sim = start_sim(dialout::pbx_sim::SimConfig {
        time_scale: 10.0,
        ..fast_sim_config()
    })
    .await;
    let mut cfg = client_config(&sim);
    cfg.action_timeout = Duration::from_millis(100);
    let c = AmiClient::connect(cfg).await.unwrap();
    let mut o = originate("Local/noanswer@callee", 9);
    o.async_ = false;
    o.timeout = Some(Duration::from_millis(100));
    let r = c.originate(&o).await;
    assert!(
        matches!(r, Err(AmiError::Timeout(t)) if t == Duration::from_millis(200)),
        "{r:?}"
    );
    assert_eq!(c.in_flight(), 0, "a timed-out action is forgotten");
    c.shutdown().await;
    sim.shutdown().await;
}

/// README fact 9: a synchronous Originate is answered only on answer or failure, and
/// Asterisk serves nothing else on that session meanwhile. It waits its ring Timeout on
/// top of the action timeout, and the keepalive Ping (which would wait behind it and time
/// out) is skipped, so the link stays up.
#[tokio::test]
async fn a_synchronous_originate_waits_its_ring_time_and_keeps_the_link() {
    let sim = start_sim(fast_sim_config()).await;
    let mut cfg = client_config(&sim);
    cfg.action_timeout = Duration::from_millis(100);
    cfg.ping_interval = Some(Duration::from_millis(20));
    let c = AmiClient::connect(cfg).await.unwrap();
    let mut links = c.subscribe(|_| false);
    // Rings 30 s (300 ms scaled), three times the action timeout, then answers.
    let mut o = originate("Local/slow-answer_30000@callee", 10);
    o.async_ = false;
    o.timeout = Some(Duration::from_secs(60));
    let r = timeout(WAIT, c.originate(&o)).await.unwrap();
    let queued = r.expect("answered after its ring time, not timed out");
    assert_eq!(queued.response.response(), Some("Success"));
    // A failure is a refusal with Asterisk's text (busy-sync.txt), not a timeout.
    let mut o = originate("Local/reject_30000@callee", 11);
    o.async_ = false;
    o.timeout = Some(Duration::from_secs(60));
    let r = timeout(WAIT, c.originate(&o)).await.unwrap();
    assert!(
        matches!(&r, Err(AmiError::Refused(m)) if m == "Originate failed"),
        "{r:?}"
    );
    // The keepalive did not drop the link meanwhile, and it pings again now.
    assert_eq!(c.reconnects(), 0);
    assert!(links.try_recv().is_none(), "no Disconnected");
    assert!(c.is_connected());
    timeout(WAIT, c.send_action(&Ping)).await.unwrap().unwrap();
    c.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn explicit_shutdown_closes_the_socket() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|_| false);
    assert_eq!(sim.sessions(), 1);
    c.shutdown().await;
    assert!(!c.is_connected());
    // Subscribers hear that the stream ended; the PBX sees the session go.
    match timeout(WAIT, sub.recv()).await.unwrap().unwrap() {
        Notice::Disconnected { reason } => assert_eq!(reason, "client shut down"),
        other => panic!("{other:?}"),
    }
    assert!(
        timeout(WAIT, sub.recv()).await.unwrap().is_none(),
        "subscription ended"
    );
    let mut late = c.subscribe(|_| true);
    assert!(
        timeout(WAIT, late.recv()).await.unwrap().is_none(),
        "no subscribing to a closed client"
    );
    timeout(WAIT, async {
        while sim.sessions() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    sim.shutdown().await;
}

/// A peer that holds every answer until 1,000 actions are in flight, then answers them in
/// reverse order with events in between: matching can only work by ActionID.
#[tokio::test]
async fn thousand_in_flight_answered_in_reverse_order() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    const N: usize = 1000;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"Asterisk Call Manager/11.0.0\r\n")
            .await
            .unwrap();
        let (mut line, mut id, mut held) = (String::new(), String::new(), Vec::new());
        let mut logged_in = false;
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.strip_prefix("ActionID: ") {
                id = v.trim().to_owned();
            }
            if !line.trim().is_empty() {
                continue;
            }
            if !logged_in {
                logged_in = true;
                let r = format!(
                    "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
                );
                w.write_all(r.as_bytes()).await.unwrap();
                continue;
            }
            held.push(id.clone());
            if held.len() == N {
                let mut out = String::new();
                for (i, id) in held.iter().rev().enumerate() {
                    out.push_str(&format!(
                        "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nSeq: {i}\r\n\r\n"
                    ));
                    // An event carrying a foreign ActionID in between must not confuse anyone.
                    out.push_str(&format!("Event: OriginateResponse\r\nActionID: other-{i}\r\nResponse: Success\r\n\r\n"));
                }
                w.write_all(out.as_bytes()).await.unwrap();
                held.clear();
            }
        }
    });
    let cfg = dialout::ami::AmiConfig {
        port,
        username: "u".into(),
        secret: "s".into(),
        ping_interval: None,
        // This peer sends no FullyBooted.
        fully_booted_timeout: None,
        ..dialout::ami::AmiConfig::default()
    };
    let c = AmiClient::connect(cfg).await.unwrap();
    let mut sub = c.subscribe(|m| m.event_name() == Some("OriginateResponse"));
    let mut tasks = Vec::new();
    for i in 0..N {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("rev-{i}");
            let r = c.send_action_with_id(&Ping, &id).await.unwrap();
            assert_eq!(r.response.action_id(), Some(id.as_str()));
            r.response.get("Seq").unwrap().parse::<usize>().unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(timeout(WAIT, t).await.unwrap().unwrap());
    }
    seqs.sort();
    assert_eq!(
        seqs,
        (0..N).collect::<Vec<_>>(),
        "each answer reached exactly one caller"
    );
    let mut events = 0;
    while events < N {
        if let Notice::Event(_) = timeout(WAIT, sub.recv()).await.unwrap().unwrap() {
            events += 1;
        }
    }
    assert_eq!(c.in_flight(), 0);
    c.shutdown().await;
}

/// Like concurrent-20.txt: mixed outcomes on one connection, here with noise from "another
/// client", duplicated events and Hangups before OriginateResponse. Each Originate's outcome
/// is found by its ActionID, and each call's two Hangups by its CallerID tag.
#[tokio::test]
async fn mixed_outcomes_with_faults_are_told_apart() {
    let mut cfg = fast_sim_config();
    cfg.faults = dialout::pbx_sim::Faults {
        noise_calls: 1,
        duplicate_events: true,
        hangup_before_originate_response: true,
        ..Default::default()
    };
    let sim = start_sim(cfg).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|m| matches!(m.event_name(), Some("OriginateResponse" | "Hangup")));
    let cases = [
        ("Local/answer_20@callee", Some(4), 2),
        ("Local/busy@callee", Some(5), 2),
        ("Local/congestion@callee", Some(8), 2),
        ("Local/noanswer@callee", Some(3), 2),
        ("Local/slow-answer_30_20@callee", Some(4), 2),
        ("Local/reject_30@callee", Some(0), 2),
        ("Foo/123", Some(0), 0),
        ("Local/nosuch@callee", Some(0), 2),
    ];
    let mut want = std::collections::HashMap::new();
    for (i, (chan, reason, hangups)) in cases.iter().enumerate() {
        let job = 910_000 + i as u32;
        let q = c.originate(&originate(chan, job)).await.unwrap();
        want.insert(q.action_id, (job.to_string(), *reason, *hangups));
    }
    let mut got_reason = std::collections::HashMap::new();
    let mut got_hangups: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    let done =
        |r: &std::collections::HashMap<String, Option<u32>>,
         h: &std::collections::HashMap<String, std::collections::HashSet<String>>| {
            want.iter().all(|(aid, (job, _, n))| {
                r.contains_key(aid) && h.get(job).map_or(0, |s| s.len()) == *n
            })
        };
    while !done(&got_reason, &got_hangups) {
        let Notice::Event(m) = timeout(WAIT, sub.recv()).await.unwrap().unwrap() else {
            continue;
        };
        match Event::parse(&m) {
            Some(Event::OriginateResponse(o)) => {
                if let Some(aid) = o.action_id.filter(|a| want.contains_key(*a)) {
                    // A duplicate must agree with the first.
                    let prev = got_reason.insert(aid.to_owned(), o.reason);
                    assert!(prev.is_none() || prev == Some(o.reason));
                } else {
                    assert!(
                        o.action_id.is_some_and(|a| a.starts_with("other-client-")),
                        "{m:?}"
                    );
                }
            }
            Some(Event::Hangup(h)) => {
                let tag = h.caller_id_num.unwrap().to_owned();
                // Channel names repeat between noise and ours; the tag does not.
                got_hangups
                    .entry(tag)
                    .or_default()
                    .insert(h.channel.unwrap().to_owned());
            }
            _ => {}
        }
    }
    for (aid, (_, reason, _)) in &want {
        assert_eq!(got_reason[aid], *reason, "{aid}");
    }
    c.shutdown().await;
    sim.shutdown().await;
}
