"""A throwaway C2PA signing chain (root CA -> signer), made fresh for each test session."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Chain:
    root_pem: str  # the trust anchor
    chain_pem: str  # signer certificate, then the root
    key_pem: bytes  # the signer's private key


def _name(cn: str, organisation: str = "synthsieve tests") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "US")])


def make_chain(days: int = 30, organisation: str = "synthsieve tests") -> Chain:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder()
            .subject_name(_name("synthsieve test root", organisation))
            .issuer_name(_name("synthsieve test root", organisation))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(_name("synthsieve test signer", organisation)).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return Chain(
        root_pem=root.public_bytes(pem).decode(),
        chain_pem=leaf.public_bytes(pem).decode() + root.public_bytes(pem).decode(),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def sign(data: bytes, mime: str, chain: Chain, actions: list[dict],
         generator: str = "synthsieve-test") -> bytes:
    """`data` with a C2PA manifest holding `actions`, signed by `chain`'s signer."""
    import io

    import c2pa

    manifest = {"claim_generator_info": [{"name": generator, "version": "1.0"}],
                "title": "image", "assertions": [
                    {"label": "c2pa.actions", "data": {"actions": actions}}]}
    ctx = c2pa.Context.from_dict({"verify": {"verify_after_sign": False},
                                  "builder": {"thumbnail": {"enabled": False}}})
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
        c2pa.C2paSigningAlg.ES256, chain.chain_pem.encode(), chain.key_pem, None))
    out = io.BytesIO()
    c2pa.Builder(manifest, context=ctx).sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()
