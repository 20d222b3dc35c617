//! Target routes (`route.rs`): templates parsed at start, and the request
//! path (attacker bytes) matched against them.
//!
//! Input: `templates 0xFF path 0xFF appId 0xFF userId`; templates one a
//! line. Checked: no panic; templates that parse parse again from their
//! own text to the same routes; a path's query changes nothing; the ids
//! of a match are non-empty decoded segments without `/`, `\`, `%`,
//! control characters, or dot segments; and a path built from the first
//! template, with the given ids percent-encoded into it and its literals
//! in any case, matches that template with exactly those ids whenever the
//! ids are fit to be matched.
#![no_main]

use latchkey_core::route::MAX_PATH_LEN;
use latchkey_core::{RouteMatch, TargetRoutes};
use latchkey_fuzz::pieces;
use libfuzzer_sys::fuzz_target;

fn check_id(id: &str) {
    assert!(!id.is_empty());
    assert!(!id.contains(['/', '\\', '%']), "{id:?}");
    assert!(!id.chars().any(char::is_control), "{id:?}");
    assert!(id != "." && id != "..");
}

/// Every byte of `s` percent-encoded when `all`, else only those a path
/// segment cannot hold as they are.
fn encode(s: &str, all: bool) -> String {
    s.bytes()
        .map(|b| {
            if !all && (b.is_ascii_alphanumeric() || b"-._~!$&'()*+=:@".contains(&b)) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let p = pieces(data, 4);
    let (Ok(templates), Ok(path), Ok(app), Ok(user)) = (
        std::str::from_utf8(p[0]),
        std::str::from_utf8(p[1]),
        std::str::from_utf8(p[2]),
        std::str::from_utf8(p[3]),
    ) else {
        return;
    };
    let Ok(routes) = TargetRoutes::parse(templates.lines()) else {
        return;
    };
    assert_eq!(
        TargetRoutes::parse(routes.templates()).as_ref(),
        Ok(&routes)
    );

    let matched = routes.match_uri(path);
    if let RouteMatch::Target { app_id, user_id } = &matched {
        app_id.as_deref().map(check_id);
        user_id.as_deref().map(check_id);
    }
    if !path.contains('?') {
        assert_eq!(routes.match_uri(&format!("{path}?{app}")), matched);
    }

    // A path built from the first template.
    let Some(first) = routes.templates().next() else {
        return;
    };
    let all = app.len() % 2 == 1;
    let mut built = String::new();
    let (mut has_app, mut has_user) = (false, false);
    for (i, segment) in first.trim().trim_matches('/').split('/').enumerate() {
        built.push('/');
        match segment {
            "{appId}" => {
                has_app = true;
                built.push_str(&encode(app, all));
            }
            "{userId}" => {
                has_user = true;
                built.push_str(&encode(user, !all));
            }
            literal if i % 2 == 0 => built.push_str(&literal.to_ascii_uppercase()),
            literal => built.push_str(literal),
        }
    }
    let fit = |id: &str| {
        !id.is_empty()
            && id != "."
            && id != ".."
            && !id.contains(['%', '/', '\\'])
            && !id.chars().any(char::is_control)
    };
    if (!has_app || fit(app)) && (!has_user || fit(user)) && built.len() <= MAX_PATH_LEN {
        let want = RouteMatch::Target {
            app_id: has_app.then(|| app.into()),
            user_id: has_user.then(|| user.into()),
        };
        assert_eq!(routes.match_uri(&built), want, "{built:?}");
    }
});
