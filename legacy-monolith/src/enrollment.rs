//! Enrollment, the business process across domains: enrolling validates the student,
//! creates the enrollment, its invoice and the welcome reward in one transaction. Renewal
//! and the term report aggregate the other domains' data.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use participant::{ApiError, ApiQuery, ApiResult, Database, JsonBody, PathId, Write, WriteMode};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use domains::enrollments::{
    CURRENCY, Confirmation, Enrollment, InvoiceSummary, Renewal, Report, TUITION_CENTS,
    WELCOME_POINTS, already_enrolled, find, for_student, upsert,
};
use domains::finance::{self, Invoice, InvoiceRequest};
use domains::gamification::{self, Granted, RewardRequest};
use domains::{fields, students};

pub fn routes(db: Database) -> Router {
    Router::new()
        .route("/enrollments", post(enroll))
        .route("/enrollments/{id}", get(fetch))
        .route("/enrollments/{id}/renew", post(renew))
        .route("/students/{id}/enrollments", get(list_for_student))
        .route("/students/{id}/report", get(report))
        .with_state(db)
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

async fn fetch(State(db): State<Database>, PathId(id): PathId) -> ApiResult<Json<Enrollment>> {
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
    PathId(id): PathId,
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
    PathId(id): PathId,
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
    PathId(id): PathId,
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
