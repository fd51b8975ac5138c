//! `legacy-monolith seed`: fills a running monolith through its public API with realistic
//! data (students, enrollments, renewals, payments, rewards, a few deactivations).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Requests in flight at once.
const CONCURRENCY: usize = 16;
const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Katherine",
    "Linus",
    "Margaret",
    "Niklaus",
    "Radia",
    "Ken",
    "Sophie",
    "Tim",
    "Yukihiro",
    "Hedy",
    "Leslie",
    "Joan",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "McCarthy",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Thompson",
    "Wilson",
    "Berners-Lee",
    "Matsumoto",
    "Lamarr",
    "Lamport",
    "Clarke",
];
const COURSES: &[&str] = &[
    "CS101", "CS201", "MATH110", "MATH210", "PHYS120", "ECON101", "HIST150", "BIO130",
];
const TERMS: &[&str] = &["2026-spring", "2026-fall"];
const REWARD_REASONS: &[&str] = &[
    "quiz streak",
    "forum answer accepted",
    "perfect attendance",
    "peer review",
    "lab report excellence",
];

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedConfig {
    /// Base URL of the monolith, e.g. `http://127.0.0.1:7000`.
    pub url: String,
    /// Students to create.
    pub students: usize,
    /// Seed of the pseudo-random choices, so a run can be repeated.
    pub seed: u64,
}

/// What a seeding run created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedSummary {
    pub students: usize,
    pub enrollments: usize,
    pub renewals: usize,
    pub payments: usize,
    pub rewards: usize,
    pub deactivated: usize,
    pub requests: usize,
}

impl std::ops::AddAssign for SeedSummary {
    fn add_assign(&mut self, other: Self) {
        self.students += other.students;
        self.enrollments += other.enrollments;
        self.renewals += other.renewals;
        self.payments += other.payments;
        self.rewards += other.rewards;
        self.deactivated += other.deactivated;
        self.requests += other.requests;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: reqwest::Error,
    },
    #[error("{what}: the monolith answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("a seeding worker stopped: {0}")]
    Worker(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// A small, fast, deterministic generator (splitmix64): seeding needs variety, not secrecy.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, SeedError> {
        let what = format!("POST {path}");
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(|source| SeedError::Request {
                what: what.clone(),
                source,
            })?;
        Self::json(what, response).await
    }

    async fn delete(&self, path: &str) -> Result<Value, SeedError> {
        let what = format!("DELETE {path}");
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|source| SeedError::Request {
                what: what.clone(),
                source,
            })?;
        Self::json(what, response).await
    }

    async fn json(what: String, response: reqwest::Response) -> Result<Value, SeedError> {
        let status = response.status();
        let body = response.text().await.map_err(|source| SeedError::Request {
            what: what.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(SeedError::Status {
                what,
                status: status.as_u16(),
                body,
            });
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Seeds one student's history; `n` makes the email unique within the run.
async fn seed_student(
    api: &Api,
    dice: &mut Dice,
    run: &str,
    n: usize,
) -> Result<SeedSummary, SeedError> {
    let mut done = SeedSummary::default();
    let first = dice.pick(FIRST_NAMES);
    let last = dice.pick(LAST_NAMES);
    let email = format!(
        "{}.{}.{n}.{run}@students.example.edu",
        first.to_lowercase(),
        last.to_lowercase()
    );
    let student = api
        .post(
            "/students",
            &json!({ "email": email, "name": format!("{first} {last}") }),
        )
        .await?;
    done.requests += 1;
    done.students += 1;
    let student_id = text(&student, "/id");

    let courses = 1 + dice.below(3);
    for _ in 0..courses {
        let course = dice.pick(COURSES);
        let term = dice.pick(TERMS);
        let body = json!({ "student_id": student_id, "course": course, "term": term });
        done.requests += 1;
        let confirmation = match api.post("/enrollments", &body).await {
            Ok(c) => c,
            // The dice may pick the same course and term twice.
            Err(SeedError::Status { status: 409, .. }) => continue,
            Err(err) => return Err(err),
        };
        done.enrollments += 1;
        let invoice_id = text(&confirmation, "/invoice/id");
        if dice.chance(60) {
            api.post(&format!("/finance/invoices/{invoice_id}/pay"), &json!({}))
                .await?;
            done.requests += 1;
            done.payments += 1;
        }
        if term == "2026-spring" && dice.chance(30) {
            let enrollment_id = text(&confirmation, "/enrollment/id");
            done.requests += 1;
            match api
                .post(&format!("/enrollments/{enrollment_id}/renew"), &json!({}))
                .await
            {
                Ok(_) => done.renewals += 1,
                Err(SeedError::Status { status: 409, .. }) => {}
                Err(err) => return Err(err),
            }
        }
    }
    for k in 0..dice.below(3) {
        let body = json!({
            "student_id": student_id,
            "points": 10 + dice.below(190),
            "reason": dice.pick(REWARD_REASONS),
            "term": dice.pick(TERMS),
            "idempotency_key": format!("seed:{student_id}:{k}"),
        });
        api.post("/gamification/rewards", &body).await?;
        done.requests += 1;
        done.rewards += 1;
    }
    if dice.chance(5) {
        api.delete(&format!("/students/{student_id}")).await?;
        done.requests += 1;
        done.deactivated += 1;
    }
    Ok(done)
}

/// Seeds `config.students` students with [`CONCURRENCY`] workers; answers what it made.
pub async fn seed(config: &SeedConfig) -> Result<(SeedSummary, Duration), SeedError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(SeedError::Client)?;
    let api = Arc::new(Api {
        client,
        base: config.url.trim_end_matches('/').to_string(),
    });
    // Emails carry a per-run tag so seeding twice adds students instead of colliding.
    let id = participant::new_id();
    let run: Arc<str> = Arc::from(&id[id.len() - 6..]);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let api = Arc::clone(&api);
        let run = Arc::clone(&run);
        let total = config.students;
        let mut dice = Dice(config.seed ^ (worker as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        workers.spawn(async move {
            let mut summary = SeedSummary::default();
            for n in (worker..total).step_by(CONCURRENCY) {
                summary += seed_student(&api, &mut dice, &run, n).await?;
            }
            Ok::<_, SeedError>(summary)
        });
    }
    let mut total = SeedSummary::default();
    while let Some(joined) = workers.join_next().await {
        total += joined.map_err(|err| SeedError::Worker(err.to_string()))??;
    }
    Ok((total, started.elapsed()))
}
