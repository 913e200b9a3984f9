"""The glue every workflow script shares: logging to the rule's log file, threads, clean errors."""

from __future__ import annotations

import errno
import logging
import re
import sys

from tlm.config import ConfigError
from tlm.io import TLMInputError

RERUN = "Nothing half-written was kept (outputs are written under temporary names); finished jobs are kept"


def os_error_message(e: OSError, outputs) -> str:
    """What an OS error means for the user, with the file (or the job's outputs) and the fix."""
    where = e.filename or ", ".join(map(str, outputs)) or "an output"
    code = e.errno if e.errno is not None else _errno_in_message(str(e))
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device (or quota) while writing {where}. {RERUN}. "
            "Fix: free space on that disk (or run from a directory on a larger one), then run snakemake again."
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"permission denied: {where} ({e.strerror}). "
            "Fix: make the inputs readable and results/, logs/ writable by this user, then run snakemake again."
        )
    if code == errno.ENOENT:
        return (
            f"{where} vanished while the job ran (it was there when the job started). {RERUN}. "
            "Fix: leave the inputs in place while snakemake runs, then run it again."
        )
    code = f" (OS error {code})" if code is not None else ""
    return f"{where}: {e.strerror or e}{code}. {RERUN}. Fix: check that disk and file, then run snakemake again."


def _errno_in_message(message: str) -> int | None:
    """The error of an OSError raised without errno: Arrow names it in its message, and numpy's
    tofile() reports a short write ("800 requested and 0 written"), which is a full disk or quota."""
    if "No space left" in message or re.search(r"\d+ requested and \d+ written", message):
        return errno.ENOSPC
    found = re.search(r"\[errno (\d+)\]", message, re.I)
    return int(found.group(1)) if found else None


def run(main, snakemake) -> None:
    """Call main(snakemake) with logging set up. Bad input and OS errors end the job with one
    message naming the stage (rule), the file and the fix; anything else is a bug: its traceback."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    if "torch" in sys.modules:  # a training job (the retrieval rules' environment has no torch)
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    log = logging.getLogger("tlm")
    try:
        main(snakemake)
    except (TLMInputError, ConfigError) as e:
        log.error("%s: %s", snakemake.rule, e)
        sys.exit(1)
    except OSError as e:
        log.error("%s: %s", snakemake.rule, os_error_message(e, snakemake.output))
        sys.exit(1)
    except Exception:  # a bug, not bad input: keep the traceback, in the log file too
        log.exception("%s failed", snakemake.rule)
        sys.exit(1)
