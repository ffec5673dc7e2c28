//! The README's quick start leaves nothing behind that git would pick up: the data directory
//! it names is the server's default and is ignored by the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// The data directory the README's quick start says the server keeps its data in.
fn quick_start_data_dir(readme: &str) -> String {
    let quick_start = readme
        .split_once("## Quick start")
        .expect("README has a quick start")
        .1;
    let named = quick_start
        .split_once("keeps its data in `")
        .expect("the quick start names the data directory")
        .1;
    let dir = named.split_once('`').expect("closing backquote").0;
    dir.trim_start_matches("./")
        .trim_end_matches('/')
        .to_string()
}

/// The `--data-dir` default that `ingest-server --help` prints.
fn default_data_dir() -> String {
    let help = Command::new(env!("CARGO_BIN_EXE_ingest-server"))
        .arg("--help")
        .env_remove("INGEST_DATA_DIR")
        .output()
        .expect("ingest-server --help runs");
    assert!(help.status.success(), "{help:?}");
    let help = String::from_utf8(help.stdout).expect("UTF-8 help");
    let flag = help
        .split_once("--data-dir")
        .expect("--help lists --data-dir")
        .1;
    let default = flag
        .split_once("[default: ")
        .expect("--data-dir has a default")
        .1;
    default
        .split_once(']')
        .expect("closing bracket")
        .0
        .to_string()
}

/// Whether a line of a root `.gitignore` ignores the directory `dir` at the root.
fn ignores(pattern: &str, dir: &str) -> bool {
    let pattern = pattern.trim();
    let pattern = pattern.strip_suffix('/').unwrap_or(pattern);
    pattern == dir || pattern.strip_prefix('/') == Some(dir)
}

#[test]
fn the_quick_start_data_dir_is_git_ignored() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dir = quick_start_data_dir(&readme);
    assert_eq!(
        dir,
        default_data_dir(),
        "the README's quick-start data directory is the server's default"
    );
    let gitignore = std::fs::read_to_string(root.join(".gitignore")).expect(".gitignore");
    assert!(
        gitignore.lines().any(|line| ignores(line, &dir)),
        "{dir}/ (the quick start's data directory) is not in .gitignore:\n{gitignore}"
    );
    // Where the checkout is a git work tree and git is installed, git itself agrees.
    let check = Command::new("git")
        .args(["check-ignore", "--quiet", "--no-index"])
        .arg(format!("{dir}/CURRENT"))
        .current_dir(&root)
        .output();
    if let Ok(check) = check {
        let inside = Command::new("git")
            .args(["rev-parse", "--is-inside-work-tree"])
            .current_dir(&root)
            .output()
            .is_ok_and(|o| o.status.success());
        if inside {
            assert!(
                check.status.success(),
                "git check-ignore does not ignore {dir}/: {check:?}"
            );
        }
    }
}
