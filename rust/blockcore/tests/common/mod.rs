//! Helpers shared by the interop tests: running `qemu-img`/`qemu-io`, and real QEMU over QMP.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `qemu-img` runs; tests skip (printing why) when it does not.
pub fn have_qemu() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: qemu-img not found");
    }
    ok
}

/// Runs `cmd args`; returns success and stdout + stderr.
pub fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `qemu-img args`, which must succeed.
pub fn qemu_img(args: &[&str]) -> String {
    let (ok, text) = run("qemu-img", args);
    assert!(ok, "qemu-img {args:?} failed: {text}");
    text
}

/// Runs `qemu-io` commands on `path` (which must all succeed).
pub fn qemu_io(path: &Path, cmds: &[&str]) {
    let mut args: Vec<&str> = Vec::new();
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(s(path));
    let (ok, text) = run("qemu-io", &args);
    assert!(ok && !text.contains("failed"), "qemu-io {args:?}: {text}");
}

/// The path as `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img create -f qcow2 [-o opts] path size`.
pub fn create_with_qemu(path: &Path, size: u64, opts: &str) {
    let size = size.to_string();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([s(path), size.as_str()]);
    qemu_img(&args);
}

/// `qemu-img check` exits 0 and finds nothing wrong (no leaks, no corruptions).
pub fn assert_check_clean(path: &Path) {
    let (ok, text) = run("qemu-img", &["check", s(path)]);
    assert!(ok, "qemu-img check failed: {text}");
    assert!(
        text.contains("No errors were found on the image."),
        "check: {text}"
    );
}

/// `qemu-img compare` finds the guest contents identical.
pub fn assert_identical(a: &Path, b: &Path) {
    let (ok, text) = run("qemu-img", &["compare", s(a), s(b)]);
    assert!(ok, "qemu-img compare: {text}");
    assert!(text.contains("Images are identical."), "compare: {text}");
}

/// Starts real QEMU with no guest, QMP on stdio (stdin and stdout piped, stderr dropped) and
/// `extra` arguments (e.g. `-blockdev ...`). QEMU keeps running when its input ends: send
/// `quit` or kill it.
pub fn spawn_qemu(extra: &[&str]) -> std::io::Result<std::process::Child> {
    Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-qmp",
            "stdio",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
}

/// Runs real QEMU through `commands` (JSON lines, after `qmp_capabilities`, before `quit`);
/// returns the transcript, or `None` without the emulator.
pub fn qmp_session(commands: &[String]) -> Option<String> {
    let mut child = spawn_qemu(&[]).ok()?;
    let mut input = String::from("{\"execute\":\"qmp_capabilities\"}\n");
    for c in commands {
        input += c;
        input.push('\n');
    }
    input += "{\"execute\":\"quit\"}\n";
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// QMP `blockdev-add` of a qcow2 node `name` over file `path`.
pub fn qmp_add_qcow2(name: &str, path: &Path, read_only: bool) -> String {
    format!(
        "{{\"execute\":\"blockdev-add\",\"arguments\":{{\"driver\":\"qcow2\",\"node-name\":\"{name}\",\"read-only\":{read_only},\"file\":{{\"driver\":\"file\",\"filename\":\"{}\"}}}}}}",
        s(path)
    )
}
