//! Enrollments as data: the record, its row mapping and storage, and the shapes the
//! enrollment process answers with. The process itself lives with whoever runs it: the
//! monolith in one transaction, the enrollment service across services.

use rusqlite::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::fields;
use crate::finance::Invoice;
use crate::gamification::Reward;
use participant::{ApiError, ApiResult};

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
