//! The finance service: invoices extracted from the monolith, same routes and answers, over
//! a database of its own that also keeps a read model of the students (fed by the sync
//! relay) to check who an invoice is for.

use domains::Kind;
use domains::service::DataService;
use participant::Migration;

pub const SERVICE: DataService = DataService {
    origin: "finance",
    migrations: &[
        Migration {
            version: 1,
            name: "students read model",
            sql: domains::students::SCHEMA,
        },
        Migration {
            version: 2,
            name: "invoices",
            sql: domains::finance::SCHEMA,
        },
    ],
    holds: &[Kind::Student, Kind::Invoice],
    routes: domains::finance::routes,
    api: domains::finance::api,
};
