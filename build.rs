//! Records the git commit for `arc-gateway version`, and compiles the XDP program
//! (`src/xdp/arc_xdp.bpf.c`) with clang when the `xdp` feature is on. Without clang the build
//! still succeeds: the reason is passed to the crate, which reports XDP as unavailable.
use std::path::{Path, PathBuf};
use std::process::Command;

const XDP_SOURCE: &str = "src/xdp/arc_xdp.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        && out.status.success()
    {
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rustc-env=ARC_GIT_COMMIT={commit}");
    }
    xdp();
}

/// Sets `cfg(arc_xdp_object)` and `ARC_XDP_OBJECT` when the program compiled, otherwise
/// `ARC_XDP_UNAVAILABLE` with the reason.
fn xdp() {
    println!("cargo:rustc-check-cfg=cfg(arc_xdp_object)");
    println!("cargo:rerun-if-changed={XDP_SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_XDP").is_none() {
        println!("cargo:rustc-env=ARC_XDP_UNAVAILABLE=built without the `xdp` cargo feature");
        return;
    }
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        println!("cargo:rustc-env=ARC_XDP_UNAVAILABLE=OUT_DIR is not set");
        return;
    };
    let Some(clang) = find_clang() else {
        println!("cargo:warning=clang not found: XDP support is not built in");
        println!(
            "cargo:rustc-env=ARC_XDP_UNAVAILABLE=built without clang, the XDP program was not compiled"
        );
        return;
    };
    let object = out_dir.join("arc_xdp.o");
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    // Debian keeps `asm/` headers under the multiarch directory (gcc-multilib links them).
    for dir in [
        "/usr/include/x86_64-linux-gnu",
        "/usr/include/aarch64-linux-gnu",
    ] {
        if Path::new(dir).join("asm").is_dir() {
            cmd.arg(format!("-I{dir}"));
            break;
        }
    }
    cmd.arg("-c").arg(XDP_SOURCE).arg("-o").arg(&object);
    match cmd.output() {
        Ok(out) if out.status.success() => {
            println!("cargo:rustc-cfg=arc_xdp_object");
            println!("cargo:rustc-env=ARC_XDP_OBJECT={}", object.display());
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr
                .lines()
                .next()
                .unwrap_or("no output")
                .replace('=', " ");
            println!("cargo:warning=compiling {XDP_SOURCE} failed: {first}");
            println!(
                "cargo:rustc-env=ARC_XDP_UNAVAILABLE=the XDP program failed to compile at build time: {first}"
            );
        }
        Err(e) => {
            println!(
                "cargo:rustc-env=ARC_XDP_UNAVAILABLE=running {} failed at build time: {e}",
                clang.display()
            );
        }
    }
}

fn find_clang() -> Option<PathBuf> {
    if let Some(c) = std::env::var_os("CLANG") {
        return Some(PathBuf::from(c));
    }
    let candidates = [
        "clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14",
    ];
    candidates.iter().find_map(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from(name))
    })
}
