//! The dashboard at `/ui`: a page of plain HTML, CSS and JavaScript modules, embedded in
//! the binary, that reads and acts through the `/v1` API alone. Served without a key (the
//! page asks for one); not part of the API, so not in the OpenAPI document.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// Scripts, styles, connections and images from this origin only: no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

macro_rules! asset {
    ($name:literal, $type:literal) => {
        (
            $name,
            $type,
            include_bytes!(concat!("../ui/", $name)).as_slice(),
        )
    };
}

/// Every file of the page: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("queues.js", "text/javascript; charset=utf-8"),
    asset!("jobs.js", "text/javascript; charset=utf-8"),
    asset!("job.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(index))
        .route("/ui/", web::get().to(index))
        .route("/ui/{file}", web::get().to(file));
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html").unwrap_or_else(|| HttpResponse::NotFound().finish())
}

async fn file(req: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&req, &name).ok_or_else(|| ApiError::not_found(format!("no file /ui/{name}")))
}

/// The file, revalidated on every use by its ETag (names carry no version, so a new
/// binary's page is never mixed with an old one's modules from a cache).
fn serve(req: &HttpRequest, name: &str) -> Option<HttpResponse> {
    let (_, content_type, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let etag = format!("\"{}\"", hex_prefix(bytes));
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = match unchanged {
        true => HttpResponse::NotModified(),
        false => HttpResponse::Ok(),
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    Some(match unchanged {
        true => response.finish(),
        false => response.content_type(*content_type).body(*bytes),
    })
}

/// The first 16 bytes of the SHA-256, in hex: enough to tell versions apart.
fn hex_prefix(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
