"""A client of Latchkey's public-key keys, written with third-party JOSE
libraries (PyPI PyJWT and joserfc, over pyca/cryptography): it makes key
pairs, exports their public JWKs and signs JWTs, as a customer's server
would. Reads one JSON request on stdin, writes one JSON answer on stdout.

  {"op": "keypair", "kind": "ed25519" | "p256"}
      -> {"private": JWK, "public": JWK}            (PyJWT's to_jwk)
  {"op": "sign", "lib": "pyjwt" | "joserfc", "alg": ..., "kid": ...,
   "private": JWK, "claims": {...}}
      -> {"token": "..."}
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


def main():
    req = json.load(sys.stdin)
    if req["op"] == "keypair":
        out = keypair(req["kind"])
    elif req["op"] == "sign":
        out = {"token": sign(req)}
    else:
        raise SystemExit(f"unknown op {req['op']}")
    json.dump(out, sys.stdout)


main()
