//! Gamification: points granted with a reason (at most once per idempotency key), levels and
//! badges derived from the total.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use participant::{ApiError, ApiQuery, ApiResult, Database, JsonBody, PathId, Write, WriteMode};
use rusqlite::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use participant::openapi::{
    Api, BAD_HEADER, array_of, body, body_errors, created, dry_run_param, error, id_param, ok, op,
};
use serde_json::{Value, json};

use crate::{fields, students};

/// Points needed per level: level 1 at 0 points, level 2 at 100, and so on.
const POINTS_PER_LEVEL: i64 = 100;
/// Badges and the total points that earn them, lowest first.
const BADGES: &[(i64, &str)] = &[
    (1, "first-steps"),
    (100, "achiever"),
    (500, "scholar"),
    (1000, "legend"),
];
/// Most points a single reward may grant.
const MAX_POINTS: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    pub id: String,
    pub student_id: String,
    pub points: i64,
    pub reason: String,
    pub term: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    /// When the grant was taken back (it no longer counts); absent while it stands.
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// The rewards table.
pub const SCHEMA: &str = "
            CREATE TABLE rewards (
                id TEXT PRIMARY KEY,
                student_id TEXT NOT NULL,
                points INTEGER NOT NULL,
                reason TEXT NOT NULL,
                term TEXT,
                idempotency_key TEXT UNIQUE,
                created_at TEXT NOT NULL
            );
            CREATE INDEX rewards_by_student ON rewards (student_id);
        ";

/// Revocation, added after the first release: a revoked reward no longer counts.
pub const REVOCATION: &str = "ALTER TABLE rewards ADD COLUMN revoked_at TEXT;";

pub const COLUMNS: &str =
    "id, student_id, points, reason, term, idempotency_key, created_at, revoked_at";

impl Reward {
    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            student_id: row.get("student_id")?,
            points: row.get("points")?,
            reason: row.get("reason")?,
            term: row.get("term")?,
            idempotency_key: row.get("idempotency_key")?,
            created_at: row.get("created_at")?,
            revoked_at: row.get("revoked_at")?,
        })
    }
}

/// A student's standing: total points, the level and badges they earn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Points {
    pub student_id: String,
    pub points: i64,
    pub level: i64,
    pub badges: Vec<String>,
}

impl Points {
    pub fn from_total(student_id: String, points: i64) -> Self {
        Self {
            student_id,
            points,
            level: 1 + points.max(0) / POINTS_PER_LEVEL,
            badges: BADGES
                .iter()
                .filter(|(needed, _)| points >= *needed)
                .map(|(_, name)| (*name).to_string())
                .collect(),
        }
    }
}

pub fn routes(db: Database) -> Router {
    Router::new()
        .route("/gamification/rewards", post(create))
        .route("/gamification/rewards/{id}/revoke", post(revoke))
        .route("/students/{id}/points", get(points))
        .route("/students/{id}/rewards", get(list_for_student))
        .with_state(db)
}

pub fn upsert(conn: &Connection, reward: &Reward) -> ApiResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO rewards ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET student_id = excluded.student_id,
                 points = excluded.points, reason = excluded.reason, term = excluded.term,
                 idempotency_key = excluded.idempotency_key, created_at = excluded.created_at,
                 revoked_at = excluded.revoked_at"
        ),
        rusqlite::params![
            reward.id,
            reward.student_id,
            reward.points,
            reward.reason,
            reward.term,
            reward.idempotency_key,
            reward.created_at,
            reward.revoked_at,
        ],
    )
    .map_err(|err| fields::refused_row(err, "reward"))?;
    Ok(())
}

fn find_by_key(conn: &Connection, key: &str) -> ApiResult<Option<Reward>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM rewards WHERE idempotency_key = ?1"),
            [key],
            Reward::from_row,
        )
        .optional()?)
}

pub fn total_points(conn: &Connection, student_id: &str, term: Option<&str>) -> ApiResult<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(points), 0) FROM rewards
         WHERE student_id = ?1 AND (?2 IS NULL OR term = ?2) AND revoked_at IS NULL",
        (student_id, term),
        |r| r.get(0),
    )?)
}

/// What to grant.
pub struct RewardRequest {
    pub student_id: String,
    pub points: i64,
    pub reason: String,
    pub term: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Whether a grant created a reward or found the one its idempotency key already made.
pub enum Granted {
    New(Reward),
    Existing(Reward),
}

/// Grants points and records `reward.granted`; with a known idempotency key, answers the
/// earlier reward instead (or 409 when the key was used for a different grant).
pub fn grant(w: &mut Write<'_>, request: RewardRequest) -> ApiResult<Granted> {
    if let Some(key) = &request.idempotency_key
        && let Some(existing) = find_by_key(w.tx(), key)?
    {
        let same = existing.student_id == request.student_id
            && existing.points == request.points
            && existing.reason == request.reason
            && existing.term == request.term;
        return if same {
            Ok(Granted::Existing(existing))
        } else {
            Err(ApiError::conflict(
                "idempotency_key_reused",
                format!("idempotency_key {key} was used for a different reward"),
            ))
        };
    }
    let reward = Reward {
        id: participant::new_id(),
        student_id: request.student_id,
        points: request.points,
        reason: request.reason,
        term: request.term,
        idempotency_key: request.idempotency_key,
        created_at: participant::now(),
        revoked_at: None,
    };
    upsert(w.tx(), &reward)?;
    w.record("reward.granted", &reward.id, &reward)?;
    Ok(Granted::New(reward))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReward {
    student_id: String,
    points: i64,
    reason: String,
    term: Option<String>,
    idempotency_key: Option<String>,
}

async fn create(
    State(db): State<Database>,
    mode: WriteMode,
    JsonBody(body): JsonBody<NewReward>,
) -> ApiResult<(StatusCode, Json<Reward>)> {
    if !(1..=MAX_POINTS).contains(&body.points) {
        return Err(ApiError::invalid_field(
            "points",
            format!("must be between 1 and {MAX_POINTS}"),
        ));
    }
    let request = RewardRequest {
        student_id: body.student_id,
        points: body.points,
        reason: fields::text("reason", &body.reason, 200)?,
        term: body
            .term
            .as_deref()
            .map(|t| fields::term("term", t))
            .transpose()?,
        idempotency_key: body
            .idempotency_key
            .as_deref()
            .map(|k| fields::text("idempotency_key", k, 200))
            .transpose()?,
    };
    db.write(mode, move |w| {
        if students::find(w.tx(), &request.student_id)?.is_none() {
            return Err(ApiError::rule(
                "unknown_student",
                format!("student {} does not exist", request.student_id),
            ));
        }
        Ok(match grant(w, request)? {
            Granted::New(reward) => (StatusCode::CREATED, Json(reward)),
            Granted::Existing(reward) => (StatusCode::OK, Json(reward)),
        })
    })
    .await
}

async fn points(State(db): State<Database>, PathId(id): PathId) -> ApiResult<Json<Points>> {
    db.read(move |conn| {
        students::get_existing(conn, &id)?;
        let total = total_points(conn, &id, None)?;
        Ok(Json(Points::from_total(id, total)))
    })
    .await
}

/// Takes a grant back (idempotently): the reward stays on record, its points stop counting.
pub fn revoke_in(w: &mut Write<'_>, id: &str) -> ApiResult<Reward> {
    let mut reward = w
        .tx()
        .query_row(
            &format!("SELECT {COLUMNS} FROM rewards WHERE id = ?1"),
            [id],
            Reward::from_row,
        )
        .optional()?
        .ok_or_else(|| ApiError::not_found("reward", id))?;
    if reward.revoked_at.is_none() {
        reward.revoked_at = Some(participant::now());
        upsert(w.tx(), &reward)?;
        w.record("reward.revoked", &reward.id, &reward)?;
    }
    Ok(reward)
}

async fn revoke(
    State(db): State<Database>,
    PathId(id): PathId,
    mode: WriteMode,
) -> ApiResult<Json<Reward>> {
    db.write(mode, move |w| revoke_in(w, &id).map(Json)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewardFilter {
    term: Option<String>,
}

#[derive(Serialize)]
struct RewardList {
    rewards: Vec<Reward>,
}

async fn list_for_student(
    State(db): State<Database>,
    PathId(id): PathId,
    ApiQuery(filter): ApiQuery<RewardFilter>,
) -> ApiResult<Json<RewardList>> {
    let term = filter
        .term
        .filter(|t| !t.is_empty())
        .map(|t| fields::term("term", &t))
        .transpose()?;
    db.read(move |conn| {
        students::get_existing(conn, &id)?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM rewards WHERE student_id = ?1 AND (?2 IS NULL OR term = ?2)
             ORDER BY created_at, id"
        ))?;
        let rewards = stmt
            .query_map((&id, &term), Reward::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Json(RewardList { rewards }))
    })
    .await
}

/// The reward record's schema (the enrollment answers carry rewards too).
pub fn reward_schema() -> Value {
    let text = json!({ "type": "string" });
    let maybe = json!({ "type": "string", "nullable": true });
    json!({ "type": "object", "additionalProperties": false,
        "required": ["id", "student_id", "points", "reason", "term", "idempotency_key", "created_at", "revoked_at"],
        "properties": {
            "id": text, "student_id": text, "points": { "type": "integer" }, "reason": text, "term": maybe,
            "idempotency_key": maybe, "created_at": text,
            "revoked_at": { "type": "string", "nullable": true, "description": "set once revoked: its points no longer count" } } })
}

/// The gamification routes and records as an OpenAPI piece.
pub fn api() -> Api {
    let student = || id_param("student id");
    let unknown_student = || ("404", error("not_found: no student with this id"));
    Api::new()
        .operation("/gamification/rewards", "post", op(
            "Grant points (an idempotency_key makes a retry answer the first grant)",
            vec![dry_run_param()], Some(body("NewReward")),
            [("201", created("granted", "Reward")),
             ("200", ok("already granted with this idempotency_key", "Reward")),
             ("409", error("idempotency_key_reused: the key was used for a different grant")),
             ("422", error("unknown_student: no student with this student_id"))]
                .into_iter()
                .chain(body_errors("points, reason, term, idempotency_key")),
        ))
        .operation("/gamification/rewards/{id}/revoke", "post", op(
            "Revoke a reward (idempotently): it stays on record, its points stop counting",
            vec![id_param("reward id"), dry_run_param()], None,
            [("200", ok("revoked", "Reward")), ("404", error("not_found: no reward with this id")),
             ("400", error(BAD_HEADER))],
        ))
        .operation("/students/{id}/points", "get", op(
            "A student's points, level and badges", vec![student()], None,
            [("200", ok("standing", "Points")), unknown_student()],
        ))
        .operation("/students/{id}/rewards", "get", op(
            "A student's rewards", vec![student(),
                json!({ "name": "term", "in": "query", "description": "only this term's rewards; empty: all",
                        "schema": fields::term_filter_schema() })],
            None,
            [("200", ok("rewards, oldest first", "RewardList")), unknown_student(),
             ("400", error("invalid_field: term; invalid_query: an unknown parameter"))],
        ))
        .schema("Reward", reward_schema())
        .schema("NewReward", json!({ "type": "object", "additionalProperties": false,
            "required": ["student_id", "points", "reason"], "properties": {
                "student_id": { "type": "string" },
                "points": { "type": "integer", "minimum": 1, "maximum": MAX_POINTS },
                "reason": fields::text_schema(200),
                "term": fields::nullable(fields::term_schema()),
                "idempotency_key": fields::nullable(fields::text_schema(200)) } }))
        .schema("RewardList", json!({ "type": "object", "additionalProperties": false,
            "required": ["rewards"], "properties": { "rewards": array_of("Reward") } }))
        .schema("Points", json!({ "type": "object", "additionalProperties": false,
            "required": ["student_id", "points", "level", "badges"], "properties": {
                "student_id": { "type": "string" }, "points": { "type": "integer" },
                "level": { "type": "integer", "minimum": 1 },
                "badges": { "type": "array", "items": { "type": "string",
                    "enum": BADGES.iter().map(|(_, name)| *name).collect::<Vec<_>>() } } } }))
}

#[cfg(test)]
mod tests {
    use super::Points;

    #[test]
    fn levels_and_badges_follow_the_total() {
        let p = Points::from_total("s".into(), 0);
        assert_eq!((p.level, p.badges.len()), (1, 0));
        let p = Points::from_total("s".into(), 150);
        assert_eq!(p.level, 2);
        assert_eq!(p.badges, ["first-steps", "achiever"]);
        let p = Points::from_total("s".into(), 1000);
        assert_eq!(p.level, 11);
        assert_eq!(p.badges.last().map(String::as_str), Some("legend"));
    }
}
