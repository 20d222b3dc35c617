//! Writes the seed corpora in `corpus/<target>/` from the fixture's own
//! keys and tokens (the forms the core's tests use): run after changing
//! the fixture or a target's input format, with
//! `cargo test --manifest-path fuzz/Cargo.toml --test seeds -- --ignored`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_core::jwt::sign_hs256;
use latchkey_fuzz::{FIXTURE, NOW};
use serde_json::json;

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("old seeds removed");
    }
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("seed written");
    }
}

fn with(mode: u8, rest: &[u8]) -> Vec<u8> {
    [&[mode][..], rest].concat()
}

fn tokens() -> Vec<String> {
    let k = &FIXTURE.keys;
    let sign = |key: usize, claims: serde_json::Value| {
        sign_hs256(k[key].secret.as_bytes(), &k[key].id, &claims)
    };
    vec![
        sign(0, json!({"scope": "app", "exp": NOW + 600, "iat": NOW})),
        sign(
            0,
            json!({"scope": "appUser", "userId": "user-1", "exp": NOW + 600}),
        ),
        sign(
            1,
            json!({"scope": "appUser", "userId": "u", "iat": NOW, "exp": NOW + 60}),
        ),
        sign(1, json!({"scope": "app", "exp": NOW + 7200})),
        sign(2, json!({"scope": "account", "nbf": NOW - 5, "exp": 1.9e9})),
        sign(3, json!({"scope": "user", "external_id": "Jos\u{e9}"})),
        sign(0, json!({"scope": "app", "exp": NOW - 3600})),
        sign(4, json!({"scope": "app"})),
        sign(5, json!({"scope": "app", "x": [1, {"y": null}]})),
    ]
}

#[test]
#[ignore = "writes the checked-in seed corpora"]
fn write_seeds() {
    let f = &*FIXTURE;
    let tokens = tokens();
    let basic = |i: usize| {
        let key = &f.keys[i];
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", key.id, key.secret))
        )
    };

    let mut auth: Vec<Vec<u8>> = (0..f.keys.len())
        .map(|i| with(0, basic(i).as_bytes()))
        .collect();
    for t in [&f.operator_token, &f.verifier_token, &tokens[0], &tokens[4]] {
        auth.push(with(0, format!("Bearer {t}").as_bytes()));
    }
    auth.push(with(0, format!(" bearer  {}\t", tokens[1]).as_bytes()));
    auth.push(with(2, &[&[0u8][..], f.keys[0].secret.as_bytes()].concat()));
    auth.push(with(3, tokens[2].as_bytes()));
    auth.push(with(4, f.verifier_token.as_bytes()));
    auth.push(with(1, b"app_x:lksk_y"));
    write("authorization", &auth);

    let mut jwt: Vec<Vec<u8>> = tokens.iter().map(|t| with(0, t.as_bytes())).collect();
    jwt.push(with(
        0,
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"scope":"app"}"#)
        )
        .as_bytes(),
    ));
    for (header, claims, control) in [
        (
            &b""[..],
            &br#"{"scope":"app","exp":1800000600}"#[..],
            &[0u8, 1][..],
        ),
        (
            b"",
            br#"{"scope":"appUser","userId":"a","iat":1800000000,"exp":1800000060}"#,
            &[1, 2],
        ),
        (b"", br#"{"scope":"account","nbf":17e8}"#, &[2, 3]),
        (b"", br#"{"scope":"user","external_id":"\u00e9"}"#, &[3, 4]),
        (
            br#"{"alg":"HS256","kid":"k","crit":null}"#,
            br#"{}"#,
            &[0, 0],
        ),
        (
            br#"{"kid":"a","alg":"HS256","typ":"JWT"}"#,
            br#"{"scope":"app"}"#,
            &[0, 0, 1, 2],
        ),
        // Another algorithm than the key's, with the key's HMAC (the
        // algorithm is the key's, never the token's choice).
        (
            br#"{"kid":"a","alg":"ES256","typ":"JWT"}"#,
            br#"{"scope":"app"}"#,
            &[0],
        ),
        (br#"{"alg":"EdDSA","kid":"a"}"#, br#"{"scope":"app"}"#, &[1]),
    ] {
        jwt.push(with(
            1,
            &[header, &[0xFF], claims, &[0xFF], control].concat(),
        ));
    }
    write("jwt", &jwt);

    let flat: Vec<Vec<u8>> = [
        r#"{"alg":"HS256","typ":"JWT","kid":"app_0DQdq"}"#,
        r#"{"scope":"appUser","userId":"user-1","exp":1800000600,"iat":1800000000}"#,
        r#" { "a" : "x" , "b" : 0 , "c" : true , "d" : null , "e" : false } "#,
        r#"{"t":999999999999999,"u":1000000000000000}"#,
        r#"{"n":"Jos\u00e9","m":"a\"b","k\u0065y":1}"#,
        r#"{"a":1.5,"b":-1,"c":1e3,"d":[1],"e":{}}"#,
        r#"{"scope":"app","scope":"app"}"#,
        "{\"a\":\"\u{e9}\u{20ac}\u{1f600}\"}",
        "[]",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    write("flat_json", &flat);

    let body = |v: serde_json::Value| v.to_string().into_bytes();
    write(
        "verify_body",
        &[
            body(json!({"authorization": basic(0), "appId": "ap_1"})),
            body(json!({"authorization": basic(2), "appId": "ap_1", "userId": null})),
            body(
                json!({"authorization": format!("Bearer {}", tokens[1]), "appId": "ap_1", "userId": "user-1", "origin": "https://example.com"}),
            ),
            body(json!({"authorization": format!("Bearer {}", f.operator_token)})),
            br#" {"\u0061uthorization":"Basic x","origin":null} "#.to_vec(),
            br#"["Basic x"]"#.to_vec(),
        ],
    );

    let route = |templates: &str, path: &str, app: &str, user: &str| {
        [
            templates.as_bytes(),
            &[0xFF],
            path.as_bytes(),
            &[0xFF],
            app.as_bytes(),
            &[0xFF],
            user.as_bytes(),
        ]
        .concat()
    };
    write(
        "route",
        &[
            route(
                "/v2/apps/{appId}/users/{userId}\n/v2/apps/{appId}",
                "/v2/apps/ap_1/users/u%20x/profile?q=1",
                "ap_1",
                "user 1",
            ),
            route("/{appId}\n/x/{userId}/", "/X/%75ser/", "a", "\u{e9}"),
            route("/a/{userId}/b/{appId}", "/a/%2e%2e/b/c", "a%b", "."),
            route("/v1/{appId}/{appId}", "/v1//x", "", ""),
        ],
    );

    let secret_body: Vec<u8> = (0u8..45).collect();
    write(
        "sealed",
        &[
            with(0, b"app_1\xff\x01abcdefghijklmnopqrstuvwxyz0123456789"),
            with(1, b"app_1\xfflksk_plaintext\xff\x05\x01"),
            with(2, f.keys[0].secret.as_bytes()),
            with(2, f.operator_token.as_bytes()),
            with(3, &[&[0u8][..], &secret_body].concat()),
            with(4, f.keys[0].id.as_bytes()),
            with(4, b"usr_0123456789abcdefghijkl"),
            with(
                5,
                &[
                    b"/v1/apps/%6C".as_slice(),
                    b"\xff?after=",
                    b"\xff\x01",
                    &secret_body,
                ]
                .concat(),
            ),
            with(
                5,
                &[format!("/x/{}", tokens[0]).as_bytes(), b"\xff/y"].concat(),
            ),
        ],
    );
}
