//! `sqlx::migrate!` embeds the migration files when the crate compiles; a
//! new or changed file must compile it again (sqlx's advice).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations-sqlite");
}
