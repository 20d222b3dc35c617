"""A client that signs requests to Latchkey with RFC 9421 HTTP Message
Signatures (hmac-sha256, keyid = the key id, key = the key secret), written
with third-party libraries: PyPI requests-http-signature (a requests auth
class) and http-message-signatures (its signer, used directly on a
prepared request). Reads one JSON request on stdin, writes one JSON answer:

  {"lib": "requests-http-signature" | "http-message-signatures",
   "method": "GET", "url": "http://127.0.0.1:PORT/v1/...", "body": null | "...",
   "key_id": "app_...", "secret": "lksk_...", "now": unix seconds (the
   server's clock), "created_offset": seconds added to now for `created`,
   "nonce": false, "components": null | [...],
   "tamper": null | "method" | "path" | "path:/other/path" | "query" | "body" | "host",
   "repeat": 1, "describe": false, "chunked": false}
  -> {"responses": [{"status": 200, "body": {...}, "signature_input": "..."}, ...]}
  With "describe": the signed request is not sent; the answer is its
  {"method", "uri", "headers"}, as /v1/verify's signedRequest takes them.
  With "chunked": the body is sent with Transfer-Encoding: chunked (no
  Content-Length), as signed.
"""

import datetime
import json
import sys

import requests
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from requests_http_signature import HTTPSignatureAuth
from requests_http_signature import algorithms as rhs_algorithms


def created_at(req):
    return datetime.datetime.fromtimestamp(req["now"] + req.get("created_offset", 0), datetime.timezone.utc)


class AuthAt(HTTPSignatureAuth):
    """requests-http-signature, with `created` on the server's clock."""

    created = None

    def get_created(self, request):
        self.add_date(request, timestamp=int(self.created.timestamp()))
        return self.created


def prepare(req):
    session = requests.Session()
    body = req.get("body")
    headers = {"content-type": "application/json"} if body is not None else {}
    prepared = session.prepare_request(
        requests.Request(req["method"], req["url"], data=body, headers=headers)
    )
    secret = req["secret"].encode()
    components = req.get("components")
    if req["lib"] == "requests-http-signature":
        kwargs = {}
        if components:
            kwargs["covered_component_ids"] = tuple(components)
        auth = AuthAt(
            signature_algorithm=rhs_algorithms.HMAC_SHA256,
            key=secret,
            key_id=req["key_id"],
            use_nonce=req.get("nonce", False),
            **kwargs,
        )
        auth.created = created_at(req)
        prepared = auth(prepared)
    elif req["lib"] == "http-message-signatures":
        if body is not None:
            from http_message_signatures import ContentDigest  # noqa: F401
        signer = HTTPMessageSigner(
            signature_algorithm=algorithms.HMAC_SHA256,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={req["key_id"]: secret}),
        )
        covered = tuple(components or ("@method", "@authority", "@target-uri"))
        if body is not None and "content-digest" not in covered:
            covered += ("content-digest",)
        signer.sign(
            prepared,
            key_id=req["key_id"],
            created=created_at(req),
            nonce="n-" + str(req["now"]) if req.get("nonce") else None,
            covered_component_ids=covered,
            body=prepared.body.encode() if isinstance(prepared.body, str) else prepared.body,
        )
    else:
        raise SystemExit(f"unknown lib {req['lib']}")
    tamper = req.get("tamper")
    if tamper == "method":
        prepared.method = "POST" if prepared.method == "GET" else "GET"
    elif tamper and tamper.startswith("path"):
        # "path": the path with an x appended; "path:/other": that path.
        import urllib.parse
        parts = urllib.parse.urlsplit(prepared.url)
        path = tamper[5:] if tamper.startswith("path:") else parts.path + "x"
        prepared.url = urllib.parse.urlunsplit(parts._replace(path=path))
    elif tamper == "query":
        prepared.url += ("&" if "?" in prepared.url else "?") + "limit=1"
    elif tamper == "body":
        body = prepared.body or b""
        prepared.body = body + (b" " if isinstance(body, bytes) else " ")
        prepared.headers["content-length"] = str(len(prepared.body))
    elif tamper == "host":
        prepared.headers["host"] = "evil.example"
    if req.get("chunked") and prepared.body is not None:
        # requests sends an iterable body without Content-Length chunked.
        body = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
        prepared.body = iter([body[: len(body) // 2], body[len(body) // 2:]])
        del prepared.headers["content-length"]
    return session, prepared


def main():
    req = json.load(sys.stdin)
    session, prepared = prepare(req)
    if req.get("describe"):
        # Not sent: what the operator's server would hand to /v1/verify.
        json.dump({"method": prepared.method, "uri": prepared.url,
                   "headers": dict(prepared.headers)}, sys.stdout)
        return
    out = []
    for _ in range(req.get("repeat", 1)):
        resp = session.send(prepared)
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        out.append({
            "status": resp.status_code,
            "body": body,
            "signature_input": prepared.headers.get("signature-input"),
        })
    json.dump({"responses": out}, sys.stdout)


main()
