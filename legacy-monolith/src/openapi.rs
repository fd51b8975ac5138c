//! The OpenAPI 3 description of the monolith's API, served at `GET /openapi.json`.
//! The e2e tests check that every route the server answers is described here and back.

use axum::Json;
use serde_json::{Value, json};

fn ok(description: &str, schema: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn error(description: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn body(schema: &str) -> Value {
    json!({ "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn id_param(description: &str) -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": description,
            "schema": { "type": "string", "format": "uuid" } })
}

fn dry_run_param() -> Value {
    json!({ "name": "x-strangler-dry-run", "in": "header", "required": false,
            "description": "1: execute the write, answer, then roll it back",
            "schema": { "type": "string", "enum": ["0", "1"] } })
}

/// The document.
pub fn document() -> Value {
    let student_id = id_param("student id");
    json!({
      "openapi": "3.0.3",
      "info": {
        "title": "legacy-monolith",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Students, enrollment, finance and gamification in one service. Every error body is {\"error\":{\"code\",\"message\"}}. Writes accept x-strangler-dry-run: 1."
      },
      "paths": {
        "/students": {
          "get": { "summary": "List students, cursor-paginated by id", "parameters": [
              { "name": "email", "in": "query", "schema": { "type": "string" } },
              { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 200, "default": 50 } },
              { "name": "after", "in": "query", "description": "cursor: the `next` of the previous page", "schema": { "type": "string" } } ],
            "responses": { "200": ok("a page of students", "StudentPage"), "400": error("bad query") } },
          "post": { "summary": "Register a student", "parameters": [dry_run_param()], "requestBody": body("NewStudent"),
            "responses": { "201": ok("created", "Student"), "400": error("invalid field"), "409": error("email taken"), "413": error("body over 1 MiB") } }
        },
        "/students/{id}": {
          "get": { "summary": "Get a student", "parameters": [student_id],
            "responses": { "200": ok("the student", "Student"), "404": error("unknown id") } },
          "put": { "summary": "Replace a student", "parameters": [student_id, dry_run_param()], "requestBody": body("ReplaceStudent"),
            "responses": { "200": ok("replaced", "Student"), "400": error("invalid field"), "404": error("unknown id"), "409": error("email taken") } },
          "patch": { "summary": "Update some fields of a student", "parameters": [student_id, dry_run_param()], "requestBody": body("PatchStudent"),
            "responses": { "200": ok("updated", "Student"), "400": error("invalid field"), "404": error("unknown id"), "409": error("email taken") } },
          "delete": { "summary": "Deactivate a student (status becomes inactive)", "parameters": [student_id, dry_run_param()],
            "responses": { "200": ok("deactivated", "Student"), "404": error("unknown id") } }
        },
        "/students/{id}/invoices": {
          "get": { "summary": "A student's invoices", "parameters": [student_id],
            "responses": { "200": ok("invoices", "InvoiceList"), "404": error("unknown student") } }
        },
        "/students/{id}/points": {
          "get": { "summary": "A student's points, level and badges", "parameters": [student_id],
            "responses": { "200": ok("standing", "Points"), "404": error("unknown student") } }
        },
        "/students/{id}/rewards": {
          "get": { "summary": "A student's rewards", "parameters": [student_id,
              { "name": "term", "in": "query", "schema": { "type": "string", "example": "2026-fall" } }],
            "responses": { "200": ok("rewards", "RewardList"), "400": error("bad term"), "404": error("unknown student") } }
        },
        "/students/{id}/enrollments": {
          "get": { "summary": "A student's enrollments", "parameters": [student_id],
            "responses": { "200": ok("enrollments", "EnrollmentList"), "404": error("unknown student") } }
        },
        "/students/{id}/report": {
          "get": { "summary": "A student's term report", "parameters": [student_id,
              { "name": "term", "in": "query", "required": true, "schema": { "type": "string", "example": "2026-fall" } }],
            "responses": { "200": ok("report", "Report"), "400": error("missing or bad term"), "404": error("unknown student") } }
        },
        "/finance/invoices": {
          "post": { "summary": "Issue an invoice", "parameters": [dry_run_param()], "requestBody": body("NewInvoice"),
            "responses": { "201": ok("issued", "Invoice"), "400": error("invalid field"), "422": error("unknown student") } }
        },
        "/finance/invoices/{id}": {
          "get": { "summary": "Get an invoice", "parameters": [id_param("invoice id")],
            "responses": { "200": ok("the invoice", "Invoice"), "404": error("unknown id") } }
        },
        "/finance/invoices/{id}/pay": {
          "post": { "summary": "Pay an invoice (paying twice charges once)", "parameters": [id_param("invoice id"), dry_run_param()],
            "responses": { "200": ok("paid", "Invoice"), "404": error("unknown id"), "422": error("invoice cancelled") } }
        },
        "/finance/invoices/{id}/cancel": {
          "post": { "summary": "Cancel an open invoice", "parameters": [id_param("invoice id"), dry_run_param()],
            "responses": { "200": ok("cancelled", "Invoice"), "404": error("unknown id"), "422": error("invoice paid") } }
        },
        "/gamification/rewards": {
          "post": { "summary": "Grant points (an idempotency_key prevents double grants)", "parameters": [dry_run_param()], "requestBody": body("NewReward"),
            "responses": { "201": ok("granted", "Reward"), "200": ok("already granted with this idempotency_key", "Reward"),
                           "400": error("invalid field"), "409": error("idempotency_key reused for another grant"), "422": error("unknown student") } }
        },
        "/gamification/rewards/{id}/revoke": {
          "post": { "summary": "Revoke a reward (idempotently): it stays on record, its points stop counting", "parameters": [id_param("reward id"), dry_run_param()],
            "responses": { "200": ok("revoked", "Reward"), "404": error("unknown id") } }
        },
        "/enrollments": {
          "post": { "summary": "Enroll a student: enrollment, invoice and welcome reward in one transaction", "parameters": [dry_run_param()], "requestBody": body("NewEnrollment"),
            "responses": { "201": ok("confirmation", "Confirmation"), "400": error("invalid field"), "409": error("already enrolled"),
                           "422": error("unknown or inactive student") } }
        },
        "/enrollments/{id}": {
          "get": { "summary": "Get an enrollment", "parameters": [id_param("enrollment id")],
            "responses": { "200": ok("the enrollment", "Enrollment"), "404": error("unknown id") } }
        },
        "/enrollments/{id}/renew": {
          "post": { "summary": "Renew for the next term, with the previous term's report", "parameters": [id_param("enrollment id"), dry_run_param()],
            "responses": { "201": ok("renewal", "Renewal"), "404": error("unknown id"), "409": error("already enrolled next term"),
                           "422": error("inactive student") } }
        },
        "/_events": {
          "get": { "summary": "Event feed in commit order; long-polls with wait", "parameters": [
              { "name": "after", "in": "query", "schema": { "type": "integer", "default": 0 } },
              { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 100, "maximum": 1000 } },
              { "name": "wait", "in": "query", "description": "milliseconds to wait for an event (max 30000)", "schema": { "type": "integer", "default": 0 } } ],
            "responses": { "200": ok("a page of events", "FeedPage"), "400": error("bad query") } },
          "post": { "summary": "Apply events from another participant, idempotently by id", "requestBody": body("EventBatch"),
            "responses": { "200": ok("what was applied; refused events are parked and counted as rejected", "ApplyReport"), "400": error("malformed event") } }
        },
        "/health": { "get": { "summary": "Liveness", "responses": { "200": { "description": "alive" } } } },
        "/ready": { "get": { "summary": "Readiness: the database answers", "responses": { "200": { "description": "ready" }, "503": error("database unreachable") } } },
        "/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3 document" } } } }
      },
      "components": { "schemas": schemas() }
    })
}

fn schemas() -> Value {
    let s = |t: &str| json!({ "type": t });
    let nullable = |t: &str| json!({ "type": t, "nullable": true });
    let reference = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let array_of = |name: &str| json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{name}") } });
    json!({
      "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"],
          "properties": { "code": s("string"), "message": s("string") } } } },
      "Student": { "type": "object", "required": ["id", "email", "name", "status", "created_at", "updated_at"], "properties": {
          "id": s("string"), "email": s("string"), "name": s("string"),
          "status": { "type": "string", "enum": ["active", "inactive"] },
          "created_at": { "type": "string", "format": "date-time" }, "updated_at": { "type": "string", "format": "date-time" } } },
      "NewStudent": { "type": "object", "additionalProperties": false, "required": ["email", "name"], "properties": {
          "email": s("string"), "name": s("string") } },
      "ReplaceStudent": { "type": "object", "additionalProperties": false, "required": ["email", "name", "status"], "properties": {
          "id": s("string"), "email": s("string"), "name": s("string"), "status": { "type": "string", "enum": ["active", "inactive"] },
          "created_at": s("string"), "updated_at": s("string") } },
      "PatchStudent": { "type": "object", "additionalProperties": false, "properties": {
          "email": s("string"), "name": s("string"), "status": { "type": "string", "enum": ["active", "inactive"] } } },
      "StudentPage": { "type": "object", "properties": { "students": array_of("Student"), "next": nullable("string") } },
      "Invoice": { "type": "object", "properties": {
          "id": s("string"), "student_id": s("string"), "enrollment_id": nullable("string"), "term": nullable("string"),
          "description": s("string"), "amount_cents": s("integer"), "currency": s("string"),
          "status": { "type": "string", "enum": ["open", "paid", "cancelled"] },
          "created_at": s("string"), "updated_at": s("string"), "paid_at": nullable("string"), "cancelled_at": nullable("string") } },
      "NewInvoice": { "type": "object", "additionalProperties": false, "required": ["student_id", "amount_cents", "description"], "properties": {
          "student_id": s("string"), "amount_cents": { "type": "integer", "minimum": 1, "maximum": 100_000_000 },
          "description": s("string"), "currency": { "type": "string", "default": "EUR" }, "term": s("string"),
          "enrollment_id": s("string") } },
      "InvoiceList": { "type": "object", "properties": { "invoices": array_of("Invoice") } },
      "Reward": { "type": "object", "properties": {
          "id": s("string"), "student_id": s("string"), "points": s("integer"), "reason": s("string"),
          "term": nullable("string"), "idempotency_key": nullable("string"), "created_at": s("string"),
          "revoked_at": nullable("string") } },
      "NewReward": { "type": "object", "additionalProperties": false, "required": ["student_id", "points", "reason"], "properties": {
          "student_id": s("string"), "points": { "type": "integer", "minimum": 1, "maximum": 10000 }, "reason": s("string"),
          "term": s("string"), "idempotency_key": s("string") } },
      "RewardList": { "type": "object", "properties": { "rewards": array_of("Reward") } },
      "Points": { "type": "object", "properties": {
          "student_id": s("string"), "points": s("integer"), "level": s("integer"), "badges": { "type": "array", "items": s("string") } } },
      "Enrollment": { "type": "object", "properties": {
          "id": s("string"), "student_id": s("string"), "course": s("string"), "term": s("string"), "status": s("string"),
          "invoice_id": s("string"), "renewed_from": nullable("string"), "created_at": s("string") } },
      "NewEnrollment": { "type": "object", "additionalProperties": false, "required": ["student_id", "course", "term"], "properties": {
          "student_id": s("string"), "course": s("string"), "term": { "type": "string", "example": "2026-fall" } } },
      "EnrollmentList": { "type": "object", "properties": { "enrollments": array_of("Enrollment") } },
      "Confirmation": { "type": "object", "properties": {
          "enrollment": reference("Enrollment"), "invoice": reference("Invoice"), "reward": reference("Reward") } },
      "Report": { "type": "object", "properties": {
          "student_id": s("string"), "term": s("string"), "courses": { "type": "array", "items": s("string") },
          "invoices": { "type": "object", "properties": { "paid": s("integer"), "open": s("integer"), "cancelled": s("integer"),
              "amount_paid_cents": s("integer"), "amount_open_cents": s("integer") } },
          "points_earned": s("integer") } },
      "Renewal": { "type": "object", "properties": {
          "enrollment": reference("Enrollment"), "invoice": reference("Invoice"), "previous_term": reference("Report") } },
      "Event": { "type": "object", "required": ["id", "origin", "type", "key", "version", "at", "data"], "properties": {
          "id": s("string"), "seq": s("integer"), "origin": s("string"), "type": s("string"), "key": s("string"),
          "version": s("integer"), "at": s("string"), "data": s("object") } },
      "FeedPage": { "type": "object", "properties": { "events": array_of("Event"), "next": s("integer"), "head": s("integer") } },
      "EventBatch": { "type": "object", "required": ["events"], "properties": { "events": array_of("Event") } },
      "ApplyReport": { "type": "object", "properties": {
          "received": s("integer"), "applied": s("integer"), "duplicates": s("integer"), "stale": s("integer"),
          "rejected": s("integer"), "first_rejection": s("string") } }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
