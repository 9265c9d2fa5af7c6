// `sqlx::migrate!` embeds ../migrations at compile time; without this a new
// migration file would not rebuild the broker and would silently be missing.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
