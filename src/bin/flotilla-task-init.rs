//! The task shim alone: `flotilla __task-init` in a small binary, so each launch execs (and
//! relocates and maps) a fraction of the full flotilla binary.

fn main() {
    let args: Vec<String> = std::env::args_os().skip(1).map(|arg| arg.to_string_lossy().into_owned()).collect();
    std::process::exit(flotilla_actors::agent::driver::isolation::task_init_main(&args));
}
