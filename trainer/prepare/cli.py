"""`trainer prepare ...` and `trainer verify` (placeholder until the prepare work lands)."""
import typer

prepare_app = typer.Typer(help="Prepare a dataset from the files as distributed.", no_args_is_help=True)


def verify_command() -> None:
    """Verify a prepared dataset."""
    raise typer.Exit(2)
