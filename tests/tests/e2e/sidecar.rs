//! `strangler sidecar` as a process in front of one service: no plan file, no store; the
//! policy file's authentication and rate limit enforced, request ids added, metrics served
//! behind the admin token; bad flags refused in one line.

use std::process::Command;
use std::time::Duration;

use e2e::tokens::{claims, key_file, sign};
use e2e::{Client, EchoUpstream, eventually, free_port};
use jsonwebtoken::Algorithm::RS256;
use reqwest::Method;

use crate::program::{Program, TOKEN};

#[tokio::test]
async fn a_sidecar_enforces_its_policy_in_front_of_one_service() {
    let app = EchoUpstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[edge.auth]\nissuer = \"https://id.test\"\naudience = \"school\"\n\
             keys = [{{ kid = \"rsa1\", algorithm = \"RS256\", file = \"{}\" }}]\n\
             claims = {{ sub = \"x-user-id\" }}\n\
             [edge.rate_limit]\nrate = \"4/h\"\nkey = \"claim:sub\"\n",
            key_file("rsa1.pub.pem")
        ),
    )
    .unwrap();
    let (listen, admin) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let listen = format!("127.0.0.1:{listen}");
    let admin = format!("127.0.0.1:{admin}");
    // No plan exists at the path the program is given: the sidecar needs none.
    let sidecar = Program::start(
        &dir.path().join("no-plan-here.toml"),
        &[
            "sidecar",
            "--upstream",
            &app.url(),
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--policy",
            policy.to_str().unwrap(),
        ],
        &dir.path().join("sidecar.log"),
    );
    let client = Client::new(&format!("http://{listen}"));
    let token = sign(RS256, "rsa1", Some("rsa1"), &claims("s-9"));
    let echo = eventually(Duration::from_secs(20), "the sidecar serving", || async {
        let request = client
            .request(Method::GET, "/students/9?x=1")
            .bearer_auth(&token)
            .header("x-user-id", "admin");
        let answer = request.send().await.ok()?;
        let id = answer
            .headers()
            .get("x-request-id")?
            .to_str()
            .ok()?
            .to_string();
        let body: serde_json::Value = answer.json().await.ok()?;
        Some((id, body))
    })
    .await;
    assert!(!echo.0.is_empty());
    assert_eq!(echo.1["service"], "app");
    assert_eq!(echo.1["path"], "/students/9");
    assert_eq!(echo.1["headers"]["x-user-id"], "s-9", "{}", echo.1);
    assert_eq!(echo.1["headers"]["x-request-id"], echo.0.as_str());

    let hits = app.hits();
    let answer = client.get("/students/9").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body["error"]["code"], "missing_token");
    assert!(answer.headers.contains_key("www-authenticate"));
    // The user's bucket of 4: one spent above, three more, then 429.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let request = client
            .request(Method::GET, "/students/9")
            .bearer_auth(&token);
        statuses.push(client.send(request).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(
        app.hits(),
        hits + 3,
        "a refused request reached the service"
    );

    let metrics = reqwest::Client::new();
    let refused = "strangler_edge_refused_total{route=\"default\",reason=\"rate_limited\"}";
    assert_eq!(
        e2e::metric(&metrics, &admin, TOKEN, refused).await,
        Some(1.0)
    );
    let missing = "strangler_edge_refused_total{route=\"default\",reason=\"missing_token\"}";
    assert_eq!(
        e2e::metric(&metrics, &admin, TOKEN, missing).await,
        Some(1.0)
    );
    let served = metrics
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 401, "metrics without the token");
    drop(sidecar);
}

#[test]
fn bad_sidecar_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[edge.rate_limit]\nrate = \"10 a second\"\n").unwrap();
    let policy = policy.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--upstream", "ftp://x"],
            "--upstream must be an http:// URL",
        ),
        (
            &["--upstream", "http://127.0.0.1:1", "--admin", "127.0.0.1:9"],
            "--admin needs --admin-token",
        ),
        (
            &["--upstream", "http://127.0.0.1:1", "--policy", policy],
            "policy.toml:2:8: edge.rate_limit.rate: must be requests per second",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--policy",
                "/nonexistent/p.toml",
            ],
            "cannot read the policy file",
        ),
    ];
    for (args, words) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
            .arg("sidecar")
            .args(args)
            .env_remove("STRANGLER_ADMIN_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}
