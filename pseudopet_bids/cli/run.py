"""Entry point: parse, check, dispatch the analysis level, map errors to exit codes.

The workflows (and with them torch and ANTs) are imported only once the command line is known
to be valid: ``pseudopet --help``, ``--version`` and usage errors stay instant.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from pseudopet_bids import __version__
from pseudopet_bids.bids.validator import validate_dataset
from pseudopet_bids.cli import environment as env
from pseudopet_bids.cli.parser import build_config, build_parser, check_args, validate_paths
from pseudopet_bids.errors import EXIT_INTERRUPTED, PseudopetError

LOGGER = logging.getLogger("pseudopet")


def main(argv: list[str] | None = None) -> int:
    """Run ``pseudopet``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    env.default_thread_environment(args.omp_nthreads)
    env.setup_logging(args.verbosity)
    saved = env.saved_tempdir()  # use_work_tmp changes it
    try:
        cfg = build_config(args)
        cfg = cfg.replace(template_source=env.template_source())
        validate_paths(cfg)
        LOGGER.info("pseudopet %s, %s level, input %s, output %s", __version__,
                    cfg.input.analysis_level, cfg.input.bids_dir, cfg.input.output_dir)
        validate_dataset(Path(cfg.input.bids_dir),
                         run_validator=not cfg.input.skip_bids_validation)
        # the command line goes to the run's config (the participant report shows it)
        prepare = functools.partial(env.prepare_dirs, command=["pseudopet", *(
            sys.argv[1:] if argv is None else argv)])
        # heavy imports (torch, ANTs, pybids) behind this edge
        if cfg.input.analysis_level == "participant":
            from pseudopet_bids.workflows.participant import run_participant_level

            return run_participant_level(cfg, prepare)
        from pseudopet_bids.workflows.group import run_group_level

        return run_group_level(cfg, prepare)
    except PseudopetError as exc:
        LOGGER.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        LOGGER.error("interrupted")
        return EXIT_INTERRUPTED
    finally:  # leave the calling process as it was (main() is also called from Python)
        env.restore_tempdir(saved)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
