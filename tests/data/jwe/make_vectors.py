#!/usr/bin/python3
"""Regenerate the JWE test vectors with python3-jwcrypto (an implementation independent of ours).

    /usr/bin/python3 tests/data/jwe/make_vectors.py

Writes, beside this script: ec_key.der and rsa_key.der (PKCS#8 DER private keys, as
jwk_key_parse loads them), ec_kid.txt and rsa_kid.txt (the RFC 7638 thumbprints jwcrypto
computes), plaintext.json, one compact JWE per supported alg/enc pair, and zip_def.jwe (a
well-formed JWE with "zip":"DEF" that the server must refuse). Outputs are random: rerunning
replaces every vector, and the tests only rely on the relations between the files.
"""

import json
import os

from cryptography.hazmat.primitives import serialization
from jwcrypto import jwe, jwk

HERE = os.path.dirname(os.path.abspath(__file__))

PLAINTEXT = json.dumps({
    "email": "alice@contoso.com",
    "ewsUrl": "https://mail.contoso.com/EWS/Exchange.asmx",
    "auth": {"type": "basic", "username": "CONTOSO\\alice", "password": "canary-Pa55w0rd"},
    "device": {"id": "3f2c9a", "platform": "ios", "pushToken": "a1b2c3", "appId": "com.example.mail",
               "environment": "production"},
    "preferences": {"preview": "full", "badge": True},
    "iat": 1764000000,
}, separators=(",", ":")).encode()


def write(name, data):
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(os.path.join(HERE, name), mode) as f:
        f.write(data)


def der(key):
    return key.get_op_key("unwrapKey").private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def seal(key, alg, enc, extra=None, payload=PLAINTEXT):
    hdr = {"alg": alg, "enc": enc, "kid": key.thumbprint()}
    hdr.update(extra or {})
    t = jwe.JWE(payload, protected=json.dumps(hdr, separators=(",", ":")))
    t.allowed_algs = [alg, enc]
    t.add_recipient(key)
    return t.serialize(compact=True) + "\n"


def main():
    ec = jwk.JWK.generate(kty="EC", crv="P-256")
    rsa = jwk.JWK.generate(kty="RSA", size=2048)
    write("ec_key.der", der(ec))
    write("rsa_key.der", der(rsa))
    write("ec_kid.txt", ec.thumbprint() + "\n")
    write("rsa_kid.txt", rsa.thumbprint() + "\n")
    write("plaintext.json", PLAINTEXT)
    write("ecdh_es_a256gcm.jwe", seal(ec, "ECDH-ES", "A256GCM"))
    write("ecdh_es_a128gcm.jwe", seal(ec, "ECDH-ES", "A128GCM"))
    write("ecdh_es_apu_apv_a256gcm.jwe",
          seal(ec, "ECDH-ES", "A256GCM", {"apu": "QWxpY2U", "apv": "Qm9i"}))
    write("rsa_oaep_256_a256gcm.jwe", seal(rsa, "RSA-OAEP-256", "A256GCM"))
    write("rsa_oaep_256_a128gcm.jwe", seal(rsa, "RSA-OAEP-256", "A128GCM"))
    write("zip_def.jwe", seal(ec, "ECDH-ES", "A256GCM", {"zip": "DEF"}))


if __name__ == "__main__":
    main()
