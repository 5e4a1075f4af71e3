//! A restarted Asterisk accepts AMI logins before it has loaded its dialplan; an Originate
//! in that gap is refused with "Extension does not exist.". The client calls the link up
//! only once Asterisk has sent `FullyBooted` (bounded), and the events of a new session
//! reach subscribers only after `Reconnected`.

mod support;

use std::time::Duration;

use dialout::ami::actions::{EventsMask, Filter};
use dialout::ami::{AmiClient, Notice, Originate, Subscription};
use dialout::pbx_sim::{PbxSim, SimConfig};
use support::ami::{WAIT, client_config, fast_sim_config, start_sim};
use support::eventually;
use support::logs::Logs;
use tokio::time::timeout;

fn booting(delay: Duration) -> SimConfig {
    SimConfig {
        boot_delay: delay,
        ..fast_sim_config()
    }
}

fn originate(job: u32) -> Originate {
    let mut o = Originate::to_exten("Local/busy@callee", "originated", "s", 1);
    o.caller_id = Some(format!("\"JOB{job}\" <{job}>"));
    o
}

async fn next_notice(sub: &mut Subscription) -> Notice {
    timeout(WAIT, sub.recv())
        .await
        .expect("notice in time")
        .expect("open")
}

#[tokio::test]
async fn first_connect_returns_only_after_fully_booted() {
    let sim = start_sim(booting(Duration::from_millis(300))).await;
    let c = timeout(WAIT, AmiClient::connect(client_config(&sim)))
        .await
        .expect("connect in time")
        .expect("connects once booted");
    assert!(sim.is_booted(), "connect returned before FullyBooted");
    timeout(WAIT, c.originate(&originate(1)))
        .await
        .unwrap()
        .expect("an Originate after the boot is accepted");
    assert_eq!((sim.originates(), sim.originates_while_booting()), (1, 0));
    c.shutdown().await;
    sim.shutdown().await;
}

/// The case: Asterisk restarted, the client reconnects during the boot. The link is
/// reported up only after FullyBooted, so an Originate sent on `Reconnected` gets through;
/// the new session's events (SuccessfulAuth, then FullyBooted) follow `Reconnected`.
#[tokio::test]
async fn restart_with_boot_delay_reports_up_after_fully_booted() {
    let sim = start_sim(fast_sim_config()).await;
    let addr = sim.local_addr();
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|_| true);
    sim.shutdown().await;
    loop {
        if let Notice::Disconnected { .. } = next_notice(&mut sub).await {
            break;
        }
    }
    let sim2 = PbxSim::start(addr, booting(Duration::from_millis(500)))
        .await
        .unwrap();
    match next_notice(&mut sub).await {
        Notice::Reconnected => {}
        other => panic!("nothing of the new session before Reconnected: {other:?}"),
    }
    assert!(sim2.is_booted(), "Reconnected before FullyBooted");
    assert!(c.is_connected());
    timeout(WAIT, c.originate(&originate(2)))
        .await
        .unwrap()
        .expect("an Originate sent on Reconnected is accepted");
    assert_eq!((sim2.originates(), sim2.originates_while_booting()), (1, 0));
    // The events held while waiting come now, in the order they were sent.
    let mut names = Vec::new();
    while names.len() < 2 {
        if let Notice::Event(m) = next_notice(&mut sub).await {
            names.push(m.event_name().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(names, ["SuccessfulAuth", "FullyBooted"]);
    c.shutdown().await;
    sim2.shutdown().await;
}

#[tokio::test]
async fn no_fully_booted_in_time_fails_the_attempt_and_the_backoff_retries() {
    let logs = Logs::capture();
    let never = booting(Duration::from_secs(3600));
    let sim = start_sim(never.clone()).await;
    let mut cfg = client_config(&sim);
    cfg.fully_booted_timeout = Some(Duration::from_millis(100));
    let e = match timeout(WAIT, AmiClient::connect(cfg.clone()))
        .await
        .unwrap()
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("connected to an Asterisk that never finished booting"),
    };
    assert!(e.contains("Asterisk has not finished booting"), "{e}");
    sim.shutdown().await;

    // Reconnecting: attempts fail the same way until the boot ends.
    let sim = start_sim(fast_sim_config()).await;
    let addr = sim.local_addr();
    cfg.port = addr.port();
    let c = AmiClient::connect(cfg).await.unwrap();
    let mut sub = c.subscribe(|_| false);
    sim.shutdown().await;
    assert!(matches!(
        next_notice(&mut sub).await,
        Notice::Disconnected { .. }
    ));
    let sim2 = PbxSim::start(addr, never).await.unwrap();
    eventually(WAIT, "a reconnect attempt to fail on the boot", || async {
        logs.warnings()
            .iter()
            .any(|l| l.contains("AMI reconnect failed") && l.contains("not finished booting"))
            .then_some(())
    })
    .await;
    assert!(!c.is_connected());
    assert!(sub.try_recv().is_none(), "no Reconnected while booting");
    sim2.finish_boot();
    assert!(matches!(next_notice(&mut sub).await, Notice::Reconnected));
    timeout(WAIT, c.originate(&originate(3)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sim2.originates_while_booting(), 0);
    c.shutdown().await;
    sim2.shutdown().await;
}

/// A login mask without `system` (or `Events: off`) never carries FullyBooted: the client
/// cannot wait for it, connects anyway and says why in a warning.
#[tokio::test]
async fn a_mask_without_system_cannot_wait_and_says_so() {
    let logs = Logs::capture();
    let sim = start_sim(booting(Duration::from_secs(3600))).await;
    for mask in [
        EventsMask::Classes(vec!["call".into(), "cdr".into()]),
        EventsMask::Off,
    ] {
        let mut cfg = client_config(&sim);
        cfg.events = mask.clone();
        let c = timeout(WAIT, AmiClient::connect(cfg))
            .await
            .expect("does not wait for a FullyBooted that cannot come")
            .unwrap();
        let header = mask.to_header();
        assert!(
            logs.warnings()
                .iter()
                .any(|l| l.contains("FullyBooted") && l.contains("system") && l.contains(&header)),
            "{mask:?}: {:#?}",
            logs.warnings()
        );
        c.shutdown().await;
    }
    assert!(!sim.is_booted());
    sim.shutdown().await;
}

/// The client's own `Action: Filter` includes would stop the boot-time FullyBooted (a
/// normal system event): it adds one for FullyBooted.
#[tokio::test]
async fn own_include_filters_still_let_fully_booted_through() {
    let sim = start_sim(booting(Duration::from_millis(500))).await;
    let mut cfg = client_config(&sim);
    cfg.filters = vec![Filter::header_exact("CallerIDNum", "4")];
    cfg.fully_booted_timeout = Some(WAIT);
    let c = timeout(WAIT * 2, AmiClient::connect(cfg))
        .await
        .unwrap()
        .expect("FullyBooted passes the client's filters");
    assert!(sim.is_booted());
    // The filters still hold for everything else.
    let mut sub = c.subscribe(|m| m.event_name() == Some("Hangup"));
    c.originate(&originate(5)).await.unwrap();
    c.originate(&originate(4)).await.unwrap();
    for _ in 0..2 {
        match next_notice(&mut sub).await {
            Notice::Event(m) => assert_eq!(m.get("CallerIDNum"), Some("4")),
            other => panic!("{other:?}"),
        }
    }
    c.shutdown().await;
    sim.shutdown().await;
}
