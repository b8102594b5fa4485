"""One call in a short-lived child, for work whose imports must not stay resident in a daemon.

Verifying a PKCS#7 signature imports cryptography + asn1crypto (≈ 14 MB resident for the
process's life after one verification). :func:`call_in_child` forks, runs the call in the child
(which inherits the state, nothing is re-read), and sends back its result or the exception it
raised, pickled; the parent never imports what the child did. Standard library only.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")

#: the modules whose residence :func:`call_in_child` is there to avoid
CRYPTO_MODULES = ("cryptography", "asn1crypto")


class ChildFailedError(Exception):
    """The child died or answered nothing: the call's outcome is unknown (callers fail closed)."""


def crypto_loaded() -> bool:
    """Has this process loaded the crypto stack already (a child would then save nothing)?"""
    return any(name in sys.modules for name in CRYPTO_MODULES)


def call_in_child(call: Callable[[], T]) -> T:
    """``call()``, run in a forked child; its exception, if it raised one, raised here.

    When no child can be made (no fd for the pipe, fork refused: EAGAIN at a task limit, EPERM
    under a syscall filter) the call runs in this process: resident after, but done.
    Raises ChildFailedError when the child ends without an answer.
    """
    try:
        rfd, wfd = os.pipe()
    except OSError:
        return call()
    try:
        pid = os.fork()
    except OSError:
        os.close(rfd)
        os.close(wfd)
        return call()
    if pid == 0:  # the child: answer, then exit without running the parent's cleanup
        code = 1
        try:
            os.close(rfd)
            try:
                answer: tuple[bool, object] = (True, call())
            except Exception as e:
                answer = (False, e)
            try:
                data = memoryview(pickle.dumps(answer))
            except Exception as e:  # an unpicklable exception: its words still reach the parent
                data = memoryview(pickle.dumps((False, RuntimeError(f"{type(e).__name__}: {e}"))))
            while data:
                data = data[os.write(wfd, data) :]
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    with open(rfd, "rb") as fh:
        while chunk := fh.read(1 << 16):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not chunks:
        raise ChildFailedError(f"its process ended with status {status}")
    ok, value = pickle.loads(b"".join(chunks))  # (our own child's answer)
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return cast(T, value)
