//! CSV and TSV rosters with a header row, and what Moodle requires of the output.

use dialout::jobs::roster::{ConvertOptions, EmailDomain, Format, Report, convert};

fn options() -> ConvertOptions {
    ConvertOptions {
        email_domain: Some(EmailDomain::parse("@Alumnos.Example.EDU").expect("domain")),
        ..ConvertOptions::default()
    }
}

fn run(input: &[u8], options: &ConvertOptions) -> (Vec<String>, Vec<Vec<String>>, Report) {
    let mut out = Vec::new();
    let report = convert(input, &mut out, options, |_| {}).expect("conversion succeeds");
    let text = String::from_utf8(out).expect("output is UTF-8");
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|x| x.expect("row").iter().map(str::to_owned).collect())
        .collect();
    assert_moodle_accepts(&header, &rows);
    (header, rows, report)
}

/// What Moodle's upload page checks: standard, unrepeated columns; usernames of
/// `[a-z0-9_.@-]`, never `guest`, unique; firstname, lastname, email never empty.
fn assert_moodle_accepts(header: &[String], rows: &[Vec<String>]) {
    let standard = [
        "username",
        "password",
        "firstname",
        "lastname",
        "email",
        "department",
    ];
    for (i, h) in header.iter().enumerate() {
        assert!(standard.contains(&h.as_str()), "unknown column {h}");
        assert!(!header[..i].contains(h), "repeated column {h}");
    }
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        assert_eq!(r.len(), header.len());
        let u = &r[col("username")];
        assert!(
            !u.is_empty()
                && u != "guest"
                && u.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.@-".contains(&b)),
            "bad username {u}"
        );
        assert!(seen.insert(u.clone()), "duplicate username {u}");
        for f in ["firstname", "lastname", "email"] {
            assert!(!r[col(f)].is_empty(), "empty {f} in {r:?}");
        }
    }
}

#[test]
fn spanish_headers_in_any_order_and_quoted_commas() {
    let text = "Correo,DEPARTAMENTO,Apellidos,Nombre,Legajo\n\
                ana@example.org,\"Ventas, Norte\",Ruiz Gil,Ana,17\n\
                ,\"Dpto \"\"A\"\", 2\",García López,María José,18\n";
    let (header, rows, report) = run(text.as_bytes(), &options());
    assert_eq!(
        header,
        ["username", "firstname", "lastname", "email", "department"]
    );
    assert_eq!(
        rows[0],
        [
            "aruiz",
            "Ana",
            "Ruiz Gil",
            "ana@example.org",
            "Ventas, Norte"
        ]
    );
    assert_eq!(
        rows[1],
        [
            "mgarcia",
            "María José",
            "García López",
            "mariajosegarcialopez@alumnos.example.edu",
            "Dpto \"A\", 2"
        ]
    );
    assert_eq!(report.format, Format::Csv);
    assert_eq!(report.ignored_columns, ["Legajo"]);
}

#[test]
fn english_headers_semicolons_and_tabs() {
    let csv = "FirstName;LastName;Email;Department\r\nJuan;Pérez;No tiene;Cobranzas\r\n";
    let (_, rows, report) = run(csv.as_bytes(), &options());
    assert_eq!(report.format, Format::Csv);
    assert_eq!(rows[0][..3], ["jperez", "Juan", "Pérez"]);
    assert_eq!(rows[0][3], "juanperez@alumnos.example.edu");

    let tsv = "email\tlastname\tfirstname\n\tO'Brien\tPat\n";
    let (_, rows, report) = run(tsv.as_bytes(), &options());
    assert_eq!(report.format, Format::Tsv);
    assert_eq!(rows[0][0], "pobrien");
}

#[test]
fn separate_second_surname_and_full_name_columns() {
    let text = "nombre,apellido1,apellido2\nJosé,Muñoz,Ruiz\n";
    let (_, rows, _) = run(text.as_bytes(), &options());
    assert_eq!(rows[0][..3], ["jmunoz", "José", "Muñoz Ruiz"]);

    let text = "Apellidos y nombre,correo\n\"García López, María José\",mj@example.org\nJuan de la Fuente,\n";
    let (_, rows, _) = run(text.as_bytes(), &options());
    assert_eq!(rows[0][..3], ["mgarcia", "María José", "García López"]);
    assert_eq!(rows[1][..3], ["jdelafuente", "Juan", "de la Fuente"]);
}

#[test]
fn bad_rows_are_rejected_with_line_numbers() {
    let text = "nombre,apellido,correo,departamento\n\
                Ana,Ruiz,ana@example.org,Ventas\n\
                \n\
                Luis,,luis@example.org,Ventas\n\
                Eva,Sanz,eva@example.org,Ventas, Norte\n\
                Rosa,Díaz,rosa@example.org,Ventas\n";
    let (_, rows, report) = run(text.as_bytes(), &options());
    assert_eq!(rows.len(), 2);
    let rejected: Vec<(u64, &str)> = report
        .rejected
        .items
        .iter()
        .map(|r| (r.line, r.reason.as_str()))
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0], (4, "no surname"));
    assert_eq!(rejected[1].0, 5);
    assert!(rejected[1].1.contains("5 fields"), "{rejected:?}");
    assert_eq!((report.rows_in, report.rows_out), (4, 2));
}

#[test]
fn a_quoted_field_may_span_lines() {
    let text = "nombre,apellido,departamento\r\nAna,Ruiz,\"Ventas\r\nNorte\"\r\nLuis,Gil,X\r\n";
    let (_, rows, _) = run(text.as_bytes(), &options());
    assert_eq!(rows[0][4], "Ventas Norte");
    assert_eq!(rows[1][0], "lgil");
}

#[test]
fn latin1_csv_from_a_spreadsheet() {
    let bytes = b"Nombre;Apellidos;Correo electr\xf3nico\r\nJos\xe9;Mu\xf1oz;\r\n";
    let (_, rows, report) = run(bytes, &options());
    assert_eq!(
        rows[0][..4],
        ["jmunoz", "José", "Muñoz", "josemunoz@alumnos.example.edu"]
    );
    assert_eq!(report.windows_1252_lines, 2);
}

#[test]
fn report_serialises_to_json() {
    let text = "nombre,apellido\nAna,Ruiz\nAna,Ruiz\nCher,\n";
    let (_, _, report) = run(text.as_bytes(), &options());
    let json = report.to_json();
    assert_eq!(json["format"], "csv");
    assert_eq!(json["rows_in"], 3);
    assert_eq!(json["rows_out"], 2);
    assert_eq!(json["renamed"]["items"][0]["from"], "aruiz");
    assert_eq!(json["renamed"]["items"][0]["to"], "aruiz2");
    assert_eq!(json["generated_emails"]["total"], 2);
    assert_eq!(json["generated_emails"]["items"][0]["problem"], "missing");
    assert_eq!(json["rejected"]["items"][0]["line"], 4);
}

#[test]
fn report_lists_are_capped_but_counted() {
    let mut text = String::from("nombre,apellido\n");
    for _ in 0..50 {
        text.push_str("Ana,Ruiz\n");
    }
    let mut o = options();
    o.max_report_entries = 10;
    let (_, rows, report) = run(text.as_bytes(), &o);
    assert_eq!(rows.len(), 50);
    assert_eq!(report.renamed.total, 49);
    assert_eq!(report.renamed.items.len(), 10);
    assert!(report.renamed.truncated());
}
