//! The peers' tools, installed by the setup from their registries into a private directory
//! (`--supervisor-tools`, kept between runs): PM2 with `npm install --prefix`, gunicorn and
//! circus with pip in a virtualenv. Versions are pinned so two reports compare the same
//! programs. A tool that cannot be found or installed leaves its rows out with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PM2 from npm.
pub const PM2: &str = "pm2@7.0.4";
/// gunicorn and circus from PyPI.
pub const PIP: [&str; 2] = ["gunicorn==27.0.1", "circus==0.19.0"];

/// Paths of the tools, each `Err(why)` when it is missing.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `handover` (the CLI).
    pub handover: Result<PathBuf, String>,
    /// `node`.
    pub node: Result<PathBuf, String>,
    /// `python3` (system, for the stdlib worker).
    pub python: Result<PathBuf, String>,
    /// `pm2`.
    pub pm2: Result<PathBuf, String>,
    /// `gunicorn` in the virtualenv.
    pub gunicorn: Result<PathBuf, String>,
    /// `circusd` in the virtualenv (circusctl next to it).
    pub circusd: Result<PathBuf, String>,
    /// `nginx`.
    pub nginx: Result<PathBuf, String>,
    /// What was installed, with versions, for the report.
    pub notes: Vec<String>,
}

/// `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn found(p: PathBuf, what: &str) -> Result<PathBuf, String> {
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{what}: {} is missing", p.display()))
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    crate::plan::progress(&format!("supervisors: {what} ..."));
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(3).collect();
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    ))
}

fn npm_pm2(dir: &Path) -> Result<PathBuf, String> {
    let bin = dir.join("npm/node_modules/.bin/pm2");
    if !bin.is_file() {
        let npm = on_path("npm").ok_or("`npm` not found (apt-get install npm)")?;
        run(
            Command::new(npm)
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(dir.join("npm"))
                .arg(PM2),
            &format!("npm install {PM2}"),
        )?;
    }
    found(bin, "pm2")
}

fn venv(dir: &Path) -> Result<PathBuf, String> {
    let venv = dir.join("venv");
    let bin = venv.join("bin");
    if !bin.join("circusd").is_file() || !bin.join("gunicorn").is_file() {
        let python = on_path("python3").ok_or("`python3` not found")?;
        if !bin.join("pip").is_file() {
            run(
                Command::new(python).args(["-m", "venv"]).arg(&venv),
                "python3 -m venv (apt-get install python3-venv)",
            )?;
        }
        run(
            Command::new(bin.join("pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .args(PIP),
            &format!("pip install {}", PIP.join(" ")),
        )?;
    }
    Ok(bin)
}

fn version_of(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Finds or installs everything; never fails, a missing tool is an `Err` with the reason.
pub fn setup(dir: &Path, handover: PathBuf) -> Tools {
    let _ = std::fs::create_dir_all(dir);
    // Absolute: gunicorn re-executes itself by its `argv[0]` from the directory it was started
    // in *after* `--chdir`, so a relative path silently fails every binary upgrade (the old
    // master logs "Handling signal: usr2" and no new master ever starts).
    let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir = absolute.as_path();
    let node: Result<PathBuf, String> =
        on_path("node").ok_or_else(|| "`node` not found (apt-get install nodejs)".into());
    let pm2 = match &node {
        Ok(_) => npm_pm2(dir),
        Err(e) => Err(e.clone()),
    };
    let venv = venv(dir);
    let in_venv = |name: &str| match &venv {
        Ok(bin) => found(bin.join(name), name),
        Err(e) => Err(e.clone()),
    };
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "nginx not found (apt-get install nginx)".to_string());
    let mut tools = Tools {
        handover: found(handover, "handover (cargo build --release -p handover-cli)"),
        python: on_path("python3").ok_or_else(|| "`python3` not found".into()),
        pm2,
        gunicorn: in_venv("gunicorn"),
        circusd: in_venv("circusd"),
        nginx,
        node,
        notes: Vec::new(),
    };
    let mut notes = Vec::new();
    for (name, bin, arg) in [
        ("node", &tools.node, "--version"),
        ("pm2", &tools.pm2, "--version"),
        ("gunicorn", &tools.gunicorn, "--version"),
        ("circusd", &tools.circusd, "--version"),
        ("nginx", &tools.nginx, "-v"),
    ] {
        notes.push(match bin {
            // `pm2 --version` starts PM2's daemon in $PM2_HOME: keep it in the private dir.
            Ok(b) if name == "pm2" => format!("pm2 {PM2} at {}", b.display()),
            Ok(b) => format!("{name} {} ({})", version_of(b, arg), b.display()),
            Err(e) => format!("{name}: {e}"),
        });
    }
    tools.notes = notes;
    tools
}
