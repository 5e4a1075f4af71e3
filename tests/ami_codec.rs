//! Framing: every capture parses with no field lost, in any chunking; caps hold.

mod support;

use bytes::BytesMut;
use dialout::ami::event::{Event, Uniqueid};
use dialout::ami::{AmiCodec, CodecError, MessageKind};
use support::ami::{Dir, capture_files, load, parse_capture};
use tokio_util::codec::Decoder;

fn decode_all(codec: &mut AmiCodec, chunks: &[&[u8]]) -> Vec<dialout::ami::Message> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(m) = codec.decode(&mut buf).expect("decode") {
            out.push(m);
        }
    }
    while let Some(m) = codec.decode_eof(&mut buf).expect("eof") {
        out.push(m);
    }
    out
}

/// Checks one direction of one capture: rebuilt wire bytes, decoded, field for field.
fn check_stream(name: &str, blocks: &[&support::ami::Block], client_side: bool, rng: &mut u64) {
    let mut wire = Vec::new();
    for b in blocks {
        wire.extend_from_slice(&b.wire(b.is_greeting()));
    }
    // Whole, then in random-sized chunks (1..=97 bytes).
    let mut chunkings: Vec<Vec<&[u8]>> = vec![vec![&wire[..]]];
    let mut chunks = Vec::new();
    let mut pos = 0;
    while pos < wire.len() {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let n = (1 + (*rng % 97) as usize).min(wire.len() - pos);
        chunks.push(&wire[pos..pos + n]);
        pos += n;
    }
    chunkings.push(chunks);
    for chunks in chunkings {
        let mut codec = if client_side {
            AmiCodec::client(1 << 20, 4096)
        } else {
            AmiCodec::server(1 << 20, 4096)
        };
        let msgs = decode_all(&mut codec, &chunks);
        assert_eq!(msgs.len(), blocks.len(), "{name}: message count");
        for (m, b) in msgs.iter().zip(blocks) {
            if b.is_greeting() {
                assert_eq!(m.kind(), MessageKind::Banner);
                assert_eq!(m.banner(), Some(b.lines[0].as_str()), "{name}");
                continue;
            }
            assert_eq!(
                m.len(),
                b.lines.len(),
                "{name}: field count of {:?}",
                b.first()
            );
            for ((k, v), line) in m.fields().zip(&b.lines) {
                assert_eq!(format!("{k}: {v}"), *line, "{name}");
            }
            // Rendering back gives the exact wire bytes.
            assert_eq!(m.to_wire().as_bytes(), &b.wire(false)[..], "{name}");
        }
    }
}

#[test]
fn every_capture_parses_with_no_field_lost() {
    let files = capture_files();
    assert!(
        files.len() >= 30,
        "expected the capture set, found {}",
        files.len()
    );
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut total = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let blocks = parse_capture(&std::fs::read_to_string(f).unwrap());
        assert!(!blocks.is_empty(), "{name}");
        let from: Vec<_> = blocks
            .iter()
            .filter(|b| b.dir == Dir::FromAsterisk)
            .collect();
        let to: Vec<_> = blocks.iter().filter(|b| b.dir == Dir::ToAsterisk).collect();
        check_stream(&name, &from, true, &mut rng);
        check_stream(&name, &to, false, &mut rng);
        total += blocks.len();
    }
    assert!(total > 1000);
}

#[test]
fn typed_views_of_captured_events() {
    let blocks = load("busy.txt");
    let mut codec = AmiCodec::client(1 << 20, 4096);
    let mut wire = Vec::new();
    for b in blocks.iter().filter(|b| b.dir == Dir::FromAsterisk) {
        wire.extend_from_slice(&b.wire(b.is_greeting()));
    }
    let msgs = decode_all(&mut codec, &[&wire]);
    let mut saw = (false, 0, 0, false);
    for m in &msgs {
        match Event::parse(m) {
            Some(Event::OriginateResponse(o)) => {
                assert!(!o.is_success());
                assert_eq!(o.reason, Some(5));
                assert_eq!(o.uniqueid, Uniqueid::Unknown);
                assert_eq!(o.channel, Some("Local/busy@callee"));
                assert_eq!(o.action_id, Some("busy-900102"));
                assert_eq!(o.caller_id_num, Some("900102"));
                saw.0 = true;
            }
            Some(Event::Hangup(h)) => {
                assert_eq!(h.caller_id_num, Some("900102"));
                assert!(matches!(h.cause, Some(17) | Some(0)));
                saw.1 += 1;
            }
            Some(Event::Cdr(c)) => {
                assert_eq!(c.source, Some("900102"));
                assert_eq!(c.answer_time, None, "unanswered: empty AnswerTime");
                assert!(c.unique_id.known().is_some(), "UniqueID spelling");
                assert_eq!(c.start_time.map(str::len), Some(19));
                saw.2 += 1;
            }
            Some(Event::FullyBooted) => saw.3 = true,
            _ => {}
        }
    }
    assert_eq!(saw, (true, 2, 2, true));

    // Dial events carry DestCallerIDNum; an answered OriginateResponse has a real Uniqueid.
    let blocks = load("answer.txt");
    let mut wire = Vec::new();
    for b in blocks.iter().filter(|b| b.dir == Dir::FromAsterisk) {
        wire.extend_from_slice(&b.wire(b.is_greeting()));
    }
    let msgs = decode_all(&mut AmiCodec::client(1 << 20, 4096), &[&wire]);
    let dial_end = msgs.iter().find_map(|m| match Event::parse(m) {
        Some(Event::DialEnd(d)) => Some((
            d.dest_caller_id_num.map(str::to_owned),
            d.dial_status.map(str::to_owned),
        )),
        _ => None,
    });
    assert_eq!(
        dial_end,
        Some((Some("900101".into()), Some("ANSWER".into())))
    );
    let ok = msgs.iter().find_map(|m| match Event::parse(m) {
        Some(Event::OriginateResponse(o)) => {
            Some((o.reason, o.uniqueid.known().map(str::to_owned)))
        }
        _ => None,
    });
    assert_eq!(ok, Some((Some(4), Some("1795745639.0".into()))));
    let ns = msgs
        .iter()
        .filter(|m| matches!(Event::parse(m), Some(Event::Newstate(_))))
        .count();
    assert_eq!(ns, 2);
    let unknown = msgs
        .iter()
        .filter(|m| matches!(Event::parse(m), Some(Event::Unknown(_))))
        .count();
    assert!(unknown > 10, "unknown events are a variant, not an error");

    let blocks = load("shutdown-stop-now.txt");
    let sd = blocks
        .iter()
        .find(|b| b.first() == "Event: Shutdown")
        .unwrap();
    let msgs = decode_all(&mut AmiCodec::server(1 << 20, 64), &[&sd.wire(false)]);
    match Event::parse(&msgs[0]) {
        Some(Event::Shutdown(s)) => assert_eq!((s.shutdown, s.restart), (Some("Cleanly"), false)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bare_lf_repeated_keys_and_case_insensitive_lookup() {
    let wire =
        b"Asterisk Call Manager/11.0.0\nEvent: VarSet\nVariable: A\nvariable: B\nvalue: 1\n\n";
    let msgs = decode_all(&mut AmiCodec::client(4096, 64), &[wire]);
    assert_eq!(msgs.len(), 2);
    let m = &msgs[1];
    assert_eq!(m.get_all("VARIABLE").collect::<Vec<_>>(), vec!["A", "B"]);
    assert_eq!(m.get("Value"), Some("1"));
    assert_eq!(m.event_name(), Some("VarSet"));
}

#[test]
fn legacy_command_output_block() {
    let wire = b"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\nline one\r\n\r\nline three: x\r\n--END COMMAND--\r\n\r\nResponse: Success\r\nActionID: c2\r\n\r\n";
    let msgs = decode_all(&mut AmiCodec::server(4096, 64), &[wire]);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].action_id(), Some("c1"));
    assert!(
        msgs[0]
            .fields()
            .any(|(k, v)| k.is_empty() && v == "--END COMMAND--")
    );
    assert_eq!(msgs[1].action_id(), Some("c2"));
}

#[test]
fn ten_megabyte_line_hits_the_cap_without_buffering_it() {
    let mut codec = AmiCodec::client(64 * 1024, 128);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"Asterisk Call Manager/11.0.0\r\n");
    assert!(codec.decode(&mut buf).unwrap().is_some());
    let chunk = vec![b'x'; 16 * 1024];
    let mut err = None;
    for _ in 0..(10 * 1024 * 1024 / chunk.len()) {
        buf.extend_from_slice(&chunk);
        match codec.decode(&mut buf) {
            Ok(None) => assert!(
                buf.len() <= 64 * 1024 + chunk.len(),
                "buffer grew past the cap"
            ),
            Ok(Some(_)) => panic!("no message expected"),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(err, Some(CodecError::MessageTooLarge { limit: 65536 })),
        "{err:?}"
    );
}

#[test]
fn too_many_lines_is_a_typed_error() {
    let mut codec = AmiCodec::server(1 << 20, 10);
    let mut buf = BytesMut::new();
    for i in 0..11 {
        buf.extend_from_slice(format!("K{i}: v\r\n").as_bytes());
    }
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::TooManyLines { limit: 10 })
    ));
}

#[test]
fn garbage_is_kept_as_lines_and_bounded() {
    // Binary junk with newlines: never a panic, never an unbounded message.
    let mut rng = 12345u64;
    let mut codec = AmiCodec::server(8192, 256);
    let mut buf = BytesMut::new();
    let mut errors = 0;
    for _ in 0..2000 {
        let mut junk = [0u8; 61];
        for b in junk.iter_mut() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (rng >> 56) as u8;
        }
        buf.extend_from_slice(&junk);
        loop {
            match codec.decode(&mut buf) {
                // Invalid UTF-8 is replaced by U+FFFD (3 bytes), so at most 3x the cap.
                Ok(Some(m)) => assert!(m.as_str().len() <= 3 * 8192),
                Ok(None) => break,
                Err(_) => {
                    errors += 1;
                    buf.clear();
                    codec = AmiCodec::server(8192, 256);
                    break;
                }
            }
        }
        assert!(buf.len() <= 8192 + 61);
    }
    let _ = errors;
}

#[test]
fn half_message_at_eof_is_dropped() {
    let mut codec = AmiCodec::server(4096, 64);
    let mut buf = BytesMut::from(&b"Event: Hangup\r\nChannel: x\r\n\r\nEvent: Hang"[..]);
    let first = codec.decode_eof(&mut buf).unwrap().unwrap();
    assert_eq!(first.event_name(), Some("Hangup"));
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
}

#[test]
fn invalid_utf8_is_repaired_not_fatal() {
    let mut codec = AmiCodec::server(4096, 64);
    let mut buf = BytesMut::from(&b"Event: X\r\nName: caf\xe9\r\nOther: ok\r\n\r\n"[..]);
    let m = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m.get("Other"), Some("ok"));
    assert!(m.get("Name").unwrap().starts_with("caf"));
}

#[test]
fn parse_capture_helper_sees_both_directions() {
    let b = load("login-failure.txt");
    assert!(
        b.iter()
            .any(|b| b.dir == Dir::ToAsterisk && b.get("Secret") == Some("wrong-secret"))
    );
}
