"""The differential conformance corpus: one set of cases, run on real kernels and on the emulator.

Cases live in ``tests/corpus/*.toml`` (human-readable, one file per group); the observed
behaviour of each kernel series is recorded in ``tests/corpus/truth/<series>.json``.  This
package holds everything both sides share, one concern per module:

* :mod:`~tests.lab.corpus.cases` - the case model (:class:`Case`, :class:`Step`,
  :class:`BlobSpec`, :class:`Probe`) and :func:`load_cases`, which checks the ordering rules below;
* :mod:`~tests.lab.corpus.template` - ``{name}``/``{epoch}``/``{fact:KEY}`` in case text and paths;
* :mod:`~tests.lab.corpus.blobs` - :func:`build_blob`: policy blobs made from a case description
  (signing with the committed TEST keys, then named transformations such as ``pem`` or
  ``truncated:10``), and the executor's housekeeping policies;
* :mod:`~tests.lab.corpus.backend` - the :class:`Backend` protocol the executor drives (real
  securityfs: :mod:`tests.lab.kernel_backend`; emulator: :mod:`tests.lab.emulator_backend`);
* :mod:`~tests.lab.corpus.normalise` - :class:`Normaliser`: run-varying values become
  placeholders (``{pid}``, ``{ino:tmpfs}``, ``{sha256:<blob label>}``, ``{blob:<label>}``;
  upper-case digests as ``{sha256:<label>|upper}``) so truth is stable;
* :mod:`~tests.lab.corpus.executor` - :func:`run_cases`, which runs cases in one long-lived
  kernel (or emulator) and returns normalised, JSON-ready results;
* :mod:`~tests.lab.corpus.truth` - the truth files: load, compare, write, and the fingerprint
  (``input_sha256``) that ties each record to the case it was recorded from;
* :mod:`~tests.lab.corpus.in_guest` - :func:`run_kernel`, called inside the lab guest, writing
  ``corpus-results.json``.  Recording truth from real kernels: ``python -m tests.lab.record_truth``.

IPE state is monotonic (no deactivation; activation needs a version >= the active one), so
cases that activate carry an ``epoch`` and run after every other case, in increasing epoch
order.  Before such a case the executor activates an allow-all *base* policy
``corpus-base-<epoch>`` (version ``<epoch-1>.65535.65535``); the case's own policies use
major version ``<epoch>`` (``{epoch}`` in policy text) and minor < 65535; afterwards an
allow-all ``corpus-after-<epoch>`` (``<epoch>.65535.65535``) is activated before enforce is
restored.  Each case therefore starts from a state that depends only on itself, which is
what lets the emulator replay one case on a fresh instance.
"""
