//! Enrollment, the business process across domains: enrolling validates the student,
//! creates the enrollment, its invoice and the welcome reward in one transaction. Renewal
//! and the term report aggregate the other domains' data.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use participant::{ApiError, ApiQuery, ApiResult, Database, JsonBody, Write, WriteMode};
use rusqlite::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::finance::{self, Invoice, InvoiceRequest};
use crate::gamification::{self, Granted, Reward, RewardRequest};
use crate::{fields, students};

/// Tuition invoiced for each course and term.
pub const TUITION_CENTS: i64 = 120_000;
pub const CURRENCY: &str = "EUR";
/// Points granted when a student enrolls in a course.
pub const WELCOME_POINTS: i64 = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: String,
    pub student_id: String,
    pub course: String,
    pub term: String,
    pub status: String,
    pub invoice_id: String,
    /// The enrollment this one renews, if any.
    pub renewed_from: Option<String>,
    pub created_at: String,
}

pub(crate) const COLUMNS: &str =
    "id, student_id, course, term, status, invoice_id, renewed_from, created_at";

impl Enrollment {
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            student_id: row.get("student_id")?,
            course: row.get("course")?,
            term: row.get("term")?,
            status: row.get("status")?,
            invoice_id: row.get("invoice_id")?,
            renewed_from: row.get("renewed_from")?,
            created_at: row.get("created_at")?,
        })
    }
}

/// The answer to `POST /enrollments`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Confirmation {
    pub enrollment: Enrollment,
    pub invoice: Invoice,
    pub reward: Reward,
}

/// The answer to `POST /enrollments/{id}/renew`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Renewal {
    pub enrollment: Enrollment,
    pub invoice: Invoice,
    pub previous_term: Report,
}

/// A student's term: courses, invoices and points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub student_id: String,
    pub term: String,
    pub courses: Vec<String>,
    pub invoices: InvoiceSummary,
    pub points_earned: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceSummary {
    pub paid: u32,
    pub open: u32,
    pub cancelled: u32,
    pub amount_paid_cents: i64,
    pub amount_open_cents: i64,
}

impl InvoiceSummary {
    pub fn of<'a>(invoices: impl IntoIterator<Item = &'a Invoice>) -> Self {
        let mut summary = Self {
            paid: 0,
            open: 0,
            cancelled: 0,
            amount_paid_cents: 0,
            amount_open_cents: 0,
        };
        for invoice in invoices {
            match invoice.status.as_str() {
                "paid" => {
                    summary.paid += 1;
                    summary.amount_paid_cents += invoice.amount_cents;
                }
                "open" => {
                    summary.open += 1;
                    summary.amount_open_cents += invoice.amount_cents;
                }
                _ => summary.cancelled += 1,
            }
        }
        summary
    }
}

pub fn routes(db: Database) -> Router {
    Router::new()
        .route("/enrollments", post(enroll))
        .route("/enrollments/{id}", get(fetch))
        .route("/enrollments/{id}/renew", post(renew))
        .route("/students/{id}/enrollments", get(list_for_student))
        .route("/students/{id}/report", get(report))
        .with_state(db)
}

pub fn find(conn: &Connection, id: &str) -> ApiResult<Option<Enrollment>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM enrollments WHERE id = ?1"),
            [id],
            Enrollment::from_row,
        )
        .optional()?)
}

fn for_student(conn: &Connection, student_id: &str) -> ApiResult<Vec<Enrollment>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM enrollments WHERE student_id = ?1 ORDER BY term, course, id"
    ))?;
    let rows = stmt
        .query_map([student_id], Enrollment::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn upsert(conn: &Connection, e: &Enrollment) -> ApiResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO enrollments ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET student_id = excluded.student_id,
                 course = excluded.course, term = excluded.term, status = excluded.status,
                 invoice_id = excluded.invoice_id, renewed_from = excluded.renewed_from,
                 created_at = excluded.created_at"
        ),
        rusqlite::params![
            e.id,
            e.student_id,
            e.course,
            e.term,
            e.status,
            e.invoice_id,
            e.renewed_from,
            e.created_at,
        ],
    )
    .map_err(|err| {
        if fields::is_unique_violation(&err) {
            already_enrolled(&e.course, &e.term)
        } else {
            err.into()
        }
    })?;
    Ok(())
}

fn already_enrolled(course: &str, term: &str) -> ApiError {
    ApiError::conflict(
        "already_enrolled",
        format!("the student is already enrolled in {course} for {term}"),
    )
}

/// Checks the student may enroll in `course` for `term`, then creates the enrollment and its
/// invoice, recording both events.
fn open_enrollment(
    w: &mut Write<'_>,
    student_id: &str,
    course: &str,
    term: &str,
    renewed_from: Option<String>,
) -> ApiResult<(Enrollment, Invoice)> {
    let student = students::find(w.tx(), student_id)?.ok_or_else(|| {
        ApiError::rule(
            "unknown_student",
            format!("student {student_id} does not exist"),
        )
    })?;
    if !student.is_active() {
        return Err(ApiError::rule(
            "student_inactive",
            format!("student {student_id} is inactive and cannot enroll"),
        ));
    }
    let taken: bool = w.tx().query_row(
        "SELECT EXISTS(SELECT 1 FROM enrollments WHERE student_id = ?1 AND course = ?2 AND term = ?3)",
        (student_id, course, term),
        |r| r.get(0),
    )?;
    if taken {
        return Err(already_enrolled(course, term));
    }
    let id = participant::new_id();
    let invoice = finance::issue(
        w,
        InvoiceRequest {
            student_id: student_id.to_string(),
            enrollment_id: Some(id.clone()),
            term: Some(term.to_string()),
            description: format!("Tuition {course} {term}"),
            amount_cents: TUITION_CENTS,
            currency: CURRENCY.to_string(),
        },
    )?;
    let enrollment = Enrollment {
        id,
        student_id: student_id.to_string(),
        course: course.to_string(),
        term: term.to_string(),
        status: "active".to_string(),
        invoice_id: invoice.id.clone(),
        renewed_from,
        created_at: participant::now(),
    };
    upsert(w.tx(), &enrollment)?;
    w.record("enrollment.created", &enrollment.id, &enrollment)?;
    Ok((enrollment, invoice))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnrollment {
    student_id: String,
    course: String,
    term: String,
}

async fn enroll(
    State(db): State<Database>,
    mode: WriteMode,
    JsonBody(body): JsonBody<NewEnrollment>,
) -> ApiResult<impl IntoResponse> {
    let course = fields::text("course", &body.course, 100)?;
    let term = fields::term("term", &body.term)?;
    let student_id = body.student_id;
    let confirmation = db
        .write(mode, move |w| {
            let (enrollment, invoice) = open_enrollment(w, &student_id, &course, &term, None)?;
            let granted = gamification::grant(
                w,
                RewardRequest {
                    student_id: student_id.clone(),
                    points: WELCOME_POINTS,
                    reason: format!("welcome to {course}"),
                    term: Some(term.clone()),
                    idempotency_key: Some(format!("enrollment:{}:welcome", enrollment.id)),
                },
            )?;
            let reward = match granted {
                Granted::New(reward) | Granted::Existing(reward) => reward,
            };
            Ok(Confirmation {
                enrollment,
                invoice,
                reward,
            })
        })
        .await?;
    let location = format!("/enrollments/{}", confirmation.enrollment.id);
    Ok(participant::server::created(location, confirmation))
}

async fn fetch(State(db): State<Database>, Path(id): Path<String>) -> ApiResult<Json<Enrollment>> {
    db.read(move |conn| find(conn, &id)?.ok_or_else(|| ApiError::not_found("enrollment", &id)))
        .await
        .map(Json)
}

#[derive(Serialize)]
struct EnrollmentList {
    enrollments: Vec<Enrollment>,
}

async fn list_for_student(
    State(db): State<Database>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    db.read(move |conn| {
        students::get_existing(conn, &id)?;
        Ok(Json(EnrollmentList {
            enrollments: for_student(conn, &id)?,
        }))
    })
    .await
}

/// The report of `student_id`'s `term`.
pub fn term_report(conn: &Connection, student_id: &str, term: &str) -> ApiResult<Report> {
    let mut courses: Vec<String> = for_student(conn, student_id)?
        .into_iter()
        .filter(|e| e.term == term)
        .map(|e| e.course)
        .collect();
    courses.sort();
    courses.dedup();
    let invoices = finance::for_student(conn, student_id)?;
    Ok(Report {
        student_id: student_id.to_string(),
        term: term.to_string(),
        courses,
        invoices: InvoiceSummary::of(invoices.iter().filter(|i| i.term.as_deref() == Some(term))),
        points_earned: gamification::total_points(conn, student_id, Some(term))?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    term: Option<String>,
}

async fn report(
    State(db): State<Database>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ReportParams>,
) -> ApiResult<Json<Report>> {
    let term = params
        .term
        .ok_or_else(|| ApiError::invalid_field("term", "is required, e.g. ?term=2026-fall"))?;
    let term = fields::term("term", &term)?;
    db.read(move |conn| {
        students::get_existing(conn, &id)?;
        term_report(conn, &id, &term).map(Json)
    })
    .await
}

/// Enrolls the student in the same course for the next term, invoices it, and answers both
/// with the report of the term being renewed.
async fn renew(
    State(db): State<Database>,
    Path(id): Path<String>,
    mode: WriteMode,
) -> ApiResult<impl IntoResponse> {
    let renewal = db
        .write(mode, move |w| {
            let previous =
                find(w.tx(), &id)?.ok_or_else(|| ApiError::not_found("enrollment", &id))?;
            let next = fields::next_term(&previous.term).ok_or_else(|| {
                ApiError::rule(
                    "no_next_term",
                    format!("term {} has no successor", previous.term),
                )
            })?;
            let previous_term = term_report(w.tx(), &previous.student_id, &previous.term)?;
            let (enrollment, invoice) = open_enrollment(
                w,
                &previous.student_id,
                &previous.course,
                &next,
                Some(previous.id.clone()),
            )?;
            Ok(Renewal {
                enrollment,
                invoice,
                previous_term,
            })
        })
        .await?;
    let location = format!("/enrollments/{}", renewal.enrollment.id);
    Ok(participant::server::created(location, renewal))
}
