#!/usr/bin/env python3
"""Fixtures for one schemathesis run (scripts/schemathesis.sh).

Creates, on a running Latchkey, a world of its own for one kind of
credential: a fresh account (through the operator token) with an app, two
app keys, an app user, a webhook, a service account with a key that is
granted the app, and, for the operator, an account and a verifier token to
spend. Prints a schemathesis configuration (TOML) whose path parameters
name those real objects, so generated requests reach real resources rather
than 404s, and writes the credential's Authorization header to a file.

Each run gets its own world because runs delete and rotate what they
reach: one kind's deletions must not take away the next kind's objects.

Standard library only: CI has python3 but nothing else is installed for it.
"""

import base64
import hashlib
import hmac
import json
import secrets
import sys
import time
import urllib.error
import urllib.request

KINDS = ("operator", "verifier", "account-basic", "app-basic", "app-jwt", "appuser-jwt")


def call(base, method, path, auth, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("authorization", auth)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"fixtures: {method} {path} answered {e.code}: {e.read()!r}")
    return json.loads(text) if text else None


def basic(key_id, secret):
    return "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(key_id, secret, claims):
    """An HS256 JWT as README's JWTs section describes it."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key_id}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    tag = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"Bearer {header}.{payload}.{b64url(tag)}"


def main():
    base, init_path, kind, auth_path = sys.argv[1:5]
    if kind not in KINDS:
        sys.exit(f"fixtures: unknown kind {kind}; one of {KINDS}")
    with open(init_path) as f:
        init = json.load(f)
    operator = "Bearer " + init["operatorToken"]
    tag = secrets.token_hex(4)

    r = call(base, "POST", "/v1/accounts", operator, {
        "displayName": f"schemathesis {kind}",
        "owner": {"email": f"{kind}-{tag}@example.com", "password": "a long enough password"},
    })
    owner_id, owner_secret = r["key"]["id"], r["key"]["secret"]
    account_id = r["account"]["id"]
    owner = basic(owner_id, owner_secret)

    app_id = call(base, "POST", "/v1/apps", owner, {"displayName": "fuzzed app"})["app"]["id"]
    # The webhook first: creating the keys below queues its deliveries.
    webhook_id = call(base, "POST", f"/v1/apps/{app_id}/webhooks", owner, {
        "target": "https://example.com/hook", "triggers": ["key:created"],
    })["webhook"]["id"]
    app_key = call(base, "POST", f"/v1/apps/{app_id}/keys", owner, {"displayName": "caller"})["key"]
    spare_key = call(base, "POST", f"/v1/apps/{app_id}/keys", owner, {"displayName": "spare"})["key"]
    call(base, "POST", f"/v1/apps/{app_id}/users", owner,
         {"externalId": "alice", "profile": {"givenName": "Alice"}})
    delivery_id = call(base, "GET", f"/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries",
                       owner)["deliveries"][0]["id"]
    sa_id = call(base, "POST", "/v1/serviceAccounts", owner, {"displayName": "robot"})["serviceAccount"]["id"]
    sa_key_id = call(base, "POST", f"/v1/serviceAccounts/{sa_id}/keys", owner,
                     {"displayName": "robot key"})["key"]["id"]
    call(base, "PUT", f"/v1/serviceAccounts/{sa_id}/apps/{app_id}", owner)

    # The operator's objects to spend: an account of its own and a
    # verifier token that no other run uses.
    spare_account = call(base, "POST", "/v1/accounts", operator, {
        "displayName": "to delete",
        "owner": {"email": f"spare-{kind}-{tag}@example.com", "password": "a long enough password"},
    })["account"]["id"]
    token = call(base, "POST", "/v1/verifierTokens", operator, {"displayName": f"schemathesis {kind}"})
    token_id = token["verifierToken"]["id"]

    auth = {
        "operator": operator,
        "verifier": "Bearer " + token["verifierToken"]["token"],
        "account-basic": owner,
        "app-basic": basic(app_key["id"], app_key["secret"]),
        # No exp: a JWT without one lives as long as its key. (The runs
        # with JWTs leave out PATCH /v1/apps/{app_id}, whose
        # maxTokenTtlSeconds would refuse such a token: see schemathesis.sh.)
        "app-jwt": jwt(app_key["id"], app_key["secret"], {"scope": "app", "iat": int(time.time())}),
        "appuser-jwt": jwt(app_key["id"], app_key["secret"],
                           {"scope": "appUser", "userId": "alice", "iat": int(time.time())}),
    }[kind]
    with open(auth_path, "w") as f:
        f.write(auth)

    def toml_table(params):
        return "\n".join(f'{name} = "{value}"' for name, value in params.items())

    # Path parameters, per operation where one name means different
    # objects (key_id: an app's key, a service account's, the caller's own).
    # (The verifier run is given its own token's id: it may not delete it,
    # which is what the run checks.)
    shared = {"app_id": app_id, "user": "alice", "webhook_id": webhook_id,
              "delivery_id": delivery_id, "sa_id": sa_id,
              "account_id": spare_account, "token_id": token_id}
    print("[parameters]")
    print(toml_table(shared))
    for path_regex, key_id in (
        ("^/v1/apps/", spare_key["id"]),
        ("^/v1/serviceAccounts/", sa_key_id),
        ("^/v1/account/keys/", owner_id),
    ):
        print()
        print("[[operations]]")
        print(f"include-path-regex = '{path_regex}'")
        print("[operations.parameters]")
        print(toml_table({**shared, "key_id": key_id}))
    # Ids for the summary (stderr: stdout is the configuration).
    print(f"fixtures for {kind}: account {account_id}, app {app_id}", file=sys.stderr)


if __name__ == "__main__":
    main()
