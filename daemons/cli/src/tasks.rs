//! `sonm task logs [-f]`, and progress bars (when stdout is a terminal and output is for
//! people): a start's upload, which the node reports under a token the CLI picks, and a
//! result's download from the node.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::{MAX_ANSWER, Node, Refused, opt};

/// How often `logs -f` asks again when nothing new came.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Prints what the task printed (stdout to stdout, stderr to stderr), from the start; with
/// `follow`, keeps asking until the task has ended and everything it printed is out.
pub(super) fn logs(
    node: &Node,
    deal: u64,
    task: u64,
    follow: bool,
    worker_addr: &Option<String>,
) -> anyhow::Result<()> {
    let (mut out_at, mut err_at) = (0u64, 0u64);
    let path = format!("/v1/deals/{deal}/tasks/{task}/logs");
    loop {
        let mut q: Vec<_> = opt("worker_addr", worker_addr).into_iter().collect();
        q.push(("stdout_offset", out_at.to_string()));
        q.push(("stderr_offset", err_at.to_string()));
        let v = node.get(&path, &q)?;
        let decode = |k: &str| {
            B64.decode(v[k].as_str().unwrap_or(""))
                .with_context(|| format!("the node's {k} is not base64"))
        };
        let (out, err) = (decode("stdout")?, decode("stderr")?);
        std::io::stdout().write_all(&out)?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(&err)?;
        out_at += out.len() as u64;
        err_at += err.len() as u64;
        let got = !out.is_empty() || !err.is_empty();
        let finished = v["finished"].as_bool().unwrap_or(true);
        match (got, finished, follow) {
            // More may be waiting beyond one answer's worth.
            (true, _, _) => {}
            (false, true, _) | (false, false, false) => return Ok(()),
            (false, false, true) => std::thread::sleep(FOLLOW_EVERY),
        }
    }
}

/// How often the upload bar asks the node.
const PROGRESS_EVERY: Duration = Duration::from_millis(150);

/// `POST path` of a start request, with a bar of the node's upload to the worker while it
/// runs (nothing is drawn for a job small enough to travel in one message).
pub(super) fn start_with_progress(
    node: &Node,
    path: &str,
    mut body: Value,
    for_people: bool,
) -> anyhow::Result<Value> {
    if !(for_people && std::io::stdout().is_terminal()) {
        return node.post(path, &[], &body);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let token = format!("cli-{}-{nanos}", std::process::id());
    body["progress"] = Value::String(token.clone());
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template"),
    );
    let answer = std::thread::scope(|scope| {
        let post = scope.spawn(|| node.post(path, &[], &body));
        let mut shown = false;
        while !post.is_finished() {
            // 404 until the node has begun and after it is done: nothing to draw.
            if let Ok(v) = node.get(&format!("/v1/transfers/{token}"), &[]) {
                let total = v["total"].as_u64().unwrap_or(0);
                if total > 0 {
                    if !shown {
                        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                        shown = true;
                    }
                    bar.set_length(total);
                    bar.set_position(v["done"].as_u64().unwrap_or(0));
                }
            }
            std::thread::sleep(PROGRESS_EVERY);
        }
        post.join()
    });
    bar.finish_and_clear();
    answer.unwrap_or_else(|_| bail!("the start request's thread panicked"))
}

/// `GET path` whose (large) answer is read with a progress bar when stdout is a terminal and
/// the output is for people.
pub(super) fn get_with_progress(
    node: &Node,
    path: &str,
    query: &[(&str, String)],
    for_people: bool,
) -> anyhow::Result<Value> {
    if !(for_people && std::io::stdout().is_terminal()) {
        return node.get(path, query);
    }
    let mut req = node.agent.get(format!("{}{path}", node.base));
    for (k, v) in query {
        req = req.query(k, v);
    }
    let mut r = match req.call() {
        Ok(r) => r,
        Err(e) => bail!(
            "cannot reach sonm-node at {}: {e}\nIs it running? Start it with `sonm-node --config node.toml`, or point --node / SONM_NODE at it.",
            node.base
        ),
    };
    let status = r.status().as_u16();
    let len = r
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "downloading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("a valid template"),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let mut text = String::new();
    bar.wrap_read(r.body_mut().with_config().limit(MAX_ANSWER).reader())
        .read_to_string(&mut text)
        .context("reading the node's answer")?;
    bar.finish_and_clear();
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("the node answered HTTP {status} with non-JSON: {text:.200}"))?;
    if status >= 400 {
        return Err(Refused {
            status,
            code: value["code"].as_str().unwrap_or("unknown").to_owned(),
            message: value["message"].as_str().unwrap_or(&text).to_owned(),
        }
        .into());
    }
    Ok(value)
}
