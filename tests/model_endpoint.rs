//! `rlclaw serve --model-endpoint`: beside the bridge, the base model (with the active adapter,
//! when there is one) answers OpenAI-compatible chat completions on loopback.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rlclaw_tests::bridge::{free_port, rlclaw_bin};
use rlclaw_tests::http::{self, Body};

#[test]
fn the_model_endpoint_answers_chat_completions_beside_the_bridge() {
    let model = rlclaw_tests::model::smollm2();
    let dir = std::env::temp_dir().join(format!("rlclaw-endpoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[training]\nauto_after = 0\nmodel = \"{}\"\n",
            model.display()
        ),
    )
    .unwrap();
    let (bridge_port, model_port) = (free_port(), free_port());
    let mut child = Command::new(rlclaw_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{bridge_port}")])
        .args(["--model-endpoint", &format!("127.0.0.1:{model_port}")])
        .arg("--data-dir")
        .arg(&dir)
        .env("RLCLAW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let model_addr = format!("127.0.0.1:{model_port}").parse().unwrap();
    let bridge_addr = format!("127.0.0.1:{bridge_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = http::send(model_addr, "GET", "/v1/models", &[], Body::None)
            && r.status == 200
        {
            assert_eq!(r.json()["data"][0]["id"], "rlclaw");
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "rlclaw serve exited");
        assert!(
            Instant::now() < deadline,
            "the model endpoint did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The bridge answered all along: loading the model does not hold it up.
    let health = http::send(bridge_addr, "GET", "/healthz", &[], Body::None).unwrap();
    assert_eq!(health.status, 200);
    let body = serde_json::json!({
        "model": "rlclaw", "max_tokens": 4, "temperature": 0.0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    })
    .to_string();
    let r = http::send(
        model_addr,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type".into(), "application/json".into())],
        Body::Fixed(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !text.trim().is_empty(),
        "an empty completion: {:?}",
        r.json()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_non_loopback_model_endpoint_is_refused() {
    let dir = std::env::temp_dir().join(format!("rlclaw-endpoint-nl-{}", std::process::id()));
    let out = Command::new(rlclaw_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model-endpoint",
            "0.0.0.0:8421",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let _ = std::fs::remove_dir_all(&dir);
}
