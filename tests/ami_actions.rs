//! Nothing a caller passes can inject protocol: CR, LF and other control characters are
//! refused in every field of every action, before anything is encoded.

mod support;

use std::time::Duration;

use dialout::ami::actions::{
    self, Action, ActionError, CoreShowChannels, Events, EventsMask, Filter, GenericAction, Hangup,
    Login, Logoff, Originate, OriginateTarget, Ping, Status,
};
use dialout::ami::{AmiClient, AmiError};
use dialout::config::SecretString;

const BAD: [&str; 5] = ["a\r\nAction: Hangup", "a\nb", "a\rb", "a\0b", "a\x1bb"];

fn refused<A: Action>(a: &A) -> bool {
    matches!(
        actions::encode(a, Some("id-1")),
        Err(ActionError::ControlCharacter { .. })
    )
}

fn originate() -> Originate {
    let mut o = Originate::to_exten("Local/answer@callee", "originated", "s", 1);
    o.caller_id = Some("\"JOB1\" <1>".into());
    o.variables = vec![("DIALER_JOB_ID".into(), "1".into())];
    o.timeout = Some(Duration::from_secs(4));
    o
}

#[test]
fn clean_actions_encode_as_expected() {
    let mut o = originate();
    o.channel_id = Some("dialer-job-1".into());
    let f = actions::encode(&o, Some("x-1")).unwrap();
    let s = std::str::from_utf8(f.as_bytes()).unwrap();
    assert_eq!(
        s,
        "Action: Originate\r\nActionID: x-1\r\nChannel: Local/answer@callee\r\nContext: originated\r\nExten: s\r\nPriority: 1\r\nTimeout: 4000\r\nCallerID: \"JOB1\" <1>\r\nVariable: DIALER_JOB_ID=1\r\nAsync: true\r\nChannelId: dialer-job-1\r\n\r\n"
    );
    for a in [
        &Ping as &dyn Action,
        &Logoff,
        &CoreShowChannels,
        &Status::default(),
    ] {
        let f = actions::encode(a, None).unwrap();
        assert!(f.as_bytes().ends_with(b"\r\n\r\n"));
    }
    assert!(CoreShowChannels.is_list() && Status::default().is_list() && !Ping.is_list());
}

#[test]
fn control_characters_refused_in_every_originate_field() {
    for bad in BAD {
        let b = bad.to_owned();
        type Case<'a> = Box<dyn Fn(&mut Originate) + 'a>;
        let cases: Vec<Case> = vec![
            Box::new(|o| o.channel = b.clone()),
            Box::new(|o| o.caller_id = Some(b.clone())),
            Box::new(|o| o.variables.push(("X".into(), b.clone()))),
            Box::new(|o| o.variables.push((b.clone(), "v".into()))),
            Box::new(|o| o.channel_id = Some(b.clone())),
            Box::new(|o| o.other_channel_id = Some(b.clone())),
            Box::new(|o| o.account = Some(b.clone())),
            Box::new(|o| o.codecs = Some(b.clone())),
            Box::new(|o| {
                o.target = OriginateTarget::Exten {
                    context: b.clone(),
                    exten: "s".into(),
                    priority: 1,
                }
            }),
            Box::new(|o| {
                o.target = OriginateTarget::Exten {
                    context: "c".into(),
                    exten: b.clone(),
                    priority: 1,
                }
            }),
            Box::new(|o| {
                o.target = OriginateTarget::Application {
                    application: b.clone(),
                    data: None,
                }
            }),
            Box::new(|o| {
                o.target = OriginateTarget::Application {
                    application: "Playback".into(),
                    data: Some(b.clone()),
                }
            }),
        ];
        for (i, c) in cases.iter().enumerate() {
            let mut o = originate();
            c(&mut o);
            assert!(refused(&o), "case {i} with {bad:?} was not refused");
        }
    }
    let mut o = originate();
    o.variables.push(("A=B".into(), "v".into()));
    assert!(matches!(
        actions::encode(&o, None),
        Err(ActionError::InvalidVariableName(_))
    ));
}

#[test]
fn control_characters_refused_in_every_other_action() {
    for bad in BAD {
        let b = bad.to_owned();
        assert!(refused(&Hangup {
            channel: b.clone(),
            cause: None
        }));
        assert!(refused(&Status {
            channel: Some(b.clone())
        }));
        assert!(refused(&Events {
            mask: EventsMask::Classes(vec![b.clone()])
        }));
        assert!(refused(&Filter {
            filter: b.clone(),
            ..Filter::default()
        }));
        assert!(refused(&Filter {
            match_criteria: Some(b.clone()),
            filter: "x".into(),
            ..Filter::default()
        }));
        let login = |u: &str, s: &str, e: Option<&str>, c: Option<&str>| Login {
            username: u.into(),
            secret: SecretString::from(s),
            events: e.map(str::to_owned),
            challenge: c.map(str::to_owned),
        };
        assert!(refused(&login(&b, "s", None, None)));
        assert!(refused(&login("u", &b, None, None)));
        assert!(refused(&login("u", "s", Some(&b), None)));
        assert!(refused(&login(&b, "s", None, Some("123"))));
        assert!(refused(&GenericAction {
            name: b.clone(),
            ..Default::default()
        }));
        assert!(refused(&GenericAction {
            name: "X".into(),
            fields: vec![("K".into(), b.clone())],
            list: false
        }));
        assert!(refused(&GenericAction {
            name: "X".into(),
            fields: vec![(b.clone(), "v".into())],
            list: false
        }));
        // The ActionID is a field too.
        assert!(matches!(
            actions::encode(&Ping, Some(bad)),
            Err(ActionError::ControlCharacter { .. })
        ));
    }
    // Keys may not carry ':' or spaces either.
    let g = GenericAction {
        name: "X".into(),
        fields: vec![("Key: x".into(), "v".into())],
        list: false,
    };
    assert!(matches!(
        actions::encode(&g, None),
        Err(ActionError::InvalidKey(_))
    ));
}

#[test]
fn secrets_never_print() {
    // SecretString has no Display, and its Debug is redacted.
    let s = SecretString::from("dialer-secret");
    assert!(!format!("{s:?}").contains("dialer-secret"), "{s:?}");
    let l = Login {
        username: "u".into(),
        secret: s,
        events: None,
        challenge: None,
    };
    assert!(!format!("{l:?}").contains("dialer-secret"));
    let frame = actions::encode(&l, Some("login-1")).unwrap();
    assert!(
        std::str::from_utf8(frame.as_bytes())
            .unwrap()
            .contains("Secret: dialer-secret")
    );
    assert!(!format!("{frame:?}").contains("dialer-secret"), "{frame:?}");
    let cfg = dialout::ami::AmiConfig {
        secret: "top".into(),
        ..Default::default()
    };
    assert!(!format!("{cfg:?}").contains("top"));
}

#[tokio::test]
async fn refused_value_never_reaches_the_socket() {
    let sim = support::ami::start_sim(support::ami::fast_sim_config()).await;
    let client = AmiClient::connect(support::ami::client_config(&sim))
        .await
        .unwrap();
    let mut o = originate();
    o.channel = "Local/answer@callee\r\nAction: Logoff".into();
    let r = client.originate(&o).await;
    assert!(
        matches!(
            r,
            Err(AmiError::Action(ActionError::ControlCharacter { .. }))
        ),
        "{r:?}"
    );
    // The session is intact: nothing was written, no call was placed.
    tokio::time::timeout(support::ami::WAIT, client.send_action(&Ping))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sim.live_calls(), 0);
    client.shutdown().await;
    sim.shutdown().await;
}
