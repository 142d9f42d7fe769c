//! The README's "Try it" script, run as a newcomer pastes it: against `cargo run`'s defaults
//! (the binary with nothing configured, in a directory of its own), in bash, with curl and jq.
//! Every `#>` line of the script is what the command before it prints, and this compares them
//! all, in order.

use std::path::Path;
use std::process::Command;

use crate::out_of_the_box::{start, stop};

/// The script: the first `sh` block after the README's marker.
fn try_it_script() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let marked = readme
        .split_once("<!-- the Try it script:")
        .expect("the README marks its Try it script")
        .1;
    let block = marked
        .split_once("```sh\n")
        .expect("a sh block follows the marker")
        .1;
    block
        .split_once("\n```")
        .expect("the block ends")
        .0
        .to_owned()
}

/// Whether `program` is on `PATH`.
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test]
async fn the_readmes_try_it_script_prints_what_the_readme_says() {
    let script = try_it_script();
    let expected: Vec<String> = script
        .lines()
        .filter_map(|line| line.strip_prefix("#> "))
        .map(str::to_owned)
        .collect();
    assert!(expected.len() >= 10, "the script documents its outputs");
    let missing: Vec<&str> = ["bash", "curl", "jq"]
        .into_iter()
        .filter(|program| !installed(program))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the README's script needs {missing:?} in CI"
        );
        eprintln!("the README's script was not run: {missing:?} not installed");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let service = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || start(&dir)
    })
    .await
    .unwrap();
    let ran = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let address = service.address.clone();
        move || {
            Command::new("bash")
                .args(["-eu", "-o", "pipefail", "-c", &script])
                .current_dir(dir)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("NO_COLOR", "1")
                // The service `cargo run` serves, and its command line, as the script says.
                .env("QD", address)
                .env("QUICKDONATE", env!("CARGO_BIN_EXE_quickdonate"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&ran.stdout).into_owned();
    let errors = String::from_utf8_lossy(&ran.stderr).into_owned();
    assert!(
        ran.status.success(),
        "the script failed:\n{printed}\n{errors}"
    );
    let printed: Vec<&str> = printed.lines().collect();
    for (at, (printed, expected)) in printed.iter().zip(&expected).enumerate() {
        let expected = expected.as_str();
        assert_eq!(*printed, expected, "output line {} of the script", at + 1);
    }
    assert_eq!(
        printed.len(),
        expected.len(),
        "every line printed is documented:\n{printed:#?}"
    );
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
}
