//! The container files: the image and Compose give the service a data directory its own user
//! can write, so that development mode (receipts as `.eml` files without `SMTP_URL`) works in a
//! container as it does from a checkout. Read as text (no YAML parser in the tree for this
//! alone), and checked with `docker-compose config` where that is installed.

use std::path::Path;
use std::process::Command;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The value of `KEY=value` (or `KEY value`) among the Dockerfile's `ENV` lines.
fn dockerfile_env(dockerfile: &str, key: &str) -> Option<String> {
    dockerfile
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// The lines of the `quickdonate` service in the Compose file, up to the next service or
/// top-level key.
fn compose_service<'a>(compose: &'a str, service: &str) -> Vec<&'a str> {
    let mut lines = compose
        .lines()
        .skip_while(|l| l.trim_end() != format!("  {service}:"));
    let mut found: Vec<&str> = lines.next().into_iter().collect();
    found.extend(lines.take_while(|l| l.is_empty() || l.starts_with("    ")));
    found
}

#[test]
fn compose_and_the_image_give_the_service_a_data_directory_its_user_owns() {
    let dockerfile = read("Dockerfile");
    let compose = read("docker-compose.yml");

    let data_dir = dockerfile_env(&dockerfile, "DATA_DIR").expect("the image sets DATA_DIR");
    assert!(data_dir.starts_with('/'), "an absolute path: {data_dir}");
    let user = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the image runs as a user of its own")
        .trim()
        .to_owned();
    assert_ne!(user, "root");
    // The directory is made and given to that user in the image.
    let made = dockerfile.contains(&format!("mkdir -p {data_dir}"));
    let owned = dockerfile
        .lines()
        .any(|l| l.contains("chown") && l.contains(&user) && l.contains(&data_dir));
    assert!(
        made && owned,
        "{data_dir} made and owned by {user}:\n{dockerfile}"
    );

    // Compose keeps it (a named volume, which starts out with the image's ownership) and says
    // the same place.
    let service = compose_service(&compose, "quickdonate").join("\n");
    assert!(
        service.contains(&format!("DATA_DIR: {data_dir}")),
        "{service}"
    );
    let volume = service
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("- ")?.strip_suffix(&format!(":{data_dir}")))
        .unwrap_or_else(|| panic!("a volume on {data_dir}: {service}"));
    let top_level: Vec<&str> = compose
        .lines()
        .skip_while(|l| *l != "volumes:")
        .skip(1)
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    assert!(
        top_level.contains(&volume),
        "{volume} is declared: {top_level:?}"
    );
    // Nothing left writing where the user cannot: the image's working directory is not its.
    assert!(!service.contains("DATA_DIR: .quickdonate"), "{service}");
}

/// Checked by Compose itself where `docker-compose` is installed (Debian: `apt-get install
/// docker-compose`, which `.ci/run` does): in CI (`CI` set) its absence is a failure; on a
/// machine without it, the test above has read the file.
#[test]
fn docker_compose_reads_the_compose_file_where_it_is_installed() {
    let output = match Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(output) => output,
        Err(_) if std::env::var_os("CI").is_none() => return,
        Err(error) => panic!("docker-compose is needed in CI: {error}"),
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // As Compose resolves it: the service's environment and its volume on DATA_DIR.
    let config = String::from_utf8_lossy(&output.stdout);
    let service = compose_service(&config, "quickdonate").join("\n");
    assert!(
        service.contains("DATA_DIR: /var/lib/quickdonate"),
        "{config}"
    );
    assert!(
        service.contains("- quickdonate-data:/var/lib/quickdonate"),
        "{config}"
    );
}
