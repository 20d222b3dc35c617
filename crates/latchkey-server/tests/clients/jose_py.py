"""A client of Latchkey's public-key keys, written with third-party JOSE
libraries (PyPI PyJWT and joserfc, over pyca/cryptography): it makes key
pairs, exports their public JWKs and signs JWTs, as a customer's server
would. Reads one JSON request on stdin, writes one JSON answer on stdout.

  {"op": "keypair", "kind": "ed25519" | "p256"}
      -> {"private": JWK, "public": JWK}            (PyJWT's to_jwk)
  {"op": "sign", "lib": "pyjwt" | "joserfc", "alg": ..., "kid": ...,
   "private": JWK, "claims": {...}}
      -> {"token": "..."}
  {"op": "verify", "jwks_url": "...", "token": "...", "now": unix seconds,
   "iss": null | "required issuer", "aud": null | "required audience"}
      -> {"claims": {...}, "header": {...}} or {"error": "..."}
         (joserfc, with the JWKS fetched over HTTP; exp, nbf and iat
         checked at `now`, the test server's clock)
"""

import json
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm


def keypair(kind):
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        algorithm = OKPAlgorithm
    elif kind == "p256":
        private = ec.generate_private_key(ec.SECP256R1())
        algorithm = ECAlgorithm
    else:
        raise SystemExit(f"unknown kind {kind}")
    return {
        "private": algorithm.to_jwk(private, as_dict=True),
        "public": algorithm.to_jwk(private.public_key(), as_dict=True),
    }


def sign(req):
    if req["lib"] == "pyjwt":
        key = jwt.PyJWK(req["private"]).key
        return jwt.encode(req["claims"], key, algorithm=req["alg"], headers={"kid": req["kid"]})
    if req["lib"] == "joserfc":
        from joserfc import jwt as jjwt
        from joserfc.jwk import ECKey, OKPKey

        kty = req["private"]["kty"]
        key = (OKPKey if kty == "OKP" else ECKey).import_key(req["private"])
        header = {"alg": req["alg"], "kid": req["kid"], "typ": "JWT"}
        return jjwt.encode(header, req["claims"], key, algorithms=[req["alg"]])
    raise SystemExit(f"unknown lib {req['lib']}")


def verify(req):
    import urllib.request

    from joserfc import jwt as jjwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    with urllib.request.urlopen(req["jwks_url"]) as resp:
        keys = KeySet.import_key_set(json.load(resp))
    try:
        token = jjwt.decode(req["token"], keys, algorithms=["EdDSA", "Ed25519"])
        claims = {"exp": {"essential": True}}
        if req.get("iss") is not None:
            claims["iss"] = {"essential": True, "value": req["iss"]}
        if req.get("aud") is not None:
            claims["aud"] = {"essential": True, "value": req["aud"]}
        jjwt.JWTClaimsRegistry(now=req["now"], **claims).validate(token.claims)
    except (JoseError, ValueError) as e:
        return {"error": type(e).__name__}
    return {"claims": token.claims, "header": token.header}


def main():
    req = json.load(sys.stdin)
    if req["op"] == "keypair":
        out = keypair(req["kind"])
    elif req["op"] == "sign":
        out = {"token": sign(req)}
    elif req["op"] == "verify":
        out = verify(req)
    else:
        raise SystemExit(f"unknown op {req['op']}")
    json.dump(out, sys.stdout)


main()
