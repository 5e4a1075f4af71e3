//! "Nothing usable" situations: these are errors, with clear messages.

use dialout::jobs::roster::{ConvertError, ConvertOptions, EmailDomain, Format, convert};

fn options() -> ConvertOptions {
    ConvertOptions {
        email_domain: Some(EmailDomain::parse("example.com").expect("domain")),
        ..ConvertOptions::default()
    }
}

fn fail(input: &[u8], options: &ConvertOptions) -> (ConvertError, Vec<u8>) {
    let mut out = Vec::new();
    match convert(input, &mut out, options, |_| {}) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => (e, out),
    }
}

#[test]
fn header_only() {
    let (e, out) = fail(b"firstname,lastname,email\r\n\r\n", &options());
    assert!(matches!(e, ConvertError::HeaderOnly), "{e}");
    assert!(out.is_empty(), "nothing written");
}

#[test]
fn empty_and_blank() {
    for input in [&b""[..], b"\xEF\xBB\xBF", b"\n \r\n\t\n"] {
        let (e, _) = fail(input, &options());
        assert!(matches!(e, ConvertError::Empty), "{e}");
    }
}

#[test]
fn binary_files_are_refused_clearly() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10";
    let (e, _) = fail(png, &options());
    assert!(matches!(e, ConvertError::Binary(_)), "{e}");
    assert!(e.to_string().contains("not a text roster"), "{e}");

    let xlsx = b"PK\x03\x04\x14\0\x06\0\x08\0\0\0!\0";
    let (e, _) = fail(xlsx, &options());
    assert!(e.to_string().contains("save it as CSV"), "{e}");

    let utf16 = b"\xFF\xFEn\0o\0m\0";
    let (e, _) = fail(utf16, &options());
    assert!(e.to_string().contains("UTF-16"), "{e}");
}

#[test]
fn a_header_without_names_is_explained() {
    let (e, _) = fail(b"usuario,correo\njperez,jp@example.org\n", &options());
    assert!(matches!(e, ConvertError::Header(_)), "{e}");
    assert!(e.to_string().contains("firstname"), "{e}");

    let mut o = options();
    o.format = Format::Csv;
    let (e, _) = fail(b"1 Juan Perez jp@example.org Ventas\n", &o);
    assert!(matches!(e, ConvertError::Header(_)), "{e}");
}

#[test]
fn every_row_rejected_is_an_error_that_keeps_the_report() {
    let (e, out) = fail(b"1 Cher\n2 Madonna\n", &options());
    let ConvertError::NothingUsable(report) = e else {
        panic!("{e}")
    };
    assert_eq!(report.rejected.total, 2);
    assert_eq!(report.rejected.items[1].line, 2);
    assert!(out.is_empty());
}

#[test]
fn only_unreadable_lines_is_nothing_usable_not_empty() {
    let mut o = options();
    o.max_line_bytes = 256;
    let long = "x".repeat(1000);
    let (e, _) = fail(long.as_bytes(), &o);
    let ConvertError::NothingUsable(report) = e else {
        panic!("{e}")
    };
    assert!(report.rejected.items[0].reason.contains("longer than 256"));
}
