"""``iped sign --key KEY --cert CERT [-o OUT] [--hash sha256] POLICY``.

Validates POLICY first (the same one-line error as ``iped validate``, exit 1) and never signs a
policy the kernel would refuse. Then signs it the way the admin guide's
``openssl smime -sign -nodetach -noattr -binary -outform der`` does (:func:`iped.pkcs7.sign_policy`),
checks the result with iped's own kernel-order verifier against CERT, and writes it atomically
(temporary file in the same directory, fsync, rename) to OUT, default ``POLICY.p7s``; ``-o -``
writes the DER to stdout.

The private key is read under the rule the daemon, ``check-config`` and ``rollback`` apply to
it too (:func:`iped.trustpath.read_private_key`): owned by root or the caller, every directory on
the way writable only by them, and no access by group or others (the fix: ``chmod 600 KEY``).
"""

from __future__ import annotations

import argparse
import sys

from iped.commands import ExitCode, die
from iped.fsutil import write_atomically


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        from iped.errnos import errno_name

        die(f"{path}: {errno_name(e.errno or 5)}: cannot read {what}: {e.strerror}")


def read_key(path: str) -> bytes:
    """The private key under iped's one rule for it (:func:`iped.trustpath.read_private_key`)."""
    from iped.trustpath import UntrustedPathError, read_private_key

    try:
        return read_private_key(path)
    except UntrustedPathError as e:
        die(f"{e.filename}: {e.why}", hint=e.fix)
    except OSError as e:
        from iped.errnos import errno_name

        die(f"{path}: {errno_name(e.errno or 5)}: cannot read private key: {e.strerror}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.pkcs7 import SIGN_HASHES

    parser.add_argument("--key", required=True, metavar="KEY", help="PEM private key (RSA or ECDSA, mode 0600)")
    parser.add_argument("--cert", required=True, metavar="CERT", help="PEM certificate of KEY (embedded in the blob)")
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="where to write the DER blob (default POLICY.p7s; '-' for stdout)"
    )
    parser.add_argument("--hash", default="sha256", choices=SIGN_HASHES, help="digest algorithm (default sha256)")
    parser.add_argument("policy", metavar="POLICY", help="plain policy text")


def run(args: argparse.Namespace) -> int:
    from iped.commands.validate import check_blob
    from iped.pkcs7 import SignatureError, is_pkcs7, sign_policy, verify_policy

    text = _read(args.policy, "policy")
    if is_pkcs7(text):
        die(f"{args.policy}: already a signed PKCS#7 blob", hint="sign the plain policy text")
    result = check_blob(args.policy, text, None)
    if not result.valid:
        print(result.human(), file=sys.stderr, flush=True)
        return ExitCode.FAILED
    key_pem = read_key(args.key)
    cert_pem = _read(args.cert, "certificate")
    try:
        blob = sign_policy(text, key_pem, cert_pem, args.hash)
        verify_policy(blob, [cert_pem])
    except ValueError as e:
        die(f"{args.key}: cannot sign: {e}")
    except SignatureError as e:
        die(f"{args.policy}: the signed blob does not verify: {e}")
    out = args.output if args.output is not None else args.policy + ".p7s"
    if out == "-":
        sys.stdout.buffer.write(blob)
        sys.stdout.buffer.flush()
        return ExitCode.OK
    write_atomically(out, blob, 0o644, exact_mode=True)  # (public data: 0644 whatever the umask)
    print(
        f"iped: signed {args.policy} -> {out} (policy_name={result.policy_name} "
        f"policy_version={result.policy_version}, {args.hash}, {len(blob)} bytes)",
        file=sys.stderr,
    )
    return ExitCode.OK
