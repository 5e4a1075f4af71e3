//! roster_import as a queue job: INSERT -> worker -> CSV and report in `result`.

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const SEED: &str = "1 Pedro Pedroso pedro@example.com Cobranzas\n\
                    2 Juan Perez juan@example.com Cobranzas\n\
                    3 Juan Gonzalez juang@example.com Cobranzas\n\
                    4 Un boludo No tiene Por ahi\n";

fn roster_settings() -> dialout::config::Settings {
    let mut s = settings();
    s.worker.kinds = vec!["roster_import".into()];
    s
}

async fn result_of(pool: &PgPool, id: i64) -> (String, serde_json::Value, Option<String>) {
    sqlx::query_as("SELECT status::text, coalesce(result, 'null'), last_error FROM dialout_queue WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn parse_csv(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

#[sqlx::test]
async fn the_seed_example_becomes_moodle_users(pool: PgPool) {
    let worker = start_worker(&pool, roster_settings());
    let id = enqueue(
        &pool,
        "roster_import",
        json!({"roster": SEED, "email_domain": "example.com"}),
    )
    .await;
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    let (_, result, _) = result_of(&pool, id).await;
    let rows = parse_csv(result["csv"].as_str().unwrap());
    assert_eq!(
        rows[0],
        ["username", "firstname", "lastname", "email", "department"]
    );
    let users: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(users, ["ppedroso", "jperez", "jgonzalez", "uboludo"]);
    assert_eq!(rows[4][3], "unboludo@example.com");
    assert_eq!(result["report"]["rows_in"], 4);
    assert_eq!(result["report"]["rows_out"], 4);
    assert_eq!(result["report"]["generated_emails"]["total"], 1);

    // The same CSV through the command line.
    let url = db_url(&pool).await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dialout"))
            .args(["roster", "fetch", &id.to_string()])
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        result["csv"].as_str().unwrap()
    );
    worker.shutdown().await;
}

#[sqlx::test]
async fn a_roster_file_path_works_and_a_binary_file_fails_clearly(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("roster.csv");
    std::fs::write(
        &good,
        "Nombre,Apellidos,Correo\nJosé,Muñoz,\nMaría José,García López,MJ@School.Example\n",
    )
    .unwrap();
    let bad = dir.path().join("roster.xlsx");
    std::fs::write(&bad, b"PK\x03\x04\x00\x00binary\x00\x00").unwrap();
    let worker = start_worker(&pool, roster_settings());
    let ok = enqueue(
        &pool,
        "roster_import",
        json!({"path": good, "email_domain": "school.example"}),
    )
    .await;
    let broken = enqueue(&pool, "roster_import", json!({"path": bad})).await;
    let missing = enqueue(
        &pool,
        "roster_import",
        json!({"path": dir.path().join("nope.csv")}),
    )
    .await;

    assert_eq!(ended(&pool, ok, WAIT).await, "finished");
    let (_, result, _) = result_of(&pool, ok).await;
    let rows = parse_csv(result["csv"].as_str().unwrap());
    assert_eq!(rows[1][0], "jmunoz");
    assert_eq!(
        rows[2][..4],
        ["mgarcia", "María José", "García López", "mj@school.example"]
    );

    assert_eq!(ended(&pool, broken, WAIT).await, "finished_with_error");
    let (_, _, error) = result_of(&pool, broken).await;
    assert!(error.unwrap().starts_with("not a text roster"));

    assert_eq!(ended(&pool, missing, WAIT).await, "finished_with_error");
    let (_, _, error) = result_of(&pool, missing).await;
    assert!(error.unwrap().contains("cannot open roster"));
    worker.shutdown().await;
}

#[sqlx::test]
async fn nothing_usable_ends_with_error_and_keeps_the_report(pool: PgPool) {
    let worker = start_worker(&pool, roster_settings());
    let id = enqueue(
        &pool,
        "roster_import",
        json!({"roster": "1 Solo\n2 Madonna\n", "format": "seed"}),
    )
    .await;
    assert_eq!(ended(&pool, id, WAIT).await, "finished_with_error");
    let (_, result, error) = result_of(&pool, id).await;
    assert!(
        error
            .unwrap()
            .starts_with("nothing usable: all 2 rows were rejected")
    );
    assert_eq!(result["report"]["rejected"]["total"], 2);
    assert_eq!(result["report"]["rejected"]["items"][0]["line"], 1);
    worker.shutdown().await;
}

#[sqlx::test]
async fn bad_roster_payloads_are_refused_at_insert(pool: PgPool) {
    let cases = [
        (
            json!({}),
            "roster_import job: the payload needs exactly one of \"roster\" (the roster as text) or \"path\" (a file the worker can read)",
        ),
        (
            json!({"roster": "x", "path": "/tmp/x"}),
            "roster_import job: the payload needs exactly one of \"roster\" (the roster as text) or \"path\" (a file the worker can read)",
        ),
        (
            json!({"roster": 5}),
            "roster_import job: \"roster\" must be text, got number",
        ),
        (
            json!({"path": ""}),
            "roster_import job: \"path\" must be a non-empty text, got \"\"",
        ),
        (
            json!({"roster": "x", "format": "xlsx"}),
            "roster_import job: \"format\" must be one of auto, seed, csv, tsv, got \"xlsx\"",
        ),
        (
            json!({"roster": "x", "email_domain": "not a domain"}),
            "roster_import job: \"email_domain\" must be a domain name such as school.example, got \"not a domain\"",
        ),
        (
            json!({"roster": "x", "existing_usernames": [1]}),
            "roster_import job: \"existing_usernames\" must be an array of texts",
        ),
        (
            json!({"roster": "x", "password": "secret"}),
            "roster_import job: unknown payload field(s) password; known: roster, path, format, email_domain, existing_usernames",
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(
            insert_refused(&pool, "roster_import", &payload).await,
            expected,
            "{payload}"
        );
    }
}

#[test]
fn roster_convert_runs_offline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roster.txt");
    std::fs::write(&path, SEED).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dialout"))
        .args([
            "roster",
            "convert",
            path.to_str().unwrap(),
            "--email-domain",
            "example.com",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = parse_csv(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[1][0], "ppedroso");
}
