#!/usr/bin/python3
"""Seal a payload for ENS as a compact JWE (RFC 7516), the way a device does.

    jwe_make.py --jwks URL_OR_FILE --payload FILE_OR_- [--alg ECDH-ES|RSA-OAEP-256]
                [--enc A256GCM|A128GCM] [--kid KID] [--cacert FILE] [--insecure]

--jwks is the server's GET /api/ens/v1/keys document ({"keys":[...]}, API.md 1.1), given as an
http(s) URL or a file path. The key is the one whose "alg" matches --alg (and whose "kid" matches
--kid when given); with several candidates the last one listed wins, since rotation appends. The
protected header carries alg, enc and kid. Prints the compact serialization on stdout.

Uses python3-jwcrypto, an implementation independent of the server's, so the demo and the
integration tests exercise the server against someone else's reading of the RFCs.
"""

import argparse
import json
import ssl
import sys
import urllib.request

from jwcrypto import jwe, jwk

ALGS = ("ECDH-ES", "RSA-OAEP-256")
ENCS = ("A256GCM", "A128GCM")
MAX_JWKS_BYTES = 1024 * 1024


def load_jwks(src, cacert, insecure):
    if src.startswith("http://") or src.startswith("https://"):
        ctx = None
        if src.startswith("https://"):
            ctx = ssl.create_default_context(cafile=cacert)
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(src, timeout=15, context=ctx) as resp:
            raw = resp.read(MAX_JWKS_BYTES + 1)
    else:
        with open(src, "rb") as f:
            raw = f.read(MAX_JWKS_BYTES + 1)
    if len(raw) > MAX_JWKS_BYTES:
        raise SystemExit("jwe_make: JWKS document too large")
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise SystemExit('jwe_make: not a JWKS document (want {"keys":[...]})')
    return doc["keys"]


def pick_key(keys, alg, kid):
    kty = "EC" if alg == "ECDH-ES" else "RSA"
    chosen = None
    for k in keys:
        if not isinstance(k, dict) or k.get("kty") != kty:
            continue
        if k.get("alg", alg) != alg or k.get("use", "enc") != "enc":
            continue
        if kid is not None and k.get("kid") != kid:
            continue
        chosen = k
    if chosen is None:
        raise SystemExit("jwe_make: no %s key%s in the JWKS" %
                         (alg, " with kid " + kid if kid else ""))
    if "kid" not in chosen:
        raise SystemExit("jwe_make: the chosen key has no kid")
    return chosen


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jwks", required=True, help="JWKS URL or file")
    ap.add_argument("--payload", required=True, help="plaintext file, or - for stdin")
    ap.add_argument("--alg", default="ECDH-ES", choices=ALGS)
    ap.add_argument("--enc", default="A256GCM", choices=ENCS)
    ap.add_argument("--kid", default=None, help="use this key id (default: by --alg)")
    ap.add_argument("--cacert", default=None, help="CA file for an https JWKS URL")
    ap.add_argument("--insecure", action="store_true", help="do not verify the JWKS server")
    args = ap.parse_args(argv)

    keys = load_jwks(args.jwks, args.cacert, args.insecure)
    pub = pick_key(keys, args.alg, args.kid)
    key = jwk.JWK(**pub)
    if args.payload == "-":
        payload = sys.stdin.buffer.read()
    else:
        with open(args.payload, "rb") as f:
            payload = f.read()

    protected = {"alg": args.alg, "enc": args.enc, "kid": pub["kid"]}
    token = jwe.JWE(payload, protected=json.dumps(protected, separators=(",", ":")))
    token.allowed_algs = list(ALGS) + list(ENCS)
    token.add_recipient(key)
    sys.stdout.write(token.serialize(compact=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
