//! The real binary never simulates payments by accident: without a Stripe key it simulates only
//! on a loopback address, or when told to with `PAYMENTS=simulated`, and then says so loudly.
//! The Docker image and docker-compose run as production.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// The binary, run in `dir` with none of the settings a developer might have exported, on
/// every address of the machine.
fn quickdonate_beyond_loopback(dir: &Path) -> Command {
    let mut cmd = crate::out_of_the_box::quickdonate(dir);
    cmd.env("LISTEN_ADDR", "0.0.0.0:0");
    cmd
}

#[test]
fn without_a_stripe_key_it_refuses_to_start_beyond_loopback_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = quickdonate_beyond_loopback(dir.path()).spawn().unwrap();
    // Refusing takes a moment; starting would take Postgres and never end.
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        stop(&mut child);
        panic!("it started, simulating payments on 0.0.0.0");
    };

    assert!(!status.success(), "it exited cleanly");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("PAYMENTS:"), "{stderr}");
    assert!(stderr.contains("PAYMENTS=simulated"), "{stderr}");
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
    assert!(
        !dir.path().join(".quickdonate").exists(),
        "no Postgres was started"
    );
}

/// SIGTERM, then waits for the exit: graceful shutdown stops the local Postgres too.
fn stop(child: &mut Child) -> ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    panic!("the service did not stop on SIGTERM");
}

#[tokio::test]
async fn payments_simulated_starts_beyond_loopback_and_warns_with_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = quickdonate_beyond_loopback(dir.path())
        .env("PAYMENTS", "simulated")
        .spawn()
        .unwrap();

    let stdout = child.stdout.take().unwrap();
    let (log, address) = tokio::task::spawn_blocking(move || {
        let mut log = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let address = rest.split_whitespace().next().unwrap().to_owned();
                return (log, Some(address));
            }
        }
        (log, None)
    })
    .await
    .unwrap();
    let Some(address) = address else {
        child.kill().ok();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).ok();
        panic!("the service never listened:\n{log}\n{stderr}");
    };
    assert!(address.starts_with("0.0.0.0:"), "{address}");
    let warning = log
        .lines()
        .find(|line| line.contains("WARN") && line.contains(&address))
        .unwrap_or_else(|| panic!("no warning names {address}:\n{log}"));
    assert!(warning.contains("SIMULATED PAYMENTS"), "{warning}");
    assert!(warning.contains("No money moves"), "{warning}");

    // It serves; once it has answered, its SIGTERM handler is surely in place.
    let port = address.rsplit(':').next().unwrap();
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let status = tokio::task::spawn_blocking(move || stop(&mut child))
        .await
        .unwrap();
    assert!(status.success(), "the service exited with {status}");
}

#[test]
fn the_docker_image_and_compose_run_as_production() {
    let file = |name: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
    };
    let dockerfile = file("Dockerfile");
    let runtime_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        runtime_stage.lines().any(|line| line.starts_with("ENV ")
            && line.split_whitespace().any(|kv| kv == "APP_ENV=production")),
        "the image's ENV sets APP_ENV=production:\n{runtime_stage}"
    );

    let compose = file("docker-compose.yml");
    let app_env: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("APP_ENV:"))
        .collect();
    assert_eq!(app_env, ["APP_ENV: ${APP_ENV:-production}"]);
}
