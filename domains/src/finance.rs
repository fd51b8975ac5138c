//! Finance: invoices, payment (at most once) and cancellation.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use participant::{ApiError, ApiResult, Database, JsonBody, PathId, Write, WriteMode};
use rusqlite::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use participant::openapi::{
    Api, BAD_HEADER, array_of, body, body_errors, created, dry_run_param, error, id_param, ok, op,
};
use serde_json::{Value, json};

use crate::{fields, students};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub student_id: String,
    pub enrollment_id: Option<String>,
    pub term: Option<String>,
    pub description: String,
    pub amount_cents: i64,
    pub currency: String,
    /// `open`, `paid` or `cancelled`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub paid_at: Option<String>,
    pub cancelled_at: Option<String>,
}

/// The invoices table.
pub const SCHEMA: &str = "
            CREATE TABLE invoices (
                id TEXT PRIMARY KEY,
                student_id TEXT NOT NULL,
                enrollment_id TEXT,
                term TEXT,
                description TEXT NOT NULL,
                amount_cents INTEGER NOT NULL,
                currency TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'cancelled')),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                paid_at TEXT,
                cancelled_at TEXT
            );
            CREATE INDEX invoices_by_student ON invoices (student_id, created_at);
        ";

pub const COLUMNS: &str = "id, student_id, enrollment_id, term, description, amount_cents, currency, \
                       status, created_at, updated_at, paid_at, cancelled_at";

impl Invoice {
    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            student_id: row.get("student_id")?,
            enrollment_id: row.get("enrollment_id")?,
            term: row.get("term")?,
            description: row.get("description")?,
            amount_cents: row.get("amount_cents")?,
            currency: row.get("currency")?,
            status: row.get("status")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            paid_at: row.get("paid_at")?,
            cancelled_at: row.get("cancelled_at")?,
        })
    }
}

pub fn routes(db: Database) -> Router {
    Router::new()
        .route("/finance/invoices", post(create))
        .route("/finance/invoices/{id}", get(fetch))
        .route("/finance/invoices/{id}/pay", post(pay))
        .route("/finance/invoices/{id}/cancel", post(cancel))
        .route("/students/{id}/invoices", get(list_for_student))
        .with_state(db)
}

pub fn find(conn: &Connection, id: &str) -> ApiResult<Option<Invoice>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM invoices WHERE id = ?1"),
            [id],
            Invoice::from_row,
        )
        .optional()?)
}

pub fn for_student(conn: &Connection, student_id: &str) -> ApiResult<Vec<Invoice>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE student_id = ?1 ORDER BY created_at, id"
    ))?;
    let invoices = stmt
        .query_map([student_id], Invoice::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(invoices)
}

pub fn upsert(conn: &Connection, invoice: &Invoice) -> ApiResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO invoices ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (id) DO UPDATE SET student_id = excluded.student_id,
                 enrollment_id = excluded.enrollment_id, term = excluded.term,
                 description = excluded.description, amount_cents = excluded.amount_cents,
                 currency = excluded.currency, status = excluded.status,
                 created_at = excluded.created_at, updated_at = excluded.updated_at,
                 paid_at = excluded.paid_at, cancelled_at = excluded.cancelled_at"
        ),
        rusqlite::params![
            invoice.id,
            invoice.student_id,
            invoice.enrollment_id,
            invoice.term,
            invoice.description,
            invoice.amount_cents,
            invoice.currency,
            invoice.status,
            invoice.created_at,
            invoice.updated_at,
            invoice.paid_at,
            invoice.cancelled_at,
        ],
    )
    .map_err(|err| fields::refused_row(err, "invoice"))?;
    Ok(())
}

/// What a new invoice is for.
pub struct InvoiceRequest {
    pub student_id: String,
    pub enrollment_id: Option<String>,
    pub term: Option<String>,
    pub description: String,
    pub amount_cents: i64,
    pub currency: String,
}

/// Creates an open invoice and records `invoice.created`.
pub fn issue(w: &mut Write<'_>, request: InvoiceRequest) -> ApiResult<Invoice> {
    let now = participant::now();
    let invoice = Invoice {
        id: participant::new_id(),
        student_id: request.student_id,
        enrollment_id: request.enrollment_id,
        term: request.term,
        description: request.description,
        amount_cents: request.amount_cents,
        currency: request.currency,
        status: "open".to_string(),
        created_at: now.clone(),
        updated_at: now,
        paid_at: None,
        cancelled_at: None,
    };
    upsert(w.tx(), &invoice)?;
    w.record("invoice.created", &invoice.id, &invoice)?;
    Ok(invoice)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInvoice {
    student_id: String,
    amount_cents: i64,
    description: String,
    currency: Option<String>,
    term: Option<String>,
    /// The enrollment this invoice bills, when the enrollment process issues it.
    enrollment_id: Option<String>,
}

fn currency(value: Option<&str>) -> ApiResult<String> {
    match value {
        None => Ok("EUR".to_string()),
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => Ok(c.to_string()),
        Some(_) => Err(ApiError::invalid_field(
            "currency",
            "must be a three-letter ISO 4217 code like EUR",
        )),
    }
}

async fn create(
    State(db): State<Database>,
    mode: WriteMode,
    JsonBody(body): JsonBody<NewInvoice>,
) -> ApiResult<impl IntoResponse> {
    let request = InvoiceRequest {
        student_id: body.student_id,
        enrollment_id: body
            .enrollment_id
            .as_deref()
            .map(|e| fields::text("enrollment_id", e, 100))
            .transpose()?,
        term: body
            .term
            .as_deref()
            .map(|t| fields::term("term", t))
            .transpose()?,
        description: fields::text("description", &body.description, 500)?,
        amount_cents: fields::amount_cents(body.amount_cents)?,
        currency: currency(body.currency.as_deref())?,
    };
    let invoice = db
        .write(mode, move |w| {
            if students::find(w.tx(), &request.student_id)?.is_none() {
                return Err(ApiError::rule(
                    "unknown_student",
                    format!("student {} does not exist", request.student_id),
                ));
            }
            issue(w, request)
        })
        .await?;
    let location = format!("/finance/invoices/{}", invoice.id);
    Ok(participant::server::created(location, invoice))
}

async fn fetch(State(db): State<Database>, PathId(id): PathId) -> ApiResult<Json<Invoice>> {
    db.read(move |conn| find(conn, &id)?.ok_or_else(|| ApiError::not_found("invoice", &id)))
        .await
        .map(Json)
}

#[derive(Serialize)]
struct InvoiceList {
    invoices: Vec<Invoice>,
}

async fn list_for_student(
    State(db): State<Database>,
    PathId(id): PathId,
) -> ApiResult<impl IntoResponse> {
    db.read(move |conn| {
        students::get_existing(conn, &id)?;
        Ok(Json(InvoiceList {
            invoices: for_student(conn, &id)?,
        }))
    })
    .await
}

/// Paying an open invoice marks it paid; paying a paid one answers it unchanged (no second
/// charge); a cancelled one cannot be paid.
async fn pay(
    State(db): State<Database>,
    PathId(id): PathId,
    mode: WriteMode,
) -> ApiResult<Json<Invoice>> {
    db.write(mode, move |w| {
        let mut invoice = find(w.tx(), &id)?.ok_or_else(|| ApiError::not_found("invoice", &id))?;
        match invoice.status.as_str() {
            "paid" => Ok(Json(invoice)),
            "cancelled" => Err(ApiError::rule(
                "invoice_cancelled",
                format!("invoice {id} is cancelled and cannot be paid"),
            )),
            _ => {
                let now = participant::now();
                invoice.status = "paid".to_string();
                invoice.paid_at = Some(now.clone());
                invoice.updated_at = now;
                upsert(w.tx(), &invoice)?;
                w.record("invoice.paid", &invoice.id, &invoice)?;
                Ok(Json(invoice))
            }
        }
    })
    .await
}

/// Cancels an open invoice (idempotently); a paid invoice cannot be cancelled.
pub fn cancel_in(w: &mut Write<'_>, id: &str) -> ApiResult<Invoice> {
    let mut invoice = find(w.tx(), id)?.ok_or_else(|| ApiError::not_found("invoice", id))?;
    match invoice.status.as_str() {
        "cancelled" => Ok(invoice),
        "paid" => Err(ApiError::rule(
            "invoice_paid",
            format!("invoice {id} is paid and cannot be cancelled"),
        )),
        _ => {
            let now = participant::now();
            invoice.status = "cancelled".to_string();
            invoice.cancelled_at = Some(now.clone());
            invoice.updated_at = now;
            upsert(w.tx(), &invoice)?;
            w.record("invoice.cancelled", &invoice.id, &invoice)?;
            Ok(invoice)
        }
    }
}

async fn cancel(
    State(db): State<Database>,
    PathId(id): PathId,
    mode: WriteMode,
) -> ApiResult<Json<Invoice>> {
    db.write(mode, move |w| cancel_in(w, &id).map(Json)).await
}

/// The invoice record's schema (the enrollment answers carry invoices too).
pub fn invoice_schema() -> Value {
    let text = json!({ "type": "string" });
    let maybe = json!({ "type": "string", "nullable": true });
    json!({ "type": "object", "additionalProperties": false,
        "required": ["id", "student_id", "enrollment_id", "term", "description", "amount_cents", "currency",
                     "status", "created_at", "updated_at", "paid_at", "cancelled_at"],
        "properties": {
            "id": text, "student_id": text, "enrollment_id": maybe, "term": maybe, "description": text,
            "amount_cents": { "type": "integer" }, "currency": text,
            "status": { "type": "string", "enum": ["open", "paid", "cancelled"] },
            "created_at": text, "updated_at": text, "paid_at": maybe, "cancelled_at": maybe } })
}

/// The finance routes and records as an OpenAPI piece.
pub fn api() -> Api {
    let id = || id_param("invoice id");
    let unknown = || ("404", error("not_found: no invoice with this id"));
    Api::new()
        .operation("/finance/invoices", "post", op(
            "Issue an invoice", vec![dry_run_param()], Some(body("NewInvoice")),
            [("201", created("issued", "Invoice")), ("422", error("unknown_student: no student with this student_id"))]
                .into_iter()
                .chain(body_errors("amount_cents, description, currency, term, enrollment_id")),
        ))
        .operation("/finance/invoices/{id}", "get", op(
            "Get an invoice", vec![id()], None, [("200", ok("the invoice", "Invoice")), unknown()],
        ))
        .operation("/finance/invoices/{id}/pay", "post", op(
            "Pay an invoice (paying a paid one answers it unchanged: no second charge)",
            vec![id(), dry_run_param()], None,
            [("200", ok("paid", "Invoice")), unknown(), ("400", error(BAD_HEADER)),
             ("422", error("invoice_cancelled: a cancelled invoice cannot be paid"))],
        ))
        .operation("/finance/invoices/{id}/cancel", "post", op(
            "Cancel an open invoice (cancelling a cancelled one answers it unchanged)",
            vec![id(), dry_run_param()], None,
            [("200", ok("cancelled", "Invoice")), unknown(), ("400", error(BAD_HEADER)),
             ("422", error("invoice_paid: a paid invoice cannot be cancelled"))],
        ))
        .operation("/students/{id}/invoices", "get", op(
            "A student's invoices", vec![id_param("student id")], None,
            [("200", ok("invoices, oldest first", "InvoiceList")), ("404", error("not_found: no student with this id"))],
        ))
        .schema("Invoice", invoice_schema())
        .schema("NewInvoice", json!({ "type": "object", "additionalProperties": false,
            "required": ["student_id", "amount_cents", "description"], "properties": {
                "student_id": { "type": "string" },
                "amount_cents": fields::amount_schema(),
                "description": fields::text_schema(500),
                "currency": fields::nullable(json!({ "type": "string", "pattern": "^[A-Z]{3}$", "default": "EUR",
                    "description": "ISO 4217 code" })),
                "term": fields::nullable(fields::term_schema()),
                "enrollment_id": fields::nullable(fields::text_schema(100)) } }))
        .schema("InvoiceList", json!({ "type": "object", "additionalProperties": false,
            "required": ["invoices"], "properties": { "invoices": array_of("Invoice") } }))
}
