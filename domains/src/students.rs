//! Students: registration, lookup, listing, full and partial update, deactivation.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use participant::{ApiError, ApiQuery, ApiResult, Database, JsonBody, PathId, Write, WriteMode};
use rusqlite::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use participant::openapi::{
    Api, BAD_HEADER, array_of, body, body_errors, created, dry_run_param, error, id_param, ok, op,
};
use serde_json::json;

use crate::fields;

pub const COLUMNS: &str = "id, email, name, status, created_at, updated_at";

/// The students table (in the students service, and as a read model beside finance and
/// gamification).
pub const SCHEMA: &str = "
            CREATE TABLE students (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            );
        ";

/// Longest page `GET /students` serves.
const MAX_PAGE: u32 = 200;
const DEFAULT_PAGE: u32 = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Student {
    pub id: String,
    pub email: String,
    pub name: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Student {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }

    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            email: row.get("email")?,
            name: row.get("name")?,
            status: row.get("status")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

pub fn routes(db: Database) -> Router {
    Router::new()
        .route("/students", get(list).post(create))
        .route(
            "/students/{id}",
            get(fetch).put(replace).patch(update).delete(deactivate),
        )
        .with_state(db)
}

pub fn find(conn: &Connection, id: &str) -> ApiResult<Option<Student>> {
    Ok(conn
        .query_row(
            "SELECT id, email, name, status, created_at, updated_at FROM students WHERE id = ?1",
            [id],
            Student::from_row,
        )
        .optional()?)
}

/// The student, or 404.
pub fn get_existing(conn: &Connection, id: &str) -> ApiResult<Student> {
    find(conn, id)?.ok_or_else(|| ApiError::not_found("student", id))
}

/// Inserts or replaces the row with `student`'s state (local writes and applied events).
pub fn upsert(conn: &Connection, student: &Student) -> ApiResult<()> {
    conn.execute(
        "INSERT INTO students (id, email, name, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name,
             status = excluded.status, created_at = excluded.created_at,
             updated_at = excluded.updated_at",
        (
            &student.id,
            &student.email,
            &student.name,
            &student.status,
            &student.created_at,
            &student.updated_at,
        ),
    )
    .map_err(|err| {
        if fields::is_unique_violation(&err) {
            ApiError::conflict(
                "email_taken",
                format!("email {} belongs to another student", student.email),
            )
        } else {
            fields::refused_row(err, "student")
        }
    })?;
    Ok(())
}

/// Writes `student` and records `event_type` for it in the same transaction.
fn save(w: &mut Write<'_>, student: &Student, event_type: &str) -> ApiResult<()> {
    let taken: Option<String> = w
        .tx()
        .query_row(
            "SELECT id FROM students WHERE email = ?1 AND id <> ?2",
            (&student.email, &student.id),
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return Err(ApiError::conflict(
            "email_taken",
            format!("email {} belongs to another student", student.email),
        ));
    }
    upsert(w.tx(), student)?;
    w.record(event_type, &student.id, student)?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStudent {
    email: String,
    name: String,
}

async fn create(
    State(db): State<Database>,
    mode: WriteMode,
    JsonBody(body): JsonBody<NewStudent>,
) -> ApiResult<impl IntoResponse> {
    let email = fields::email(&body.email)?;
    let name = fields::text("name", &body.name, 200)?;
    let student = db
        .write(mode, move |w| {
            let now = participant::now();
            let student = Student {
                id: participant::new_id(),
                email,
                name,
                status: "active".to_string(),
                created_at: now.clone(),
                updated_at: now,
            };
            save(w, &student, "student.created")?;
            Ok(student)
        })
        .await?;
    let location = format!("/students/{}", student.id);
    Ok(participant::server::created(location, student))
}

async fn fetch(State(db): State<Database>, PathId(id): PathId) -> ApiResult<Json<Student>> {
    db.read(move |conn| get_existing(conn, &id)).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    email: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

#[derive(Serialize)]
struct StudentPage {
    students: Vec<Student>,
    /// Cursor for the next page (`after=`), absent on the last page.
    next: Option<String>,
}

async fn list(
    State(db): State<Database>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<StudentPage>> {
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("limit: must be a number between 1 and {MAX_PAGE}"),
                )
            })?,
    };
    let email = params
        .email
        .filter(|e| !e.is_empty())
        .map(|e| e.trim().to_lowercase());
    let after = params.after.unwrap_or_default();
    db.read(move |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT id, email, name, status, created_at, updated_at FROM students
             WHERE id > ?1 AND (?2 IS NULL OR email = ?2)
             ORDER BY id LIMIT ?3",
        )?;
        let mut students = stmt
            .query_map((&after, &email, limit + 1), Student::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let next = if students.len() > limit as usize {
            students.truncate(limit as usize);
            students.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(Json(StudentPage { students, next }))
    })
    .await
}

/// `PUT` body: the whole student. Read-only fields may be echoed back; `id` must match.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceStudent {
    id: Option<String>,
    email: String,
    name: String,
    status: String,
    #[serde(rename = "created_at")]
    _created_at: Option<String>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<String>,
}

async fn replace(
    State(db): State<Database>,
    PathId(id): PathId,
    mode: WriteMode,
    JsonBody(body): JsonBody<ReplaceStudent>,
) -> ApiResult<Json<Student>> {
    if body.id.as_ref().is_some_and(|body_id| *body_id != id) {
        return Err(ApiError::invalid_field(
            "id",
            "does not match the id in the path",
        ));
    }
    let email = fields::email(&body.email)?;
    let name = fields::text("name", &body.name, 200)?;
    let status = fields::status(&body.status)?;
    change(db, mode, id, move |s| {
        s.email = email;
        s.name = name;
        s.status = status;
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchStudent {
    email: Option<String>,
    name: Option<String>,
    status: Option<String>,
}

async fn update(
    State(db): State<Database>,
    PathId(id): PathId,
    mode: WriteMode,
    JsonBody(body): JsonBody<PatchStudent>,
) -> ApiResult<Json<Student>> {
    let email = body.email.as_deref().map(fields::email).transpose()?;
    let name = body
        .name
        .as_deref()
        .map(|n| fields::text("name", n, 200))
        .transpose()?;
    let status = body.status.as_deref().map(fields::status).transpose()?;
    change(db, mode, id, move |s| {
        if let Some(email) = email {
            s.email = email;
        }
        if let Some(name) = name {
            s.name = name;
        }
        if let Some(status) = status {
            s.status = status;
        }
    })
    .await
}

async fn deactivate(
    State(db): State<Database>,
    PathId(id): PathId,
    mode: WriteMode,
) -> ApiResult<Json<Student>> {
    change(db, mode, id, |s| s.status = "inactive".to_string()).await
}

/// Applies `edit` to the stored student; records an event only when something changed.
async fn change(
    db: Database,
    mode: WriteMode,
    id: String,
    edit: impl FnOnce(&mut Student) + Send + 'static,
) -> ApiResult<Json<Student>> {
    db.write(mode, move |w| {
        let before = get_existing(w.tx(), &id)?;
        let mut student = before.clone();
        edit(&mut student);
        if student == before {
            return Ok(Json(student));
        }
        student.updated_at = participant::now();
        let event_type = if before.is_active() && !student.is_active() {
            "student.deactivated"
        } else {
            "student.updated"
        };
        save(w, &student, event_type)?;
        Ok(Json(student))
    })
    .await
}

/// The students routes and records as an OpenAPI piece.
pub fn api() -> Api {
    let id = || id_param("student id");
    let text = || fields::text_schema(200);
    let student = json!({ "type": "object", "additionalProperties": false,
        "required": ["id", "email", "name", "status", "created_at", "updated_at"], "properties": {
            "id": { "type": "string" }, "email": { "type": "string" }, "name": { "type": "string" },
            "status": fields::status_schema(),
            "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" } } });
    let read_only = json!({ "type": "string", "readOnly": true });
    let taken = ("409", error("email_taken: another student has this email"));
    let unknown = ("404", error("not_found: no student with this id"));
    Api::new()
        .operation("/students", "get", op(
            "List students, cursor-paginated by id",
            vec![
                json!({ "name": "email", "in": "query", "description": "only the student with this email (trimmed, case-insensitive); empty: all",
                        "schema": { "type": "string" } }),
                json!({ "name": "limit", "in": "query", "description": "most students per page",
                        "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE } }),
                json!({ "name": "after", "in": "query", "description": "cursor: the `next` of the previous page",
                        "schema": { "type": "string" } }),
            ],
            None,
            [("200", ok("a page of students", "StudentPage")),
             ("400", error("invalid_query: limit out of range or not a number, or an unknown parameter"))],
        ))
        .operation("/students", "post", op(
            "Register a student", vec![dry_run_param()], Some(body("NewStudent")),
            [("201", created("registered", "Student")), taken.clone()]
                .into_iter()
                .chain(body_errors("email, name")),
        ))
        .operation("/students/{id}", "get", op(
            "Get a student", vec![id()], None, [("200", ok("the student", "Student")), unknown.clone()],
        ))
        .operation("/students/{id}", "put", op(
            "Replace a student (read-only fields may be echoed back; an echoed id must be the path's)",
            vec![id(), dry_run_param()], Some(body("ReplaceStudent")),
            [("200", ok("replaced", "Student")), unknown.clone(), taken.clone()]
                .into_iter()
                .chain(body_errors("email, name, status, an id other than the path's")),
        ))
        .operation("/students/{id}", "patch", op(
            "Update some fields of a student", vec![id(), dry_run_param()], Some(body("PatchStudent")),
            [("200", ok("updated", "Student")), unknown.clone(), taken]
                .into_iter()
                .chain(body_errors("email, name, status")),
        ))
        .operation("/students/{id}", "delete", op(
            "Deactivate a student (status becomes inactive)", vec![id(), dry_run_param()], None,
            [("200", ok("deactivated", "Student")), unknown, ("400", error(BAD_HEADER))],
        ))
        .schema("Student", student)
        .schema("NewStudent", json!({ "type": "object", "additionalProperties": false,
            "required": ["email", "name"], "properties": { "email": fields::email_schema(), "name": text() } }))
        .schema("ReplaceStudent", json!({ "type": "object", "additionalProperties": false,
            "required": ["email", "name", "status"], "properties": {
                "id": { "type": "string", "readOnly": true, "nullable": true, "description": "if sent, the id in the path" },
                "email": fields::email_schema(), "name": text(), "status": fields::status_schema(),
                "created_at": fields::nullable(read_only.clone()), "updated_at": fields::nullable(read_only) } }))
        .schema("PatchStudent", json!({ "type": "object", "additionalProperties": false, "properties": {
            "email": fields::nullable(fields::email_schema()), "name": fields::nullable(text()),
            "status": fields::nullable(fields::status_schema()) } }))
        .schema("StudentPage", json!({ "type": "object", "additionalProperties": false,
            "required": ["students", "next"], "properties": {
                "students": array_of("Student"),
                "next": { "type": "string", "nullable": true, "description": "pass as after= for the next page; null on the last" } } }))
}
