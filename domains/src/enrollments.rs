//! Enrollments as data: the record, its row mapping and storage, and the shapes the
//! enrollment process answers with. The process itself lives with whoever runs it: the
//! monolith in one transaction, the enrollment service across services.

use rusqlite::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::fields;
use crate::finance::Invoice;
use crate::gamification::Reward;
use participant::openapi::{
    Api, BAD_HEADER, array_of, body, body_errors, created, dry_run_param, error, id_param, ok, op,
    reference,
};
use participant::{ApiError, ApiResult};
use serde_json::{Value, json};

/// The enrollments table, as the monolith and the enrollment service both hold it.
pub const SCHEMA: &str = "
    CREATE TABLE enrollments (
        id TEXT PRIMARY KEY,
        student_id TEXT NOT NULL,
        course TEXT NOT NULL,
        term TEXT NOT NULL,
        status TEXT NOT NULL,
        invoice_id TEXT NOT NULL,
        renewed_from TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (student_id, course, term)
    );
";

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

pub const COLUMNS: &str =
    "id, student_id, course, term, status, invoice_id, renewed_from, created_at";

impl Enrollment {
    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
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

pub fn find(conn: &Connection, id: &str) -> ApiResult<Option<Enrollment>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM enrollments WHERE id = ?1"),
            [id],
            Enrollment::from_row,
        )
        .optional()?)
}

pub fn for_student(conn: &Connection, student_id: &str) -> ApiResult<Vec<Enrollment>> {
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
            fields::refused_row(err, "enrollment")
        }
    })?;
    Ok(())
}

pub fn already_enrolled(course: &str, term: &str) -> ApiError {
    ApiError::conflict(
        "already_enrolled",
        format!("the student is already enrolled in {course} for {term}"),
    )
}

/// Who runs the enrollment process, which changes what its routes can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The monolith: one transaction over one database.
    Local,
    /// The enrollment service: calls to the students, finance and gamification services
    /// (503 when one cannot be reached), and an `Idempotency-Key` on `POST /enrollments`.
    Distributed,
}

/// The enrollment routes and answers as an OpenAPI piece, for whoever runs the process.
pub fn api(process: Process) -> Api {
    let distributed = process == Process::Distributed;
    let id = || id_param("enrollment id");
    let student = || id_param("student id");
    let unknown_student = || ("404", error("not_found: no student with this id"));
    // The answers every route that asks another service can add.
    let remote = |mut answers: Vec<(&'static str, Value)>| {
        if distributed {
            answers.push(("503", error("dependency_unavailable: a service this one calls cannot be reached (the message names it)")));
        }
        answers
    };
    let mut enroll_params = vec![dry_run_param()];
    let mut in_progress =
        "already_enrolled: the student is already enrolled in this course for this term";
    if distributed {
        enroll_params.push(json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "a retry with the same key resumes or replays the first request instead of enrolling twice",
            "schema": { "type": "string" } }));
        in_progress = "already_enrolled: the student is already enrolled in this course for this term; \
                       request_in_progress: a request with this Idempotency-Key is still running";
    }
    let enroll_answers = remote(vec![
        (
            "201",
            created(
                "confirmation: the enrollment, its invoice and the welcome reward",
                "Confirmation",
            ),
        ),
        ("409", error(in_progress)),
        ("422", error("unknown_student, student_inactive")),
    ]);
    Api::new()
        .operation("/enrollments", "post", op(
            if distributed {
                "Enroll a student: invoice, welcome reward and enrollment across the services, compensated on failure"
            } else {
                "Enroll a student: enrollment, invoice and welcome reward in one transaction"
            },
            enroll_params, Some(body("NewEnrollment")),
            enroll_answers.into_iter().chain(body_errors("course, term")),
        ))
        .operation("/enrollments/{id}", "get", op(
            "Get an enrollment", vec![id()], None,
            [("200", ok("the enrollment", "Enrollment")), ("404", error("not_found: no enrollment with this id"))],
        ))
        .operation("/enrollments/{id}/renew", "post", op(
            "Renew for the next term, with the previous term's report", vec![id(), dry_run_param()], None,
            remote(vec![
                ("201", created("renewal", "Renewal")),
                ("400", error(BAD_HEADER)),
                ("404", error("not_found: no enrollment with this id")),
                ("409", error("already_enrolled: already enrolled for the next term")),
                ("422", error("unknown_student, student_inactive, no_next_term")),
            ]),
        ))
        .operation("/students/{id}/enrollments", "get", op(
            "A student's enrollments", vec![student()], None,
            remote(vec![("200", ok("enrollments by term and course", "EnrollmentList")), unknown_student()]),
        ))
        .operation("/students/{id}/report", "get", op(
            "A student's term report", vec![student(),
                json!({ "name": "term", "in": "query", "required": true, "schema": fields::term_schema() })],
            None,
            remote(vec![
                ("200", ok("report", "Report")),
                ("400", error("invalid_field: term missing or not a term; invalid_query: an unknown parameter")),
                unknown_student(),
            ]),
        ))
        .schema("Invoice", crate::finance::invoice_schema())
        .schema("Reward", crate::gamification::reward_schema())
        .schema("Enrollment", json!({ "type": "object", "additionalProperties": false,
            "required": ["id", "student_id", "course", "term", "status", "invoice_id", "renewed_from", "created_at"],
            "properties": {
                "id": { "type": "string" }, "student_id": { "type": "string" }, "course": { "type": "string" },
                "term": { "type": "string" }, "status": { "type": "string" }, "invoice_id": { "type": "string" },
                "renewed_from": { "type": "string", "nullable": true }, "created_at": { "type": "string" } } }))
        .schema("NewEnrollment", json!({ "type": "object", "additionalProperties": false,
            "required": ["student_id", "course", "term"], "properties": {
                "student_id": { "type": "string" }, "course": fields::text_schema(100), "term": fields::term_schema() } }))
        .schema("EnrollmentList", json!({ "type": "object", "additionalProperties": false,
            "required": ["enrollments"], "properties": { "enrollments": array_of("Enrollment") } }))
        .schema("Confirmation", json!({ "type": "object", "additionalProperties": false,
            "required": ["enrollment", "invoice", "reward"], "properties": {
                "enrollment": reference("Enrollment"), "invoice": reference("Invoice"), "reward": reference("Reward") } }))
        .schema("Report", json!({ "type": "object", "additionalProperties": false,
            "required": ["student_id", "term", "courses", "invoices", "points_earned"], "properties": {
                "student_id": { "type": "string" }, "term": { "type": "string" },
                "courses": { "type": "array", "items": { "type": "string" } },
                "invoices": { "type": "object", "additionalProperties": false,
                    "required": ["paid", "open", "cancelled", "amount_paid_cents", "amount_open_cents"], "properties": {
                        "paid": { "type": "integer" }, "open": { "type": "integer" }, "cancelled": { "type": "integer" },
                        "amount_paid_cents": { "type": "integer" }, "amount_open_cents": { "type": "integer" } } },
                "points_earned": { "type": "integer" } } }))
        .schema("Renewal", json!({ "type": "object", "additionalProperties": false,
            "required": ["enrollment", "invoice", "previous_term"], "properties": {
                "enrollment": reference("Enrollment"), "invoice": reference("Invoice"),
                "previous_term": reference("Report") } }))
}
