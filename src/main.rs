use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match quickdonate::cli::Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quickdonate: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
