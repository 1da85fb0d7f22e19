"""torchrun for `nntrain fit --nproc N`: torch's launcher, with a signal ending the job as one
message and exit code 128 + its number (torchrun itself ends with a traceback and exit 1).

Run as `python -m nntrain.launch <torchrun arguments>`.
"""

from __future__ import annotations

import sys

INTERRUPTED = (130, 143)  # a worker stopped by SIGINT / SIGTERM after saving last.pt


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except SignalException as exc:
        # The workers got the signal too, finished their update and saved last.pt: they said so.
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        # The workers stopped on a signal of their own (SIGINT/SIGTERM, after saving): no failure.
        # A rank still exiting when torchrun saw the first one end gets torchrun's SIGTERM (-15).
        if codes & set(INTERRUPTED) and codes <= {*INTERRUPTED, -2, -15}:
            return max(codes & set(INTERRUPTED))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
