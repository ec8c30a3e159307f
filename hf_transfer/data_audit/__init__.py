"""`hf-transfer audit`: label errors, duplicates, leaks, outliers and length problems of a labelled
set, from one frozen forward pass (see `hf_transfer.data_audit.core`)."""

from hf_transfer.data_audit.core import FIXES, audit, to_markdown  # noqa: F401

__all__ = ["audit", "to_markdown", "FIXES"]
