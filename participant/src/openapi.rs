//! OpenAPI 3 documents composed from pieces. Each domain describes its own routes and schemas
//! as an [`Api`]; the monolith and every service merge the pieces they serve with
//! [`participant`] (the feed, health, readiness, this document) and serve the result at
//! `GET /openapi.json`. The helpers here describe what the shared extractors enforce, so
//! every document says the same thing about errors, bodies and the dry-run header.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::extract::{DRY_RUN_HEADER, MAX_BODY_BYTES, MAX_ID};

/// Paths and schemas a piece of an API contributes to a document.
#[derive(Debug, Clone, Default)]
pub struct Api {
    /// Path template → method → operation.
    paths: Map<String, Value>,
    /// Schema name → schema, referenced as `#/components/schemas/NAME`.
    schemas: Map<String, Value>,
}

impl Api {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `operation` for `method` (lower case) on `path`.
    ///
    /// # Panics
    /// When the operation is already described: two pieces claiming one route is a bug in
    /// the composition, found by the first test that builds the document.
    pub fn operation(mut self, path: &str, method: &str, operation: Value) -> Self {
        let item = self
            .paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            let previous = item.insert(method.to_string(), operation);
            assert!(previous.is_none(), "{method} {path} described twice");
        }
        self
    }

    /// Adds a schema. A name may be added twice only with the same schema (pieces that
    /// refer to another domain's records bring their schemas along).
    ///
    /// # Panics
    /// When one name is given two different schemas.
    pub fn schema(mut self, name: &str, schema: Value) -> Self {
        if let Some(existing) = self.schemas.get(name) {
            assert_eq!(existing, &schema, "schema {name} described two ways");
        }
        self.schemas.insert(name.to_string(), schema);
        self
    }

    /// This piece and `other` together.
    pub fn merge(mut self, other: Api) -> Self {
        for (path, item) in other.paths {
            if let Value::Object(item) = item {
                for (method, operation) in item {
                    self = self.operation(&path, &method, operation);
                }
            }
        }
        for (name, schema) in other.schemas {
            self = self.schema(&name, schema);
        }
        self
    }

    /// The whole document: `title` names the server, `description` says what it holds.
    pub fn document(self, title: &str, version: &str, description: &str) -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {
                "title": title,
                "version": version,
                "description": format!(
                    "{description} Every error body is {{\"error\":{{\"code\",\"message\"}}}}. \
                     Writes accept {DRY_RUN_HEADER}: 1 (run, answer, roll back). Any operation \
                     may also answer 500 `internal` or 503 `database_busy` when its own storage \
                     fails."
                ),
            },
            "paths": self.paths,
            "components": { "schemas": self.schemas },
        })
    }
}

/// `GET /openapi.json` answering `document`.
pub fn routes(document: Value) -> Router {
    let document = std::sync::Arc::new(document);
    Router::new().route(
        "/openapi.json",
        get(move || {
            let document = std::sync::Arc::clone(&document);
            async move { Json((*document).clone()) }
        }),
    )
}

/// A `$ref` to a component schema.
pub fn reference(schema: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{schema}") })
}

/// An array of a component schema.
pub fn array_of(schema: &str) -> Value {
    json!({ "type": "array", "items": reference(schema) })
}

/// A JSON answer with a component schema.
pub fn ok(description: &str, schema: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": reference(schema) } } })
}

/// A 201 answer with a component schema and the new resource's `Location`.
pub fn created(description: &str, schema: &str) -> Value {
    let mut answer = ok(description, schema);
    answer["headers"] = json!({ "Location": {
        "description": "the new resource's path", "schema": { "type": "string" } } });
    answer
}

/// An error answer (`{"error":{"code","message"}}`); `description` names the codes.
pub fn error(description: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": reference("Error") } } })
}

/// A required JSON request body with a component schema.
pub fn body(schema: &str) -> Value {
    json!({ "required": true,
            "content": { "application/json": { "schema": reference(schema) } } })
}

/// The id in a path, as [`crate::PathId`] accepts it; one that names nothing is a 404.
pub fn id_param(description: &str) -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": description,
            "schema": { "type": "string", "pattern": format!("^[0-9A-Za-z_-]{{1,{MAX_ID}}}$") } })
}

/// The 400 an operation with an id in its path answers for an id no participant makes.
const BAD_ID: &str = "invalid_id: the id is not 1 to 64 letters, digits, - or _";

/// The dry-run header, with exactly the values [`crate::WriteMode`] accepts.
pub fn dry_run_param() -> Value {
    json!({ "name": DRY_RUN_HEADER, "in": "header", "required": false,
            "description": "1 or true: execute the write, answer, then roll it back; 0 or false \
                            (or no header): commit. Any other value is a 400 invalid_header.",
            "schema": { "type": "string", "enum": ["0", "1", "true", "false"] } })
}

/// The 400 a write answers for a bad dry-run header.
pub const BAD_HEADER: &str = "invalid_header: x-strangler-dry-run is not 0, 1, true or false";

/// The 400 and 413 every operation with a JSON body may answer, `field_rules` naming the
/// body's own validation.
pub fn body_errors(field_rules: &str) -> [(&'static str, Value); 2] {
    [
        (
            "400",
            error(&format!(
                "malformed_json, unreadable_body, invalid_field ({field_rules}), {BAD_HEADER}"
            )),
        ),
        (
            "413",
            error(&format!(
                "body_too_large: the body exceeds {MAX_BODY_BYTES} bytes"
            )),
        ),
    ]
}

/// Builds an operation: `summary`, `parameters`, an optional request body and its answers.
pub fn op(
    summary: &str,
    parameters: Vec<Value>,
    request_body: Option<Value>,
    responses: impl IntoIterator<Item = (&'static str, Value)>,
) -> Value {
    let mut operation = json!({ "summary": summary, "parameters": &parameters });
    if let Some(request_body) = request_body {
        operation["requestBody"] = request_body;
    }
    let mut responses: Map<String, Value> = responses
        .into_iter()
        .map(|(status, answer)| (status.to_string(), answer))
        .collect();
    if parameters.iter().any(|p| p["in"] == "path") {
        match responses.get_mut("400") {
            Some(answer) => {
                let description = answer["description"].as_str().unwrap_or_default();
                answer["description"] = json!(format!("{description}; {BAD_ID}"));
            }
            None => {
                responses.insert("400".to_string(), error(BAD_ID));
            }
        }
    }
    operation["responses"] = Value::Object(responses);
    operation
}

/// The error body every participant answers with.
fn error_schema() -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": ["error"], "properties": {
        "error": { "type": "object", "required": ["code", "message"],
            "description": "the proxy's own errors also name the route and service",
            "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } })
}

/// What every participant serves besides its domains: the event feed, entity snapshots,
/// health, readiness and this document.
pub fn participant() -> Api {
    let integer = |min: i64, max: i64, default: i64, description: &str| {
        json!({ "in": "query", "description": description,
                "schema": { "type": "integer", "minimum": min, "maximum": max, "default": default } })
    };
    let named = |name: &str, mut param: Value| {
        param["name"] = json!(name);
        param
    };
    let feed = crate::feed::LIMITS;
    let snapshot = crate::snapshot::LIMITS;
    Api::new()
        .operation("/_events", "get", op(
            "Event feed in commit order; long-polls with wait",
            vec![
                named("after", integer(0, i64::MAX, 0, "serve events whose seq is above this one")),
                named("limit", integer(1, i64::from(feed.max_limit), i64::from(feed.default_limit), "most events served")),
                named("wait", integer(0, i64::try_from(feed.max_wait_ms).unwrap_or(i64::MAX), 0,
                    "milliseconds to wait for an event when none is there yet")),
            ],
            None,
            [("200", ok("a page of events", "FeedPage")),
             ("400", error("invalid_query: a parameter out of range, not a number, or unknown"))],
        ))
        .operation("/_events", "post", op(
            "Apply events from another participant, idempotently by id",
            vec![dry_run_param()],
            Some(body("EventBatch")),
            [("200", ok("what was applied; refused events are parked and counted as rejected", "ApplyReport"))]
                .into_iter()
                .chain(body_errors("an event without id, origin or key, a type without a dot, a version below 1, data not an object")),
        ))
        .operation("/_snapshot", "get", op(
            "Current state of one kind of entity, in key order (the byte order of the keys' UTF-8), for strangler verify",
            vec![
                json!({ "name": "type", "in": "query", "required": true,
                        "description": "the entity kind, as event types name it (student for student.updated); GET /_snapshot/types lists them",
                        "schema": { "type": "string", "minLength": 1 } }),
                json!({ "name": "after", "in": "query",
                        "description": "serve entities whose key sorts after this one: the `next` of the previous page; empty or absent: from the first",
                        "schema": { "type": "string", "default": "" } }),
                named("limit", integer(1, i64::from(snapshot.max_limit), i64::from(snapshot.default_limit), "most entities served")),
            ],
            None,
            [("200", ok("a page of entities", "SnapshotPage")),
             ("400", error("invalid_query: type missing, limit out of range or not a number, or an unknown parameter")),
             ("404", error("unknown_type: this participant holds no entities of that kind"))],
        ))
        .operation("/_snapshot/types", "get", op(
            "The entity kinds GET /_snapshot serves", vec![], None,
            [("200", ok("the kinds", "SnapshotTypes"))],
        ))
        .operation("/health", "get", op("Liveness", vec![], None,
            [("200", ok("alive", "Health"))]))
        .operation("/ready", "get", op("Readiness: the database answers", vec![], None,
            [("200", ok("ready", "Ready")), ("503", error("not_ready: database unreachable"))]))
        .operation("/openapi.json", "get", op("This document", vec![], None,
            [("200", json!({ "description": "OpenAPI 3 document",
                "content": { "application/json": { "schema": { "type": "object" } } } }))]))
        .schema("Error", error_schema())
        .schema("Health", json!({ "type": "object", "required": ["status"],
            "properties": { "status": { "type": "string", "enum": ["ok"] } } }))
        .schema("Ready", json!({ "type": "object", "required": ["status"],
            "properties": { "status": { "type": "string", "enum": ["ready"] } } }))
        .schema("Event", json!({ "type": "object", "additionalProperties": false,
            "required": ["id", "origin", "type", "key", "version", "at", "data"], "properties": {
                "id": { "type": "string", "minLength": 1 },
                "seq": { "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX,
                         "description": "position in the serving feed; ignored when applied" },
                "origin": { "type": "string", "minLength": 1 },
                "type": { "type": "string", "pattern": "\\.", "description": "entity.change, e.g. student.updated" },
                "key": { "type": "string", "minLength": 1 },
                "version": { "type": "integer", "minimum": 1, "maximum": i64::MAX },
                "at": { "type": "string" },
                "data": { "type": "object", "description": "the entity's full state after the change" } } }))
        .schema("FeedPage", json!({ "type": "object", "additionalProperties": false,
            "required": ["events", "next", "head"], "properties": {
                "events": array_of("Event"), "next": { "type": "integer" }, "head": { "type": "integer" } } }))
        .schema("Entity", json!({ "type": "object", "additionalProperties": false,
            "required": ["key", "version", "state"], "properties": {
                "key": { "type": "string" },
                "version": { "type": "integer", "minimum": 0, "maximum": i64::MAX,
                             "description": "the version of its last recorded or applied change; 0: no event is known for it" },
                "state": { "type": "object", "description": "its full state, as its events carry it in data" } } }))
        .schema("SnapshotPage", json!({ "type": "object", "additionalProperties": false,
            "required": ["entities", "next"], "properties": {
                "entities": array_of("Entity"),
                "next": { "type": "string", "nullable": true, "description": "pass as after= for the next page; null on the last" } } }))
        .schema("SnapshotTypes", json!({ "type": "object", "additionalProperties": false,
            "required": ["types"], "properties": { "types": { "type": "array", "items": { "type": "string" } } } }))
        .schema("EventBatch", json!({ "type": "object", "additionalProperties": false,
            "required": ["events"], "properties": { "events": array_of("Event") } }))
        .schema("ApplyReport", json!({ "type": "object", "additionalProperties": false,
            "required": ["received", "applied", "duplicates", "stale", "rejected"], "properties": {
                "received": { "type": "integer" }, "applied": { "type": "integer" },
                "duplicates": { "type": "integer" }, "stale": { "type": "integer" },
                "rejected": { "type": "integer" }, "first_rejection": { "type": "string" } } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_merge_and_refuse_a_route_twice() {
        let a = Api::new()
            .operation("/a", "get", json!({}))
            .schema("S", json!({}));
        let b = Api::new()
            .operation("/a", "post", json!({}))
            .schema("S", json!({}));
        let doc = a.merge(b).document("t", "1", "d");
        assert_eq!(doc["paths"]["/a"].as_object().map(|o| o.len()), Some(2));
        let twice = std::panic::catch_unwind(|| {
            Api::new()
                .operation("/a", "get", json!({}))
                .merge(Api::new().operation("/a", "get", json!({})))
        });
        assert!(twice.is_err());
    }
}
