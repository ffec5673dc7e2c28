//! Sets `INGEST_REVISION`, the commit the server is built from (`ingest_build_info`): the
//! variable of the same name when the build sets it (a container build without `.git`), else
//! `git rev-parse --short=12 HEAD`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=INGEST_REVISION");
    let revision = std::env::var("INGEST_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            Some(text.trim().to_string()).filter(|r| out.status.success() && !r.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    if let Ok(git_dir) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        let dir = String::from_utf8_lossy(&git_dir.stdout).trim().to_string();
        if git_dir.status.success() && !dir.is_empty() {
            // HEAD moves on checkout; the branch's ref on commit.
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/refs/heads");
        }
    }
    println!("cargo:rustc-env=INGEST_REVISION={revision}");
}
