//! Test only: berth-vmm with a hook that, once the main thread's seccomp filter is in
//! (and before the guest runs), makes the system call `BERTH_VMM_TEST_FORBIDDEN` names:
//! `execve` (of /bin/true) or `open` (of /etc/passwd, a host path). The filter must stop
//! the monitor with its log line; the lab test in tests/tests/vmm.rs checks it does.

fn forbidden() {
    match std::env::var("BERTH_VMM_TEST_FORBIDDEN").as_deref() {
        Ok("execve") => {
            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: valid NUL-terminated strings and NULL-terminated arrays.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            eprintln!("vmm-forbidden-syscall: execve came back");
        }
        Ok("open") => match std::fs::File::open("/etc/passwd") {
            Ok(_) => eprintln!("vmm-forbidden-syscall: /etc/passwd opened"),
            Err(e) => eprintln!("vmm-forbidden-syscall: open failed: {e}"),
        },
        _ => {}
    }
}

fn main() -> std::process::ExitCode {
    berth_vmm::cli::main(std::env::args().skip(1).collect(), Some(forbidden))
}
