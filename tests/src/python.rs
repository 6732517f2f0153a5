//! Checkers Herald did not write, in Python (from PyPI): `deploy/test.sh`
//! installs them in a virtualenv and points `HERALD_TEST_PYTHON` at it.

use std::process::Command;

/// The Python with the checkers installed.
pub fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs `script` with `input` on stdin; panics with its output on failure,
/// or with instructions when the checkers are not installed.
pub fn run(module: &str, script: &str, input: &[u8]) -> String {
    use std::io::Write;
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "{python} cannot import {module}: run the tests through deploy/test.sh, \
             which installs it (or set HERALD_TEST_PYTHON to a Python that has it)"
        ),
    }
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("input written");
    let out = child.wait_with_output().expect("python ends");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{module} check failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
