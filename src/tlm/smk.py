"""The glue every workflow script shares: logging to the rule's log file, threads, clean errors."""

from __future__ import annotations

import logging
import sys

from tlm.config import ConfigError
from tlm.io import TLMInputError


def run(main, snakemake) -> None:
    """Call main(snakemake) with logging set up; bad input ends the job with its message, no traceback."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", handlers=handlers, force=True)
    if "torch" in sys.modules:  # a training job (the retrieval rules' environment has no torch)
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    try:
        main(snakemake)
    except (TLMInputError, ConfigError) as e:
        logging.getLogger("tlm").error("%s", e)
        sys.exit(1)
    except Exception:  # a bug, not bad input: keep the traceback, in the log file too
        logging.getLogger("tlm").exception("%s failed", snakemake.rule)
        sys.exit(1)
