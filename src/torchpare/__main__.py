"""``python -m torchpare`` runs the command line."""

from torchpare.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
