"""`python -m restore_cli` starts the same Typer app as the `restore` console script."""

from restore_cli.cli.app import main

if __name__ == "__main__":
    main()
