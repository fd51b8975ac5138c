//! Rate limits at the edge, over the wire: concurrent clients over a route's rate get 429s
//! with `Retry-After` and the `RateLimit` headers, each key its own bucket; clients under
//! the rate get none.

use e2e::tokens::{claims, key_file, sign};
use e2e::{Answer, EchoUpstream, TestProxy};
use jsonwebtoken::Algorithm::RS256;
use reqwest::Method;

/// A refill this slow never adds a request while a test runs.
const ROUTES: &str = "[[routes]]\nname = \"students\"\npaths = [\"/students/{id}\"]\nservice = \"new\"\nstage = \"cutover\"\nrate_limit = { rate = \"5/h\", burst = 5, key = \"header:x-api-key\" }\n[[routes]]\nname = \"search\"\npaths = [\"/search\"]\nservice = \"new\"\nstage = \"cutover\"\n";

async fn proxy(edge: &str) -> (TestProxy, EchoUpstream) {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let routes = format!("{ROUTES}\n{edge}");
    let p = e2e::two_sided_proxy(&legacy, &format!("\"{}\"", new.url()), "", &routes).await;
    (p, new)
}

/// `n` requests at once to `path`, each with `headers`.
async fn burst(p: &TestProxy, n: usize, path: &str, headers: &[(&str, String)]) -> Vec<Answer> {
    let requests = (0..n).map(|_| {
        let mut request = p.client.request(Method::GET, path);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        p.client.send(request)
    });
    futures_util::future::join_all(requests).await
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

#[tokio::test]
async fn concurrent_clients_over_the_rate_get_429s_with_headers_and_keys_do_not_share() {
    let (p, new) = proxy("[edge.rate_limit]\nrate = \"1000/s\"\nburst = 1000\n").await;
    let key = |k: &str| vec![("x-api-key", k.to_string())];

    let answers = burst(&p, 20, "/students/1", &key("alpha")).await;
    assert_eq!((count(&answers, 200), count(&answers, 429)), (5, 15));
    for refused in answers.iter().filter(|a| a.status == 429) {
        let h = &refused.headers;
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        // One request every 12 minutes: the next is at most that far away.
        assert!((1..=720).contains(&retry), "{retry}");
        assert_eq!(h["ratelimit-policy"], "\"students\";q=5;w=3600");
        assert_eq!(
            h["ratelimit"],
            format!("\"students\";r=0;t={retry}").as_str()
        );
        assert_eq!(refused.body["error"]["code"], "rate_limited");
        assert_eq!(refused.body["error"]["route"], "students");
    }
    assert_eq!(new.hits(), 5, "a refused request reached the service");
    // Another key has a bucket of its own; requests without the header share one.
    assert_eq!(
        count(&burst(&p, 8, "/students/1", &key("beta")).await, 200),
        5
    );
    assert_eq!(count(&burst(&p, 8, "/students/1", &[]).await, 429), 3);

    // Under the rate (the [edge.rate_limit] default on the other route): no 429 at all.
    let answers = burst(&p, 100, "/search", &[]).await;
    assert_eq!(count(&answers, 200), 100);

    assert_eq!(
        p.metric("strangler_edge_refused_total{route=\"students\",reason=\"rate_limited\"}")
            .await,
        15 + 3 + 3
    );
    assert_eq!(
        p.metric("strangler_edge_refused_total{route=\"search\",reason=\"rate_limited\"}")
            .await,
        0
    );
    assert_eq!(
        p.metric("strangler_rate_limit_keys{route=\"students\"}")
            .await,
        3
    );
}

#[tokio::test]
async fn a_limit_keyed_by_a_claim_gives_each_user_a_bucket() {
    let edge = format!(
        "[edge.auth]\nissuer = \"https://id.test\"\naudience = \"school\"\n\
         keys = [{{ kid = \"rsa1\", algorithm = \"RS256\", file = \"{}\" }}]\n\
         [edge.rate_limit]\nrate = \"3/h\"\nkey = \"claim:sub\"\n",
        key_file("rsa1.pub.pem")
    );
    let (p, _new) = proxy(&edge).await;
    let bearer = |sub: &str| {
        vec![(
            "authorization",
            format!("Bearer {}", sign(RS256, "rsa1", Some("rsa1"), &claims(sub))),
        )]
    };
    // Two tokens of one user share a bucket; another user has one of their own.
    let first = burst(&p, 2, "/search", &bearer("ada")).await;
    let second = burst(&p, 3, "/search", &bearer("ada")).await;
    assert_eq!(count(&first, 200) + count(&second, 200), 3);
    assert_eq!(count(&second, 429), 2);
    assert_eq!(
        count(&burst(&p, 3, "/search", &bearer("bob")).await, 200),
        3
    );
    // Authentication comes first: without a token it is 401, not a bucket's 429.
    assert_eq!(count(&burst(&p, 5, "/search", &[]).await, 401), 5);
}
