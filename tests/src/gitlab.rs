//! A fake of the parts of GitLab's REST API v4 that tollgate uses, serving a real git repository:
//! a branch's head (`GET /projects/:id/repository/branches/:branch`), the tree
//! (`/repository/tree`, paginated with `x-next-page`), raw files (`/repository/files/:path/raw`),
//! the token's user (`/user`) and their groups (`/groups`), for the main user and any others added
//! with their own tokens (`add_user`). Tokens are checked (`PRIVATE-TOKEN`,
//! `JOB-TOKEN`, `Authorization: Bearer`); errors are GitLab's `{"message": ...}` bodies; a script of
//! failures (401, 404, 429 with Retry-After, 500) can be queued. Merge request `1` of the project
//! has `diff_refs` and discussions: list (paginated), create (with a diff position), update a
//! note, resolve or reopen.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

pub struct GitlabState {
    /// The bare repository served as the project.
    pub repo: PathBuf,
    /// `group/project`
    pub project: String,
    pub token: Mutex<String>,
    pub username: String,
    pub groups: Vec<String>,
    /// More users: (token, username, groups).
    pub others: Mutex<Vec<(String, String, Vec<String>)>>,
    /// Statuses the next requests get instead of their answer (429 carries Retry-After: 1; a 3xx
    /// points at `redirect_to`, the request's path kept).
    pub failures: Mutex<VecDeque<u16>>,
    pub redirect_to: Mutex<Option<String>>,
    /// `(path and query, auth header name)` of every request.
    pub requests: Mutex<Vec<(String, String)>>,
    /// Merge request 1's `diff_refs`: (base, start, head).
    pub diff_refs: Mutex<(String, String, String)>,
    pub discussions: Mutex<Vec<Discussion>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Discussion {
    pub id: String,
    pub individual_note: bool,
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Note {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub body: String,
    pub resolvable: bool,
    pub resolved: bool,
    pub position: Value,
}

pub struct FakeGitlab {
    pub addr: SocketAddr,
    pub state: Arc<GitlabState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGitlab {
    pub async fn start(repo: PathBuf, project: &str, token: &str, username: &str, groups: &[&str]) -> Self {
        let state = Arc::new(GitlabState {
            repo,
            project: project.into(),
            token: Mutex::new(token.into()),
            username: username.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            others: Mutex::default(),
            failures: Mutex::default(),
            redirect_to: Mutex::default(),
            requests: Mutex::default(),
            diff_refs: Mutex::default(),
            discussions: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake GitLab");
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/api/v4/projects/{id}/repository/branches/{branch}", get(branch))
            .route("/api/v4/projects/{id}/repository/tree", get(tree))
            .route("/api/v4/projects/{id}/repository/files/{path}/raw", get(raw))
            .route("/api/v4/user", get(user))
            .route("/api/v4/job", get(job))
            .route("/api/v4/groups", get(groups_list))
            .route("/api/v4/projects/{id}/merge_requests/{iid}", get(merge_request))
            .route(
                "/api/v4/projects/{id}/merge_requests/{iid}/discussions",
                get(list_discussions).post(create_discussion),
            )
            .route(
                "/api/v4/projects/{id}/merge_requests/{iid}/discussions/{did}",
                axum::routing::put(resolve_discussion),
            )
            .route(
                "/api/v4/projects/{id}/merge_requests/{iid}/discussions/{did}/notes/{nid}",
                axum::routing::put(update_note),
            )
            .fallback(|| async { message(StatusCode::NOT_FOUND, "404 Not Found") })
            .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), gate))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Another user, known by `token`.
    pub fn add_user(&self, token: &str, username: &str, groups: &[&str]) {
        self.state.others.lock().unwrap().push((
            token.into(),
            username.into(),
            groups.iter().map(|g| g.to_string()).collect(),
        ));
    }

    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.failures.lock().unwrap().extend(statuses);
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "message": text }))).into_response()
}

/// Records the request, plays a scripted failure, and checks the token.
async fn gate(
    State(state): State<Arc<GitlabState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let presented =
        [("private-token", ""), ("job-token", ""), ("authorization", "Bearer ")].iter().find_map(|(h, p)| {
            let v = headers.get(*h)?.to_str().ok()?;
            Some((h.to_string(), v.strip_prefix(p)?.to_string()))
        });
    let uri = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    state.requests.lock().unwrap().push((uri.clone(), presented.as_ref().map(|p| p.0.clone()).unwrap_or_default()));
    if let Some(status) = state.failures.lock().unwrap().pop_front() {
        let status = StatusCode::from_u16(status).unwrap();
        let mut resp = message(status, &format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")));
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert("retry-after", "1".parse().unwrap());
        }
        if let Some(to) = state.redirect_to.lock().unwrap().clone().filter(|_| status.is_redirection()) {
            resp.headers_mut().insert("location", format!("{to}{uri}").parse().unwrap());
        }
        return resp;
    }
    match presented {
        Some((_, token)) if who(&state, &token).is_some() => next.run(req).await,
        _ => message(StatusCode::UNAUTHORIZED, "401 Unauthorized"),
    }
}

/// The user and groups `token` belongs to.
fn who(state: &GitlabState, token: &str) -> Option<(String, Vec<String>)> {
    if token == *state.token.lock().unwrap() {
        return Some((state.username.clone(), state.groups.clone()));
    }
    state.others.lock().unwrap().iter().find(|(t, _, _)| t == token).map(|(_, u, g)| (u.clone(), g.clone()))
}

fn presented_token(headers: &HeaderMap) -> String {
    ["private-token", "job-token", "authorization"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok().map(|v| v.trim_start_matches("Bearer ").to_string()))
        .unwrap_or_default()
}

fn git(state: &GitlabState, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git").arg("-C").arg(&state.repo).args(args).output().ok()?;
    out.status.success().then_some(out.stdout)
}

/// GitLab's refusal when `id` is not the project this fake serves.
fn unknown_project(state: &GitlabState, id: &str) -> Option<Response> {
    (id != state.project).then(|| message(StatusCode::NOT_FOUND, "404 Project Not Found"))
}

async fn branch(State(state): State<Arc<GitlabState>>, Path((id, name)): Path<(String, String)>) -> Response {
    if let Some(r) = unknown_project(&state, &id) {
        return r;
    }
    let Some(sha) = git(&state, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{name}")]) else {
        return message(StatusCode::NOT_FOUND, "404 Branch Not Found");
    };
    let sha = String::from_utf8_lossy(&sha).trim().to_string();
    axum::Json(json!({
        "name": name,
        "merged": false,
        "protected": true,
        "default": name == "main",
        "developers_can_push": false,
        "developers_can_merge": false,
        "can_push": false,
        "web_url": format!("https://gitlab.example.com/{}/-/tree/{name}", state.project),
        "commit": {
            "id": sha,
            "short_id": &sha[..8],
            "title": "policy",
            "parent_ids": [],
        }
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct TreeQuery {
    #[serde(rename = "ref")]
    reference: String,
    recursive: Option<bool>,
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn tree(State(state): State<Arc<GitlabState>>, Path(id): Path<String>, Query(q): Query<TreeQuery>) -> Response {
    if let Some(r) = unknown_project(&state, &id) {
        return r;
    }
    let mut args = vec!["ls-tree", "-z"];
    if q.recursive.unwrap_or(false) {
        args.extend(["-r", "-t"]);
    }
    args.push(&q.reference);
    let Some(out) = git(&state, &args) else {
        return message(StatusCode::NOT_FOUND, "404 Tree Not Found");
    };
    let entries: Vec<Value> = out
        .split(|b| *b == 0)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let l = std::str::from_utf8(l).ok()?;
            let (meta, path) = l.split_once('\t')?;
            let mut m = meta.split(' ');
            let (mode, kind, id) = (m.next()?, m.next()?, m.next()?);
            let name = path.rsplit('/').next().unwrap_or(path);
            Some(json!({"id": id, "name": name, "type": kind, "path": path, "mode": mode}))
        })
        .collect();
    let per_page = q.per_page.unwrap_or(20).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let pages = entries.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = entries.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
    let mut resp = axum::Json(slice).into_response();
    let h = resp.headers_mut();
    h.insert("x-page", page.to_string().parse().unwrap());
    h.insert("x-per-page", per_page.to_string().parse().unwrap());
    h.insert("x-total", entries.len().to_string().parse().unwrap());
    h.insert("x-total-pages", pages.to_string().parse().unwrap());
    h.insert("x-next-page", if page < pages { (page + 1).to_string() } else { String::new() }.parse().unwrap());
    resp
}

#[derive(serde::Deserialize)]
struct RefQuery {
    #[serde(rename = "ref")]
    reference: String,
}

async fn raw(
    State(state): State<Arc<GitlabState>>,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<RefQuery>,
) -> Response {
    if let Some(r) = unknown_project(&state, &id) {
        return r;
    }
    match git(&state, &["cat-file", "blob", &format!("{}:{path}", q.reference)]) {
        Some(bytes) => ([(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 File Not Found"),
    }
}

/// The job a CI job token belongs to (job tokens only), started by the token's user.
async fn job(State(state): State<Arc<GitlabState>>, headers: HeaderMap) -> Response {
    if headers.get("job-token").is_none() {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let (username, _) = who(&state, &presented_token(&headers)).unwrap_or_default();
    axum::Json(json!({
        "id": 7001,
        "status": "running",
        "stage": "test",
        "name": "review",
        "ref": "main",
        "user": {"id": 42, "username": username, "name": "Test User", "state": "active"},
        "pipeline": {"id": 900, "project_id": 12, "ref": "main", "status": "running"},
    }))
    .into_response()
}

async fn user(State(state): State<Arc<GitlabState>>, headers: HeaderMap) -> Response {
    let (username, _) = who(&state, &presented_token(&headers)).unwrap_or_default();
    axum::Json(json!({
        "id": 42,
        "username": username,
        "name": "Test User",
        "state": "active",
        "web_url": format!("https://gitlab.example.com/{username}"),
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn groups_list(
    State(state): State<Arc<GitlabState>>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let per_page = q.per_page.unwrap_or(20).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let (_, groups) = who(&state, &presented_token(&headers)).unwrap_or_default();
    let all: Vec<Value> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            json!({"id": 100 + i, "name": g.rsplit('/').next(), "path": g.rsplit('/').next(), "full_path": g, "full_name": g})
        })
        .collect();
    let pages = all.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = all.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
    let mut resp = axum::Json(slice).into_response();
    resp.headers_mut()
        .insert("x-next-page", if page < pages { (page + 1).to_string() } else { String::new() }.parse().unwrap());
    resp
}

/// GitLab's refusal when `iid` is not the one merge request of the project this fake serves.
fn unknown_mr(state: &GitlabState, id: &str, iid: u64) -> Option<Response> {
    unknown_project(state, id).or_else(|| (iid != 1).then(|| message(StatusCode::NOT_FOUND, "404 Not found")))
}

async fn merge_request(State(state): State<Arc<GitlabState>>, Path((id, iid)): Path<(String, u64)>) -> Response {
    if let Some(r) = unknown_mr(&state, &id, iid) {
        return r;
    }
    let (base, start, head) = state.diff_refs.lock().unwrap().clone();
    axum::Json(json!({
        "id": 1001, "iid": iid, "project_id": 7, "title": "A change", "state": "opened",
        "sha": head, "diff_refs": {"base_sha": base, "head_sha": head, "start_sha": start},
    }))
    .into_response()
}

async fn list_discussions(
    State(state): State<Arc<GitlabState>>,
    Path((id, iid)): Path<(String, u64)>,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Some(r) = unknown_mr(&state, &id, iid) {
        return r;
    }
    let all = state.discussions.lock().unwrap().clone();
    let per_page = q.per_page.unwrap_or(20).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let pages = all.len().div_ceil(per_page).max(1);
    let slice: Vec<&Discussion> = all.iter().skip((page - 1) * per_page).take(per_page).collect();
    let mut resp = axum::Json(slice).into_response();
    resp.headers_mut()
        .insert("x-next-page", if page < pages { (page + 1).to_string() } else { String::new() }.parse().unwrap());
    resp
}

async fn create_discussion(
    State(state): State<Arc<GitlabState>>,
    Path((id, iid)): Path<(String, u64)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = unknown_mr(&state, &id, iid) {
        return r;
    }
    let Some(text) = body["body"].as_str() else {
        return message(StatusCode::BAD_REQUEST, "400 Bad request - body is missing");
    };
    let position = body["position"].clone();
    if !position.is_null() {
        let refs = state.diff_refs.lock().unwrap().clone();
        let ok = position["position_type"] == "text"
            && position["base_sha"] == refs.0
            && position["start_sha"] == refs.1
            && position["head_sha"] == refs.2
            && position["new_path"].is_string()
            && position["new_line"].as_u64().is_some();
        if !ok {
            return message(
                StatusCode::BAD_REQUEST,
                "400 Bad request - Note {:line_code=>[\"can't be blank\", \"must be a valid line code\"]}",
            );
        }
    }
    let mut all = state.discussions.lock().unwrap();
    let n = all.len() as u64 + 1;
    let d = Discussion {
        id: format!("{n:040x}"),
        individual_note: false,
        notes: vec![Note {
            id: 500 + n,
            kind: "DiffNote",
            body: text.into(),
            resolvable: true,
            resolved: false,
            position,
        }],
    };
    all.push(d.clone());
    (StatusCode::CREATED, axum::Json(d)).into_response()
}

#[derive(serde::Deserialize)]
struct ResolveQuery {
    resolved: bool,
}

async fn resolve_discussion(
    State(state): State<Arc<GitlabState>>,
    Path((id, iid, did)): Path<(String, u64, String)>,
    Query(q): Query<ResolveQuery>,
) -> Response {
    if let Some(r) = unknown_mr(&state, &id, iid) {
        return r;
    }
    let mut all = state.discussions.lock().unwrap();
    match all.iter_mut().find(|d| d.id == did) {
        Some(d) => {
            d.notes.iter_mut().for_each(|n| n.resolved = q.resolved);
            axum::Json(d.clone()).into_response()
        }
        None => message(StatusCode::NOT_FOUND, "404 Discussion Not Found"),
    }
}

async fn update_note(
    State(state): State<Arc<GitlabState>>,
    Path((id, iid, did, nid)): Path<(String, u64, String, u64)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = unknown_mr(&state, &id, iid) {
        return r;
    }
    let mut all = state.discussions.lock().unwrap();
    let note = all.iter_mut().find(|d| d.id == did).and_then(|d| d.notes.iter_mut().find(|n| n.id == nid));
    match (note, body["body"].as_str()) {
        (Some(n), Some(text)) => {
            n.body = text.into();
            axum::Json(n.clone()).into_response()
        }
        (None, _) => message(StatusCode::NOT_FOUND, "404 Note Not Found"),
        (_, None) => message(StatusCode::BAD_REQUEST, "400 Bad request - body is missing"),
    }
}
