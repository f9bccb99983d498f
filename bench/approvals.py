"""Signed approvals: what they cost (``python -m bench.approvals``).

Side by side in one run:

- ``infersight digest`` of one model file vs ``sha256sum`` of the same file
  (the digest a serving process computes at load time);
- reviewing one registry message: a signed approval of one artifact (ECDSA
  P-256 verification through model-signing) vs an unsigned one refused.

Keys and the model file are generated in a temporary directory; nothing is
downloaded. Absolute figures move with the machine; the ratio of our digest to
``sha256sum`` much less.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from monitor.engine.approvals import ApprovalGate, TrustedKeys, artifact_digest, sign_approval


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file-mib", type=int, default=256, help="size of the model file (default 256 MiB)")
    parser.add_argument("--messages", type=int, default=500, help="registry messages reviewed per timing")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-approvals-") as work:
        run(Path(work), args)


def run(work: Path, args: argparse.Namespace) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (work / "release.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (work / "release.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    model = work / "model.bin"
    with model.open("wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(args.file_mib):
            f.write(block)

    ours = _best(lambda: artifact_digest(model), args.repeat)
    coreutils = _best(lambda: subprocess.run(["sha256sum", str(model)], capture_output=True, check=True),
                      args.repeat)
    out = subprocess.run(["sha256sum", str(model)], capture_output=True, text=True, check=True).stdout
    assert artifact_digest(model) == "sha256:" + out.split()[0]
    print(f"digest of a {args.file_mib} MiB file: infersight {ours:.2f} s ({args.file_mib / ours:.0f} MiB/s), "
          f"sha256sum {coreutils:.2f} s, ratio {ours / coreutils:.2f}")

    small = work / "small.bin"
    small.write_bytes(b"w" * 1000)
    signed = orjson.dumps(sign_approval("fraud", [small], work / "release.pem"))
    unsigned = orjson.dumps({"digests": ["sha256:" + "a" * 64]})
    gate = ApprovalGate(TrustedKeys.load([work / "release.pub"]), require_signed=True)
    assert gate.review("fraud", signed).rejection is None
    assert gate.review("fraud", unsigned).rejection.reason == "unsigned"
    n = args.messages
    verify = _best(lambda: [gate.review("fraud", signed) for _ in range(n)], args.repeat) / n
    refuse = _best(lambda: [gate.review("fraud", unsigned) for _ in range(n)], args.repeat) / n
    print(f"review one registry message: signed approval verified {verify * 1e3:.2f} ms, "
          f"unsigned refused {refuse * 1e6:.0f} us")


if __name__ == "__main__":
    main()
