"""`python -m connector` and the `braze-connector` command: the CLI, its start-up without cyclic collections."""

from connector.quiet_gc import pause_for_startup


def main() -> None:
    # Paused before the CLI's imports (typer, pydantic, the pipeline models), so that a run keeps it paused
    # until it streams rows (quiet_gc.py); cli.py ends it at once for the commands that run no pipeline.
    pause_for_startup()
    from connector.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
