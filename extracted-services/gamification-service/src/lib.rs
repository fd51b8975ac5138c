//! The gamification service: rewards and points extracted from the monolith, same routes and
//! answers, over a database of its own that also keeps a read model of the students (fed by
//! the sync relay).

use domains::Kind;
use domains::service::DataService;
use participant::Migration;

pub const SERVICE: DataService = DataService {
    origin: "gamification",
    migrations: &[
        Migration {
            version: 1,
            name: "students read model",
            sql: domains::students::SCHEMA,
        },
        Migration {
            version: 2,
            name: "rewards",
            sql: domains::gamification::SCHEMA,
        },
        Migration {
            version: 3,
            name: "reward revocation",
            sql: domains::gamification::REVOCATION,
        },
    ],
    holds: &[Kind::Student, Kind::Reward],
    routes: domains::gamification::routes,
    api: domains::gamification::api,
};
