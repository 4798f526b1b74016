"""Shared pytest setup and fixtures."""

import absl.flags
import pytest

# Grain's worker processes (mp_prefetch) read absl flags such as
# grain_enable_multiprocess_worker_profiling; outside absl.app.run (pytest included) the flags are
# never parsed and the workers die with UnparsedFlagAccessError. Mark them parsed (defaults).
absl.flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
    """A data_dir holding the embedded digits, built once per test session."""
    from latentjax.data import digits

    return digits.prepare_digits(str(tmp_path_factory.mktemp("tfds")))
