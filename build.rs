//! Marks the PostgreSQL test suite as runnable when `TEST_DATABASE_URL` is
//! set at build time, and the MariaDB one when `TEST_MARIADB_URL` is;
//! otherwise their tests are reported as ignored, with the reason, so a
//! plain `cargo test` says the suite was skipped.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    println!("cargo::rustc-check-cfg=cfg(mariadb_tests)");
    println!("cargo::rerun-if-env-changed=TEST_MARIADB_URL");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
    if std::env::var_os("TEST_MARIADB_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=mariadb_tests");
    }
}
