//! The private PostgreSQL (`dialout pg`, `scripts/pg`, the demo's): only who holds its
//! password gets in, nothing listens on TCP, and two folders never collide.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use sqlx::{Connection, PgConnection};
use support::TempPg;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// `url` with its password replaced (`None`: without one).
fn with_password(url: &str, password: Option<&str>) -> String {
    let mut u = url::Url::parse(url).expect("a URL");
    u.set_password(password).expect("set password");
    u.to_string()
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

#[tokio::test]
async fn the_private_cluster_lets_in_only_who_has_its_password_and_two_never_collide() {
    let (a, b) = blocking(|| {
        let a = TempPg::new();
        let b = TempPg::new();
        a.pg.start().expect("the first cluster starts");
        b.pg.start()
            .expect("a second one, in another folder, starts alongside");
        (a, b)
    })
    .await;
    let url = a.pg.url().expect("url");

    let mut conn = PgConnection::connect(&url).await.expect("the URL gets in");
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(listen, "", "no TCP listener");
    let data_a: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    for (what, bad) in [
        ("no password", with_password(&url, None)),
        ("a wrong password", with_password(&url, Some("hunter2"))),
    ] {
        let err = PgConnection::connect(&bad)
            .await
            .expect_err("refused without the password");
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("28P01"),
            "{what}: password authentication failed, got {err}"
        );
    }

    let mut other = PgConnection::connect(&b.pg.url().expect("url"))
        .await
        .expect("the second cluster's URL gets in");
    let data_b: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_ne!(data_a, data_b, "two clusters, not one reached twice");
    other.close().await.unwrap();

    // The folder (socket inside) and the password file are for the owner only.
    let dir = std::fs::metadata(a.pg.dir()).unwrap();
    assert_eq!(
        dir.permissions().mode() & 0o777,
        0o700,
        "the folder is 0700"
    );
    let pw = std::fs::metadata(a.pg.dir().join("password")).unwrap();
    assert_eq!(
        pw.permissions().mode() & 0o777,
        0o600,
        "the password is 0600"
    );
    assert_eq!(pw.uid(), dir.uid());

    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        // As root the cluster is postgres's, in /tmp, and another local user cannot
        // reach it even holding the URL (psql from the server package as `nobody`).
        assert!(a.pg.dir().starts_with("/tmp"), "{}", a.pg.dir().display());
        assert_ne!(dir.uid(), 0, "owned by postgres");
        let url2 = url.clone();
        let out = blocking(move || {
            std::process::Command::new("runuser")
                .args(["-u", "nobody", "--", "psql", &url2, "-c", "SELECT 1"])
                .output()
                .expect("runuser")
        })
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nobody got in");
        assert!(stderr.contains("Permission denied"), "{stderr}");
    }

    blocking(move || {
        a.pg.stop().expect("stop");
        assert!(!a.pg.is_running());
        a.pg.stop().expect("stopping a stopped cluster is no error");
        drop(b);
    })
    .await;
}
