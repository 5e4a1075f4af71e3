//! The `roster_import` job payload.

use dialout::jobs::roster::{
    ConvertError, ConvertOptions, EmailDomain, Format, RosterPayload, RosterPayloadError,
    RosterSource,
};
use serde_json::json;

#[test]
fn inline_roster_with_overrides() {
    let p = RosterPayload::parse(&json!({
        "roster": "1 Juan Perez No tiene Ventas\n",
        "format": "seed",
        "email_domain": "alumnos.example.edu",
        "existing_usernames": ["jperez"]
    }))
    .expect("valid payload");
    assert!(matches!(p.source, RosterSource::Inline(_)));
    assert_eq!(p.format, Format::Seed);
    let defaults = ConvertOptions {
        email_domain: Some(EmailDomain::parse("default.example.com").expect("domain")),
        ..ConvertOptions::default()
    };
    let mut out = Vec::new();
    let report = p.convert(&mut out, &defaults).expect("converts");
    assert_eq!(report.rows_out, 1);
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        text.contains("jperez2,Juan,Perez,juanperez@alumnos.example.edu,Ventas"),
        "{text}"
    );
}

#[test]
fn exactly_one_source() {
    let both = RosterPayload::parse(&json!({"roster": "x", "path": "/tmp/x"}));
    assert!(matches!(both, Err(RosterPayloadError::Source("both"))));
    let neither = RosterPayload::parse(&json!({"format": "csv"}));
    assert!(matches!(
        neither,
        Err(RosterPayloadError::Source("neither"))
    ));
    let e = neither.expect_err("error");
    assert!(e.to_string().contains("exactly one of"), "{e}");
}

#[test]
fn shape_errors_are_clear() {
    let e = RosterPayload::parse(&json!({"roster": "x", "format": "xls"})).expect_err("bad");
    assert!(e.to_string().contains("unknown variant `xls`"), "{e}");
    let e = RosterPayload::parse(&json!({"roster": "x", "pasword": "x"})).expect_err("bad");
    assert!(e.to_string().contains("unknown field `pasword`"), "{e}");
    let e = RosterPayload::parse(&json!({"roster": "x", "email_domain": "no domain"}))
        .expect_err("bad");
    assert!(matches!(e, RosterPayloadError::EmailDomain(_)), "{e}");
    let e = RosterPayload::parse(&json!(["roster"])).expect_err("bad");
    assert!(matches!(e, RosterPayloadError::Shape(_)), "{e}");
}

#[test]
fn paths_stay_inside_the_roster_dir() {
    let dir = std::env::temp_dir().join(format!("roster-payload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("r.txt"), "1 Ana Ruiz ana@example.org Ventas\n").expect("write");
    let defaults = ConvertOptions {
        roster_dir: Some(dir.clone()),
        ..ConvertOptions::default()
    };
    let ok = RosterPayload::parse(&json!({"path": "r.txt"})).expect("payload");
    let mut out = Vec::new();
    assert_eq!(
        ok.convert(&mut out, &defaults).expect("converts").rows_out,
        1
    );

    for bad in ["../etc/passwd", "/etc/passwd"] {
        let p = RosterPayload::parse(&json!({ "path": bad })).expect("payload");
        let e = p.convert(Vec::new(), &defaults).expect_err("refused");
        assert!(matches!(e, ConvertError::PathOutsideRosterDir(_)), "{e}");
    }
    let missing = RosterPayload::parse(&json!({"path": "nope.txt"})).expect("payload");
    let e = missing.convert(Vec::new(), &defaults).expect_err("missing");
    assert!(matches!(e, ConvertError::Open { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A symlink inside roster_dir is followed before the check: one leading out (to a file
/// or through a folder) is refused, one staying inside works, and roster_dir may itself
/// be reached through a symlink.
#[test]
fn symlinks_in_the_roster_dir_cannot_lead_out() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("rosters");
    let outside = tmp.path().join("secret");
    std::fs::create_dir_all(&dir).expect("roster dir");
    std::fs::create_dir_all(&outside).expect("outside dir");
    std::fs::write(dir.join("r.txt"), "1 Ana Ruiz ana@example.org Ventas\n").expect("write");
    std::fs::write(outside.join("s.txt"), "1 Eva Paz eva@example.org Ventas\n").expect("write");
    symlink(outside.join("s.txt"), dir.join("escape.txt")).expect("symlink");
    symlink(&outside, dir.join("out")).expect("symlink");
    symlink(dir.join("r.txt"), dir.join("alias.txt")).expect("symlink");
    symlink(&dir, tmp.path().join("via-link")).expect("symlink");

    let convert = |root: &std::path::Path, path: &str| {
        let defaults = ConvertOptions {
            roster_dir: Some(root.to_owned()),
            ..ConvertOptions::default()
        };
        let p = RosterPayload::parse(&json!({ "path": path })).expect("payload");
        let mut out = Vec::new();
        p.convert(&mut out, &defaults)
            .map(|_| String::from_utf8(out).expect("utf-8"))
    };
    for bad in ["escape.txt", "out/s.txt"] {
        let e = convert(&dir, bad).expect_err("refused");
        assert!(
            matches!(e, ConvertError::PathOutsideRosterDir(_)),
            "{bad}: {e}"
        );
        assert!(
            e.to_string().contains("outside the roster directory"),
            "{e}"
        );
    }
    let csv = convert(&dir, "alias.txt").expect("a symlink inside works");
    assert!(csv.contains("Ana"), "{csv}");
    let csv = convert(&tmp.path().join("via-link"), "r.txt").expect("roster_dir via a symlink");
    assert!(csv.contains("Ana"), "{csv}");
    let e = convert(&tmp.path().join("via-link"), "escape.txt").expect_err("refused");
    assert!(matches!(e, ConvertError::PathOutsideRosterDir(_)), "{e}");
}
