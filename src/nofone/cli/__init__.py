"""The `nofone` command line: one typer app, one module per step."""
