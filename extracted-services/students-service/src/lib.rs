//! The students service: the students domain extracted from the monolith, same routes and
//! answers, over a database of its own.

use domains::Kind;
use domains::service::DataService;
use participant::Migration;

pub const SERVICE: DataService = DataService {
    origin: "students",
    migrations: &[Migration {
        version: 1,
        name: "students",
        sql: domains::students::SCHEMA,
    }],
    holds: &[Kind::Student],
    routes: domains::students::routes,
    api: domains::students::api,
};
