//! The enrollment service: owns enrollments and runs the enrollment process across the
//! students, finance and gamification services, where the monolith ran it in one
//! transaction. Without a shared transaction, a failed step is compensated (the invoice is
//! cancelled, the reward revoked) so no half-done enrollment remains, and a client retry
//! with the same `Idempotency-Key` resumes or replays instead of enrolling twice.
//!
//! Renewal and the term report aggregate the three services' answers into the same
//! responses the monolith gives.

pub mod downstream;

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domains::Kind;
use domains::enrollments::{
    self, CURRENCY, Confirmation, Enrollment, InvoiceSummary, Renewal, Report, TUITION_CENTS,
    WELCOME_POINTS,
};
use domains::fields;
use domains::finance::Invoice;
use domains::gamification::Reward;
use domains::students::Student;
use participant::db::OpenError;
use participant::{
    ApiError, ApiQuery, ApiResult, Database, JsonBody, Migration, PathId, WriteMode,
};
use rusqlite::OptionalExtension;
use serde::Deserialize;
use serde_json::{Value, json};

pub use downstream::Upstreams;
use downstream::{Downstream, Service, segment};

pub const ORIGIN: &str = "enrollment";

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "enrollments",
        sql: domains::enrollments::SCHEMA,
    },
    Migration {
        version: 2,
        name: "idempotent enrollment requests",
        sql: "
            CREATE TABLE enrollment_requests (
                idempotency_key TEXT PRIMARY KEY,
                fingerprint TEXT NOT NULL,
                enrollment_id TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
                status INTEGER,
                response TEXT,
                created_at TEXT NOT NULL
            );
        ",
    },
    Migration {
        version: 3,
        name: "idempotency key lease",
        sql: "ALTER TABLE enrollment_requests ADD COLUMN claimed_ms INTEGER NOT NULL DEFAULT 0;",
    },
];

/// How long a request holds its idempotency key: a retry within it is told the request is
/// still in progress; after it, the retry takes over and resumes. Longer than the slowest
/// enrollment (three calls of at most 5 s each).
const LEASE_MS: i64 = 30_000;

/// Header a client sends so that a retried enrollment is not made twice.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Opens (creating and migrating) the service's database.
pub fn open(path: &Path) -> Result<Database, OpenError> {
    Database::open(path, ORIGIN, ORIGIN, MIGRATIONS)
}

#[derive(Clone)]
struct AppState {
    db: Database,
    downstream: Arc<Downstream>,
}

/// The whole HTTP API.
pub fn app(db: Database, upstreams: Upstreams) -> Result<Router, reqwest::Error> {
    let state = AppState {
        db: db.clone(),
        downstream: Arc::new(Downstream::new(upstreams)?),
    };
    let applier = Arc::new(|conn: &rusqlite::Connection, event: &participant::Event| {
        domains::apply(conn, event, &[Kind::Enrollment], ORIGIN)
    });
    let router = Router::new()
        .route("/enrollments", post(enroll))
        .route("/enrollments/{id}", get(fetch))
        .route("/enrollments/{id}/renew", post(renew))
        .route("/students/{id}/enrollments", get(list_for_student))
        .route("/students/{id}/report", get(report))
        .with_state(state)
        .merge(participant::feed::routes(db.clone(), applier))
        .merge(domains::snapshot_routes(db.clone(), &[Kind::Enrollment]))
        .merge(participant::openapi::routes(openapi()));
    Ok(participant::server::finish(router, db))
}

/// The OpenAPI document served at `GET /openapi.json`: the enrollment routes as this
/// service runs them, and what every participant serves.
pub fn openapi() -> Value {
    domains::enrollments::api(domains::enrollments::Process::Distributed)
        .merge(participant::openapi::participant())
        .document(
            "enrollment-service",
            env!("CARGO_PKG_VERSION"),
            "The enrollment service: owns enrollments and runs the enrollment process across the \
             students, finance and gamification services.",
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnrollment {
    student_id: String,
    course: String,
    term: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What an idempotency key already stands for.
enum Prior {
    /// No key: a new request.
    New,
    /// A new key, now claimed under a new enrollment id.
    Claimed(String),
    /// A request that did not finish: resume it under the same enrollment id.
    Pending(String),
    /// A finished request: replay its answer.
    Done(StatusCode, Value),
}

/// The student, or the error the monolith gives for an unknown or inactive one.
async fn active_student(d: &Downstream, student_id: &str, mode: WriteMode) -> ApiResult<Student> {
    let unknown = || {
        ApiError::rule(
            "unknown_student",
            format!("student {student_id} does not exist"),
        )
    };
    // The students service refuses a path holding what no id looks like (400); no student
    // has such an id.
    if !participant::extract::is_id(student_id) {
        return Err(unknown());
    }
    let student: Student = match d
        .get_json(
            Service::Students,
            &format!("/students/{}", segment(student_id)),
            mode,
        )
        .await
    {
        Ok(student) => student,
        Err(err) if err.status == StatusCode::NOT_FOUND => return Err(unknown()),
        Err(err) => return Err(err),
    };
    if !student.is_active() {
        return Err(ApiError::rule(
            "student_inactive",
            format!("student {student_id} is inactive and cannot enroll"),
        ));
    }
    Ok(student)
}

async fn already_taken(
    db: &Database,
    student_id: &str,
    course: &str,
    term: &str,
) -> ApiResult<bool> {
    let (s, c, t) = (student_id.to_string(), course.to_string(), term.to_string());
    db.read(move |conn| {
        Ok(conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM enrollments WHERE student_id = ?1 AND course = ?2 AND term = ?3)",
            (&s, &c, &t),
            |r| r.get(0),
        )?)
    })
    .await
}

#[derive(Deserialize)]
struct Invoices {
    invoices: Vec<Invoice>,
}

#[derive(Deserialize)]
struct Rewards {
    rewards: Vec<Reward>,
}

/// A student's invoices at finance; none when finance does not know the student yet (its
/// read model lags).
async fn invoices_of(d: &Downstream, student_id: &str, mode: WriteMode) -> ApiResult<Vec<Invoice>> {
    match d
        .get_json::<Invoices>(
            Service::Finance,
            &format!("/students/{}/invoices", segment(student_id)),
            mode,
        )
        .await
    {
        Ok(list) => Ok(list.invoices),
        Err(err) if err.status == StatusCode::NOT_FOUND => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Issues the tuition invoice for an enrollment, or finds the one an interrupted attempt
/// already issued.
async fn tuition_invoice(
    d: &Downstream,
    enrollment_id: &str,
    student_id: &str,
    course: &str,
    term: &str,
    resuming: bool,
    mode: WriteMode,
) -> ApiResult<Invoice> {
    if resuming
        && let Some(found) = invoices_of(d, student_id, mode)
            .await?
            .into_iter()
            .find(|i| i.enrollment_id.as_deref() == Some(enrollment_id) && i.status != "cancelled")
    {
        return Ok(found);
    }
    d.post_json(
        Service::Finance,
        "/finance/invoices",
        &json!({
            "student_id": student_id,
            "amount_cents": TUITION_CENTS,
            "currency": CURRENCY,
            "description": format!("Tuition {course} {term}"),
            "term": term,
            "enrollment_id": enrollment_id,
        }),
        mode,
    )
    .await
}

async fn enroll(
    State(state): State<AppState>,
    mode: WriteMode,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewEnrollment>,
) -> Response {
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    let mut progress = Progress::NotClaimed;
    let result = enroll_once(&state, mode, key.clone(), body, &mut progress).await;
    match result {
        Ok((status, value)) => reply(status, value),
        Err(err) => {
            if let (Some(key), WriteMode::Commit, true) =
                (key, mode, progress != Progress::NotClaimed)
            {
                record_failure(&state.db, key, &err, progress).await;
            }
            err.into_response()
        }
    }
}

/// How far a request with an idempotency key got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// It does not hold the key (no key, dry run, or refused before claiming it).
    NotClaimed,
    /// It holds the key and has changed nothing anywhere yet.
    Claimed,
    /// It asked another service to change something.
    Writing,
}

/// Settles a held key after a failure. A refusal before any change elsewhere is the key's
/// final answer; after one, the outcome of that step may be unknown, so the key stays pending
/// (lease released) and a retry resumes under the same enrollment id, finding what was done.
async fn record_failure(db: &Database, key: String, err: &ApiError, progress: Progress) {
    let final_answer = progress == Progress::Claimed && err.status.is_client_error();
    let body = json!({ "error": { "code": err.code, "message": err.message } }).to_string();
    let status = err.status.as_u16();
    let settled = db
        .write(WriteMode::Commit, move |w| {
            if final_answer {
                w.tx().execute(
                    "UPDATE enrollment_requests SET state = 'done', status = ?2, response = ?3
                     WHERE idempotency_key = ?1 AND state = 'pending'",
                    (&key, status, body),
                )?;
            } else {
                w.tx().execute(
                    "UPDATE enrollment_requests SET claimed_ms = 0 WHERE idempotency_key = ?1 AND state = 'pending'",
                    [&key],
                )?;
            }
            Ok(())
        })
        .await;
    if let Err(store) = settled {
        tracing::warn!(error = %store.message, "cannot record the outcome of an idempotent enrollment");
    }
}

fn reply(status: StatusCode, value: Value) -> Response {
    if status == StatusCode::CREATED {
        let location = value
            .pointer("/enrollment/id")
            .and_then(Value::as_str)
            .map(|id| format!("/enrollments/{id}"))
            .unwrap_or_default();
        participant::server::created(location, value)
    } else {
        (status, Json(value)).into_response()
    }
}

/// Looks up (or claims) an idempotency key. Dry runs and requests without a key claim
/// nothing.
async fn claim(
    state: &AppState,
    key: Option<String>,
    fingerprint: String,
    mode: WriteMode,
) -> ApiResult<Prior> {
    let Some(key) = key else {
        return Ok(Prior::New);
    };
    if mode == WriteMode::DryRun {
        return Ok(Prior::New);
    }
    state
        .db
        .write(WriteMode::Commit, move |w| {
            type Row = (String, String, String, Option<u16>, Option<String>, i64);
            let row: Option<Row> = w
                .tx()
                .query_row(
                    "SELECT fingerprint, enrollment_id, state, status, response, claimed_ms
                     FROM enrollment_requests WHERE idempotency_key = ?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            let now = now_ms();
            match row {
                Some((known, ..)) if known != fingerprint => Err(ApiError::conflict(
                    "idempotency_key_reused",
                    format!("Idempotency-Key {key} was used for a different enrollment"),
                )),
                Some((_, _, state, Some(status), Some(response), _)) if state == "done" => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    let value = serde_json::from_str(&response).unwrap_or(Value::Null);
                    Ok(Prior::Done(status, value))
                }
                Some((.., claimed_ms)) if now - claimed_ms < LEASE_MS => Err(ApiError::conflict(
                    "request_in_progress",
                    format!("an enrollment with Idempotency-Key {key} is still in progress; retry in a few seconds"),
                )),
                Some((_, enrollment_id, ..)) => {
                    w.tx().execute(
                        "UPDATE enrollment_requests SET claimed_ms = ?2 WHERE idempotency_key = ?1",
                        (&key, now),
                    )?;
                    Ok(Prior::Pending(enrollment_id))
                }
                None => {
                    let id = participant::new_id();
                    w.tx().execute(
                        "INSERT INTO enrollment_requests (idempotency_key, fingerprint, enrollment_id, state, created_at, claimed_ms)
                         VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
                        (&key, &fingerprint, &id, participant::now(), now),
                    )?;
                    Ok(Prior::Claimed(id))
                }
            }
        })
        .await
}

async fn enroll_once(
    state: &AppState,
    mode: WriteMode,
    key: Option<String>,
    body: NewEnrollment,
    progress: &mut Progress,
) -> ApiResult<(StatusCode, Value)> {
    let course = fields::text("course", &body.course, 100)?;
    let term = fields::term("term", &body.term)?;
    let student_id = body.student_id;
    let fingerprint = format!("{student_id}\n{course}\n{term}");
    let (enrollment_id, resuming) = match claim(state, key.clone(), fingerprint, mode).await? {
        Prior::Done(status, value) => return Ok((status, value)),
        Prior::Pending(id) => {
            *progress = Progress::Writing;
            (id, true)
        }
        Prior::Claimed(id) => {
            *progress = Progress::Claimed;
            (id, false)
        }
        Prior::New => (participant::new_id(), false),
    };
    let d = &state.downstream;
    active_student(d, &student_id, mode).await?;
    if already_taken(&state.db, &student_id, &course, &term).await? {
        return Err(enrollments::already_enrolled(&course, &term));
    }

    if *progress == Progress::Claimed {
        *progress = Progress::Writing;
    }
    let issued = tuition_invoice(
        d,
        &enrollment_id,
        &student_id,
        &course,
        &term,
        resuming,
        mode,
    )
    .await;
    let invoice = match issued {
        Ok(invoice) => invoice,
        Err(err) => {
            // The students service just confirmed the student: finance not knowing them is
            // its read model lagging, not a refusal.
            if err.code == "unknown_student" {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "dependency_unavailable",
                    format!(
                        "the finance service does not know student {student_id} yet; retry shortly"
                    ),
                ));
            }
            if err.status.is_server_error() {
                cancel_unknown_invoice(d, &student_id, &enrollment_id, mode).await;
            }
            return Err(err);
        }
    };
    let reward: Reward = match d
        .post_json(
            Service::Gamification,
            "/gamification/rewards",
            &json!({
                "student_id": student_id,
                "points": WELCOME_POINTS,
                "reason": format!("welcome to {course}"),
                "term": term,
                "idempotency_key": format!("enrollment:{enrollment_id}:welcome"),
            }),
            mode,
        )
        .await
    {
        Ok(reward) => reward,
        Err(err) => {
            compensate(d, Some(&invoice), None, mode).await;
            return Err(err);
        }
    };

    let enrollment = Enrollment {
        id: enrollment_id,
        student_id,
        course,
        term,
        status: "active".to_string(),
        invoice_id: invoice.id.clone(),
        renewed_from: None,
        created_at: participant::now(),
    };
    let confirmation = Confirmation {
        enrollment,
        invoice,
        reward,
    };
    let value = serde_json::to_value(&confirmation)
        .map_err(|err| ApiError::internal(format!("cannot encode the confirmation: {err}")))?;
    let record = confirmation.enrollment.clone();
    let stored = value.to_string();
    let committed = state
        .db
        .write(mode, move |w| {
            enrollments::upsert(w.tx(), &record)?;
            w.record("enrollment.created", &record.id, &record)?;
            if let Some(key) = &key {
                w.tx().execute(
                    "UPDATE enrollment_requests SET state = 'done', status = 201, response = ?2
                     WHERE idempotency_key = ?1",
                    (key, &stored),
                )?;
            }
            Ok(())
        })
        .await;
    if let Err(err) = committed {
        compensate(
            d,
            Some(&confirmation.invoice),
            Some(&confirmation.reward),
            mode,
        )
        .await;
        return Err(err);
    }
    Ok((StatusCode::CREATED, value))
}

/// An invoice request that failed without an answer may still have been carried out: look
/// for it by enrollment id and cancel it (best effort; a retry under the same key would find
/// and reuse it otherwise).
async fn cancel_unknown_invoice(
    d: &Downstream,
    student_id: &str,
    enrollment_id: &str,
    mode: WriteMode,
) {
    if let Ok(invoices) = invoices_of(d, student_id, mode).await {
        let issued = invoices
            .iter()
            .find(|i| i.enrollment_id.as_deref() == Some(enrollment_id) && i.status == "open");
        compensate(d, issued, None, mode).await;
    }
}

/// Undoes the steps that succeeded: cancels the invoice, revokes the reward. A compensation
/// that fails is logged loudly: it leaves work for an operator.
async fn compensate(
    d: &Downstream,
    invoice: Option<&Invoice>,
    reward: Option<&Reward>,
    mode: WriteMode,
) {
    if let Some(invoice) = invoice {
        let path = format!("/finance/invoices/{}/cancel", segment(&invoice.id));
        if let Err(err) = d
            .post_json::<Value>(Service::Finance, &path, &json!({}), mode)
            .await
        {
            tracing::error!(invoice = %invoice.id, error = %err.message, "compensation failed: invoice left open");
        }
    }
    if let Some(reward) = reward {
        let path = format!("/gamification/rewards/{}/revoke", segment(&reward.id));
        if let Err(err) = d
            .post_json::<Value>(Service::Gamification, &path, &json!({}), mode)
            .await
        {
            tracing::error!(reward = %reward.id, error = %err.message, "compensation failed: reward left granted");
        }
    }
}

async fn fetch(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<Json<Enrollment>> {
    state
        .db
        .read(move |conn| {
            enrollments::find(conn, &id)?.ok_or_else(|| ApiError::not_found("enrollment", &id))
        })
        .await
        .map(Json)
}

async fn list_for_student(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let _: Student = state
        .downstream
        .get_json(
            Service::Students,
            &format!("/students/{}", segment(&id)),
            WriteMode::Commit,
        )
        .await?;
    let list = state
        .db
        .read(move |conn| enrollments::for_student(conn, &id))
        .await?;
    Ok(Json(json!({ "enrollments": list })))
}

/// The report of a student's term, from the three services' data.
async fn term_report(
    state: &AppState,
    student_id: &str,
    term: &str,
    mode: WriteMode,
) -> ApiResult<Report> {
    let d = &state.downstream;
    let (s, t) = (student_id.to_string(), term.to_string());
    let mut courses: Vec<String> = state
        .db
        .read(move |conn| enrollments::for_student(conn, &s))
        .await?
        .into_iter()
        .filter(|e| e.term == t)
        .map(|e| e.course)
        .collect();
    courses.sort();
    courses.dedup();
    let invoices = invoices_of(d, student_id, mode).await?;
    let rewards = match d
        .get_json::<Rewards>(
            Service::Gamification,
            &format!(
                "/students/{}/rewards?term={}",
                segment(student_id),
                segment(term)
            ),
            mode,
        )
        .await
    {
        Ok(list) => list.rewards,
        Err(err) if err.status == StatusCode::NOT_FOUND => Vec::new(),
        Err(err) => return Err(err),
    };
    Ok(Report {
        student_id: student_id.to_string(),
        term: term.to_string(),
        courses,
        invoices: InvoiceSummary::of(invoices.iter().filter(|i| i.term.as_deref() == Some(term))),
        points_earned: rewards
            .iter()
            .filter(|r| r.revoked_at.is_none())
            .map(|r| r.points)
            .sum(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    term: Option<String>,
}

async fn report(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(params): ApiQuery<ReportParams>,
) -> ApiResult<Json<Report>> {
    let term = params
        .term
        .ok_or_else(|| ApiError::invalid_field("term", "is required, e.g. ?term=2026-fall"))?;
    let term = fields::term("term", &term)?;
    let _: Student = state
        .downstream
        .get_json(
            Service::Students,
            &format!("/students/{}", segment(&id)),
            WriteMode::Commit,
        )
        .await?;
    term_report(&state, &id, &term, WriteMode::Commit)
        .await
        .map(Json)
}

async fn renew(
    State(state): State<AppState>,
    PathId(id): PathId,
    mode: WriteMode,
) -> ApiResult<Response> {
    let lookup = id.clone();
    let previous = state
        .db
        .read(move |conn| enrollments::find(conn, &lookup))
        .await?
        .ok_or_else(|| ApiError::not_found("enrollment", &id))?;
    let d = &state.downstream;
    active_student(d, &previous.student_id, mode).await?;
    let next = fields::next_term(&previous.term).ok_or_else(|| {
        ApiError::rule(
            "no_next_term",
            format!("term {} has no successor", previous.term),
        )
    })?;
    let previous_term = term_report(&state, &previous.student_id, &previous.term, mode).await?;
    if already_taken(&state.db, &previous.student_id, &previous.course, &next).await? {
        return Err(enrollments::already_enrolled(&previous.course, &next));
    }
    let enrollment_id = participant::new_id();
    let invoice = tuition_invoice(
        d,
        &enrollment_id,
        &previous.student_id,
        &previous.course,
        &next,
        false,
        mode,
    )
    .await?;
    let enrollment = Enrollment {
        id: enrollment_id,
        student_id: previous.student_id.clone(),
        course: previous.course.clone(),
        term: next,
        status: "active".to_string(),
        invoice_id: invoice.id.clone(),
        renewed_from: Some(previous.id.clone()),
        created_at: participant::now(),
    };
    let record = enrollment.clone();
    let committed = state
        .db
        .write(mode, move |w| {
            enrollments::upsert(w.tx(), &record)?;
            w.record("enrollment.created", &record.id, &record)?;
            Ok(())
        })
        .await;
    if let Err(err) = committed {
        compensate(d, Some(&invoice), None, mode).await;
        return Err(err);
    }
    let location = format!("/enrollments/{}", enrollment.id);
    Ok(participant::server::created(
        location,
        Renewal {
            enrollment,
            invoice,
            previous_term,
        },
    ))
}
