//! The seed's layout: `N Forename Surname [email] Department…`.

use dialout::jobs::roster::{
    ConvertOptions, EmailDomain, EmailProblem, Format, InitialPassword, Report, convert,
};

struct Out {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    report: Report,
}

fn options(domain: &str) -> ConvertOptions {
    ConvertOptions {
        email_domain: Some(EmailDomain::parse(domain).expect("test domain")),
        ..ConvertOptions::default()
    }
}

fn run(input: &[u8], options: &ConvertOptions) -> Out {
    let mut out = Vec::new();
    let report = convert(input, &mut out, options, |_| {}).expect("conversion succeeds");
    // Parse the CSV back; the reader is strict about field counts.
    let mut r = csv::Reader::from_reader(&out[..]);
    let header = r
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = r
        .records()
        .map(|rec| {
            rec.expect("well-formed row")
                .iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    Out {
        header,
        rows,
        report,
    }
}

fn row(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|s| (*s).to_owned()).collect()
}

const SEED_EXAMPLE: &str = "1 Pedro Pedroso pedro.pedroso@cobranzas.example.org Cobranzas
2 Juan Perez juan.perez@example.org Cobranzas
3 Juan Gonzalez JGonzalez@Example.NET Cobranzas
4 Un boludo No tiene Por ahi
";

#[test]
fn seed_example_gives_the_users_it_shows() {
    let out = run(SEED_EXAMPLE.as_bytes(), &options("example.com"));
    assert_eq!(
        out.header,
        ["username", "firstname", "lastname", "email", "department"]
    );
    assert_eq!(
        out.rows,
        [
            row(&[
                "ppedroso",
                "Pedro",
                "Pedroso",
                "pedro.pedroso@cobranzas.example.org",
                "Cobranzas"
            ]),
            row(&[
                "jperez",
                "Juan",
                "Perez",
                "juan.perez@example.org",
                "Cobranzas"
            ]),
            row(&[
                "jgonzalez",
                "Juan",
                "Gonzalez",
                "jgonzalez@example.net",
                "Cobranzas"
            ]),
            row(&["uboludo", "Un", "boludo", "unboludo@example.com", "Por ahi"]),
        ]
    );
    assert_eq!(out.report.format, Format::Seed);
    assert_eq!((out.report.rows_in, out.report.rows_out), (4, 4));
    let generated = &out.report.generated_emails.items;
    assert_eq!(generated.len(), 1);
    assert_eq!(generated[0].line, 4);
    assert_eq!(generated[0].username.as_str(), "uboludo");
    assert_eq!(generated[0].problem, EmailProblem::Missing);
    assert_eq!(out.report.rejected.total, 0);
}

#[test]
fn password_column_only_when_configured() {
    let mut o = options("example.com");
    o.initial_password = Some(InitialPassword::parse("Cambiar,123").expect("password"));
    let out = run(SEED_EXAMPLE.as_bytes(), &o);
    assert_eq!(
        out.header,
        [
            "username",
            "firstname",
            "lastname",
            "email",
            "department",
            "password"
        ]
    );
    assert!(out.rows.iter().all(|r| r[5] == "Cambiar,123"));
    assert_eq!(
        format!("{:?}", o.initial_password),
        "Some(InitialPassword(***))"
    );
}

#[test]
fn the_blog_text_as_published_still_converts() {
    // The blog engine replaced the addresses with "[email protected]" (with a NBSP).
    let text = "1 Pedro Pedroso [email\u{a0}protected] Cobranzas\n\
                2 Juan Perez [email\u{a0}protected] Cobranzas\n\
                3 Juan Gonzalez [email\u{a0}protected] Cobranzas\n\
                4 Un boludo No tiene Por ahi\n";
    let out = run(text.as_bytes(), &options("example.com"));
    let users: Vec<&str> = out.rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(users, ["ppedroso", "jperez", "jgonzalez", "uboludo"]);
    assert_eq!(out.rows[0][3], "pedropedroso@example.com");
    assert_eq!(out.rows[0][4], "Cobranzas");
    assert_eq!(out.report.generated_emails.total, 4);
}

#[test]
fn accents_apostrophes_and_compound_names() {
    let text = "1 José Muñoz jose@example.org Ventas\n\
                2 Íñigo Ñúñez No tiene Sistemas\n\
                3 Pat O'Brien - Legales\n\
                4 María José García López mjgl@example.org Recursos Humanos\n\
                5 Juan de la Fuente García n/a Ventas\n\
                6 Ægir Straße sin correo Norte\n";
    let out = run(text.as_bytes(), &options("alumnos.example.edu"));
    let got: Vec<(&str, &str, &str, &str)> = out
        .rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("jmunoz", "José", "Muñoz", "jose@example.org"),
            ("inunez", "Íñigo", "Ñúñez", "inigonunez@alumnos.example.edu"),
            ("pobrien", "Pat", "O'Brien", "patobrien@alumnos.example.edu"),
            ("mgarcia", "María José", "García López", "mjgl@example.org"),
            (
                "jdelafuente",
                "Juan",
                "de la Fuente García",
                "juandelafuentegarcia@alumnos.example.edu"
            ),
            (
                "aestrasse",
                "Ægir",
                "Straße",
                "aegirstrasse@alumnos.example.edu"
            ),
        ]
    );
    assert_eq!(out.rows[3][4], "Recursos Humanos");
}

#[test]
fn duplicates_are_renamed_within_the_import_and_against_existing_users() {
    let text = "1 Juan Perez No tiene A\n\
                2 Julia Perez No tiene B\n\
                3 Juan Perez No tiene C\n\
                4 Gabriel Uest No tiene D\n";
    let mut o = options("example.com");
    o.existing_usernames = vec!["JPerez".into(), "admin".into()];
    let out = run(text.as_bytes(), &o);
    let users: Vec<&str> = out.rows.iter().map(|r| r[0].as_str()).collect();
    // jperez exists in Moodle; `guest` is never handed out.
    assert_eq!(users, ["jperez2", "jperez3", "jperez4", "guest2"]);
    // Two "Juan Perez" rows without an address get distinct generated addresses.
    assert_eq!(out.rows[0][3], "juanperez@example.com");
    assert_eq!(out.rows[2][3], "juanperez2@example.com");
    let renamed: Vec<(u64, &str, &str)> = out
        .report
        .renamed
        .items
        .iter()
        .map(|r| (r.line, r.from.as_str(), r.to.as_str()))
        .collect();
    assert_eq!(
        renamed,
        [
            (1, "jperez", "jperez2"),
            (2, "jperez", "jperez3"),
            (3, "jperez", "jperez4"),
            (4, "guest", "guest2")
        ]
    );
}

#[test]
fn missing_and_invalid_emails_are_generated_and_reported() {
    let text = "1 Ana Ruiz ana@gmail Ventas\n\
                2 Luis Gil luis@@example.org Ventas\n\
                3 Eva Sanz NO TIENE Ventas\n\
                4 Rosa Diaz rosa.diaz@example.org Ventas\n\
                5 Otra Persona rosa.diaz@example.org Ventas\n";
    let out = run(text.as_bytes(), &options("example.com"));
    let emails: Vec<&str> = out.rows.iter().map(|r| r[3].as_str()).collect();
    assert_eq!(
        emails,
        [
            "anaruiz@example.com",
            "luisgil@example.com",
            "evasanz@example.com",
            "rosa.diaz@example.org",
            "rosa.diaz@example.org"
        ]
    );
    let problems: Vec<(u64, &EmailProblem)> = out
        .report
        .generated_emails
        .items
        .iter()
        .map(|g| (g.line, &g.problem))
        .collect();
    assert_eq!(
        problems,
        [
            (
                1,
                &EmailProblem::Invalid {
                    given: "ana@gmail".into()
                }
            ),
            (
                2,
                &EmailProblem::Invalid {
                    given: "luis@@example.org".into()
                }
            ),
            (3, &EmailProblem::Missing),
        ]
    );
    // A given address used twice is kept, and flagged: Moodle would refuse the second.
    assert_eq!(out.report.warnings.total, 1);
    assert_eq!(out.report.warnings.items[0].line, 5);
}

#[test]
fn without_a_domain_rows_needing_an_address_are_rejected_not_invented() {
    let out = run(SEED_EXAMPLE.as_bytes(), &ConvertOptions::default());
    assert_eq!(out.rows.len(), 3);
    assert_eq!(out.report.rejected.items[0].line, 4);
    assert!(out.report.rejected.items[0].reason.contains("email_domain"));
}

#[test]
fn unreadable_rows_are_reported_with_line_and_reason_and_the_rest_converts() {
    let text = "1 Pedro Pedroso pp@example.org Cobranzas\n\
                \n\
                3 Cher cher@example.org Canto\n\
                4 Juan Perez jp@example.org Cobranzas\n\
                5 \u{738b} \u{5c0f}\u{660e} wang@example.org Ventas\n";
    let out = run(text.as_bytes(), &options("example.com"));
    assert_eq!(out.rows.len(), 2);
    assert_eq!((out.report.rows_in, out.report.rows_out), (4, 2));
    let rejected: Vec<(u64, &str)> = out
        .report
        .rejected
        .items
        .iter()
        .map(|r| (r.line, r.reason.as_str()))
        .collect();
    assert_eq!(rejected[0].0, 3);
    assert!(rejected[0].1.contains("no surname"), "{rejected:?}");
    assert_eq!(rejected[1].0, 5);
    assert!(rejected[1].1.contains("username"), "{rejected:?}");
}

#[test]
fn a_line_over_the_cap_is_rejected_and_skipped() {
    let long = format!("2 Ana Ruiz ana@example.org {}\n", "x".repeat(5000));
    let text = format!("1 Juan Perez jp@example.org A\n{long}3 Eva Sanz es@example.org B\n");
    let mut o = options("example.com");
    o.max_line_bytes = 1024;
    let out = run(text.as_bytes(), &o);
    let users: Vec<&str> = out.rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(users, ["jperez", "esanz"]);
    assert_eq!(out.report.rejected.items[0].line, 2);
    assert!(
        out.report.rejected.items[0]
            .reason
            .contains("longer than 1024")
    );
}

#[test]
fn crlf_bom_blank_lines_and_trailing_spaces_are_harmless() {
    let text = "\u{feff}1 Pedro Pedroso pp@example.org Cobranzas   \r\n\r\n   \r\n2 Juan Perez No tiene Cobranzas\t \r\n";
    let out = run(text.as_bytes(), &options("example.com"));
    assert_eq!(
        out.rows,
        [
            row(&[
                "ppedroso",
                "Pedro",
                "Pedroso",
                "pp@example.org",
                "Cobranzas"
            ]),
            row(&[
                "jperez",
                "Juan",
                "Perez",
                "juanperez@example.com",
                "Cobranzas"
            ]),
        ]
    );
}

#[test]
fn latin1_lines_are_decoded() {
    // "José Muñoz" and "Ñúñez" as saved by a Windows spreadsheet, CRLF.
    let bytes = b"1 Jos\xe9 Mu\xf1oz No tiene Administraci\xf3n\r\n2 Ana \xd1\xfa\xf1ez ana@example.org Ventas\r\n";
    let out = run(bytes, &options("example.com"));
    assert_eq!(
        out.rows,
        [
            row(&[
                "jmunoz",
                "José",
                "Muñoz",
                "josemunoz@example.com",
                "Administración"
            ]),
            row(&["anunez", "Ana", "Ñúñez", "ana@example.org", "Ventas"]),
        ]
    );
    assert_eq!(out.report.windows_1252_lines, 2);
}

#[test]
fn tiny_read_buffers_give_the_same_result() {
    let text =
        "\u{feff}1 José Muñoz No tiene Ventas, Norte\r\n2 Íñigo Ñúñez in@example.org Sistemas\r\n";
    let whole = run(text.as_bytes(), &options("example.com"));
    let mut out = Vec::new();
    let reader = std::io::BufReader::with_capacity(3, text.as_bytes());
    convert(reader, &mut out, &options("example.com"), |_| {}).expect("converts");
    let mut r = csv::Reader::from_reader(&out[..]);
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|x| x.expect("row").iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows, whole.rows);
    // The department with a comma came back whole through the CSV reader.
    assert_eq!(rows[0][4], "Ventas, Norte");
}

#[test]
fn forcing_the_seed_layout_reads_a_header_like_line_as_a_person() {
    let mut o = options("example.com");
    o.format = Format::Seed;
    let out = run(b"Nombre Apellido\n", &o);
    assert_eq!(out.rows[0][0], "napellido");
}

#[test]
fn old_mac_cr_line_endings() {
    let text = "1 Pedro Pedroso pp@example.org Cobranzas\r2 Juan Perez No tiene Cobranzas\r";
    let out = run(text.as_bytes(), &options("example.com"));
    assert_eq!(out.rows.len(), 2);
    assert_eq!(out.rows[1][0], "jperez");
    // Same with a CRLF split across reads.
    let crlf =
        "1 Pedro Pedroso pp@example.org Cobranzas\r\n\r\n4 Juan Perez No tiene X\r\n5 Cher\r\n";
    let mut o = Vec::new();
    let report = convert(
        std::io::BufReader::with_capacity(41, crlf.as_bytes()),
        &mut o,
        &options("example.com"),
        |_| {},
    )
    .expect("converts");
    assert_eq!(report.rows_out, 2);
    // Line numbers count CRLF once.
    assert_eq!(report.rejected.items[0].line, 4);
}

#[test]
fn quoted_department_in_the_seed_layout() {
    let text = "6 María José García López No tiene \"Ventas, Norte\"\n";
    let out = run(text.as_bytes(), &options("example.com"));
    assert_eq!(out.rows[0][4], "Ventas, Norte");
}
