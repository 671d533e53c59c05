fn main() -> std::process::ExitCode {
    webfence::cli::main()
}
