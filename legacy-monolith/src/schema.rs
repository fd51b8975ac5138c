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
        sql: domains::students::SCHEMA,
    },
    Migration {
        version: 2,
        name: "finance invoices",
        sql: domains::finance::SCHEMA,
    },
    Migration {
        version: 3,
        name: "gamification rewards",
        sql: domains::gamification::SCHEMA,
    },
    Migration {
        version: 4,
        name: "enrollments",
        sql: domains::enrollments::SCHEMA,
    },
    Migration {
        version: 5,
        name: "reward revocation",
        sql: domains::gamification::REVOCATION,
    },
];
