"""``python -m privdyn``: the command line where the ``privdyn`` script is not on PATH (e.g. run from
src/ without installing)."""

from privdyn.cli import main

if __name__ == "__main__":
    main()
