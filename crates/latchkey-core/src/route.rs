//! Target routes: which app and app user a request to the operator's API
//! targets, read from its path.
//!
//! A template such as `/v2/apps/{appId}/users/{userId}` names the segments
//! that hold the app id and the app user's external id. A template matches
//! a path when its segments equal the path's first segments; the first
//! matching template wins. A path that no template matches names no target.
//!
//! The path comes from an attacker, and the operator's API may read it
//! differently than we do: a path that we did not match but the API routes
//! to an app would skip the app check. So the comparison is made on what
//! any server would make of the path, and a path that servers disagree on
//! is refused rather than guessed at:
//! - segments are percent-decoded before they are compared, and literal
//!   segments compare ASCII case-insensitively (matching more paths only
//!   adds checks);
//! - a path with an empty segment inside it (`//`), a dot segment (`.`,
//!   `..`, also encoded), an encoded `/` or `\`, a raw `\` or `;` (matrix
//!   parameters, which some servers strip), or a segment that does not
//!   decode to UTF-8 without control characters is [`Ambiguous`].
//!
//! [`Ambiguous`]: RouteMatch::Ambiguous

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;

/// Most templates one server accepts.
pub const MAX_TEMPLATES: usize = 64;
/// Longest template, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 1024;
/// Longest request path read (longer ones are ambiguous).
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// A segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Compared ASCII case-insensitively; stored in lower case.
    Literal(String),
    AppId,
    UserId,
}

/// One template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    text: String,
    segments: Vec<Segment>,
}

/// The templates a server was started with, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetRoutes {
    templates: Vec<Template>,
}

/// Why a template was refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target route {template:?}: {reason}")]
pub struct RouteError {
    pub template: String,
    pub reason: &'static str,
}

/// What a request path targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    /// No template matches: the request is checked for a valid credential
    /// only.
    Unmatched,
    /// A template matched; the app and user it names (decoded).
    Target {
        app_id: Option<Cow<'a, str>>,
        user_id: Option<Cow<'a, str>>,
    },
    /// The path could be read differently by the operator's API: refuse it.
    Ambiguous(&'static str),
}

impl TargetRoutes {
    /// Parses templates, in the order they are to be tried.
    pub fn parse<I, S>(templates: I) -> Result<Self, RouteError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for template in templates {
            let text = template.as_ref().trim();
            if out.len() == MAX_TEMPLATES {
                return Err(RouteError {
                    template: text.to_string(),
                    reason: "at most 64 target routes may be given",
                });
            }
            let template = parse_template(text)?;
            if let Some(earlier) = out.iter().find(|e: &&Template| e.covers(&template)) {
                return Err(RouteError {
                    template: text.to_string(),
                    reason: if earlier.segments == template.segments {
                        "it repeats an earlier target route"
                    } else {
                        "an earlier target route matches every path it matches, so it would never be used (and its {userId} never checked): list the longer route first"
                    },
                });
            }
            out.push(template);
        }
        Ok(Self { templates: out })
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The templates as given.
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|t| t.text.as_str())
    }

    /// What `uri` (a path, with or without a query) targets.
    pub fn match_uri<'a>(&self, uri: &'a str) -> RouteMatch<'a> {
        let path = uri.split_once('?').map_or(uri, |(path, _)| path);
        let segments = match split_path(path) {
            Ok(segments) => segments,
            Err(reason) => return RouteMatch::Ambiguous(reason),
        };
        'templates: for template in &self.templates {
            if segments.len() < template.segments.len() {
                continue;
            }
            let (mut app_id, mut user_id) = (None, None);
            for (want, got) in template.segments.iter().zip(&segments) {
                match want {
                    Segment::Literal(literal) => {
                        if !literal.eq_ignore_ascii_case(got) {
                            continue 'templates;
                        }
                    }
                    Segment::AppId | Segment::UserId if got.is_empty() => continue 'templates,
                    Segment::AppId => app_id = Some(got.clone()),
                    Segment::UserId => user_id = Some(got.clone()),
                }
            }
            return RouteMatch::Target { app_id, user_id };
        }
        RouteMatch::Unmatched
    }
}

impl fmt::Display for TargetRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.templates {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(&t.text)?;
            first = false;
        }
        Ok(())
    }
}

impl Template {
    /// Whether this template matches every path that `later` matches.
    fn covers(&self, later: &Template) -> bool {
        self.segments.len() <= later.segments.len()
            && self
                .segments
                .iter()
                .zip(&later.segments)
                .all(|(mine, theirs)| match (mine, theirs) {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Literal(_), _) => false,
                    (Segment::AppId | Segment::UserId, _) => true,
                })
    }
}

fn parse_template(text: &str) -> Result<Template, RouteError> {
    let refuse = |reason| RouteError {
        template: text.to_string(),
        reason,
    };
    if text.len() > MAX_TEMPLATE_LEN {
        return Err(refuse("a target route may be at most 1024 bytes"));
    }
    let rest = text
        .strip_prefix('/')
        .ok_or_else(|| refuse("a target route must start with /"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(refuse("a target route must have at least one segment"));
    }
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        let segment = match raw {
            "" => return Err(refuse("a target route must not contain //")),
            "{appId}" => Segment::AppId,
            "{userId}" => Segment::UserId,
            "." | ".." => return Err(refuse("a target route must not contain . or ..")),
            _ if raw.contains(['{', '}']) => {
                return Err(refuse(
                    "the only placeholders are whole segments {appId} and {userId}",
                ));
            }
            _ if !raw.bytes().all(is_literal_byte) => {
                return Err(refuse(
                    "literal segments may hold letters, digits and - . _ ~ ! $ & ' ( ) * + = : @ only",
                ));
            }
            _ => Segment::Literal(raw.to_ascii_lowercase()),
        };
        if !matches!(segment, Segment::Literal(_)) && segments.contains(&segment) {
            return Err(refuse("{appId} and {userId} may each appear once"));
        }
        segments.push(segment);
    }
    if !segments
        .iter()
        .any(|s| matches!(s, Segment::AppId | Segment::UserId))
    {
        return Err(refuse("a target route must name {appId} or {userId}"));
    }
    Ok(Template {
        text: text.to_string(),
        segments,
    })
}

/// RFC 3986 `pchar` without `%`, `;` and `,` (unreserved, sub-delims but `;` and `,`,
/// `:` and `@`).
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+=:@".contains(&b)
}

/// The decoded segments of `path`, or why it is ambiguous. A trailing
/// empty segment (`/a/b/`) is dropped.
fn split_path(path: &str) -> Result<Vec<Cow<'_, str>>, &'static str> {
    if path.len() > MAX_PATH_LEN {
        return Err("the request path is too long");
    }
    let rest = path
        .strip_prefix('/')
        .ok_or("the request path does not start with /")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            return Err("the request path contains an empty segment (//)");
        }
        if raw.contains(['\\', ';']) {
            return Err("the request path contains \\ or ;");
        }
        if !percent_escapes_are_whole(raw) {
            return Err("the request path contains a % not followed by two hex digits");
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| "a segment of the request path does not decode to UTF-8")?;
        if decoded.contains('%') {
            return Err("the request path is percent-encoded twice (%25)");
        }
        if decoded.contains(['/', '\\']) {
            return Err("the request path contains an encoded / or \\");
        }
        if decoded == "." || decoded == ".." {
            return Err("the request path contains a dot segment");
        }
        if decoded.chars().any(char::is_control) {
            return Err("the request path contains a control character");
        }
        out.push(decoded);
    }
    Ok(out)
}

/// Whether every `%` in `raw` starts a `%XX` escape.
fn percent_escapes_are_whole(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn routes() -> TargetRoutes {
        TargetRoutes::parse(["/v2/apps/{appId}/users/{userId}", "/v2/apps/{appId}"])
            .expect("templates")
    }

    fn target<'a>(app: Option<&'a str>, user: Option<&'a str>) -> RouteMatch<'a> {
        RouteMatch::Target {
            app_id: app.map(Cow::Borrowed),
            user_id: user.map(Cow::Borrowed),
        }
    }

    #[test]
    fn the_first_matching_template_wins() {
        let r = routes();
        assert_eq!(
            r.match_uri("/v2/apps/ap_1/users/alice"),
            target(Some("ap_1"), Some("alice"))
        );
        assert_eq!(
            r.match_uri("/v2/apps/ap_1/users/alice/messages?x=1"),
            target(Some("ap_1"), Some("alice"))
        );
        assert_eq!(
            r.match_uri("/v2/apps/ap_1/users"),
            target(Some("ap_1"), None)
        );
        assert_eq!(r.match_uri("/v2/apps/ap_1"), target(Some("ap_1"), None));
        assert_eq!(r.match_uri("/v2/apps/ap_1/"), target(Some("ap_1"), None));
        // A route listed after one that covers it would never be used.
        let err = TargetRoutes::parse(["/v2/apps/{appId}", "/v2/apps/{appId}/users/{userId}"])
            .expect_err("shadowed");
        assert!(err.reason.contains("longer route first"), "{err}");
        assert!(TargetRoutes::parse(["/v2/{appId}", "/v2/{appId}"]).is_err());
        // Different literals do not cover each other.
        assert!(
            TargetRoutes::parse(["/v2/apps/{appId}", "/v3/apps/{appId}/users/{userId}"]).is_ok()
        );
        assert!(TargetRoutes::parse(["/v2/apps/{appId}/x", "/v2/apps/{appId}"]).is_ok());
    }

    #[test]
    fn whole_segments_only() {
        let r = routes();
        assert_eq!(r.match_uri("/v2/apps"), RouteMatch::Unmatched);
        assert_eq!(r.match_uri("/v2/apps/"), RouteMatch::Unmatched);
        assert_eq!(r.match_uri("/v2/appsx/ap_1"), RouteMatch::Unmatched);
        assert_eq!(r.match_uri("/v20/apps/ap_1"), RouteMatch::Unmatched);
        assert_eq!(r.match_uri("/x/v2/apps/ap_1"), RouteMatch::Unmatched);
        assert_eq!(r.match_uri("/"), RouteMatch::Unmatched);
        assert_eq!(r.match_uri("/?q=/v2/apps/ap_1"), RouteMatch::Unmatched);
    }

    #[test]
    fn segments_are_decoded_and_literals_compared_without_case() {
        let r = routes();
        assert_eq!(
            r.match_uri("/V2/%61pps/ap_1/users/al%20ice"),
            target(Some("ap_1"), Some("al ice"))
        );
        assert_eq!(
            r.match_uri("/v2/apps/ap_1/users/%C3%A9"),
            target(Some("ap_1"), Some("é"))
        );
    }

    #[test]
    fn paths_servers_read_differently_are_ambiguous() {
        let r = routes();
        for path in [
            "/v2//apps/ap_1",
            "/v2/apps/../apps/ap_1",
            "/v2/apps/./ap_1",
            "/v2/apps/%2e%2e/ap_1",
            "/v2/apps/%2E/ap_1",
            "/v2/apps%2fap_1",
            "/v2/apps%2Fap_1/users/a",
            "/v2/apps%5cap_1",
            "/v2\\apps\\ap_1",
            "/v2/apps;x=1/ap_1",
            "/v2/apps/ap_1/users/%ff",
            "/v2/apps/ap_1/users/a%00b",
            "/v2/%u0061pps/ap_1",
            "/v2/%2561pps/ap_1",
            "/v2/apps/ap_1/users/a%2",
            "/v2/apps/ap_1/users/a%zz",
            "v2/apps/ap_1",
            "http://evil/v2/apps/ap_1",
            "",
        ] {
            assert!(
                matches!(r.match_uri(path), RouteMatch::Ambiguous(_)),
                "{path:?}: {:?}",
                r.match_uri(path)
            );
        }
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (template, reason) in [
            ("v2/apps/{appId}", "start with /"),
            ("/", "at least one segment"),
            ("/v2//apps/{appId}", "//"),
            ("/v2/apps/{app}", "placeholders"),
            ("/v2/apps/x{appId}", "placeholders"),
            ("/v2/apps/{appId}/{appId}", "once"),
            ("/v2/apps", "name {appId} or {userId}"),
            ("/v2/a pps/{appId}", "literal segments"),
            ("/v2/a;b/{appId}", "literal segments"),
            ("/v2/../{appId}", ". or .."),
        ] {
            let err = TargetRoutes::parse([template]).expect_err(template);
            assert!(err.reason.contains(reason), "{template}: {err}");
            assert!(err.to_string().contains(template));
        }
        let many: Vec<String> = (0..65).map(|i| format!("/v{i}/{{appId}}")).collect();
        assert!(TargetRoutes::parse(&many).is_err());
        assert!(TargetRoutes::parse(&many[..64]).is_ok());
    }

    #[test]
    fn display_lists_the_templates() {
        assert_eq!(
            routes().to_string(),
            "/v2/apps/{appId}/users/{userId},/v2/apps/{appId}"
        );
    }

    proptest! {
        /// Any string: no panic, and a match names non-empty, decoded,
        /// slash-free ids.
        #[test]
        fn matching_never_panics(uri in ".{0,200}") {
            match routes().match_uri(&uri) {
                RouteMatch::Target { app_id, user_id } => {
                    for id in [app_id, user_id].into_iter().flatten() {
                        prop_assert!(!id.is_empty());
                        prop_assert!(!id.contains('/'));
                    }
                }
                RouteMatch::Unmatched | RouteMatch::Ambiguous(_) => {}
            }
        }

        /// Encoding any byte of a literal segment does not change what a
        /// path targets.
        #[test]
        fn percent_encoding_a_literal_does_not_escape_the_match(
            index in 0usize..6,
            app in "[a-z0-9_]{1,20}",
        ) {
            let encode = |segment: &str, at: Option<usize>| -> String {
                segment
                    .char_indices()
                    .map(|(i, c)| if Some(i) == at { format!("%{:02X}", c as u32) } else { c.to_string() })
                    .collect()
            };
            let (v2, apps) = if index < 2 {
                (encode("v2", Some(index)), encode("apps", None))
            } else {
                (encode("v2", None), encode("apps", Some(index - 2)))
            };
            let path = format!("/{v2}/{apps}/{app}");
            prop_assert_eq!(routes().match_uri(&path), target(Some(&app), None));
        }

        /// A template matches every path that extends it.
        #[test]
        fn templates_match_longer_paths(
            app in "[A-Za-z0-9_-]{1,30}",
            user in "[A-Za-z0-9_.-]{1,30}",
            tail in proptest::collection::vec("[a-z0-9]{1,8}", 0..4),
        ) {
            prop_assume!(user != "." && user != "..");
            let path = format!("/v2/apps/{app}/users/{user}/{}", tail.join("/"));
            prop_assert_eq!(routes().match_uri(&path), target(Some(&app), Some(&user)));
        }
    }
}
