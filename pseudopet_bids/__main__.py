"""``python -m pseudopet_bids`` runs the BIDS App command line."""

from pseudopet_bids.cli.run import main

if __name__ == "__main__":  # pragma: no cover - thin wrapper
    raise SystemExit(main())
