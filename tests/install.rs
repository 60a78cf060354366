//! Installing and operating rlclaw, driven through the real `rlclaw` binary: `init` (and
//! running it again), the service units, the Claude Code and Codex hooks, the OpenClaw plugin
//! install with a fake `openclaw`, and `doctor`. Every path that depends on the home folder is
//! redirected into a temporary folder (HOME, XDG_*), so no test touches the real home.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use rlclaw_tests::bridge::{Bridge, rlclaw_bin};
use serde_json::{Value, json};

/// A temporary home folder; removed when dropped.
struct Home {
    root: PathBuf,
}

impl Home {
    fn new() -> Home {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "rlclaw-install-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(root.join("home")).unwrap();
        Home { root }
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.home().join(rel)
    }

    /// A command with every home-dependent path inside this folder.
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(rlclaw_bin());
        let home = self.home();
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("RLCLAW_LOG", "warn")
            .env("USER", "tester");
        for var in [
            "OPENCLAW_CONFIG_PATH",
            "OPENCLAW_STATE_DIR",
            "OPENCLAW_HOME",
            "CLAUDE_CONFIG_DIR",
            "CODEX_HOME",
            "RLCLAW_DATA_DIR",
            "RLCLAW_BRIDGE",
            "RLCLAW_PLUGIN_DIR",
            "RLCLAW_MODELS",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("rlclaw runs")
    }

    fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rlclaw runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// A stand-in model file (init only checks that it is a GGUF path that exists).
    fn model(&self) -> PathBuf {
        let path = self.root.join("models/tiny.gguf");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"GGUF").unwrap();
        path
    }

    /// A fake `openclaw` that records its arguments and environment, and lists the plugin as
    /// loaded.
    fn fake_openclaw(&self) -> PathBuf {
        let dir = self.root.join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("openclaw");
        std::fs::write(
            &path,
            r#"#!/bin/sh
here=$(dirname "$0")
printf '%s\n' "$*" >> "$here/openclaw-args.log"
printf '%s\n' "$OPENCLAW_CONFIG_PATH" >> "$here/openclaw-env.log"
if [ "$1 $2" = "plugins list" ]; then
  echo '{"plugins":[{"id":"rlclaw","enabled":true,"status":"loaded"}]}'
fi
exit 0
"#,
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A plugin folder shaped like plugin/openclaw (the real manifest and package.json, and a
    /// stand-in for the generated component glue, which a source checkout builds with npm).
    fn plugin_dir(&self) -> PathBuf {
        let src = rlclaw_tests::bridge::workspace_root().join("plugin/openclaw");
        let dir = self.root.join("plugin-openclaw");
        std::fs::create_dir_all(dir.join("generated")).unwrap();
        for f in ["openclaw.plugin.json", "package.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("generated/rlclaw.js"), "export {};\n").unwrap();
        dir
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    let t = text(&out);
    assert!(out.status.success(), "rlclaw failed ({}):\n{t}", out.status);
    t
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn init_writes_key_and_config_and_a_rerun_changes_only_what_differs() {
    let h = Home::new();
    let model = h.model();
    let data = h.path("data");
    let d = data.to_str().unwrap();
    let m = model.to_str().unwrap();
    let first = ok(h.run(&[
        "init",
        "--yes",
        "--no-service",
        "--no-plugin",
        "--data-dir",
        d,
        "--model",
        m,
        "--preset",
        "careful",
        "--admin",
        "42",
        "--rater",
        "7",
    ]));
    assert!(
        first.contains("rlclaw uninstall"),
        "says how to undo:\n{first}"
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("key")), 0o600);
    assert_eq!(mode(&data.join("config.toml")), 0o600);
    let key = std::fs::read_to_string(data.join("key")).unwrap();
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    let parsed: toml_value::Doc = toml_value::parse(&config);
    assert_eq!(parsed.get("admins"), Some("[\"42\"]".into()), "{config}");
    assert_eq!(parsed.get("raters"), Some("[\"7\"]".into()), "{config}");
    assert_eq!(parsed.get("preset"), Some("\"careful\"".into()), "{config}");
    assert_eq!(parsed.get("model"), Some(format!("\"{m}\"")), "{config}");

    // The same again: nothing changes, byte for byte.
    let again = ok(h.run(&[
        "init",
        "--yes",
        "--no-service",
        "--no-plugin",
        "--data-dir",
        d,
        "--model",
        m,
        "--preset",
        "careful",
        "--admin",
        "42",
        "--rater",
        "7",
    ]));
    assert!(again.contains("unchanged"), "{again}");
    assert_eq!(
        std::fs::read_to_string(data.join("config.toml")).unwrap(),
        config
    );
    assert_eq!(std::fs::read_to_string(data.join("key")).unwrap(), key);

    // A person's own edits survive a rerun that changes one setting; flags not given keep
    // their current values.
    let edited = format!("# my note\nadmin_per_minute = 3\n{config}");
    std::fs::write(data.join("config.toml"), &edited).unwrap();
    ok(h.run(&[
        "init",
        "--yes",
        "--no-service",
        "--no-plugin",
        "--data-dir",
        d,
        "--preset",
        "aggressive",
    ]));
    let now = std::fs::read_to_string(data.join("config.toml")).unwrap();
    assert!(
        now.starts_with("# my note\nadmin_per_minute = 3\n"),
        "{now}"
    );
    let parsed = toml_value::parse(&now);
    assert_eq!(parsed.get("preset"), Some("\"aggressive\"".into()), "{now}");
    assert_eq!(parsed.get("admins"), Some("[\"42\"]".into()), "{now}");
    assert_eq!(parsed.get("model"), Some(format!("\"{m}\"")), "{now}");

    // Bad input is a clear error that changes nothing.
    for bad in [
        vec!["--model", "/nonexistent/model.gguf"],
        vec!["--preset", "reckless"],
        vec!["--feedback-mode", "carrier_pigeon"],
        vec!["--admin", ""],
    ] {
        let mut args = vec![
            "init",
            "--yes",
            "--no-service",
            "--no-plugin",
            "--data-dir",
            d,
        ];
        args.extend(bad.iter().copied());
        let out = h.run(&args);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(!text(&out).trim().is_empty());
        assert_eq!(
            std::fs::read_to_string(data.join("config.toml")).unwrap(),
            now
        );
    }
}

/// A tiny reader for the few top-level and [training] keys the test looks at.
mod toml_value {
    pub struct Doc(Vec<(String, String)>);
    impl Doc {
        pub fn get(&self, key: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        }
    }
    pub fn parse(text: &str) -> Doc {
        Doc(text
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    }
}

#[test]
fn init_on_a_running_bridge_keeps_its_key_and_every_rating() {
    let h = Home::new();
    let bridge = Bridge::start("");
    let c = bridge.client();
    let r = c.post(
        "/v1/turns",
        json!({"turn_id": "t1", "session": "s", "channel": "telegram", "sender": "42",
               "prompt": "2+2?", "response": "4"}),
    );
    assert_eq!(r.status, 201);
    let r = c.post(
        "/v1/ratings",
        json!({"event_id": "e1", "target": {"turn_id": "t1"}, "rater": "42", "value": 1.0, "source": "command"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    let d = bridge.data_dir().to_str().unwrap().to_owned();
    let model = h.model();
    let m = model.to_str().unwrap();
    for preset in ["balanced", "careful"] {
        ok(h.run(&[
            "init",
            "--yes",
            "--no-service",
            "--no-plugin",
            "--data-dir",
            &d,
            "--model",
            m,
            "--preset",
            preset,
        ]));
        assert_eq!(
            std::fs::read_to_string(bridge.data_dir().join("key"))
                .unwrap()
                .trim(),
            bridge.key_hex()
        );
        assert_eq!(
            count(
                &bridge.db_path(),
                "SELECT count(*) FROM ratings WHERE removed_at IS NULL"
            ),
            1
        );
        assert_eq!(count(&bridge.db_path(), "SELECT count(*) FROM turns"), 1);
    }
    // The running bridge still answers with the same key.
    assert_eq!(c.call("GET", "/v1/status", &Value::Null).status, 200);
}

#[test]
fn the_rendered_systemd_unit_passes_systemd_analyze_verify() {
    let h = Home::new();
    let data = h.path("data");
    let out = ok(h.run(&[
        "service",
        "render",
        "--manager",
        "systemd",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    assert!(
        out.contains(&format!(
            "ExecStart={} serve --data-dir {}",
            rlclaw_bin().display(),
            data.display()
        )) || out.contains("ExecStart=\""),
        "{out}"
    );
    assert!(out.contains("Restart=on-failure"));
    assert!(out.contains(&format!("ReadWritePaths={}", data.display())));
    let unit_dir = h.root.join("units");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let unit = unit_dir.join("rlclaw.service");
    std::fs::write(&unit, &out).unwrap();
    let runtime = h.root.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(&unit)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output();
    let verify = match verify {
        Ok(v) => v,
        Err(e) => panic!(
            "systemd-analyze is missing ({e}): install the `systemd` package (Debian/Ubuntu: \
             apt-get install systemd) so the unit can be verified"
        ),
    };
    let report = text(&verify);
    assert!(
        verify.status.success(),
        "systemd-analyze verify failed:\n{report}\n--- unit:\n{out}"
    );
    let about_ours: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("rlclaw.service"))
        .collect();
    assert!(
        about_ours.is_empty(),
        "systemd-analyze complains:\n{report}"
    );
}

#[test]
fn the_rendered_launchd_plist_parses_and_has_what_launchd_needs() {
    let h = Home::new();
    let data = h.path("data");
    let out = h.run(&[
        "service",
        "render",
        "--manager",
        "launchd",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let xml = String::from_utf8(out.stdout).unwrap();
    let value = plist::Value::from_reader_xml(xml.as_bytes()).expect("the plist parses");
    let dict = value.as_dictionary().expect("a dictionary");
    assert_eq!(
        dict.get("Label").and_then(|v| v.as_string()),
        Some("dev.rlclaw.bridge")
    );
    let args: Vec<&str> = dict
        .get("ProgramArguments")
        .and_then(|v| v.as_array())
        .expect("ProgramArguments")
        .iter()
        .filter_map(|v| v.as_string())
        .collect();
    let bin = rlclaw_bin();
    assert_eq!(
        args,
        vec![
            bin.to_str().unwrap(),
            "serve",
            "--data-dir",
            data.to_str().unwrap()
        ]
    );
    assert!(dict.get("KeepAlive").is_some(), "KeepAlive");
    assert_eq!(
        dict.get("RunAtLoad").and_then(|v| v.as_boolean()),
        Some(true)
    );
    let logs = h.path("Library/Logs/rlclaw");
    let out_path = dict
        .get("StandardOutPath")
        .and_then(|v| v.as_string())
        .unwrap();
    assert!(Path::new(out_path).starts_with(&logs), "{out_path}");
    let err_path = dict
        .get("StandardErrorPath")
        .and_then(|v| v.as_string())
        .unwrap();
    assert!(Path::new(err_path).starts_with(&logs), "{err_path}");
}

/// Whether `systemctl --user` reaches a user manager here.
fn user_manager() -> Result<(), String> {
    match Command::new("systemctl")
        .args(["--user", "show-environment"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn the_user_unit_starts_for_real_where_a_user_manager_runs_else_the_dry_run_says_what_it_would_do()
{
    let h = Home::new();
    match user_manager() {
        Ok(()) => start_unit_for_real(&h),
        Err(why) => {
            println!(
                "no systemd user manager here ({why}): cannot start the unit for real; checking \
                 the dry run and the refusal instead"
            );
            let data = h.path("data");
            let d = data.to_str().unwrap();
            let out = ok(h.run(&["service", "install", "--dry-run", "--data-dir", d]));
            let unit_path = h.path(".config/systemd/user/rlclaw.service");
            assert!(
                out.contains(&format!("Would write {}", unit_path.display())),
                "{out}"
            );
            assert!(out.contains("ExecStart="), "{out}");
            assert!(
                out.contains("systemctl --user enable --now rlclaw.service"),
                "{out}"
            );
            assert!(out.contains("no systemd user manager"), "{out}");
            assert!(!unit_path.exists(), "a dry run wrote the unit");
            let refused = h.run(&["service", "install", "--data-dir", d]);
            assert!(!refused.status.success());
            assert!(
                text(&refused).contains("no systemd user manager"),
                "{}",
                text(&refused)
            );
            assert!(!unit_path.exists(), "a refused install wrote the unit");
            let status = ok(h.run(&["service", "status", "--data-dir", d]));
            assert!(status.contains("not installed"), "{status}");
        }
    }
}

/// Starts the rendered unit under the real user manager, as a runtime unit (in
/// $XDG_RUNTIME_DIR/systemd/user, not in the home folder) on its own port, and checks that the
/// bridge answers; stops and removes it afterwards.
fn start_unit_for_real(h: &Home) {
    let runtime = std::env::var("XDG_RUNTIME_DIR").expect("a user manager sets XDG_RUNTIME_DIR");
    // Outside /tmp: the unit has PrivateTmp=yes.
    let data =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rlclaw-unit-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let port = rlclaw_tests::bridge::free_port();
    let unit = ok(h.run(&[
        "service",
        "render",
        "--manager",
        "systemd",
        "--data-dir",
        data.to_str().unwrap(),
    ]))
    .replacen(
        &format!("--data-dir {}", data.display()),
        &format!("--data-dir {} --listen 127.0.0.1:{port}", data.display()),
        1,
    );
    let name = format!("rlclaw-test-{}.service", std::process::id());
    let dir = Path::new(&runtime).join("systemd/user");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(&name);
    std::fs::write(&path, unit).unwrap();
    let sc = |args: &[&str]| {
        Command::new("systemctl")
            .arg("--user")
            .args(args)
            .output()
            .unwrap()
    };
    sc(&["daemon-reload"]);
    let started = sc(&["start", &name]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up = false;
    for _ in 0..150 {
        if rlclaw_tests::http::send(addr, "GET", "/healthz", &[], rlclaw_tests::http::Body::None)
            .is_ok_and(|r| r.status == 200)
        {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let state = text(&sc(&["status", "--no-pager", &name]));
    sc(&["stop", &name]);
    let _ = std::fs::remove_file(&path);
    sc(&["daemon-reload"]);
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        started.status.success(),
        "systemctl --user start failed: {}",
        text(&started)
    );
    assert!(
        up,
        "the unit started but the bridge did not answer:\n{state}"
    );
    println!("started the rendered unit under the user manager; the bridge answered");
}

#[test]
fn hooks_install_merges_into_existing_settings_and_is_idempotent() {
    let h = Home::new();
    let settings = h.path(".claude/settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    let original = json!({
        "model": "opus",
        "permissions": {"allow": ["Bash(ls:*)"]},
        "hooks": {
            "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
            "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "audit"}]}]
        }
    });
    std::fs::write(&settings, serde_json::to_string_pretty(&original).unwrap()).unwrap();
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = h.path("data");
    let d = d.to_str().unwrap();
    ok(h.run(&["hooks", "install", "claude-code", "--data-dir", d]));
    let after = read_json(&settings);
    assert_eq!(after["model"], "opus");
    assert_eq!(after["permissions"], original["permissions"]);
    assert_eq!(
        after["hooks"]["PreToolUse"],
        original["hooks"]["PreToolUse"]
    );
    let stop = after["hooks"]["Stop"].as_array().unwrap();
    assert_eq!(stop.len(), 2);
    assert_eq!(stop[0], original["hooks"]["Stop"][0]);
    let command = stop[1]["hooks"][0]["command"].as_str().unwrap();
    assert!(
        command.contains(" hook claude-code --data-dir "),
        "{command}"
    );
    assert_eq!(mode(&settings), 0o644, "the person's file mode is kept");
    assert_eq!(
        mode(&h.path(".claude")),
        0o755,
        "the folder is not chmod-ed"
    );
    let bytes = std::fs::read(&settings).unwrap();
    ok(h.run(&["hooks", "install", "claude-code", "--data-dir", d]));
    assert_eq!(
        std::fs::read(&settings).unwrap(),
        bytes,
        "a second install changed the file"
    );
    assert!(h.path(".claude/settings.json.rlclaw-backup").exists());

    // Codex: hooks.json and the feature flag in config.toml, next to existing settings.
    std::fs::create_dir_all(h.path(".codex")).unwrap();
    std::fs::write(h.path(".codex/config.toml"), "# mine\nmodel = \"o3\"\n").unwrap();
    ok(h.run(&["hooks", "install", "codex", "--data-dir", d]));
    let hooks = read_json(&h.path(".codex/hooks.json"));
    assert!(
        hooks["hooks"]["Stop"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap()
            .contains(" hook codex ")
    );
    let toml = std::fs::read_to_string(h.path(".codex/config.toml")).unwrap();
    assert!(
        toml.starts_with("# mine\nmodel = \"o3\"\n") && toml.contains("codex_hooks = true"),
        "{toml}"
    );

    // Uninstall takes out only rlclaw's entry.
    ok(h.run(&["hooks", "uninstall", "claude-code", "--data-dir", d]));
    let removed = read_json(&settings);
    assert_eq!(removed["hooks"]["Stop"], original["hooks"]["Stop"]);
    assert_eq!(removed["model"], "opus");

    // A malformed settings file is refused and left alone.
    std::fs::write(&settings, "{ not json").unwrap();
    let out = h.run(&["hooks", "install", "claude-code", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not plain JSON"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), "{ not json");
}

/// A Claude Code transcript as it writes one: a first exchange, then a tool-using turn whose
/// last `user` row is a tool result.
fn claude_transcript(session: &str, cwd: &str) -> String {
    let row = |v: Value| v.to_string();
    let common = json!({"parentUuid": null, "isSidechain": false, "userType": "external", "cwd": cwd,
                        "sessionId": session, "version": "2.0.14", "gitBranch": "main"});
    let with = |extra: Value| {
        let mut v = common.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        row(v)
    };
    [
        row(json!({"type": "summary", "summary": "Fixing app.py", "leafUuid": "a0"})),
        with(json!({"type": "user", "uuid": "u1", "timestamp": "2026-11-23T03:00:00.000Z",
                    "message": {"role": "user", "content": "What does app.py do?"}})),
        with(json!({"type": "assistant", "uuid": "a1", "timestamp": "2026-11-23T03:00:02.000Z", "requestId": "req_1",
                    "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                                "content": [{"type": "text", "text": "It divides numbers."}],
                                "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}}})),
        with(json!({"type": "user", "uuid": "u2", "timestamp": "2026-11-23T03:01:00.000Z",
                    "message": {"role": "user", "content": "Fix the bug in app.py"}})),
        with(json!({"type": "assistant", "uuid": "a2", "timestamp": "2026-11-23T03:01:02.000Z", "requestId": "req_2",
                    "message": {"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                                "content": [{"type": "text", "text": "Let me read it."}], "stop_reason": null}})),
        with(json!({"type": "assistant", "uuid": "a3", "timestamp": "2026-11-23T03:01:02.500Z", "requestId": "req_2",
                    "message": {"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                                "content": [{"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "app.py"}}],
                                "stop_reason": "tool_use"}})),
        with(json!({"type": "user", "uuid": "u3", "timestamp": "2026-11-23T03:01:03.000Z",
                    "message": {"role": "user", "content": [{"tool_use_id": "toolu_01", "type": "tool_result", "content": "def f():\n  return 1/0"}]},
                    "toolUseResult": {"type": "text", "file": {"filePath": "app.py", "content": "def f():\n  return 1/0"}}})),
        with(json!({"type": "assistant", "uuid": "a4", "timestamp": "2026-11-23T03:01:06.000Z", "requestId": "req_3",
                    "message": {"id": "msg_3", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                                "content": [{"type": "text", "text": "Fixed: f() no longer divides by zero."}],
                                "stop_reason": "end_turn"}})),
        with(json!({"type": "system", "subtype": "stop_hook_summary", "uuid": "s1", "timestamp": "2026-11-23T03:01:07.000Z",
                    "content": "Stop hooks ran", "level": "info"})),
    ]
    .join("\n")
        + "\n"
}

#[test]
fn the_claude_code_hook_captures_the_last_real_prompt_and_the_final_reply() {
    let h = Home::new();
    let bridge = Bridge::start("");
    let session = "4f0c2b1e-7d1a-4d4e-9a53-0c1d2e3f4a5b";
    let transcript = h.path(&format!(".claude/projects/-work-app/{session}.jsonl"));
    std::fs::create_dir_all(transcript.parent().unwrap()).unwrap();
    std::fs::write(&transcript, claude_transcript(session, "/work/app")).unwrap();
    let payload = json!({
        "session_id": session, "transcript_path": transcript, "cwd": "/work/app",
        "permission_mode": "default", "hook_event_name": "Stop", "stop_hook_active": false,
    })
    .to_string();
    let d = bridge.data_dir().to_str().unwrap().to_owned();
    let addr = bridge.addr().to_string();
    let args = ["hook", "claude-code", "--data-dir", &d, "--bridge", &addr];
    for _ in 0..2 {
        let out = h.run_stdin(&args, payload.as_bytes());
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            out.stdout.is_empty(),
            "the hook prints nothing for the agent"
        );
    }
    assert!(
        !bridge.data_dir().join("hooks.log").exists(),
        "{:?}",
        std::fs::read_to_string(bridge.data_dir().join("hooks.log"))
    );
    let conn = rusqlite::Connection::open_with_flags(
        bridge.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let rows: Vec<(String, String, String, String, String, String)> = conn
        .prepare("SELECT prompt, response, channel, session, sender, context FROM turns")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1, "a retried hook captures once: {rows:?}");
    let (prompt, response, channel, sess, sender, context) = &rows[0];
    assert_eq!(prompt, "Fix the bug in app.py");
    assert_eq!(response, "Fixed: f() no longer divides by zero.");
    assert_eq!(channel, "claude-code");
    assert_eq!(sess, session);
    assert_eq!(sender, "tester");
    // Sent as a rollout with what the transcript tells: the prompt at 03:01:00, the last row
    // at 03:01:07; this turn's rows carry no token usage, so no token count is claimed.
    let (kind, measures): (String, String) = conn
        .query_row("SELECT kind, measures FROM turns", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(kind, "rollout");
    let measures: Value = serde_json::from_str(&measures).unwrap();
    assert_eq!(measures["duration_s"], json!(7.0));
    assert_eq!(measures["tokens"], Value::Null);
    let context: Value = serde_json::from_str(context).unwrap();
    assert_eq!(
        context,
        json!([{"role": "user", "content": "What does app.py do?"}, {"role": "assistant", "content": "It divides numbers."}])
    );

    // `rlclaw good` rates it from the terminal.
    let good = ok(h.run(&["good", "--data-dir", &d, "--bridge", &addr]));
    assert!(
        good.contains("Fixed: f() no longer divides by zero."),
        "{good}"
    );
    assert_eq!(
        count(
            &bridge.db_path(),
            "SELECT count(*) FROM ratings WHERE value > 0"
        ),
        1
    );
}

#[test]
fn the_hook_never_fails_the_agent_and_logs_why() {
    let h = Home::new();
    let data = h.path("data");
    let d = data.to_str().unwrap();
    // Key but no bridge listening.
    ok(h.run(&[
        "init",
        "--yes",
        "--no-service",
        "--no-plugin",
        "--data-dir",
        d,
        "--model",
        h.model().to_str().unwrap(),
    ]));
    let session = "s-1";
    let transcript = h.path(".claude/projects/p/s-1.jsonl");
    std::fs::create_dir_all(transcript.parent().unwrap()).unwrap();
    std::fs::write(&transcript, claude_transcript(session, "/w")).unwrap();
    let port = rlclaw_tests::bridge::free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let payload =
        json!({"session_id": session, "transcript_path": transcript, "hook_event_name": "Stop"})
            .to_string();
    for input in [payload.as_str(), "not json", "{}"] {
        let out = h.run_stdin(
            &["hook", "claude-code", "--data-dir", d, "--bridge", &addr],
            input.as_bytes(),
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    // A transcript outside ~/.claude is not read.
    let outside = h.root.join("elsewhere.jsonl");
    std::fs::write(&outside, claude_transcript(session, "/w")).unwrap();
    let payload = json!({"session_id": session, "transcript_path": outside}).to_string();
    assert!(
        h.run_stdin(
            &["hook", "claude-code", "--data-dir", d, "--bridge", &addr],
            payload.as_bytes()
        )
        .status
        .success()
    );
    let log = std::fs::read_to_string(data.join("hooks.log")).unwrap();
    assert!(log.contains("cannot reach the bridge"), "{log}");
    assert!(log.contains("not JSON"), "{log}");
    assert!(log.contains("no session_id"), "{log}");
    assert!(log.contains("outside"), "{log}");
    assert_eq!(mode(&data.join("hooks.log")), 0o600);
}

#[test]
fn plugin_install_links_with_openclaw_and_writes_the_config_without_the_key_on_a_command_line() {
    let h = Home::new();
    let bridge = Bridge::start("");
    let fake = h.fake_openclaw();
    let plugin = h.plugin_dir();
    let config = h.path(".openclaw/openclaw.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let original = json!({
        "gateway": {"mode": "local", "auth": {"token": "gw-secret"}},
        "channels": {"telegram": {"enabled": true}},
        "plugins": {"entries": {"telegram": {"enabled": true}}, "allow": ["telegram", "rlclaw"]}
    });
    std::fs::write(&config, serde_json::to_string_pretty(&original).unwrap()).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = bridge.data_dir().to_str().unwrap().to_owned();
    let addr = bridge.addr().to_string();
    // OPENCLAW_CONFIG_PATH picks the config when --openclaw-config is not given.
    let out = h
        .cmd()
        .env("OPENCLAW_CONFIG_PATH", &config)
        .args([
            "plugin",
            "install",
            "--data-dir",
            &d,
            "--bridge",
            &addr,
            "--openclaw",
            fake.to_str().unwrap(),
            "--plugin-dir",
            plugin.to_str().unwrap(),
            "--feedback-mode",
            "slash_only",
        ])
        .output()
        .unwrap();
    ok(out);
    let args_log = std::fs::read_to_string(h.root.join("bin/openclaw-args.log")).unwrap();
    assert_eq!(
        args_log.lines().next().unwrap(),
        format!(
            "plugins install --link {} --force --accept-capabilities",
            plugin.canonicalize().unwrap().display()
        )
    );
    assert!(
        !args_log.contains(bridge.key_hex()),
        "the key was on a command line: {args_log}"
    );
    let env_log = std::fs::read_to_string(h.root.join("bin/openclaw-env.log")).unwrap();
    assert_eq!(env_log.lines().next().unwrap(), config.to_str().unwrap());
    let after = read_json(&config);
    let entry = &after["plugins"]["entries"]["rlclaw"];
    assert_eq!(entry["enabled"], true);
    assert_eq!(entry["config"]["key"], bridge.key_hex());
    assert_eq!(entry["config"]["bridgeUrl"], format!("http://{addr}"));
    assert_eq!(entry["config"]["feedbackMode"], "slash_only");
    assert_eq!(after["gateway"], original["gateway"]);
    assert_eq!(after["channels"], original["channels"]);
    assert_eq!(
        after["plugins"]["entries"]["telegram"],
        original["plugins"]["entries"]["telegram"]
    );
    assert_eq!(after["plugins"]["allow"], original["plugins"]["allow"]);
    assert_eq!(
        mode(&config),
        0o600,
        "the config holds the key now: private"
    );

    // Status: installed, key matches, OpenClaw reports it loaded.
    let status = ok(h.run(&[
        "plugin",
        "status",
        "--data-dir",
        &d,
        "--openclaw",
        fake.to_str().unwrap(),
        "--openclaw-config",
        config.to_str().unwrap(),
        "--plugin-dir",
        plugin.to_str().unwrap(),
    ]));
    assert!(status.contains("matches"), "{status}");
    assert!(status.contains("loaded"), "{status}");

    // Uninstall removes the entry and keeps the rest.
    ok(h.run(&[
        "plugin",
        "uninstall",
        "--data-dir",
        &d,
        "--openclaw",
        fake.to_str().unwrap(),
        "--openclaw-config",
        config.to_str().unwrap(),
        "--plugin-dir",
        plugin.to_str().unwrap(),
    ]));
    let removed = read_json(&config);
    assert!(removed["plugins"]["entries"].get("rlclaw").is_none());
    assert_eq!(removed["gateway"], original["gateway"]);

    // Without openclaw, init says so and goes on; plugin install is a clear error.
    let empty = h.root.join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = h
        .cmd()
        .env("PATH", &empty)
        .args([
            "init",
            "--yes",
            "--no-service",
            "--data-dir",
            &d,
            "--model",
            h.model().to_str().unwrap(),
            "--openclaw-config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        text(&out).contains("OpenClaw is not installed"),
        "{}",
        text(&out)
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = h
        .cmd()
        .env("PATH", &empty)
        .args([
            "plugin",
            "install",
            "--data-dir",
            &d,
            "--openclaw-config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("openclaw is not installed"),
        "{}",
        text(&out)
    );
}

#[test]
fn doctor_reports_a_healthy_setup_ok_and_names_what_is_broken() {
    let h = Home::new();
    let mut bridge = Bridge::start("");
    let fake = h.fake_openclaw();
    let plugin = h.plugin_dir();
    let config = h.path(".openclaw/openclaw.json");
    let d = bridge.data_dir().to_str().unwrap().to_owned();
    let addr = bridge.addr().to_string();
    let f = fake.to_str().unwrap().to_owned();
    let c = config.to_str().unwrap().to_owned();
    let p = plugin.to_str().unwrap().to_owned();
    ok(h.run(&[
        "init",
        "--yes",
        "--no-service",
        "--data-dir",
        &d,
        "--bridge",
        &addr,
        "--model",
        h.model().to_str().unwrap(),
        "--openclaw",
        &f,
        "--openclaw-config",
        &c,
        "--plugin-dir",
        &p,
    ]));
    let doctor = |extra: &[&str]| {
        let mut args = vec![
            "doctor",
            "--json",
            "--data-dir",
            &d,
            "--openclaw",
            &f,
            "--openclaw-config",
            &c,
            "--plugin-dir",
            &p,
        ];
        args.extend_from_slice(extra);
        let out = h.run(&args);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}):\n{}", text(&out)));
        (out.status.success(), report)
    };
    let level = |report: &Value, name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["level"].as_str().unwrap().to_owned())
    };
    let (success, report) = doctor(&["--bridge", &addr]);
    assert!(success && report["ok"] == true, "{report:#}");
    for name in [
        "data folder",
        "key",
        "config",
        "model",
        "disk",
        "bridge",
        "bridge key",
        "plugin",
        "plugin key",
        "openclaw",
    ] {
        assert_eq!(
            level(&report, name).as_deref(),
            Some("ok"),
            "{name}: {report:#}"
        );
    }
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["level"] != "fail"),
        "{report:#}"
    );

    // A bridge that does not hold this data folder's key.
    let other = Bridge::start("");
    let other_addr = other.addr().to_string();
    let (success, report) = doctor(&["--bridge", &other_addr]);
    assert!(!success);
    assert_eq!(
        level(&report, "bridge key").as_deref(),
        Some("fail"),
        "{report:#}"
    );

    // The plugin holding a wrong key.
    let mut oc = read_json(&config);
    oc["plugins"]["entries"]["rlclaw"]["config"]["key"] = json!("0".repeat(64));
    std::fs::write(&config, oc.to_string()).unwrap();
    let (success, report) = doctor(&["--bridge", &addr]);
    assert!(!success);
    assert_eq!(
        level(&report, "plugin key").as_deref(),
        Some("fail"),
        "{report:#}"
    );
    let human = text(&h.run(&[
        "doctor",
        "--data-dir",
        &d,
        "--bridge",
        &addr,
        "--openclaw",
        &f,
        "--openclaw-config",
        &c,
        "--plugin-dir",
        &p,
    ]));
    assert!(
        human.contains("FAIL")
            && human.contains("plugin key")
            && human.contains("rlclaw plugin install"),
        "{human}"
    );

    // The bridge down.
    bridge.stop_keep_data();
    let (success, report) = doctor(&["--bridge", &addr]);
    assert!(!success);
    assert_eq!(
        level(&report, "bridge").as_deref(),
        Some("fail"),
        "{report:#}"
    );
    let detail = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bridge")
        .unwrap();
    assert!(
        detail["detail"].as_str().unwrap().contains("not answering"),
        "{detail}"
    );
    assert!(
        detail["fix"]
            .as_str()
            .unwrap()
            .contains("rlclaw service install"),
        "{detail}"
    );
    drop(other);
}

#[test]
fn uninstall_removes_what_init_added_and_keeps_the_data_unless_purged() {
    let h = Home::new();
    let fake = h.fake_openclaw();
    let plugin = h.plugin_dir();
    let config = h.path(".openclaw/openclaw.json");
    let data = h.path("data");
    let (d, f, c, p) = (
        data.to_str().unwrap(),
        fake.to_str().unwrap(),
        config.to_str().unwrap(),
        plugin.to_str().unwrap(),
    );
    let oc = ["--openclaw", f, "--openclaw-config", c, "--plugin-dir", p];
    let model = h.model();
    let m = model.to_str().unwrap();
    let mut args = vec![
        "init",
        "--yes",
        "--no-service",
        "--data-dir",
        d,
        "--hooks",
        "claude-code",
        "--model",
        m,
    ];
    args.extend(oc);
    ok(h.run(&args));
    let settings = h.path(".claude/settings.json");
    assert!(
        std::fs::read_to_string(&settings)
            .unwrap()
            .contains(" hook claude-code ")
    );
    assert!(read_json(&config)["plugins"]["entries"]["rlclaw"].is_object());

    // --purge with no terminal to ask and no --yes: refused before anything changes.
    let mut purge = vec!["uninstall", "--purge", "--data-dir", d];
    purge.extend(oc);
    let out = h.run(&purge);
    assert!(!out.status.success());
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert!(data.join("key").exists());
    assert!(
        std::fs::read_to_string(&settings)
            .unwrap()
            .contains(" hook claude-code ")
    );

    let mut plain = vec!["uninstall", "--data-dir", d];
    plain.extend(oc);
    let out = ok(h.run(&plain));
    assert!(out.contains("kept your data"), "{out}");
    assert!(data.join("key").exists() && data.join("config.toml").exists());
    assert!(
        read_json(&config)["plugins"]["entries"]
            .get("rlclaw")
            .is_none()
    );
    assert!(
        !std::fs::read_to_string(&settings)
            .unwrap()
            .contains(" hook claude-code ")
    );

    purge.push("--yes");
    ok(h.run(&purge));
    assert!(!data.exists());
}

#[test]
fn the_codex_hook_captures_the_typed_prompt_not_the_injected_context() {
    let h = Home::new();
    let bridge = Bridge::start("");
    let session = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let transcript = h.path(&format!(
        ".codex/sessions/2026/11/23/rollout-2026-11-23T03-00-00-{session}.jsonl"
    ));
    std::fs::create_dir_all(transcript.parent().unwrap()).unwrap();
    let rows = [
        json!({"timestamp": "2026-11-23T03:00:00.000Z", "type": "session_meta",
               "payload": {"id": session, "cwd": "/work/app", "originator": "codex_cli_rs", "cli_version": "0.60.0"}}),
        json!({"timestamp": "2026-11-23T03:00:00.100Z", "type": "response_item",
               "payload": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/work/app</cwd>\n</environment_context>"}]}}),
        json!({"timestamp": "2026-11-23T03:00:01.000Z", "type": "response_item",
               "payload": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files"}]}}),
        json!({"timestamp": "2026-11-23T03:00:01.000Z", "type": "event_msg",
               "payload": {"type": "user_message", "message": "List the files", "images": []}}),
        json!({"timestamp": "2026-11-23T03:00:02.000Z", "type": "response_item",
               "payload": {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "call_1"}}),
        json!({"timestamp": "2026-11-23T03:00:02.500Z", "type": "response_item",
               "payload": {"type": "function_call_output", "call_id": "call_1", "output": "{\"output\":\"a.txt\\n\"}"}}),
        json!({"timestamp": "2026-11-23T03:00:03.000Z", "type": "response_item",
               "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "There is one file: a.txt."}]}}),
        json!({"timestamp": "2026-11-23T03:00:03.000Z", "type": "event_msg",
               "payload": {"type": "agent_message", "message": "There is one file: a.txt."}}),
    ];
    let text_rows: Vec<String> = rows.iter().map(Value::to_string).collect();
    std::fs::write(&transcript, text_rows.join("\n") + "\n").unwrap();
    let payload = json!({
        "session_id": session, "turn_id": "1", "transcript_path": transcript, "cwd": "/work/app",
        "hook_event_name": "Stop", "model": "gpt-5-codex", "stop_hook_active": false,
        "last_assistant_message": "There is one file: a.txt.",
    })
    .to_string();
    let d = bridge.data_dir().to_str().unwrap().to_owned();
    let addr = bridge.addr().to_string();
    let out = h.run_stdin(
        &["hook", "codex", "--data-dir", &d, "--bridge", &addr],
        payload.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !bridge.data_dir().join("hooks.log").exists(),
        "{:?}",
        std::fs::read_to_string(bridge.data_dir().join("hooks.log"))
    );
    let conn = rusqlite::Connection::open_with_flags(
        bridge.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (prompt, response, channel, model): (String, String, String, String) = conn
        .query_row(
            "SELECT prompt, response, channel, model FROM turns",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(prompt, "List the files");
    assert_eq!(response, "There is one file: a.txt.");
    assert_eq!(channel, "codex");
    assert_eq!(model, "gpt-5-codex");
}
