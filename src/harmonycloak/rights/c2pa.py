"""Signed provenance: C2PA manifests (Content Credentials) through ``c2pa-python``.

A manifest is a signed record embedded in the file. The one harmonycloak writes holds:

* ``cawg.training-mining`` (CAWG Training and Data Mining assertion 1.x): the entries
  ``cawg.ai_training``, ``cawg.ai_generative_training`` and ``cawg.data_mining`` with
  ``"use": "notAllowed"`` — the machine-readable "do not train" of the C2PA world;
* ``cawg.metadata`` (CAWG metadata assertion, JSON-LD with XMP names): ``dc:rights``
  (copyright notice), ``xmpRights:Owner``, ``xmpRights:WebStatement`` (licence URL),
  ``xmpRights:Marked`` (true: rights-managed) and ``plus:DataMining`` =
  ``DMI-PROHIBITED-AIMLTRAINING`` (PLUS/IPTC data-mining vocabulary);
* ``c2pa.actions.v2``: ``c2pa.opened`` (the file it was made from, as the parent
  ingredient), then — when a protection report is known — ``c2pa.edited`` by
  harmonycloak with parameters ``com.harmonycloak.protection`` (tool version, preset,
  mode, target, seed, SHA-256 of the report, of the protected file and of the master),
  then ``c2pa.edited.metadata`` for the rights tags.

c2pa-python 0.38 (c2pa-rs 0.91) embeds manifests in WAV (a ``C2PA`` RIFF chunk), MP3 (an
ID3v2 ``GEOB`` frame), FLAC and M4A (a ``uuid`` box); it refuses Ogg Vorbis and Opus
("type is unsupported"). Signing is offline: no timestamp authority, so the signature
is checked against the certificate's validity at reading time (the local leaf is valid
for 10 years). Validation of a file signed with the chain from :func:`init_signing_chain`
reports ``signingCredential.untrusted`` (the local root is on no public trust list) and
the state ``Valid``; give the root as a trust anchor and the state is ``Trusted``. A file
changed after signing fails with ``assertion.dataHash.mismatch`` (WAV, MP3, FLAC) or
``assertion.bmffHash.mismatch`` (M4A): that is what :data:`TAMPERED` means here.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harmonycloak import __version__
from harmonycloak.errors import InputError
from harmonycloak.io.files import atomic_write, temp_path_for
from harmonycloak.rights import ProtectionReport

__all__ = [
    "CHAIN_FILE",
    "DEFAULT_KEY_DIR",
    "KEY_FILE",
    "PROTECTION_PARAMETER",
    "ROOT_FILE",
    "SIGNABLE_MIME_TYPES",
    "TRAINING_MINING_ENTRIES",
    "ManifestPlan",
    "ManifestStatus",
    "SigningCredentials",
    "SigningFiles",
    "check_signable",
    "init_signing_chain",
    "load_credentials",
    "plan_manifest",
    "read_manifest",
    "sign_in_place",
]

#: Formats c2pa-python can embed a manifest in, by suffix.
SIGNABLE_MIME_TYPES: dict[str, str] = {
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac",
    ".m4a": "audio/mp4", ".mp4": "audio/mp4",
}
KEY_FILE = "c2pa-signer.key"
CHAIN_FILE = "c2pa-signer-chain.pem"
ROOT_FILE = "c2pa-root-ca.pem"
#: Where the docs and the audit's fix commands suggest keeping the signing files.
DEFAULT_KEY_DIR = "~/.harmonycloak/c2pa"
TRAINING_MINING_ENTRIES: tuple[str, ...] = (
    "cawg.ai_training", "cawg.ai_generative_training", "cawg.data_mining",
)
PROTECTION_PARAMETER = "com.harmonycloak.protection"
#: Failure codes a locally signed file always shows: not an error of the file.
EXPECTED_FAILURES: frozenset[str] = frozenset({"signingCredential.untrusted"})
#: States of :class:`ManifestStatus`.
NONE, VALID, TRUSTED, TAMPERED, INVALID, UNSUPPORTED, UNAVAILABLE = (
    "none", "valid", "trusted", "tampered", "invalid", "unsupported", "unavailable",
)
_INSTALL_HINT = "install it with: pip install 'c2pa-python>=0.38,<0.39'"
_PLUS_DMI_PROHIBITED_AI = "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"
_LEAF_DAYS = 3650
_CA_DAYS = 7300
_DOCUMENT_SIGNING_EKU = "1.3.6.1.5.5.7.3.36"  # id-kp-documentSigning (RFC 9336)


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError as error:  # optional at import time, required for this feature
        raise InputError(f"C2PA needs the c2pa-python package; {_INSTALL_HINT}") from error
    return c2pa


# ---------------------------------------------------------------------------------------
# A local certificate chain
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningFiles:
    """The files :func:`init_signing_chain` writes."""

    key: Path  # the signer's private key (PKCS#8 PEM, readable by the owner only)
    chain: Path  # signer certificate + intermediate CA (PEM), what --c2pa-cert takes
    root: Path  # the root CA certificate: give it to verifiers as a trust anchor


def init_signing_chain(
    out_dir: str | os.PathLike[str], *, owner: str = "harmonycloak user", force: bool = False
) -> SigningFiles:
    """Create a local C2PA signing key and its certificate chain in ``out_dir``.

    Three ECDSA P-256 keys: a root CA (self-signed, 20 years), an intermediate CA (20
    years) and the signer (10 years, not a CA, key usage digitalSignature, extended key
    usage emailProtection + documentSigning as the C2PA certificate profile allows). Only
    the signer's private key is kept; the CA keys are discarded, so nobody can issue
    more certificates under this root (to renew, run init again). Writes
    :data:`KEY_FILE` (mode 0600), :data:`CHAIN_FILE` and :data:`ROOT_FILE`.

    Raises :class:`InputError` when a file exists and ``force`` is false.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(out_dir).expanduser()
    files = SigningFiles(folder / KEY_FILE, folder / CHAIN_FILE, folder / ROOT_FILE)
    if not force:
        for path in (files.key, files.chain, files.root):
            if path.exists():
                raise InputError(f"{path} already exists; use --force to make a new signing key")
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root, intermediate, leaf = _issue_chain(owner, *keys)
    pem = serialization.Encoding.PEM
    key_pem = keys[2].private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    atomic_write(files.key, lambda tmp: _write_private(tmp, key_pem), force=True)
    atomic_write(files.chain, lambda tmp: tmp.write_bytes(
        leaf.public_bytes(pem) + intermediate.public_bytes(pem)), force=True)
    atomic_write(files.root, lambda tmp: tmp.write_bytes(root.public_bytes(pem)), force=True)
    return files


def _write_private(tmp: Path, data: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _issue_chain(owner: str, root_key: Any, mid_key: Any, leaf_key: Any) -> tuple[Any, Any, Any]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    def name(common: str) -> Any:
        return x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, owner[:64] or "harmonycloak user"),
        ])

    root_name = name(f"{owner} local C2PA root")
    root = _certificate(root_name, root_key, root_name, root_key, ca_path_length=1, days=_CA_DAYS)
    mid_name = name(f"{owner} local C2PA intermediate")
    mid = _certificate(mid_name, mid_key, root_name, root_key, ca_path_length=0, days=_CA_DAYS)
    leaf = _certificate(name(f"{owner} (harmonycloak signer)"), leaf_key, mid_name, mid_key,
                        ca_path_length=None, days=_LEAF_DAYS)
    return root, mid, leaf


def _certificate(subject: Any, key: Any, issuer: Any, issuer_key: Any, *,
                 ca_path_length: int | None, days: int) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

    start = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    is_ca = ca_path_length is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not is_ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                       critical=False)
    )
    if not is_ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([
            ExtendedKeyUsageOID.EMAIL_PROTECTION, ObjectIdentifier(_DOCUMENT_SIGNING_EKU)]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


# ---------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningCredentials:
    """A private key and its certificate chain, checked to belong together."""

    key_pem: bytes
    chain_pem: bytes
    algorithm: str  # c2pa name: es256, es384, es512, ps256, ed25519
    key_path: str
    cert_path: str


def load_credentials(key_path: str | os.PathLike[str],
                     cert_path: str | os.PathLike[str]) -> SigningCredentials:
    """Read and check ``--c2pa-key`` and ``--c2pa-cert``.

    The certificate file is a PEM chain, signer first (what :func:`init_signing_chain`
    writes). Raises :class:`InputError` when a file is missing or not PEM, the key does
    not match the first certificate, the signer certificate is self-signed (C2PA refuses
    those) or outside its validity period, or the key type is not one C2PA signs with.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key_file, cert_file = Path(key_path).expanduser(), Path(cert_path).expanduser()
    key_pem, chain_pem = _read_pem(key_file, "--c2pa-key"), _read_pem(cert_file, "--c2pa-cert")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise InputError(
            f"{key_file}: not an unencrypted PEM private key ({error}); give the "
            f"{KEY_FILE} that harmonycloak rights init wrote"
        ) from error
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as error:
        raise InputError(
            f"{cert_file}: not a PEM certificate chain ({error}); give the {CHAIN_FILE} "
            "that harmonycloak rights init wrote"
        ) from error
    _check_leaf(key_file, cert_file, key, chain[0])
    return SigningCredentials(key_pem, chain_pem, _algorithm(key_file, key),
                              str(key_file), str(cert_file))


def _read_pem(path: Path, option: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{option} {path}: file not found; make one with harmonycloak rights init -o "
            f"{DEFAULT_KEY_DIR}"
        ) from None
    except OSError as error:
        raise InputError(f"{option} {path}: cannot be read ({error.strerror or error})") from error
    if b"-----BEGIN" not in data:
        raise InputError(f"{option} {path}: not a PEM file; give the file rights init wrote")
    return data


def _check_leaf(key_file: Path, cert_file: Path, key: Any, leaf: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise InputError(
            f"{key_file}: this key does not belong to the first certificate in {cert_file}; "
            "give the key and chain written together by harmonycloak rights init"
        )
    if leaf.issuer == leaf.subject:
        raise InputError(
            f"{cert_file}: the signing certificate is self-signed, which C2PA refuses; "
            f"make a chain with harmonycloak rights init -o {DEFAULT_KEY_DIR}"
        )
    now = _dt.datetime.now(_dt.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise InputError(
            f"{cert_file}: the signing certificate is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d}; "
            "make a new one with harmonycloak rights init --force"
        )


def _algorithm(key_file: Path, key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise InputError(
        f"{key_file}: C2PA signs with ECDSA P-256/384/521, Ed25519 or RSA-PSS keys; "
        "make a key with harmonycloak rights init"
    )


@dataclass(frozen=True)
class ManifestPlan:
    """What to sign: the manifest definition for c2pa-python's Builder and the actions
    added after the automatic ``c2pa.opened``."""

    title: str
    definition: dict[str, Any]
    actions: tuple[dict[str, Any], ...]


def plan_manifest(
    *,
    title: str,
    rights: dict[str, str],
    protection: ProtectionReport | None = None,
) -> ManifestPlan:
    """The manifest for a copy called ``title``.

    ``rights`` holds the tag fields (owner, copyright, licence_url, ...); ``protection``
    the report of the protected file this copy comes from, if any.
    """
    metadata: dict[str, Any] = {
        "@context": {
            "dc": "http://purl.org/dc/elements/1.1/",
            "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
            "plus": "http://ns.useplus.org/ldf/xmp/1.0/",
        },
        "xmpRights:Marked": True,
        "plus:DataMining": _PLUS_DMI_PROHIBITED_AI,
    }
    if rights.get("copyright"):
        metadata["dc:rights"] = rights["copyright"]
    if rights.get("owner"):
        metadata["xmpRights:Owner"] = [rights["owner"]]
    if rights.get("licence_url"):
        metadata["xmpRights:WebStatement"] = rights["licence_url"]
    definition = {
        "claim_generator_info": [{"name": "harmonycloak", "version": __version__}],
        "title": title,
        "assertions": [
            {"label": "cawg.training-mining", "data": {"entries": {
                entry: {"use": "notAllowed"} for entry in TRAINING_MINING_ENTRIES}}},
            {"label": "cawg.metadata", "data": metadata},
        ],
    }
    return ManifestPlan(title, definition, tuple(_actions(protection)))


def _actions(protection: ProtectionReport | None) -> list[dict[str, Any]]:
    agent = {"name": "harmonycloak", "version": __version__}
    actions: list[dict[str, Any]] = []
    if protection is not None:
        params = {
            "version": protection.version or None,
            "preset": protection.preset,
            "mode": protection.mode,
            "target": protection.target,
            "seed": protection.seed,
            "report_sha256": protection.sha256,
            "protected_sha256": protection.output_sha256,
            "master_sha256": protection.input_sha256,
            "watermarked": protection.watermark_payload is not None,
        }
        actions.append({
            "action": "c2pa.edited",
            "softwareAgent": {"name": "harmonycloak", "version": protection.version or __version__},
            "description": "Protected against generative-AI training with an inaudible "
                           "perturbation under the psychoacoustic masking threshold",
            "parameters": {PROTECTION_PARAMETER: {k: v for k, v in params.items() if v is not None}},
        })
    actions.append({
        "action": "c2pa.edited.metadata",
        "softwareAgent": agent,
        "description": "Rights tags written: owner, copyright, licence, AI-training reservation",
    })
    return actions


def sign_in_place(
    path: str | os.PathLike[str],
    *,
    credentials: SigningCredentials,
    plan: ManifestPlan,
    parent_title: str,
) -> None:
    """Embed a signed manifest into the file at ``path`` (replaced when signing succeeds).

    The file as it was becomes the parent ingredient (``c2pa.opened``). Call this on a
    temporary file (see :func:`harmonycloak.rights.tags.tag_file`'s ``after``): signing
    must be the last change to the bytes. Raises :class:`InputError` for a format C2PA
    cannot hold (Ogg Vorbis, Opus, AAC) or when c2pa-python refuses to sign.
    """
    c2pa = _c2pa()
    file = Path(path)
    mime = _mime_for(file, label=plan.title)
    signed = temp_path_for(file)
    info = c2pa.C2paSignerInfo(alg=credentials.algorithm, sign_cert=credentials.chain_pem,
                               private_key=credentials.key_pem, ta_url=None)
    try:
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(plan.definition) as builder:
            with open(file, "rb") as source:
                builder.add_ingredient({"title": parent_title, "relationship": "parentOf"},
                                       mime, source)
            builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
            for action in plan.actions:
                builder.add_action(action)
            with open(file, "rb") as source, open(signed, "w+b") as dest:
                builder.sign(signer, mime, source, dest)
        os.replace(signed, file)
    except c2pa.C2paError as error:
        raise InputError(
            f"{plan.title}: C2PA signing failed ({_one_line(error)}); "
            f"check --c2pa-key/--c2pa-cert (harmonycloak rights init -o {DEFAULT_KEY_DIR} "
            "makes a working pair)"
        ) from error
    finally:
        if signed.exists():
            signed.unlink()


def check_signable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` when a file of this suffix cannot hold a C2PA manifest."""
    _mime_for(Path(path), label=str(path))


def _mime_for(file: Path, *, label: str) -> str:
    suffix = file.suffix.lower()
    if suffix not in SIGNABLE_MIME_TYPES:
        raise InputError(
            f"{label}: C2PA manifests cannot be embedded in {suffix or 'this'} files "
            "(c2pa-python supports WAV, MP3, FLAC and M4A); leave out --c2pa-key/--c2pa-cert, "
            "or publish an MP3/M4A copy for Content Credentials"
        )
    return SIGNABLE_MIME_TYPES[suffix]


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


# ---------------------------------------------------------------------------------------
# Reading and validating
# ---------------------------------------------------------------------------------------


@dataclass
class ManifestStatus:
    """What a file's C2PA manifest says and whether it still holds.

    ``state``: ``none`` (no manifest), ``valid`` (signature and content hashes hold;
    signer not on a trust list — the normal result for a local chain), ``trusted``
    (valid and the signer chains to a given trust anchor), ``tampered`` (the file
    changed after signing: a hash mismatch), ``invalid`` (another validation failure or
    a damaged manifest), ``unsupported`` (a format C2PA cannot carry), ``unavailable``
    (c2pa-python is not installed).
    ``failures`` excludes :data:`EXPECTED_FAILURES`, listed in ``expected``.
    """

    path: str
    state: str
    validation_state: str | None = None
    message: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    title: str | None = None
    claim_generator: str | None = None
    signer: dict[str, str] = field(default_factory=dict)
    training_mining: dict[str, str] = field(default_factory=dict)
    rights: dict[str, Any] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    protection: dict[str, Any] | None = None
    manifests: int = 0

    @property
    def reserves_training(self) -> bool:
        """True when every entry of :data:`TRAINING_MINING_ENTRIES` is ``notAllowed``."""
        return all(self.training_mining.get(e) == "notAllowed" for e in TRAINING_MINING_ENTRIES)

    @property
    def holds(self) -> bool:
        """True for a manifest whose signature and hashes verify (valid or trusted)."""
        return self.state in (VALID, TRUSTED)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reserves_training"] = self.reserves_training
        return data


def read_manifest(path: str | os.PathLike[str], *,
                  trust_anchor: str | os.PathLike[str] | None = None) -> ManifestStatus:
    """Read and validate the C2PA manifest of a file (never raises for the file's content).

    ``trust_anchor``: a PEM root certificate (e.g. :data:`ROOT_FILE`) to trust; without
    it a locally signed file is ``valid``, with it ``trusted``. Raises
    :class:`InputError` only when ``path`` or ``trust_anchor`` cannot be read.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: file not found; check the path")
    try:
        c2pa = _c2pa()
    except InputError as error:
        return ManifestStatus(str(file), UNAVAILABLE, message=str(error))
    if file.suffix.lower() not in SIGNABLE_MIME_TYPES:
        return ManifestStatus(str(file), UNSUPPORTED,
                              message=f"C2PA manifests cannot be embedded in {file.suffix} files")
    context = _context(c2pa, trust_anchor)
    try:
        with open(file, "rb") as stream:
            reader = c2pa.Reader.try_create(SIGNABLE_MIME_TYPES[file.suffix.lower()], stream,
                                            None, context)
            if reader is None:
                return ManifestStatus(str(file), NONE, message="no C2PA manifest")
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state()
                results = reader.get_validation_results() or {}
    except c2pa.C2paError as error:
        return ManifestStatus(str(file), INVALID,
                              message=f"the manifest is damaged ({_one_line(error)})")
    return _status(file, store, state, results)


def _context(c2pa: Any, trust_anchor: str | os.PathLike[str] | None) -> Any:
    if trust_anchor is None:
        return None
    anchor = Path(trust_anchor).expanduser()
    pem = _read_pem(anchor, "--trust").decode("ascii", errors="replace")
    return c2pa.Context.from_dict({"trust": {"user_anchors": pem}, "verify": {"verify_trust": True}})


def _status(file: Path, store: dict[str, Any], state: str | None,
            results: dict[str, Any]) -> ManifestStatus:
    active = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    failures = (results.get("activeManifest") or {}).get("failure") or []
    codes = [f.get("code", "") for f in failures]
    unexpected = [{"code": f.get("code", ""), "explanation": f.get("explanation", "")}
                  for f in failures if f.get("code") not in EXPECTED_FAILURES]
    status = ManifestStatus(
        path=str(file),
        state=_state_name(state, unexpected),
        validation_state=state,
        failures=unexpected,
        expected=[c for c in codes if c in EXPECTED_FAILURES],
        title=active.get("title"),
        claim_generator=_generator(active),
        signer={k: str(v) for k, v in (active.get("signature_info") or {}).items()
                if k in ("issuer", "common_name", "alg", "time")},
        manifests=len(store.get("manifests", {})),
    )
    _read_assertions(status, active.get("assertions") or [])
    status.message = _message(status)
    return status


def _state_name(state: str | None, unexpected: list[dict[str, str]]) -> str:
    if any(f["code"].endswith(".mismatch") for f in unexpected):
        return TAMPERED
    if unexpected or state not in ("Valid", "Trusted"):
        return INVALID
    return TRUSTED if state == "Trusted" else VALID


def _generator(active: dict[str, Any]) -> str | None:
    info = active.get("claim_generator_info") or []
    if info and isinstance(info[0], dict):
        return " ".join(str(info[0].get(k, "")) for k in ("name", "version")).strip() or None
    return active.get("claim_generator")


def _read_assertions(status: ManifestStatus, assertions: list[dict[str, Any]]) -> None:
    for assertion in assertions:
        label, data = assertion.get("label", ""), assertion.get("data") or {}
        if label.startswith("cawg.training-mining") or label.startswith("c2pa.training-mining"):
            for entry, value in (data.get("entries") or {}).items():
                status.training_mining[entry.replace("c2pa.", "cawg.")] = str(value.get("use"))
        elif label == "cawg.metadata":
            status.rights = {k: v for k, v in data.items() if k != "@context"}
        elif label.startswith("c2pa.actions"):
            for action in data.get("actions") or []:
                status.actions.append(_action_summary(action))
                params = action.get("parameters") or {}
                if isinstance(params.get(PROTECTION_PARAMETER), dict):
                    status.protection = params[PROTECTION_PARAMETER]


def _action_summary(action: dict[str, Any]) -> dict[str, Any]:
    agent = action.get("softwareAgent")
    if isinstance(agent, dict):
        agent = " ".join(str(agent.get(k, "")) for k in ("name", "version")).strip()
    return {"action": action.get("action"), "software_agent": agent,
            "description": action.get("description")}


def _message(status: ManifestStatus) -> str:
    if status.state == TAMPERED:
        return ("the file was changed after it was signed (" +
                ", ".join(f["code"] for f in status.failures) + ")")
    if status.state == INVALID:
        return "the manifest does not validate (" + ", ".join(
            f["code"] for f in status.failures) + ")"
    if status.state == TRUSTED:
        return "signature and content hashes verified; the signer is trusted"
    return ("signature and content hashes verified; the signer is not on a trust list "
            "(expected for a local key: give its root with --trust to check it)")
