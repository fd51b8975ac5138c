//! The monolith's shared schema: every domain in one database, created by versioned
//! migrations. Cross-domain references are checked by the code that writes them, not by
//! foreign keys, because replicated events from the services may arrive in any order
//! across domains.

use participant::Migration;

pub const COMPONENT: &str = "legacy";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "students",
        sql: "
            CREATE TABLE students (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            );
        ",
    },
    Migration {
        version: 2,
        name: "finance invoices",
        sql: "
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
        ",
    },
    Migration {
        version: 3,
        name: "gamification rewards",
        sql: "
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
        ",
    },
    Migration {
        version: 4,
        name: "enrollments",
        sql: "
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
        ",
    },
];
